"""benchmarks/quality.py --merge: a round run in parts pools to what one run over all its splits would give, and a
paired difference is taken split by split (each model's seeds on a split averaged first)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("benchmarks_quality", Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)

METRICS = ("recall", "f1", "average_precision", "auc")


def _runs(model_seed: int, splits, seeds) -> list[dict]:
    rng = np.random.default_rng(model_seed)
    return [{"split": s, "seed": seed, **{m: float(rng.uniform(0.3, 0.9)) for m in METRICS}, "n_predicted_classes": 3}
            for s in splits for seed in seeds]


def _write(path: Path, splits, runs: dict[str, list[dict]]) -> str:
    results = {model: {"runs": [r for r in rs if r["split"] in splits]} for model, rs in runs.items()}
    path.write_text(json.dumps({"setup": {"splits": list(splits)}, "results": {"matched": results}}))
    return str(path)


def test_a_round_run_in_two_parts_merges_to_the_whole_and_pairs_by_split(tmp_path):
    runs = {"EMDLOT": _runs(1, [1, 2, 3, 4], [86, 127]), "XGBoost": _runs(2, [1, 2, 3, 4], [1])}
    whole = quality.merge_results([_write(tmp_path / "all.json", [1, 2, 3, 4], runs)])
    parts = quality.merge_results([_write(tmp_path / "a.json", [1, 2], runs), _write(tmp_path / "b.json", [3, 4], runs)])
    for model in runs:
        for m in METRICS:
            assert parts["matched"][model][m] == pytest.approx(whole["matched"][model][m])
        assert parts["matched"][model]["valid_runs"] == {"count": len(runs[model]), "of": len(runs[model])}
    with pytest.raises(ValueError, match=r"splits \[1, 2\] in an earlier file"):
        quality.merge_results([tmp_path / "a.json", tmp_path / "all.json"])

    pair = quality.paired(parts["matched"], "EMDLOT", "XGBoost")
    for m in METRICS:
        diffs = [np.mean([r[m] for r in runs["EMDLOT"] if r["split"] == s]) - next(r[m] for r in runs["XGBoost"] if r["split"] == s)
                 for s in [1, 2, 3, 4]]
        assert pair[m]["diff"] == pytest.approx(np.mean(diffs))
        assert (pair[m]["above"], pair[m]["below"]) == (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))
        assert pair[m]["ci_low"] <= pair[m]["diff"] <= pair[m]["ci_high"]
    assert pair["splits"] == [1, 2, 3, 4]
    weights = {"recall": 0.4, "f1": 0.3, "average_precision": 0.2, "auc": 0.1}  # DESIGN.md section 4's composite
    assert pair["composite"]["diff"] == pytest.approx(sum(w * pair[m]["diff"] for m, w in weights.items()))
    assert "| composite |" in quality.paired_markdown([pair])


def _shift_runs(seeds, n_test=30) -> list[dict]:
    """Two seeds' stored shift runs of one split, plus a tree baseline: minority firms' own-class probability 0.005
    (the majority's 0.0005), so only a shift past e^5.3 names them, beyond GRID's edge of 4."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [60, 12, 12])
    fold = np.tile([0, 1, 2], len(y) // 3)

    def proba(labels):
        p = np.full((len(labels), 3), 0.0005)
        p[np.arange(len(labels)), labels] = 0.005
        p[:, 0] = 1 - p[:, 1:].sum(axis=1)
        return p * rng.uniform(0.9, 1.1, p.shape)

    y_test = np.repeat([0, 1, 2], [n_test - 8, 4, 4])
    tree, tree_test = proba(y), proba(y_test)
    tree_folds = proba(np.roll(y_test, 9))  # the tree's fold fits rank the test firms otherwise than its refit
    runs = [{"model": "XGBoost [quantile scaling]", "protocol": "matched", "split": 7, "seed": 7,
             "proba": tree_test.tolist(), "y": y_test.tolist()}]
    for seed in seeds:
        test = proba(y_test)
        held = {"y": y, "fold": fold, "proba": proba(y), "test": test, "cross_fit": proba(np.roll(y_test, 5)), "tree": tree,
                "tree_test": tree_test, "tree_fold_test": tree_folds}
        check = {"fitted": [0.0, 4.0, 4.0], "fold_shifts": [], "nested_none": 0.0, "nested_shift": 0.0}
        run = {"model": "EMDLOT v [quantile scaling]", "protocol": "matched", "split": 7, "seed": seed, "proba": test.tolist(),
               "y": y_test.tolist(), "variant": "v", "tag": " [quantile scaling]", "prior_shift": [0.0, 0.0, 0.0],
               "prior_shift_check": check, "held_out": held}
        runs += [run] + quality.shift_rows(run)
    return runs


def _fold_hybrid_inputs():
    """Two seeds' shift runs summarised (at the current SHIFT_GRID), with what a fold-model hybrid row is built from:
    the runs, the table, one run's held-out dict, the fold models' mean test prediction, the equal-weight blend fitted
    on the seeds' mean held-out prediction, and the test labels."""
    from emdlot.training.blend import fit_blend

    runs = _shift_runs([86, 127])
    direct = quality.summarise_runs(runs)["matched"]
    held = next(r["held_out"] for r in runs if "held_out" in r)
    cross_fit = np.mean([r["held_out"]["cross_fit"] for r in runs if "held_out" in r], axis=0)
    members = np.mean([r["held_out"]["proba"] for r in runs if "held_out" in r], axis=0)
    equal = fit_blend(held["y"], held["fold"], members, held["tree"], weight=0.5, grid=quality.SHIFT_GRID)
    return runs, direct, held, cross_fit, equal, np.asarray(runs[0]["y"])


@pytest.mark.long  # a benchmark script's test (10 s or more): `pytest -m long` runs it
def test_stored_predictions_summarise_as_the_runs_did_and_the_wide_grid_reaches_past_the_edge(tmp_path, monkeypatch):
    # The grids cut to their ends (and the wide one's 6): a full search costs minutes here, and only the edge matters.
    monkeypatch.setattr(quality, "SHIFT_GRID", np.array([-4.0, 0.0, 4.0]))
    monkeypatch.setattr(quality, "WIDE_GRID", np.array([-4.0, 0.0, 4.0, 6.0]))
    runs = _shift_runs([86, 127])
    direct = quality.summarise_runs(runs, wide=True)["matched"]
    quality.save_predictions(runs, str(tmp_path / "p.npz"))
    with np.load(tmp_path / "p.npz", allow_pickle=False) as stored:
        assert len(json.loads(str(stored["runs"]))) == 3  # the tree and two shift runs; derived rows are read off them
    loaded = quality.summarise_runs(quality.load_predictions(str(tmp_path / "p.npz")), wide=True)["matched"]
    assert sorted(loaded) == sorted(direct)
    for model in direct:
        assert [r | {"seconds": 0} for r in loaded[model]["runs"]] == [r | {"seconds": 0} for r in direct[model]["runs"]], model

    wide = direct["XGBoost (train + val, prior shift, wide grid) [quantile scaling]"]["runs"][0]
    assert max(wide["prior_shift_check"]["fitted"]) > 4  # GRID stops at 4, which names no minority firm here
    assert wide["recall"] == 1.0 and direct["XGBoost [quantile scaling]"]["recall"]["mean"] == pytest.approx(1 / 3)
    seed_average = direct["EMDLOT v [quantile scaling] (seed average, then shift, wide grid)"]["runs"][0]
    assert max(seed_average["prior_shift"]) > 4 and seed_average["recall"] == 1.0
    assert direct["EMDLOT v [quantile scaling] (seed average, then shift)"]["recall"]["mean"] == pytest.approx(1 / 3)
    assert "hybrid: EMDLOT v + XGBoost (equal weights, shift, wide grid) (seed average) [quantile scaling]" in direct

    # The fold models' test predictions (cross-fitted), averaged over seeds, with the seed average's own checked shift
    # (ranking metrics: here nothing names a minority class at argmax, so F1 could not tell the inputs apart).
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.training.blend import fit_blend
    from emdlot.training.calibration import apply_prior_shift

    cross_fit = np.mean([r["held_out"]["cross_fit"] for r in runs if "held_out" in r], axis=0)
    name = "EMDLOT v [quantile scaling] (fold models, seed average)"
    assert len(direct[name]["runs"]) == 1  # one row per split
    shift = np.asarray(direct["EMDLOT v [quantile scaling] (seed average, then shift)"]["runs"][0]["prior_shift"])
    y_test = np.asarray(runs[0]["y"])

    def ranks(proba):
        m = classification_metrics(y_test, proba)
        return pytest.approx([m.average_precision, m.auc])

    assert [direct[name]["runs"][0][k] for k in ("average_precision", "auc")] == ranks(cross_fit)
    shifted = direct["EMDLOT v [quantile scaling] (fold models, seed average, then shift)"]["runs"][0]
    assert [shifted[k] for k in ("average_precision", "auc")] == ranks(apply_prior_shift(cross_fit, shift))
    assert shifted["prior_shift"] == shift.tolist()
    held = next(r["held_out"] for r in runs if "held_out" in r)
    members = np.mean([r["held_out"]["proba"] for r in runs if "held_out" in r], axis=0)
    equal = fit_blend(held["y"], held["fold"], members, held["tree"], weight=0.5, grid=quality.SHIFT_GRID)
    hybrid = direct["hybrid: EMDLOT v + XGBoost (equal weights, shift, fold models) (seed average) [quantile scaling]"]["runs"][0]
    assert [hybrid[k] for k in ("average_precision", "auc")] == ranks(equal.apply(cross_fit, held["tree_test"]))
    refit = direct["hybrid: EMDLOT v + XGBoost (equal weights, shift) (seed average) [quantile scaling]"]["runs"][0]
    assert refit["auc"] > hybrid["auc"]  # the fold models here rank other firms first than the refits do


def test_the_shift_as_a_decision_rule_takes_the_class_from_the_shifted_row_and_the_ranking_from_the_unshifted_one(monkeypatch):
    """Round 22's rows: recall, F1 and validity from the shifted prediction's classes, mAP and AUC from the unshifted
    probabilities, for the fold models' hybrid and for each tree on the training + validation firms."""
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.training.blend import blend

    monkeypatch.setattr(quality, "SHIFT_GRID", np.array([-4.0, 0.0, 4.0]))
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], [22, 4, 4])
    tag = " [quantile scaling]"
    plain = {name: rng.dirichlet([1, 1, 1], len(y)) for name in ("XGBoost", "LightGBM")}
    shifted = {name: rng.dirichlet([1, 1, 1], len(y)) for name in plain}  # another prediction: the classes must follow it
    rows = [{"model": f"{n} (train + val){tag}", "protocol": "matched", "split": 7, "seed": 7, "proba": p.tolist(), "y": y.tolist()}
            for n, p in plain.items()]
    rows += [{"model": f"{n} (train + val, prior shift){tag}", "protocol": "matched", "split": 7, "seed": 7, "proba": p.tolist(),
              "y": y.tolist()} for n, p in shifted.items()]
    table = quality.summarise_runs(rows + quality.decision_rows(rows, tag))["matched"]
    for name in plain:
        decided = table[f"{name} (train + val, shift as decision){tag}"]["runs"][0]
        expected = classification_metrics(y, plain[name], shifted[name].argmax(axis=1))
        assert {k: decided[k] for k in ("recall", "f1", "average_precision", "auc", "n_predicted_classes")} == pytest.approx(expected.as_dict())
        assert decided["recall"] == table[f"{name} (train + val, prior shift){tag}"]["runs"][0]["recall"]
        assert decided["auc"] == table[f"{name} (train + val){tag}"]["runs"][0]["auc"]
        assert decided["auc"] != table[f"{name} (train + val, prior shift){tag}"]["runs"][0]["auc"]

    monkeypatch.setattr(quality, "SHIFT_GRID", np.array([-4.0, 0.0, 4.0, 6.0]))  # a shift that names minority firms here
    runs, direct, held, cross_fit, equal, y_test = _fold_hybrid_inputs()
    name = "hybrid: EMDLOT v + XGBoost (equal weights, {}, fold models) (seed average) [quantile scaling]"
    unshifted = blend(cross_fit, held["tree_test"], 0.5)
    for rule, expected in (("no shift", classification_metrics(y_test, unshifted)),
                           ("shift as decision", classification_metrics(y_test, unshifted, equal.apply(cross_fit, held["tree_test"]).argmax(axis=1)))):
        row = direct[name.format(rule)]["runs"][0]
        assert {k: row[k] for k in expected.as_dict()} == pytest.approx(expected.as_dict()), rule
    rows = {rule: direct[name.format(rule)]["runs"][0] for rule in ("shift", "no shift", "shift as decision")}
    assert rows["shift as decision"]["recall"] == rows["shift"]["recall"] > rows["no shift"]["recall"]
    assert rows["shift as decision"]["average_precision"] == rows["no shift"]["average_precision"] != rows["shift"]["average_precision"]


@pytest.mark.long  # a benchmark script's test (10 s or more): `pytest -m long` runs it
def test_round_24_rows_blend_the_trees_fold_fits_and_score_that_tree_with_the_yardsticks_shift(tmp_path, monkeypatch):
    """The fold models' hybrid with the tree's fold fits in place of its refit (the same fitted weight and shift), and
    that tree alone with its own checked shift from the same held-out folds; stored predictions without the tree's
    fold fits (rounds before 24) give no such rows."""
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.training.calibration import apply_prior_shift, check_prior_shift

    monkeypatch.setattr(quality, "SHIFT_GRID", np.array([-4.0, 0.0, 4.0, 6.0]))
    runs, direct, held, cross_fit, equal, y_test = _fold_hybrid_inputs()
    tag = " [quantile scaling]"
    tree_shift = check_prior_shift(held["y"], held["tree"], held["fold"], grid=quality.SHIFT_GRID).shift
    expected = {
        f"hybrid: EMDLOT v + XGBoost (equal weights, shift, fold models, tree fold models) (seed average){tag}":
            equal.apply(cross_fit, held["tree_fold_test"]),
        f"XGBoost (fold models){tag}": held["tree_fold_test"],
        f"XGBoost (fold models, prior shift){tag}": apply_prior_shift(held["tree_fold_test"], tree_shift),
    }
    for name, proba in expected.items():
        row = direct[name]["runs"]
        assert len(row) == 1, name  # one row per split, not one per seed
        metrics = classification_metrics(y_test, proba).as_dict()
        assert {k: row[0][k] for k in metrics} == pytest.approx(metrics), name
    assert direct[f"XGBoost (fold models, prior shift){tag}"]["runs"][0]["prior_shift"] == tree_shift.tolist()
    assert max(tree_shift) > 0  # the shift is not a no-op here, so the shifted row is checked against something
    product = direct[f"hybrid: EMDLOT v + XGBoost (equal weights, shift, fold models) (seed average){tag}"]["runs"][0]
    assert product["auc"] != direct[next(iter(expected))]["runs"][0]["auc"]  # the tree's fold fits change the ranking

    for run in runs:
        run.get("held_out", {}).pop("tree_fold_test", None)
    quality.save_predictions(runs, str(tmp_path / "old.npz"))
    older = quality.summarise_runs(quality.load_predictions(str(tmp_path / "old.npz")))["matched"]
    assert not [m for m in older if "tree fold models" in m or m.startswith("XGBoost (fold models")]
    assert f"hybrid: EMDLOT v + XGBoost (equal weights, shift, fold models) (seed average){tag}" in older
