"""Text features of firms to score, made the way the packaged text model was made.

The package's `text_pca.skops` (emdlot.text.reduce.TextModel) names the extraction backend and its settings
(the embed config), the embedder kind and source, and holds the PCA per section and, for a fallback run,
the fitted TF-IDF + SVD embedder. Scoring runs the same stages on Ray Data: documents (emdlot.text.pipeline.
build_documents), key-information extraction (extract_documents, the packaged backend), embedding (the
packaged fallback, or the BERT named in the settings, which must be on this machine), then the packaged PCA.
Nothing is refitted. A firm without a usable section gets no row (it is scored without text).
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from emdlot.text.config import EmbedConfig
from emdlot.text.embed import BERT, TFIDF, BertEmbedder, EmbedderChoice, SklearnEmbedder, resolve_bert
from emdlot.text.pipeline import OK, build_documents, extract_documents, firm_status
from emdlot.text.reduce import TextModel, apply_text_model, load_text_model

log = logging.getLogger(__name__)

LLM_BACKENDS = ("transformers", "vllm")


class TextModelError(ValueError):
    """The packaged text model cannot be applied on this machine; one line that says why and what to do."""


@dataclass
class TextPlan:
    """A packaged text model made ready to run: its settings, the embedder to use, the model itself."""

    model: TextModel
    config: EmbedConfig
    embedder: EmbedderChoice

    def describe(self) -> str:
        return f"extraction {self.config.extract.backend}, embedder {self.embedder.kind} ({self.embedder.source})"


def _local_model(names: list[str]) -> tuple[Path | None, list[str]]:
    """The first of `names` that is a local model folder or a cached hub model, and why each other was not."""
    reasons = []
    for name in dict.fromkeys(n for n in names if n):
        folder, reason = resolve_bert(name)
        if folder is not None:
            return folder, reasons
        reasons.append(reason)
    return None, reasons


def plan_text(path: str | Path) -> TextPlan:
    """Read a packaged text model and find what it needs here: the BERT it was trained with (the folder it
    was read from then, else its hub id in the Hugging Face cache) or its packaged fallback, and, for a
    model-based extraction backend, that model. TextModelError (one line) when something is missing."""
    try:
        model = load_text_model(path)
        cfg = EmbedConfig.model_validate(model.settings["config"])
    except (ValueError, KeyError) as err:
        raise TextModelError(f"the package's text model {path} cannot be read: {str(err).splitlines()[0]}") from None
    kind, source = model.settings.get("embedder_kind"), str(model.settings.get("embedder_source", ""))
    if kind == BERT:
        folder, reasons = _local_model([source, cfg.embedder.model])
        if folder is None:
            raise TextModelError(
                f"the model's text features need the BERT embedder it was trained with ({source}), but no copy is on "
                f"this machine ({'; '.join(reasons)}); put its weights at {source} or in the Hugging Face cache "
                f"({cfg.embedder.model})")
        embedder = EmbedderChoice(BERT, str(folder), {"kind": BERT, "model": str(folder), "pooling": cfg.embedder.pooling,
                                                      "max_length": cfg.embedder.max_length}, f"packaged settings: {source}")
    elif kind == TFIDF:
        if model.fallback_model is None:
            raise TextModelError(f"the package's text model {path} says it used the fallback embedder but does not hold it")
        embedder = EmbedderChoice(TFIDF, source, {"kind": TFIDF, "packaged": True}, "the package's fitted fallback embedder")
    else:
        raise TextModelError(f"the package's text model {path} names an unknown embedder {kind!r}")
    if cfg.extract.backend in LLM_BACKENDS:
        folder, reasons = _local_model([cfg.extract.llm.model])
        if folder is None:
            raise TextModelError(
                f"the model's text features were extracted with the {cfg.extract.backend} backend and "
                f"{cfg.extract.llm.model}, which is not on this machine ({'; '.join(reasons)})")
        cfg = cfg.model_copy(update={"extract": cfg.extract.model_copy(
            update={"llm": cfg.extract.llm.model_copy(update={"model": str(folder)})})})
    return TextPlan(model, cfg, embedder)


def _embed_stage(plan: TextPlan):
    """The Ray Data map over (key, text) batches with the planned embedder, as the embed flow runs it."""
    e = plan.config.embedder
    if plan.embedder.kind == BERT:
        udf = BertEmbedder
        kwargs = {"model_path": plan.embedder.source, "pooling": e.pooling, "max_length": e.max_length,
                  "torch_threads": e.torch_threads, "actors_sharing_node": e.num_actors}
        gpus = e.num_gpus_per_actor if e.num_gpus_per_actor is not None else (
            1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
    else:
        udf, kwargs, gpus = SklearnEmbedder, {"pipeline": plan.model.fallback_model, "dims": e.tfidf.dims}, 0

    def stage(ds):
        return ds.map_batches(udf, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=e.num_actors),
                              batch_size=e.batch_size, num_cpus=e.num_cpus_per_actor, num_gpus=gpus)
    return stage


def embed_texts(texts: list[str], plan: TextPlan) -> dict[str, np.ndarray]:
    """Vector of every distinct text, computed on Ray Data (batches of similar length, as in the embed flow)."""
    distinct = sorted(set(texts), key=lambda t: (len(t), t))
    if not distinct:
        return {}
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in distinct]
    todo = pd.DataFrame({"key": keys, "text": distinct})
    size = plan.config.embedder.batch_size
    ds = _embed_stage(plan)(ray.data.from_pandas([todo.iloc[i:i + size] for i in range(0, len(todo), size)]))
    by_key: dict[str, np.ndarray] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        by_key.update({k: np.asarray(v, dtype=np.float32) for k, v in zip(batch["key"], batch["embedding"])})
    return {t: by_key[k] for t, k in zip(distinct, keys)}


@dataclass
class ScoringText:
    features: pd.DataFrame | None  # firm_id + the 80 text features, firms with any usable section
    firms: pd.DataFrame  # per firm: status ok / partial / no_text, each section's status, message


def text_features_for(prospectus: pd.DataFrame, firms: list[str], plan: TextPlan,
                      cache_dir: str | Path | None = None) -> ScoringText:
    """Text features of `firms` from `prospectus` (as emdlot.text.io.read_prospectus reads it) with the packaged
    text model; runs the extraction and the embedding on the Ray the caller started."""
    prospectus = prospectus[prospectus["firm_id"].isin(set(firms))]
    docs = build_documents(prospectus, pd.DataFrame({"firm_id": list(firms), "split": "score"}), plan.config.very_long_chars)
    features = None
    if (docs["status"] == OK).any():
        with tempfile.TemporaryDirectory(prefix="emdlot-predict-text-") as tmp:
            stats: dict = {}
            extracted = extract_documents(docs, plan.config, plan.embedder, Path(cache_dir or tmp), stats)
        usable = extracted[extracted["status"] == OK]
        if len(usable):
            vectors = embed_texts(usable["extracted"].tolist(), plan)
            embedded = usable.assign(embedding=[vectors[t] for t in usable["extracted"]])
            try:
                features = apply_text_model(plan.model, embedded[["firm_id", "section", "embedding"]])
            except ValueError as err:  # e.g. a BERT of another width than the one the PCA was fitted on
                raise TextModelError(f"the package's text model does not fit these embeddings ({plan.embedder.source}): {err}") from None
        documents = docs.drop(columns="text").set_index(["firm_id", "section"])
        documents.update(extracted.set_index(["firm_id", "section"])[["status", "note"]])
        docs = documents.reset_index()
    status = firm_status(docs, set() if features is None else set(features["firm_id"]))
    return ScoringText(features, status.drop(columns=["split"]))
