"""Log one run's result to the active MLflow run: what ran, on which data, how it learned, how it scored,
what it attended to, and its weights (safetensors, no pickle)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from emdlot import tracking
from emdlot.data.arrays import SequenceArrays
from emdlot.data.assemble import META_FILE, read_meta
from emdlot.evaluation import explain
from emdlot.evaluation.metrics import classification_metrics
from emdlot.runs.single import RunResult


def dataset_lineage(dataset: str | Path, text_features: str | Path | None, parts: dict[str, SequenceArrays]) -> dict:
    """Where the arrays came from: the dataset folder, its input hashes, the cutoff protocol, split counts
    and the text features used (with how many firms had any)."""
    dataset = Path(dataset).resolve()
    meta = read_meta(dataset)
    lineage = {"dataset": str(dataset), "dataset_meta": str(dataset / META_FILE),
               "performing_cutoff": meta.config.performing_cutoff, "prepare_seed": meta.config.seed,
               "text_features": str(Path(text_features).resolve()) if text_features else "none"}
    lineage |= {f"input_sha256.{name}": digest for name, digest in meta.inputs.items()}
    for name, part in parts.items():
        lineage[f"firms.{name}"] = int(len(part))
        lineage[f"firms_with_text.{name}"] = int(part.text_mask.any(axis=1).sum())
        lineage[f"class_counts.{name}"] = np.bincount(part.y, minlength=3).tolist()
    return lineage


def log_result(result: RunResult, lineage: dict, feature_names: list[str], test: SequenceArrays | None = None) -> None:
    """Parameters, per-epoch curves, final metrics, explanation tables and weights of one run."""
    tracking.log_params(result.config.model_dump() | {"seed": result.seed})
    tracking.log_params(lineage, prefix="data.")
    for record in result.history.epochs:
        tracking.mlflow.log_metrics({"val_score": record.val_score, "stop_score": record.stop_score,
                                     "train_loss": record.train_loss, "epoch_seconds": record.seconds}, step=record.epoch)
    tracking.log_metrics(result.summary())
    if result.test_interpretation is not None and test is not None:
        interp = result.test_interpretation
        tracking.log_table(explain.modality_weights(interp, test.y), "explanations", "modality_weights.csv")
        tracking.log_table(explain.chapter_weights(interp, test.y, test.text_mask), "explanations", "chapter_weights.csv")
        tracking.log_table(explain.feature_importance(interp, test.mask, feature_names), "explanations", "feature_importance.csv")
    with tempfile.TemporaryDirectory() as tmp:  # one file per fold model where those predict
        names = [f"emdlot-fold{i}.safetensors" for i in range(1, len(result.fold_models) + 1)] or ["emdlot.safetensors"]
        for name, model in zip(names, result.members):
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(tmp) / name))
        tracking.log_files(*(Path(tmp) / name for name in names), artifact_path="model")


def log_outcome(outcome, lineage: dict, feature_names: list[str], test: SequenceArrays) -> None:
    """One protocol run (emdlot.runs.protocol.Outcome) as a nested run: FAILED with its error, or its test
    metrics (and, for EMDLOT and its ablations, everything `log_result` records)."""
    tags = {"model": outcome.model, "kind": outcome.kind, "split": str(outcome.split), "seed": str(outcome.seed),
            "seed_rank": str(outcome.seed_rank), "paper_seed": str(outcome.seed_rank < 10)}
    with tracking.child_run(f"{outcome.model}-split{outcome.split}-seed{outcome.seed}", tags, outcome.error):
        if outcome.result is not None:
            log_result(outcome.result, lineage, feature_names, test)  # test metrics included
        else:
            tracking.log_params({"model": outcome.model, "seed": outcome.seed})
            tracking.log_params(lineage, prefix="data.")
            if outcome.proba is not None:
                tracking.log_metrics({f"test_{k}": v for k, v in classification_metrics(test.y, outcome.proba).as_dict().items()})
        tracking.log_metrics({"valid": float(outcome.valid), "seconds": outcome.seconds})
