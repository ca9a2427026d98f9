"""Section embeddings: a BERT encoder as a Ray Data actor, or the scikit-learn fallback.

The BERT is loaded with AutoTokenizer/AutoModel.from_pretrained(path), the same call
for Chinese-BERT-wwm and for the tiny models the tests build. Texts are cut at the
embedder's max_length (512) tokens and pooled to one 768-d vector ([CLS] or mean).

When no BERT weights can be had (offline and nothing cached) the fallback embeds with
character n-gram TF-IDF followed by TruncatedSVD to 768 dims, fitted on the training
firms' texts only. It keeps a local demo meaningful (similar wording -> nearby vectors)
but is not the paper's model: the run says so loudly, in the log and in MLflow.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emdlot.text.config import EmbedderConfig

log = logging.getLogger(__name__)

BERT, TFIDF = "bert", "tfidf_svd_fallback"
_FULL_HASH_BYTES = 64 << 20  # files up to this size are hashed whole; larger ones by size + ends


def resolve_bert(model: str) -> tuple[Path | None, str]:
    """Local folder of the BERT named by `model` (a path or a cached hub id), or None and why."""
    if Path(model).is_dir():
        return Path(model), f"local path {model}"
    if Path(model).exists() or model.startswith((".", "/")):
        return None, f"{model} is not a model folder"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True)), f"cached hub model {model}"
    except Exception as err:  # offline and not cached: any hub error means "not available"
        return None, f"{model} is neither a local folder nor in the Hugging Face cache ({type(err).__name__})"


def model_fingerprint(folder: Path) -> str:
    """Hash of a model folder's files, so cached embeddings follow a change of weights."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as f:
            if size <= _FULL_HASH_BYTES:
                digest.update(f.read())
            else:
                digest.update(f.read(1 << 20))
                f.seek(-(1 << 20), os.SEEK_END)
                digest.update(f.read())
    return digest.hexdigest()[:16]


def pool(hidden, attention_mask, how: str):
    """One vector per text from the last hidden states: the [CLS] state or the masked mean."""
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    raise ValueError(f"pooling must be 'cls' or 'mean', got {how!r}")


class _BatchEmbedder:
    """The Ray Data side of an embedder: a batch of (key, text) in, (key, embedding) out."""

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"key": batch["key"], "embedding": self.embed([str(t) for t in batch["text"]])}


class BertEmbedder(_BatchEmbedder):
    """Ray Data class-based UDF: loads the BERT once per actor, embeds batches of `text`."""

    def __init__(self, model_path: str, pooling: str, max_length: int, torch_threads: int | None = None,
                 actors_sharing_node: int = 1, device: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        # Ray pins a 1-CPU actor to one thread (OMP_NUM_THREADS=1); on CPU the encoder is
        # the whole stage, so by default the actors share the node's cores between them.
        torch.set_num_threads(torch_threads or max(1, (os.cpu_count() or 1) // actors_sharing_node))
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).to(self.device).eval()
        self.pooling = pooling
        self.max_length = max_length

    def embed(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with self.torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state
            vectors = pool(hidden, encoded["attention_mask"], self.pooling)
        return vectors.float().cpu().numpy()


def fit_tfidf_svd(texts: list[str], cfg: EmbedderConfig, seed: int):
    """Fit the fallback embedder (char n-gram TF-IDF -> TruncatedSVD) on training texts."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    if len(texts) < 2:
        raise ValueError(f"the TF-IDF fallback embedder needs at least 2 training texts, got {len(texts)}")
    tfidf = TfidfVectorizer(
        analyzer="char", ngram_range=(cfg.tfidf.ngram_min, cfg.tfidf.ngram_max),
        max_features=cfg.tfidf.max_features, sublinear_tf=True,
    )
    n_terms = tfidf.fit(texts).transform(texts).shape[1]
    rank = min(cfg.tfidf.dims, len(texts) - 1, n_terms - 1)
    return make_pipeline(tfidf, TruncatedSVD(n_components=rank, random_state=seed)).fit(texts)


class SklearnEmbedder(_BatchEmbedder):
    """Ray Data class-based UDF around the fitted fallback pipeline; pads to `dims` columns."""

    def __init__(self, pipeline, dims: int):
        self.pipeline = pipeline
        self.dims = dims

    def embed(self, texts: list[str]) -> np.ndarray:
        reduced = self.pipeline.transform(texts).astype(np.float32)
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        out[:, : reduced.shape[1]] = reduced
        return out


@dataclass(frozen=True)
class EmbedderChoice:
    """Which embedder a run uses and what identifies it in the cache."""

    kind: str  # BERT or TFIDF
    source: str  # model folder, or a description of the fallback
    identity: dict  # hashed into every cache key
    reason: str


def choose_embedder(cfg: EmbedderConfig) -> EmbedderChoice:
    """The BERT when it can be loaded; else the fallback (announced) or an error, per config."""
    folder, reason = resolve_bert(cfg.model)
    if folder is not None:
        identity = {"kind": BERT, "model": model_fingerprint(folder), "pooling": cfg.pooling,
                    "max_length": cfg.max_length}
        return EmbedderChoice(BERT, str(folder), identity, reason)
    if cfg.fallback == "error":
        raise FileNotFoundError(f"cannot load the BERT embedder: {reason} (embedder.fallback is 'error')")
    banner = "=" * 78
    log.warning(
        "\n%s\nNO BERT WEIGHTS: %s.\nUsing the FALLBACK embedder (char %d-%d-gram TF-IDF + TruncatedSVD to %d),"
        " fitted on training firms.\nThese text features are NOT the paper's Chinese-BERT-wwm features."
        "\nGive a local BERT folder with --embedder PATH to use the real model.\n%s",
        banner, reason, cfg.tfidf.ngram_min, cfg.tfidf.ngram_max, cfg.tfidf.dims, banner,
    )
    identity = {"kind": TFIDF, "tfidf": cfg.tfidf.model_dump()}
    return EmbedderChoice(TFIDF, f"char n-gram TF-IDF + TruncatedSVD({cfg.tfidf.dims})", identity, reason)
