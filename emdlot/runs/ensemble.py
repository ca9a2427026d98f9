"""A seed ensemble's one prediction (TrainConfig.ensemble): its members' mean probability, or a decision layer
fitted on their held-out fold predictions.

    "average":  p = (1/M) sum_m p_m                        each member as fitted (its own prior shift included)
    "shift":    p = p'(p_bar, b)                           b: the checked shift of the members' mean held-out prediction
    "hybrid":   p = p'(w p_bar + (1 - w) p_XGB, b)         b from the same held-out folds; w = train.ensemble_weight
                                                          (0.5), or None: chosen on those folds by ranking

p_bar is the mean of the members' unshifted probabilities. The rules are emdlot.training.calibration's and
emdlot.training.blend's. The held-out predictions are the runs' own (`History.held_out_proba`; the folds are the
dataset's, the same firms for every seed). The tree is the comparison's XGBoost on sequence summaries
(emdlot.training.baselines), fitted on the training + validation firms that the members' refit learns from, and on
each fold's training firms for its held-out predictions, always SMOTE'd 1:1:1 as the yardstick's are (members that
weigh classes instead learn from the real firms; the tree's held-out firms are the same). No test firm enters a fit.

A package keeps it as ensemble.json, and the tree as ensemble_tree.json (XGBoost's own JSON model format, no pickle).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emdlot.data.arrays import SequenceArrays
from emdlot.schema import CLASSES
from emdlot.runs.single import RunResult, held_out_labels
from emdlot.training.baselines import TREE_BASELINES, fit_model, held_out_fits, predict_proba
from emdlot.training.blend import Blend, fit_blend
from emdlot.training.calibration import ShiftCheck, apply_prior_shift, ensemble_prior_shift
from emdlot.training.config import EMDLOTConfig

ENSEMBLE_FILE = "ensemble.json"
TREE_FILE = "ensemble_tree.json"
TREE = "XGBoost"


def unshifted_test_proba(run: RunResult) -> np.ndarray:
    """A run's test probabilities without its own prior shift: its fold models' unshifted mean where those predict,
    else the shift's inverse (unchanged without one)."""
    if run.fold_models:
        return run.test_cross_fit_proba
    shift = run.history.prior_shift
    return run.test_proba if shift is None else apply_prior_shift(run.test_proba, -np.asarray(shift))


def fit_tree(parts: dict[str, SequenceArrays], folds: int, seed: int) -> tuple[np.ndarray, Any, list]:
    """The hybrid's XGBoost: its predictions of each fold's held-out firms from its fit on that fold's training firms,
    its fit on "train_val", and the fold fits. It refuses training parts that are not SMOTE'd 1:1:1 (a class-weighted
    run's own)."""
    factory, view = TREE_BASELINES[TREE]
    for name in [f"cv{i}_train" for i in range(1, folds + 1)] + ["train_val"]:
        counts = np.bincount(parts[name].y, minlength=len(CLASSES))
        if len(set(counts.tolist())) > 1:
            raise ValueError(f"the hybrid's tree learns from SMOTE'd firms, as the comparison's trees do; {name} has "
                             f"{dict(zip(CLASSES, counts.tolist()))} (pass assemble_for(..., balance=True)'s parts)")
    held_out, fold_trees = held_out_fits(factory, view, [(parts[f"cv{i}_train"], parts[f"cv{i}_val"]) for i in range(1, folds + 1)], seed)
    return held_out, fit_model(factory, view, parts["train_val"], seed), fold_trees


@dataclass
class Ensemble:
    """A fitted decision layer over a seed ensemble's mean unshifted probability."""

    rule: str  # "shift" or "hybrid"
    blend: Blend  # weight 1 (EMDLOT alone) for "shift"
    tree: Any = None  # the fitted XGBClassifier of a "hybrid"

    @classmethod
    def fit(cls, runs: list[RunResult], parts: dict[str, SequenceArrays], config: EMDLOTConfig, seed: int,
            tree_parts: dict[str, SequenceArrays] | None = None) -> "Ensemble":
        """Fit `config.train.ensemble` on the runs' held-out fold predictions; `parts` are the arrays they trained
        on (with the cross-validation folds and "train_val"), `tree_parts` the same firms SMOTE'd 1:1:1 for a
        hybrid's tree (default `parts`, which are those when the runs trained on SMOTE'd firms), `seed` seeds it."""
        rule, folds = config.train.ensemble, config.train.epoch_folds
        lacking = [r.seed for r in runs if r.history.held_out_proba is None]
        if rule == "average" or not runs or lacking:
            raise ValueError(f"an ensemble decision needs train.ensemble 'shift' or 'hybrid' (got {rule!r}) and runs that "
                             f"kept their held-out fold predictions (model.prior_shift); runs without them: seeds {lacking}")
        y, fold = held_out_labels(parts, folds)
        held_out = [r.history.held_out_proba for r in runs]
        if rule == "shift":
            return cls(rule, Blend(1.0, ensemble_prior_shift(y, fold, held_out, config.train.score_weights)))
        tree_parts = parts if tree_parts is None else tree_parts
        if not all(np.array_equal(tree_parts[f"cv{i}_val"].firm_id, parts[f"cv{i}_val"].firm_id) for i in range(1, folds + 1)):
            raise ValueError("the hybrid's tree must be scored on the members' held-out folds: tree_parts' folds hold other firms")
        tree_held_out, tree, _ = fit_tree(tree_parts, folds, seed)
        return cls(rule, fit_blend(y, fold, np.mean(held_out, axis=0), tree_held_out, config.train.score_weights,
                                   config.train.ensemble_weight), tree)

    def predict(self, members: np.ndarray, arrays: SequenceArrays) -> np.ndarray:
        """The ensemble's probabilities of `arrays`' firms from `members`, their members' mean unshifted probability."""
        tree = members if self.tree is None else predict_proba(self.tree, TREE_BASELINES[TREE][1], arrays)
        return self.blend.apply(members, tree)

    def describe(self) -> str:
        b = self.blend.check.shift
        return (f"{self.rule}: weight {self.blend.weight:.1f} on EMDLOT, prior shift ({b[1]:+.1f}, {b[2]:+.1f})"
                f"{'' if self.blend.check.carries else ' (dropped by its check)'}")

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        (folder / ENSEMBLE_FILE).write_text(json.dumps({"rule": self.rule, **self.blend.as_dict()}, indent=1), encoding="utf-8")
        if self.tree is not None:
            self.tree.save_model(folder / TREE_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> "Ensemble | None":
        """The decision layer saved in `folder`, or None where there is none (an "average" package)."""
        folder = Path(folder)
        if not (folder / ENSEMBLE_FILE).exists():
            return None
        body = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        tree = None
        if body["rule"] == "hybrid":
            from xgboost import XGBClassifier

            tree = XGBClassifier()
            tree.load_model(folder / TREE_FILE)
        return cls(body["rule"], Blend(body["weight"], ShiftCheck(**body["prior_shift_check"])), tree)
