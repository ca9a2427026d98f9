"""Train one EMDLOT model on a prepared dataset's arrays and score it.

Validation is always scored (it is what early stopping and tuning look at); the test firms are
scored only when the caller asks, once, at the end of a final run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from emdlot.data.arrays import SequenceArrays
from emdlot.evaluation.metrics import ClassificationMetrics, classification_metrics, composite_score
from emdlot.model.batch import to_batch
from emdlot.model.emdlot import EMDLOT, Interpretation
from emdlot.training.config import EMDLOTConfig
from emdlot.training.loop import EpochRecord, History, fit, interpret, predict_proba


@dataclass
class RunResult:
    config: EMDLOTConfig
    seed: int
    model: EMDLOT
    history: History
    val_metrics: ClassificationMetrics
    val_score: float  # composite objective on the validation firms (with the three-class penalty)
    test_metrics: ClassificationMetrics | None = None
    test_score: float | None = None
    test_proba: np.ndarray | None = None  # (N_test, 3)
    test_interpretation: Interpretation | None = None

    def summary(self) -> dict[str, float]:
        """Flat numbers for a log line or an MLflow run."""
        out = {f"val_{k}": v for k, v in self.val_metrics.as_dict().items()} | {
            "val_composite": self.val_score, "best_epoch": self.history.best_epoch,
            "epochs": len(self.history.epochs), "wall_time_s": self.history.wall_time_s}
        if self.test_metrics is not None:
            out |= {f"test_{k}": v for k, v in self.test_metrics.as_dict().items()} | {"test_composite": self.test_score}
        return out


def score(model: EMDLOT, arrays: SequenceArrays, config: EMDLOTConfig) -> tuple[ClassificationMetrics, float, np.ndarray]:
    """Metrics, composite score and class probabilities of a fitted model on labelled firms."""
    proba = predict_proba(model, to_batch(arrays, device=config.train.device), config.train.eval_batch_size)
    metrics = classification_metrics(arrays.y, proba)
    return metrics, composite_score(metrics, config.train.score_weights), proba


def train_and_score(parts: dict[str, SequenceArrays], config: EMDLOTConfig, seed: int, score_test: bool = False,
                    on_epoch: Callable[[EpochRecord], None] | None = None) -> RunResult:
    """Fit on parts["train"], early-stop on parts["val"]; score validation, and the test firms if asked.

    With `train.refit_on_val`, a second model (same seed) then trains on parts["train_val"] for the best
    epoch count and replaces the first; the validation numbers stay those of the early-stopped model
    (the refit has seen the validation firms)."""
    fitted = fit(parts["train"], parts["val"], config, seed, on_epoch=on_epoch)
    best = fitted.history.epochs[fitted.history.best_epoch - 1]  # the restored weights were scored then
    val_metrics, val_score = ClassificationMetrics(**best.val_metrics), best.val_score
    if config.train.refit_on_val:
        if "train_val" not in parts:
            raise ValueError("refit_on_val needs parts['train_val']: assemble(..., with_train_val=True)")
        refit = fit(parts["train_val"], parts["val"], config, seed, epochs=fitted.history.best_epoch)
        fitted.model, fitted.history.refit = refit.model, refit.history
    result = RunResult(config=config, seed=seed, model=fitted.model, history=fitted.history,
                       val_metrics=val_metrics, val_score=val_score)
    if score_test:
        test = parts["test"]
        result.test_metrics, result.test_score, result.test_proba = score(fitted.model, test, config)
        result.test_interpretation = interpret(fitted.model, test, config.train.eval_batch_size, config.train.device)
    return result
