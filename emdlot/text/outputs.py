"""What a text run leaves behind: the feature table, the extractions, every firm's status,
the fitted text model for prediction (text_pca.skops: the PCAs, the fallback embedder when it ran, and
the settings; read it with emdlot.text.reduce.load_text_model), a summary, and the MLflow run that
records them.

`embed_folder` is the one embed body: the embed flow and the demo both call it (each with its own Ray).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from emdlot import tracking
from emdlot.text.config import EmbedConfig
from emdlot.text.pipeline import TextOutputs, run_text_pipeline
from emdlot.text.reduce import TEXT_MODEL_FILE, save_text_model

log = logging.getLogger(__name__)

FEATURES_FILE = "text_features.parquet"
_OLD_PICKLE = "text_pca.joblib"  # written before text_pca.skops; removed so no stale pickle stays beside it


def save_outputs(result: TextOutputs, cfg: EmbedConfig, out: Path, source: Path) -> dict:
    """Write the run's files to `out`; returns the summary also written as embed_summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    result.features.to_parquet(out / FEATURES_FILE, index=False)
    result.extractions.to_parquet(out / "extractions.parquet", index=False)
    result.firms.to_parquet(out / "text_status.parquet", index=False)
    save_text_model(out / TEXT_MODEL_FILE, result.pca, result.fallback_model,
                    {"embedder_kind": result.embedder.kind, "embedder_source": result.embedder.source,
                     "config": cfg.model_dump(mode="json")})
    if (out / _OLD_PICKLE).exists():
        (out / _OLD_PICKLE).unlink()
        log.info("removed the stale %s of an earlier run (the text model is now %s)", _OLD_PICKLE, TEXT_MODEL_FILE)
    summary = {"input": str(source), "embedder": result.embedder.kind, "embedder_source": result.embedder.source,
               "embedder_reason": result.embedder.reason, **result.stats}
    (out / "embed_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=float))
    return summary


def embed_folder(prospectus: pd.DataFrame, split: pd.DataFrame, cfg: EmbedConfig, out: Path, source: Path,
                 cache_dir: Path | None = None, uri: str | None = None) -> TextOutputs:
    """Run the text pipeline on a Ray the caller started, write the outputs to `out`, and record it all in
    one MLflow run that opens before the work starts (so a failure is on record as FAILED).
    The cache defaults to cfg.cache_dir, else OUT/cache."""
    out = Path(out).resolve()
    cache_dir = Path(cache_dir or cfg.cache_dir or out / "cache").resolve()
    with tracking.mlflow_run(cfg.experiment, run_name=f"embed-{cfg.extract.backend}", tags={"flow": "embed"}, uri=uri):
        tracking.log_params(cfg.model_dump())
        tracking.log_params({"input_path": str(Path(source).resolve()), "output_dir": str(out), "cache_path": str(cache_dir)})
        result = run_text_pipeline(prospectus, split, cfg, cache_dir)
        save_outputs(result, cfg, out, source)
        log_run(result, cfg, out)
    return result


def log_run(result: TextOutputs, cfg: EmbedConfig, out: Path) -> None:
    """Into the active MLflow run: what really ran (the embedder used, which may be the fallback),
    per-stage throughput and PCA variance, the PCA and samples."""
    tracking.mlflow.set_tag("embedder", result.embedder.kind)
    tracking.log_params({"embedder_kind": result.embedder.kind, "embedder_source": result.embedder.source})
    tracking.log_metrics(result.stats)
    tracking.log_files(out / TEXT_MODEL_FILE, out / "embed_summary.json", artifact_path="text")
    tracking.log_table(result.extractions.head(cfg.sample_extractions), "text", "extractions_sample.csv")
    tracking.log_table(result.firms, "text", "text_status.csv")


def describe(result: TextOutputs, out: Path) -> str:
    """One line for the console."""
    variance = result.stats["pca_explained_variance_total"]
    return (f"{len(result.features)} firms with text features -> {out / FEATURES_FILE}; "
            f"embedder={result.embedder.kind}; PCA explained variance {variance:.4f}; "
            f"{result.stats['firms_no_text']} firms without text (see text_status.parquet)")
