"""benchmarks/held_out_training.py: a training candidate is compared with a stored round's recipe on the same
held-out firms only; a candidate fitted on other firms, or stored seeds that disagree, are refused."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
decisions = importlib.import_module("held_out_decisions")
training = importlib.import_module("held_out_training")


def stored_runs(seeds=(86, 127), splits=(125, 134)) -> list[dict]:
    """Runs as quality.read_predictions gives them: per split and seed, its held-out folds."""
    rng = np.random.default_rng(0)
    y = np.tile(np.repeat([0, 1, 2], [20, 5, 5]), 3)
    fold = np.repeat([0, 1, 2], 30)
    runs = []
    for split in splits:
        tree = rng.dirichlet([4, 1, 1], len(y))
        for seed in seeds:
            proba = rng.dirichlet([4, 1, 1], len(y))
            proba[np.arange(len(y)), y] += 0.2
            runs.append({"model": "EMDLOT r", "variant": "r", "split": split, "seed": seed,
                         "held_out": {"y": y, "fold": fold, "proba": proba / proba.sum(axis=1, keepdims=True), "tree": tree}})
    return runs


@pytest.fixture(autouse=True)
def coarse_grid(monkeypatch):
    monkeypatch.setattr(decisions, "GRID", np.arange(-2.0, 2.5, 1.0))  # the full grid's search is slow and beside the point


@pytest.mark.long  # a benchmark script's test (10 s or more): `pytest -m long` runs it
def test_the_stored_recipe_against_itself_differs_by_nothing_and_a_surer_minority_gains_recall():
    runs = stored_runs()
    variant, stored = training.stored_recipe(runs, [86])
    assert variant == "r" and sorted(stored) == [125, 134] and list(stored[125]["seeds"]) == [86]
    same = {"same": {s: [{"y": e["y"], "fold": e["fold"], "proba": e["seeds"][86], "best_epoch": 3}] for s, e in stored.items()}}
    table = training.compare(stored, same)["same"]
    assert all(table[row][m]["difference"] == 0.0 for row in table for m in training.METRICS)
    # a candidate that gives each true minority firm more probability is found better on recall, on the same firms
    surer = {}
    for s, e in stored.items():
        p = e["seeds"][86].copy()
        minority = e["y"] > 0
        p[minority, e["y"][minority]] += 1.0
        surer[s] = [{"y": e["y"], "fold": e["fold"], "proba": p / p.sum(axis=1, keepdims=True), "best_epoch": 3}]
    row = training.compare(stored, {"surer": surer})["surer"]["alone, none"]
    assert row["recall"]["difference"] > 0 and row["recall"]["up"] == 2
    # the seed average is over the named seeds only
    _, both = training.stored_recipe(runs, [86, 127])
    assert sorted(both[125]["seeds"]) == [86, 127]


def test_a_candidate_on_other_firms_or_seeds_that_disagree_are_refused():
    runs = stored_runs()
    _, stored = training.stored_recipe(runs, [86])
    e = stored[125]
    moved = {125: [{"y": np.roll(e["y"], 1), "fold": e["fold"], "proba": e["seeds"][86], "best_epoch": 3}]}
    with pytest.raises(ValueError, match="not the stored round's"):
        training.compare(stored, {"moved": moved})
    runs[1]["held_out"] = runs[1]["held_out"] | {"fold": np.roll(runs[1]["held_out"]["fold"], 1)}
    with pytest.raises(ValueError, match="differ from another seed's"):
        training.stored_recipe(runs, [86, 127])
    with pytest.raises(ValueError, match="asked for"):
        training.stored_recipe(stored_runs(seeds=(86,)), [86, 127])
