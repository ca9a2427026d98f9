"""A hybrid of EMDLOT and a boosted tree: their class probabilities blended, the weight chosen on held-out folds.

On the summary statistics a boosted tree decides better than EMDLOT (higher recall and F1 in every quality
round), while EMDLOT ranks better (higher AUC). Two models that err differently average into one that can beat
both, so the hybrid is

    p(w) = w p_EMDLOT + (1 - w) p_tree,          w in W = {0, 0.1, ..., 1}
    w    = argmax_{w in W} ranking(y, p_held-out(w)),   ranking = (mAP + macro AUC) / 2,   ties to the larger w

with both models' held-out predictions from the same cross-validation folds inside the training + validation
firms (each fold's tree fitted on the same SMOTE'd fold-training firms as EMDLOT's fold fit), never the test
firms. The weight is chosen by ranking, not by the composite: it mixes two rankings, and argmax-based recall and
F1 move in steps on a few dozen minority firms. The decision is then the prior shift's job, fitted on the blended
held-out predictions and kept only where its nested check finds that it carries (emdlot.training.calibration):

    p_hybrid = p'(p(w), b),     b = the checked shift of p_held-out(w)

w = 1 is EMDLOT alone with its shift; w = 0 is the tree alone with its shift. Fitting w is noisy on a few dozen
held-out minority firms: in quality round 17 it swung from 0 to 1 between splits and scored below equal weights
(w = 0.5, the forecast-combination default), so `fit_blend` also takes a fixed w, which a package's hybrid uses
unless told otherwise (TrainConfig.ensemble_weight). A seed ensemble blends its
members' mean probability (held-out and test alike). This is a hybrid and is reported as one: where it wins, the
tree is part of why.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emdlot.evaluation.metrics import CompositeWeights, classification_metrics
from emdlot.training.calibration import GRID, ShiftCheck, apply_prior_shift, check_prior_shift

WEIGHTS = np.round(np.arange(0.0, 1.0 + 1e-9, 0.1), 1)


def blend(emdlot_proba: np.ndarray, tree_proba: np.ndarray, weight: float) -> np.ndarray:
    """p(w) = w p_EMDLOT + (1 - w) p_tree, row by row."""
    emdlot_proba, tree_proba = np.asarray(emdlot_proba, dtype=np.float64), np.asarray(tree_proba, dtype=np.float64)
    if emdlot_proba.shape != tree_proba.shape:
        raise ValueError(f"a blend needs both models' probabilities of the same firms; got {emdlot_proba.shape} and {tree_proba.shape}")
    return weight * emdlot_proba + (1.0 - weight) * tree_proba


def ranking(y: np.ndarray, proba: np.ndarray) -> float:
    """`ClassificationMetrics.ranking` of the predictions: what the blend weight maximises (and early stopping's
    "ranking" rule)."""
    return classification_metrics(y, proba).ranking


def fit_blend_weight(y: np.ndarray, emdlot_proba: np.ndarray, tree_proba: np.ndarray,
                     candidates: np.ndarray = WEIGHTS) -> float:
    """w in `candidates` maximising `ranking` of the blended held-out predictions; ties to the larger w."""
    scores = [ranking(y, blend(emdlot_proba, tree_proba, w)) for w in candidates]
    best = max(scores)
    return float(max(w for w, s in zip(candidates, scores) if s >= best - 1e-12))


@dataclass
class Blend:
    """A fitted hybrid: the weight on EMDLOT and the checked prior shift of the blended predictions."""

    weight: float
    check: ShiftCheck

    def apply(self, emdlot_proba: np.ndarray, tree_proba: np.ndarray, checked: bool = True) -> np.ndarray:
        """p_hybrid of new firms; `checked=False` applies the fitted shift even where its check dropped it."""
        shift = self.check.shift if checked else np.asarray(self.check.fitted)
        return apply_prior_shift(blend(emdlot_proba, tree_proba, self.weight), shift)

    def as_dict(self) -> dict:
        return {"weight": self.weight, "prior_shift": self.check.shift.tolist(), "prior_shift_check": asdict(self.check)}


def fit_blend(y: np.ndarray, fold: np.ndarray, emdlot_proba: np.ndarray, tree_proba: np.ndarray,
              weights: CompositeWeights = CompositeWeights(), weight: float | None = None,
              grid: np.ndarray = GRID) -> Blend:
    """The hybrid fitted on both models' held-out fold predictions (`fold`: each firm's fold); `weight` fixes w
    instead of choosing it."""
    w = fit_blend_weight(y, emdlot_proba, tree_proba) if weight is None else float(weight)
    return Blend(weight=w, check=check_prior_shift(y, blend(emdlot_proba, tree_proba, w), fold, weights, grid))
