"""The text pipeline: documents -> extraction -> embedding -> PCA, each stage cached.

Every (firm, section) pair of the study gets a document row with a status; only
documents with status 'ok' are extracted and embedded. Each model stage runs on Ray
Data over the documents its cache lacks, and stores every finished batch as it streams
back, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import ray

from emdlot.schema import SECTIONS
from emdlot.text import prompts
from emdlot.text.cache import ShardCache, content_key, frame_to_vectors
from emdlot.text.config import EmbedConfig
from emdlot.text.embed import (BERT, BertEmbedder, EmbedderChoice, SklearnEmbedder, choose_embedder,
                               fit_tfidf_svd, model_fingerprint)
from emdlot.text.extract import OUTPUT_COLUMNS, extraction_stage, load_token_counter
from emdlot.text.extractive import RISK_LEXICON, extract_key_sentences, split_sentences
from emdlot.text.reduce import SectionPCA, fit_section_pca, text_features
from emdlot.text.tokens import TokenCounter, cut_to_budget

log = logging.getLogger(__name__)

OK = "ok"
FIRM_OK, FIRM_PARTIAL, FIRM_NO_TEXT = "ok", "partial", "no_text"


@dataclass
class TextOutputs:
    features: pd.DataFrame  # firm_id + TEXT_DIMS columns per section
    extractions: pd.DataFrame  # one row per used document
    documents: pd.DataFrame  # one row per (firm, section) of the study, with status and note
    firms: pd.DataFrame  # one row per firm: status, split, whether it has features, why not
    pca: SectionPCA
    embedder: EmbedderChoice
    fallback_model: object | None  # the fitted TF-IDF/SVD pipeline when the fallback was used
    stats: dict = field(default_factory=dict)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- documents
def build_documents(prospectus: pd.DataFrame, split: pd.DataFrame, very_long_chars: int) -> pd.DataFrame:
    """One row per (firm, section) over every firm of the prospectus table and the split.

    Columns: firm_id, split, section, text, status (ok/missing/empty/non_utf8), note.
    """
    split_of = dict(zip(split["firm_id"], split["split"]))
    firms = sorted(set(prospectus["firm_id"]) | set(split_of))
    grid = pd.MultiIndex.from_product([firms, SECTIONS], names=["firm_id", "section"]).to_frame(index=False)
    docs = grid.merge(prospectus, on=["firm_id", "section"], how="left")
    docs["status"] = docs["status"].fillna("missing")
    docs["split"] = docs["firm_id"].map(split_of).fillna("unlisted")
    notes = []
    for row in docs.itertuples():
        where = f"row {int(row.source_row)}" if pd.notna(row.source_row) else ""
        if row.status == "missing":
            notes.append(f"{row.section}: no row in the prospectus table")
        elif row.status == "empty":
            notes.append(f"{row.section}: text is empty ({where})")
        elif row.status == "non_utf8":
            notes.append(f"{row.section}: text is not valid UTF-8 ({where})")
        elif len(row.text) > very_long_chars:
            notes.append(f"{row.section}: very long text ({len(row.text)} characters, {where})")
        else:
            notes.append("")
    docs["note"] = notes
    return docs[["firm_id", "split", "section", "text", "status", "note"]]


# ---------------------------------------------------------------- cached Ray Data stages
def _run_cached(cache: ShardCache, todo: pd.DataFrame, stage, value_columns, block_rows: int) -> tuple[int, float]:
    """Run `stage` (Dataset -> Dataset) over `todo` on Ray Data, storing each block as it arrives.

    The input is cut into blocks of `block_rows` documents (the stage's batch size), so
    results come back, and are stored, a batch at a time. Returns (computed, seconds).
    """
    if todo.empty:
        return 0, 0.0
    start = time.perf_counter()
    todo = todo.reset_index(drop=True)
    blocks = [todo.iloc[i:i + block_rows] for i in range(0, len(todo), block_rows)]
    ds = stage(ray.data.from_pandas(blocks))
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        cache.write(batch[["key", *value_columns]])
        done += len(batch)
    return done, time.perf_counter() - start


def _extraction_identity(cfg: EmbedConfig, embedder: EmbedderChoice) -> dict:
    ex = cfg.extract
    identity = {"backend": ex.backend, "token_budget": ex.token_budget,
                "tokenizer": embedder.identity.get("model", "approx")}
    if ex.backend == "extractive":
        identity |= {"settings": ex.extractive.model_dump(exclude={"batch_size", "num_actors"}),
                     "lexicon": _digest(RISK_LEXICON)}
    else:
        model = Path(ex.llm.model)
        identity |= {
            "model": model_fingerprint(model) if model.is_dir() else ex.llm.model,
            "settings": ex.llm.model_dump(include={"max_new_tokens", "temperature", "top_p", "max_input_chars"}),
            "prompt": _digest([prompts.SYSTEM_PROMPT, prompts.USER_PROMPT, prompts.SECTION_TITLES]),
        }
    return identity


def fit_to_budget(text: str, count: TokenCounter, budget: int) -> str:
    """Leading sentences of a model's answer that fit the budget (cut inside one if need be)."""
    if count(text) <= budget:
        return text
    kept = ""
    for sentence in split_sentences(text):
        if count(kept + sentence) > budget:
            break
        kept += sentence
    return kept or cut_to_budget(text, count, budget)


def extract_documents(docs: pd.DataFrame, cfg: EmbedConfig, embedder: EmbedderChoice,
                      cache_dir: Path, stats: dict) -> pd.DataFrame:
    """Key information of every usable document, within the token budget. Adds columns
    extracted, token_count, and updates status/note where the extraction fails."""
    identity = _extraction_identity(cfg, embedder)
    usable = docs[docs["status"] == OK].copy()
    usable["key"] = [content_key(t, {**identity, "section": s}) for t, s in zip(usable["text"], usable["section"])]
    cache = ShardCache(cache_dir, "extract")
    stored = cache.load()
    todo = usable[~usable["key"].isin(set(stored["key"]))].drop_duplicates("key")[["key", "section", "text"]]
    tokenizer_path = embedder.source if embedder.kind == BERT else None
    log.info("extraction (%s): %d documents, %d cached, %d to compute",
             cfg.extract.backend, len(usable), len(usable) - len(todo), len(todo))
    ex = cfg.extract
    block = {"extractive": ex.extractive.batch_size, "transformers": ex.llm.batch_size,
             "vllm": ex.vllm.batch_size}[ex.backend]
    n, seconds = _run_cached(cache, todo, lambda ds: extraction_stage(ds, ex, tokenizer_path),
                             OUTPUT_COLUMNS[1:], block)
    stats |= {"extract_docs": len(usable), "extract_computed": n, "extract_cached": len(usable) - len(todo),
              "extract_seconds": seconds, "extract_docs_per_s": n / seconds if seconds else float("nan")}

    answers = dict(zip(*(cache.load()[c] for c in ("key", "extracted"))))
    count = load_token_counter(tokenizer_path)
    budget = cfg.extract.token_budget
    texts, counts, notes, statuses = [], [], [], []
    for row in usable.itertuples():
        text, note, status = str(answers[row.key]), [row.note] if row.note else [], OK
        if not text.strip() and cfg.extract.backend != "extractive":
            note.append(f"{row.section}: model answer was empty, used extractive selection")
            text = extract_key_sentences(row.text, count, budget, cfg.extract.extractive).text
        elif count(text) > budget:
            note.append(f"{row.section}: extraction over {budget} tokens, cut at a sentence boundary")
            text = fit_to_budget(text, count, budget)
        if not text.strip():
            status = "no_content"
            note.append(f"{row.section}: no sentence with content to extract")
        texts.append(text)
        counts.append(count(text))
        notes.append("; ".join(note))
        statuses.append(status)
    usable["extracted"], usable["token_count"], usable["note"], usable["status"] = texts, counts, notes, statuses
    return usable


# ---------------------------------------------------------------- embedding
def embed_documents(extracted: pd.DataFrame, cfg: EmbedConfig, embedder: EmbedderChoice,
                    cache_dir: Path, stats: dict) -> tuple[pd.DataFrame, object | None]:
    """768-d vector of every extracted document (column `embedding`), and the fitted fallback if used."""
    docs = extracted[extracted["status"] == OK].copy()
    identity = dict(embedder.identity)
    fallback = None
    if embedder.kind != BERT:  # the fallback is fitted on training texts: they are part of its identity
        train_texts = sorted(docs.loc[docs["split"] == "train", "extracted"])
        fallback = fit_tfidf_svd(train_texts, cfg.embedder, cfg.seed)
        identity |= {"train_texts": _digest(train_texts), "seed": cfg.seed}
    docs["key"] = [content_key(t, identity) for t in docs["extracted"]]
    cache = ShardCache(cache_dir, "embed")
    stored = cache.load()
    todo = docs[~docs["key"].isin(set(stored["key"]))].drop_duplicates("key")
    # Similar lengths in one batch waste less padding; the order does not change any vector.
    todo = todo.assign(length=todo["extracted"].str.len()).sort_values(["length", "key"])
    todo = todo[["key", "extracted"]].rename(columns={"extracted": "text"})
    log.info("embedding (%s): %d documents, %d cached, %d to compute",
             embedder.kind, len(docs), len(docs) - len(todo), len(todo))

    e = cfg.embedder
    if embedder.kind == BERT:
        udf, kwargs = BertEmbedder, {"model_path": embedder.source, "pooling": e.pooling,
                                     "max_length": e.max_length, "torch_threads": e.torch_threads,
                                     "actors_sharing_node": e.num_actors}
        gpus = e.num_gpus_per_actor if e.num_gpus_per_actor is not None else (
            1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
    else:
        udf, kwargs, gpus = SklearnEmbedder, {"pipeline": fallback, "dims": e.tfidf.dims}, 0

    def stage(ds):
        return ds.map_batches(udf, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=e.num_actors),
                              batch_size=e.batch_size, num_cpus=e.num_cpus_per_actor, num_gpus=gpus)

    n, seconds = _run_cached(cache, todo, stage, ["embedding"], e.batch_size)
    stats |= {"embed_docs": len(docs), "embed_computed": n, "embed_cached": len(docs) - len(todo),
              "embed_seconds": seconds, "embed_docs_per_s": n / seconds if seconds else float("nan")}
    vectors = frame_to_vectors(cache.load())
    docs["embedding"] = [vectors[k] for k in docs["key"]]
    return docs, fallback


# ---------------------------------------------------------------- firm status
def firm_status(documents: pd.DataFrame, featured: set[str]) -> pd.DataFrame:
    """Per firm: status ok / partial / no_text, each section's status, and the reasons."""
    rows = []
    for firm, group in documents.groupby("firm_id", sort=True):
        by_section = dict(zip(group["section"], group["status"]))
        used = sum(by_section.get(s) == OK for s in SECTIONS)
        status = FIRM_OK if used == len(SECTIONS) else FIRM_PARTIAL if used else FIRM_NO_TEXT
        notes = [n for n in group["note"] if n]
        if status == FIRM_PARTIAL:
            notes.append("missing section masked: NaN in text_features, no chapter weight")
        if status == FIRM_NO_TEXT:
            notes.append("no usable section: not in text_features (text modality masked)")
        rows.append({"firm_id": firm, "split": group["split"].iloc[0], "status": status,
                     "in_text_features": firm in featured,
                     **{s: by_section.get(s, "missing") for s in SECTIONS}, "message": "; ".join(notes)})
    return pd.DataFrame(rows)


def run_text_pipeline(prospectus: pd.DataFrame, split: pd.DataFrame, cfg: EmbedConfig,
                      cache_dir: str | Path) -> TextOutputs:
    """Run every stage; `prospectus` as read by io.read_prospectus, `split` as io.read_split."""
    cache_dir = Path(cache_dir)
    stats: dict = {}
    docs = build_documents(prospectus, split, cfg.very_long_chars)
    train_firms = set(split.loc[split["split"] == "train", "firm_id"])
    embedder = choose_embedder(cfg.embedder)

    extracted = extract_documents(docs, cfg, embedder, cache_dir, stats)
    embedded, fallback = embed_documents(extracted, cfg, embedder, cache_dir, stats)
    pca = fit_section_pca(embedded, train_firms, cfg.seed)
    features = text_features(embedded, pca)

    documents = docs.drop(columns="text").set_index(["firm_id", "section"])
    documents.update(extracted.set_index(["firm_id", "section"])[["status", "note"]])
    documents = documents.reset_index()
    firms = firm_status(documents, set(features["firm_id"]))
    extractions = extracted.loc[extracted["status"] == OK, ["firm_id", "section", "extracted", "token_count"]]
    extractions = extractions.rename(columns={"extracted": "text"}).assign(
        backend=cfg.extract.backend, source_chars=extracted.loc[extracted["status"] == OK, "text"].str.len())
    stats |= {
        "firms": len(firms), "firms_ok": int((firms["status"] == FIRM_OK).sum()),
        "firms_partial": int((firms["status"] == FIRM_PARTIAL).sum()),
        "firms_no_text": int((firms["status"] == FIRM_NO_TEXT).sum()),
        **{f"documents_{s}": int(n) for s, n in documents["status"].value_counts().items()},
        "pca_train_firms": len(train_firms & set(embedded["firm_id"])),
        **{f"pca_explained_variance_{k}": v for k, v in pca.explained_variance.items()},
    }
    return TextOutputs(features, extractions.reset_index(drop=True), documents, firms, pca, embedder, fallback, stats)
