"""benchmarks/held_out_ranking.py: the ranking levers it compares, and that a round's other recipe stays out."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
ranking = importlib.import_module("held_out_ranking")
decisions = importlib.import_module("held_out_decisions")


def test_the_geometric_blend_is_the_renormalised_weighted_product_of_the_two_models():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet([3, 1, 1], 20), rng.dirichlet([1, 2, 2], 20)
    root = np.sqrt(a * b)
    np.testing.assert_allclose(ranking.geometric(a, b, 0.5), root / root.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(ranking.geometric(a, b, 1.0), a, rtol=1e-9)
    assert not np.allclose(ranking.geometric(a, b, 0.5), ranking.blend(a, b, 0.5))


def _runs(recipe: str, rng: np.random.Generator, y: np.ndarray, fold: np.ndarray) -> list[dict]:
    tree = rng.dirichlet([4, 1, 1], len(y))
    return [{"model": f"EMDLOT {recipe} [quantile scaling]", "split": 7, "seed": seed,
             "held_out": {"y": y, "fold": fold, "tree": tree, "proba": rng.dirichlet([4, 1, 1], len(y))}}
            for seed in (86, 127)]


def test_a_round_with_two_recipes_on_the_same_splits_and_seeds_is_read_one_recipe_at_a_time(monkeypatch):
    monkeypatch.setattr(decisions, "GRID", np.arange(-1.0, 1.5, 1.0))  # the full grid's search is slow and beside the point
    rng = np.random.default_rng(1)
    y = np.tile(np.repeat([0, 1, 2], [20, 5, 5]), 3)
    fold = np.repeat([0, 1, 2], 30)
    mine, other = _runs("deep_shift", rng, y, fold), _runs("deep_shift_weighted", rng, y, fold)

    alone = ranking.lever_rows(mine, "deep_shift")
    assert ranking.lever_rows(other + mine, "deep_shift") == alone == ranking.lever_rows(mine + other, "deep_shift")
    assert ranking.lever_rows(mine + other, "deep_shift_weighted") != alone
    assert {r["lever"] for r in alone} == set(ranking.levers(y, fold, [r["held_out"]["proba"] for r in mine], mine[0]["held_out"]["tree"]))
    expected = ranking.classification_metrics(y, ranking.blend(np.mean([r["held_out"]["proba"] for r in mine], axis=0),
                                                               mine[0]["held_out"]["tree"], 0.5))
    (reference,) = [r for r in alone if r["lever"] == ranking.REFERENCE]
    assert reference["average_precision"] == expected.average_precision and reference["auc"] == expected.auc
    (one,) = [r for r in alone if r["lever"] == "arithmetic, w = 0.5, first 1 seed"]
    first = ranking.classification_metrics(y, ranking.blend(mine[0]["held_out"]["proba"], mine[0]["held_out"]["tree"], 0.5))
    assert one["average_precision"] == first.average_precision != expected.average_precision


@pytest.mark.long  # a benchmark script's test (10 s or more): `pytest -m long` runs it
def test_a_second_tree_is_read_only_where_its_refitted_xgboost_is_the_stored_tree(monkeypatch):
    monkeypatch.setattr(decisions, "GRID", np.arange(-1.0, 1.5, 1.0))
    rng = np.random.default_rng(2)
    y = np.tile(np.repeat([0, 1, 2], [20, 5, 5]), 3)
    fold = np.repeat([0, 1, 2], 30)
    runs = _runs("deep_shift", rng, y, fold)
    stored, lightgbm = runs[0]["held_out"]["tree"], rng.dirichlet([2, 1, 1], len(y))

    rows = ranking.lever_rows(runs, "deep_shift", {7: {"XGBoost": stored.copy(), "LightGBM": lightgbm}})
    emdlot = np.mean([r["held_out"]["proba"] for r in runs], axis=0)
    trees = (stored + lightgbm) / 2
    for lever, proba in {"LightGBM": lightgbm, "two trees": trees,
                         "arithmetic, two trees, w = 0.33": emdlot / 3 + trees * 2 / 3}.items():
        (row,) = [r for r in rows if r["lever"] == lever]
        assert np.isclose(row["average_precision"], ranking.classification_metrics(y, proba).average_precision, rtol=1e-12)
    assert [r for r in rows if r["lever"] in ranking.levers(y, fold, [r["held_out"]["proba"] for r in runs], stored)] == \
        ranking.lever_rows(runs, "deep_shift")
    with pytest.raises(ValueError, match="split 7: the refitted XGBoost differs"):
        ranking.lever_rows(runs, "deep_shift", {7: {"XGBoost": lightgbm, "LightGBM": lightgbm}})


def test_the_stacker_predicts_each_fold_from_the_other_folds_labels_and_learns_which_model_ranks():
    rng = np.random.default_rng(3)
    y = np.tile(np.repeat([0, 1, 2], [40, 10, 10]), 3)
    fold = np.repeat([0, 1, 2], 60)
    informative = np.clip(np.eye(3)[y] * 0.6 + rng.dirichlet([1, 1, 1], len(y)) * 0.4, 1e-3, None)
    noise = rng.dirichlet([4, 1, 1], len(y))
    out = ranking.stacked(y, fold, informative, noise, 1.0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-9)
    relabelled = y.copy()
    relabelled[fold == 0] = rng.permutation(relabelled[fold == 0])  # fold 0's own labels: unread for fold 0
    again = ranking.stacked(relabelled, fold, informative, noise, 1.0)
    np.testing.assert_array_equal(again[fold == 0], out[fold == 0])
    assert not np.allclose(again[fold == 1], out[fold == 1])  # the other folds' fits read them
    # The tree is noise here: learned weights rank better than the equal blend, which half follows the noise.
    learned = ranking.classification_metrics(y, out).average_precision
    equal = ranking.classification_metrics(y, ranking.blend(informative, noise, 0.5)).average_precision
    assert learned > equal
