"""benchmarks/held_out_decisions.py: a decision layer is scored on each fold's firms with a fit that never read
their labels, so the comparison is development on held-out folds, not a look at the answers."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
decisions = importlib.import_module("held_out_decisions")


@pytest.mark.parametrize("layer", ["shift", "vector scaling"])
def test_a_fold_is_decided_by_a_fit_on_the_other_folds_alone(layer, monkeypatch):
    monkeypatch.setattr(decisions, "GRID", np.arange(-3.0, 3.5, 1.0))  # the full grid's search is slow and beside the point
    rng = np.random.default_rng(3)
    y = np.tile(np.repeat([0, 1, 2], [20, 5, 5]), 3)
    fold = np.repeat([0, 1, 2], 30)
    proba = rng.dirichlet([4, 1, 1], len(y))
    proba[np.arange(len(y)), y] += 0.3  # some signal, so the fits differ when the labels do
    proba /= proba.sum(axis=1, keepdims=True)
    before = decisions.cross_fitted(y, fold, proba, layer)

    inside = fold == 0
    shuffled = y.copy()
    shuffled[inside] = rng.permutation(y[inside])
    np.testing.assert_array_equal(decisions.cross_fitted(shuffled, fold, proba, layer)[inside], before[inside])

    flipped = y.copy()
    flipped[fold == 1] = np.where(y[fold == 1] == 0, 1, 0)  # the other folds' labels do move fold 0's decision
    assert not np.allclose(decisions.cross_fitted(flipped, fold, proba, layer)[inside], before[inside])
