"""Three-class metrics (paper Appendix B) and the tuning objective (Appendix C, DESIGN.md section 4).

All metrics are macro averages, so the two rare classes weigh as much as Performing.
A run counts only if its predictions (argmax) cover all three classes; otherwise its
score is the penalty n_predicted_classes / 3 - 1, which lies below every valid score.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.metrics import average_precision_score, f1_score, recall_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from emdlot.schema import CLASSES

NUM_CLASSES = len(CLASSES)


class CompositeWeights(BaseModel):
    """Weights of the composite score; non-negative so every valid score is >= 0 > any penalty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recall: float = Field(0.4, ge=0.0)
    f1: float = Field(0.3, ge=0.0)
    average_precision: float = Field(0.2, ge=0.0)
    auc: float = Field(0.1, ge=0.0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> "CompositeWeights":
        if self.recall + self.f1 + self.average_precision + self.auc <= 0:
            raise ValueError("composite score weights are all zero")
        return self


@dataclass(frozen=True)
class ClassificationMetrics:
    recall: float  # macro recall
    f1: float  # macro F1
    average_precision: float  # mAP: macro average precision, one-vs-rest
    auc: float  # macro ROC AUC, one-vs-rest
    n_predicted_classes: int  # distinct argmax classes among the predictions

    @property
    def ranking(self) -> float:
        """(mAP + macro AUC) / 2: threshold-free, so steadier than argmax-based recall and F1 on a few minority firms."""
        return 0.5 * (self.average_precision + self.auc)

    @property
    def covers_all_classes(self) -> bool:
        return self.n_predicted_classes == NUM_CLASSES

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _check_inputs(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != NUM_CLASSES:
        raise ValueError(f"proba must have shape (n, {NUM_CLASSES}), got {proba.shape}")
    if y_true.shape != (proba.shape[0],):
        raise ValueError(f"y_true has shape {y_true.shape}, expected ({proba.shape[0]},) to match proba")
    if not np.all(np.isfinite(proba)) or np.any(proba < 0):
        bad = int(np.flatnonzero(~np.isfinite(proba).all(axis=1) | (proba < 0).any(axis=1))[0])
        raise ValueError(f"proba row {bad} is not a probability vector: {proba[bad]}")
    unknown = sorted(set(np.unique(y_true).tolist()) - set(range(NUM_CLASSES)))
    if unknown:
        raise ValueError(f"y_true holds labels {unknown}; expected class indices 0..{NUM_CLASSES - 1} ({', '.join(CLASSES)})")
    absent = [CLASSES[c] for c in range(NUM_CLASSES) if not np.any(y_true == c)]
    if absent:
        raise ValueError(f"y_true has no {', '.join(absent)} rows: macro AUC and mAP need every class present")
    # roc_auc_score requires rows summing to one; float32 model outputs are off by ~1e-7.
    return y_true.astype(np.int64), proba / proba.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, predicted: np.ndarray | None = None) -> ClassificationMetrics:
    """Macro recall, F1, mAP and AUC (OvR) of class probabilities `proba` (n, 3) against labels. `predicted`: the
    decided classes where a decision rule on top of the probabilities picks them (a per-class threshold), not their
    argmax; recall, F1 and the classes predicted are then read from it, mAP and AUC from `proba` as always."""
    y_true, proba = _check_inputs(y_true, proba)
    labels = list(range(NUM_CLASSES))
    if predicted is None:
        predicted = proba.argmax(axis=1)
    elif np.shape(predicted) != y_true.shape or not np.isin(predicted, labels).all():
        raise ValueError(f"predicted must hold one class index 0..{NUM_CLASSES - 1} per row ({len(y_true)}), got shape {np.shape(predicted)}")
    return ClassificationMetrics(
        recall=float(recall_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        f1=float(f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        average_precision=float(average_precision_score(label_binarize(y_true, classes=labels), proba, average="macro")),
        auc=float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)),
        n_predicted_classes=int(np.unique(predicted).size),
    )


def three_class_penalty(n_predicted_classes: int) -> float:
    """Score of a run that does not predict every class: -2/3 for one class, -1/3 for two."""
    return n_predicted_classes / NUM_CLASSES - 1.0


def composite_score(metrics: ClassificationMetrics, weights: CompositeWeights = CompositeWeights()) -> float:
    """The tuning and early-stopping objective: weighted metrics if valid, else the penalty."""
    if not metrics.covers_all_classes:
        return three_class_penalty(metrics.n_predicted_classes)
    return (
        weights.recall * metrics.recall
        + weights.f1 * metrics.f1
        + weights.average_precision * metrics.average_precision
        + weights.auc * metrics.auc
    )
