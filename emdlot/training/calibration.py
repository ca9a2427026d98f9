"""A per-class shift of a classifier's log-probabilities, chosen on out-of-fold predictions.

A model trained on SMOTE-balanced firms can rank well and still decide badly: on firms it has not seen,
its minority probabilities come out too low (it learnt SMOTE's copies of a few firms too well), so the
argmax rarely names Extended or Defaulted. The shift moves the decision:

    log p'_c = log p_c + b_c - log sum_k p_k exp(b_k),      b_0 = 0 (Performing is the reference)

b is chosen on predictions for firms each model did not train on (the cross-validation folds inside the
training + validation firms, never the test firms) to maximise the tuning objective itself (DESIGN.md
section 4: 0.4 recall + 0.3 F1 + 0.2 mAP + 0.1 AUC, or the three-class penalty):

    b = argmax_{b in G x G} composite(y, p'(b)),   G = {-4, -3.5, ..., 4}, ties to the smallest |b|

A grid, because recall and F1 are step functions of b (no gradient), and coarse: two numbers fitted on a
few dozen minority firms. The objective keeps mAP and AUC in: a shift that bought recall by scrambling the
ranking would score lower. A likelihood fit is not used: on the folds a tree gives some minority firms
probabilities near zero, and a class-balanced log-loss then asks for shifts of e^6 and more that wreck F1
(benchmarks/prior_shift.py).

A shift fitted on a few dozen minority firms may not carry to firms it did not see (its fits on different
folds can even disagree in sign), so it is checked first, on the same held-out predictions, nested: fold k's
firms are shifted by b^(-k), fitted on the other folds' firms alone, and the shift is kept only where that
beats no shift,

    keep b  iff  composite(y, p'_i(b^(-k(i)))) > composite(y, p),      else b = 0

(one pooled score over every held-out firm; k(i) is firm i's fold). No test firm enters either fit.

A seed ensemble scores with its members' mean probability. Shifting each member and then averaging undoes much
of each member's shift (quality round 15), so an ensemble can instead be shifted once, on the mean of its
members' unshifted held-out predictions (the folds are the dataset's, the same firms for every seed):

    b_ens = the checked shift of (1/M) sum_m p^(m)_held-out,      p_ens = p'((1/M) sum_m p^(m), b_ens)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emdlot.evaluation.metrics import CompositeWeights, classification_metrics, composite_score

GRID = np.arange(-4.0, 4.0 + 1e-9, 0.5)


def apply_prior_shift(proba: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """p' = p exp(b) / sum_k p_k exp(b_k), row by row (what EMDLOT's `prior_shift` buffer does in torch)."""
    shifted = np.asarray(proba, dtype=np.float64) * np.exp(np.asarray(shift, dtype=np.float64))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fit_prior_shift(y: np.ndarray, proba: np.ndarray, weights: CompositeWeights = CompositeWeights(),
                    grid: np.ndarray = GRID) -> np.ndarray:
    """b (3,) with b[0] = 0 maximising the composite score of `apply_prior_shift(proba, b)` against `y`."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    counts = np.bincount(y, minlength=3)
    if proba.shape != (len(y), 3) or np.any(counts == 0):
        raise ValueError(f"a prior shift needs out-of-fold probabilities (n, 3) of firms of every class; "
                         f"got {proba.shape} for {len(y)} labels with class counts {counts.tolist()}")
    candidates = sorted((np.array([0.0, b1, b2]) for b1 in grid for b2 in grid), key=lambda b: float(b @ b))
    best, best_score = candidates[0], -np.inf
    for shift in candidates:  # nearest to no shift first: a later one must score strictly higher
        score = composite_score(classification_metrics(y, apply_prior_shift(proba, shift)), weights)
        if score > best_score + 1e-12:
            best, best_score = shift, score
    return best


@dataclass
class ShiftCheck:
    """A shift fitted on every fold's held-out predictions, and whether shifts fitted without a fold carry to it."""

    fitted: list[float]  # b, from every held-out firm
    fold_shifts: list[list[float]]  # b^(-k), from the firms outside fold k, for each fold k in order
    nested_none: float  # the composite of the held-out predictions as they are
    nested_shift: float  # the composite with each fold's firms shifted by its b^(-k)

    @property
    def carries(self) -> bool:
        return self.nested_shift > self.nested_none

    @property
    def shift(self) -> np.ndarray:
        """The shift to apply: b where it carries, else none."""
        return np.asarray(self.fitted) if self.carries else np.zeros(3)


def check_prior_shift(y: np.ndarray, proba: np.ndarray, fold: np.ndarray,
                      weights: CompositeWeights = CompositeWeights(), grid: np.ndarray = GRID) -> ShiftCheck:
    """`fit_prior_shift` on held-out predictions from cross-validation, with the nested check above (`fold`:
    each firm's fold)."""
    y, proba, fold = np.asarray(y, dtype=np.int64), np.asarray(proba, dtype=np.float64), np.asarray(fold)
    if len(fold) != len(y) or len(np.unique(fold)) < 2:
        raise ValueError(f"a nested check of the prior shift needs the fold of each of the {len(y)} firms, "
                         f"from at least 2 folds; got {len(fold)} fold ids of {len(np.unique(fold))} folds")
    nested, fold_shifts = proba.copy(), []
    for k in np.unique(fold):
        inside = fold == k
        shift = fit_prior_shift(y[~inside], proba[~inside], weights, grid)
        nested[inside] = apply_prior_shift(proba[inside], shift)
        fold_shifts.append(shift.tolist())
    return ShiftCheck(fitted=fit_prior_shift(y, proba, weights, grid).tolist(), fold_shifts=fold_shifts,
                      nested_none=composite_score(classification_metrics(y, proba), weights),
                      nested_shift=composite_score(classification_metrics(y, nested), weights))


def fold_labels(held_out: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The labels of each fold's held-out firms, one after another, and each firm's fold (0, 1, ...)."""
    return np.concatenate(held_out), np.concatenate([np.full(len(y), k) for k, y in enumerate(held_out)])


def ensemble_prior_shift(y: np.ndarray, fold: np.ndarray, member_proba: list[np.ndarray],
                         weights: CompositeWeights = CompositeWeights(), grid: np.ndarray = GRID) -> ShiftCheck:
    """The checked shift of a seed ensemble: `check_prior_shift` on its members' mean held-out prediction."""
    return check_prior_shift(y, np.mean(np.asarray(member_proba, dtype=np.float64), axis=0), fold, weights, grid)
