"""Tables 6-8, run selection, the shortcut leak check and the writers, on synthetic predictions."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, recall_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from emdlot.evaluation.figures import confusion_figure, per_class_recall_figure
from emdlot.evaluation.metrics import classification_metrics
from emdlot.evaluation.tables import (
    _weighted_metrics,
    confusion,
    paired_differences,
    paired_verdicts,
    per_class_recall,
    run_metrics,
    seed_average,
    select_runs,
    shortcut_check,
    table6,
    table7,
    table8,
    write_results,
    write_table,
)
from emdlot.schema import CLASSES

P_COLS = [f"p_{c}" for c in CLASSES]
METRICS = ["recall", "f1", "average_precision", "auc"]


def _frame(model, kind, split, seed, rank, firm_ids, y, proba):
    frame = pd.DataFrame({"model": model, "kind": kind, "split": split, "seed": seed, "seed_rank": rank,
                          "firm_id": firm_ids, "y": y})
    frame[P_COLS] = proba
    return frame


def synthetic(models, sizes=(60, 10, 8), splits=(1,), seeds=3, rng_seed=0, invalid=()):
    """Predictions for `models` {name: (kind, signal)}: softmax of signal * one-hot(true class) plus
    unit noise, so a larger signal separates the classes better; signal 0 is chance. Each split has
    its own firms. `invalid` lists (model, split, seed_rank) runs that never predict Defaulted."""
    rng = np.random.default_rng(rng_seed)
    parts = []
    for split in splits:
        y = np.repeat(np.arange(3), sizes)
        firm_ids = [f"s{split}-f{i}" for i in range(len(y))]
        for model, (kind, signal) in models.items():
            for rank in range(seeds):
                logits = signal * np.eye(3)[y] + rng.normal(size=(len(y), 3))
                proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                if (model, split, rank) in invalid:
                    proba[:, 2] = 0.0
                    proba /= proba.sum(axis=1, keepdims=True)
                parts.append(_frame(model, kind, split, 1000 + 7 * rank, rank, firm_ids, y, proba))
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# run_metrics

Y = np.array([0, 0, 0, 1, 1, 2, 2])
GOOD = np.array([[.7, .2, .1], [.5, .4, .1], [.3, .6, .1], [.2, .7, .1], [.4, .3, .3], [.1, .2, .7], [.2, .2, .6]])
NO_DEFAULT = np.array([[.7, .2, .1], [.6, .3, .1], [.5, .4, .1], [.2, .7, .1], [.3, .6, .1], [.5, .2, .3], [.3, .4, .3]])


def test_run_metrics_agrees_with_sklearn_and_flags_a_run_missing_a_class():
    ids = [f"f{i}" for i in range(len(Y))]
    predictions = pd.concat([_frame("M", "baseline", 5, 11, 0, ids, Y, GOOD),
                             _frame("M", "baseline", 5, 12, 1, ids, Y, NO_DEFAULT)], ignore_index=True)
    runs = run_metrics(predictions)
    assert len(runs) == 2
    for proba, (_, row) in zip([GOOD, NO_DEFAULT], runs.sort_values("seed_rank").iterrows()):
        called = proba.argmax(axis=1)
        assert row["recall"] == pytest.approx(recall_score(Y, called, average="macro", labels=[0, 1, 2], zero_division=0))
        assert row["f1"] == pytest.approx(f1_score(Y, called, average="macro", labels=[0, 1, 2], zero_division=0))
        assert row["average_precision"] == pytest.approx(
            average_precision_score(label_binarize(Y, classes=[0, 1, 2]), proba, average="macro"))
        assert row["auc"] == pytest.approx(roc_auc_score(Y, proba, multi_class="ovr", average="macro"))
        per_class = recall_score(Y, called, average=None, labels=[0, 1, 2], zero_division=0)
        assert [row[f"recall_{c}"] for c in CLASSES] == pytest.approx(per_class)
    assert runs.set_index("seed_rank")["valid"].to_dict() == {0: True, 1: False}
    assert runs.set_index("seed_rank").at[1, "n_predicted_classes"] == 2
    assert runs.set_index("seed_rank").at[1, "recall_Defaulted"] == 0.0


def test_vectorised_bootstrap_metrics_equal_sklearn_on_the_resampled_firms():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], [30, 6, 5])
    proba = np.round(rng.dirichlet([1, 1, 1], size=len(y)) + 0.6 * np.eye(3)[y], 1)  # rounding makes ties
    proba /= proba.sum(axis=1, keepdims=True)
    weights = []
    for _ in range(5):
        rows = np.concatenate([rng.choice(np.flatnonzero(y == c), size=(y == c).sum()) for c in range(3)])
        weights.append(np.bincount(rows, minlength=len(y)))
        expected = classification_metrics(y[rows], proba[rows])
        got = _weighted_metrics(y, proba, np.array(weights[-1:], dtype=float))[0]
        assert got == pytest.approx([getattr(expected, m) for m in METRICS])


# ---------------------------------------------------------------------------------------------
# select_runs


def _runs_table(valid_by_rank):
    return pd.DataFrame({"model": "M", "kind": "baseline", "split": 1, "seed": [100 + r for r in range(len(valid_by_rank))],
                         "seed_rank": range(len(valid_by_rank)), "recall": 0.5, "f1": 0.5, "average_precision": 0.5,
                         "auc": 0.5, "n_predicted_classes": [3 if v else 2 for v in valid_by_rank],
                         "valid": valid_by_rank})


def test_paper_rule_replaces_an_invalid_run_with_the_next_seed():
    runs = _runs_table([True, True, False] + [True] * 8)  # rank 2 invalid, ranks 0..10 drawn
    paper = select_runs(runs, "paper", n=10)
    assert len(paper.runs) == 10 and paper.runs["valid"].all()
    assert 2 not in set(paper.runs["seed_rank"]) and 10 in set(paper.runs["seed_rank"])
    report = paper.report.iloc[0]
    assert report["invalid_drawn"] == 1 and report["valid_runs"] == 10 and bool(report["complete"])

    unselected = select_runs(runs, "unselected", n=10)
    assert sorted(unselected.runs["seed_rank"]) == list(range(10))
    assert unselected.report.iloc[0]["invalid_drawn"] == 1 and unselected.report.iloc[0]["valid_runs"] == 9


def test_paper_rule_reports_too_few_valid_runs():
    runs = _runs_table([False, True, False, True])
    report = select_runs(runs, "paper", n=10).report.iloc[0]
    assert report["runs"] == 2 and report["invalid_drawn"] == 2 and report["short_splits"] == 1
    assert not report["complete"]


# ---------------------------------------------------------------------------------------------
# table6


MODELS = {"EMDLOT": ("emdlot", 2.5), "XGBoost": ("baseline", 1.5)}


def test_table6_means_over_the_selected_runs_with_an_interval_around_them():
    predictions = synthetic(MODELS, seeds=4, invalid={("XGBoost", 1, 1)})
    runs = run_metrics(predictions)
    t6 = table6(predictions, runs, n_boot=100, rule="paper", n=3)
    assert list(t6["model"]) == ["EMDLOT", "XGBoost"] and list(t6["kind"]) == ["emdlot", "baseline"]
    chosen = runs[(runs["model"] == "XGBoost") & (runs["seed_rank"] != 1)]  # rank 1 invalid, rank 3 replaces it
    xgb = t6.set_index("model").loc["XGBoost"]
    assert (xgb["runs"], xgb["valid_runs"], xgb["invalid_runs"]) == (3, 3, 1)
    for m in METRICS:
        assert xgb[f"{m}_mean"] == pytest.approx(chosen[m].mean())
        assert xgb[f"{m}_sd"] == pytest.approx(chosen[m].std(ddof=1))
        for _, row in t6.iterrows():
            assert row[f"{m}_lo"] <= row[f"{m}_mean"] <= row[f"{m}_hi"]
            assert row[f"{m}_lo"] < row[f"{m}_hi"]

    unselected = table6(predictions, runs, n_boot=0, rule="unselected", n=3).set_index("model").loc["XGBoost"]
    assert unselected["recall_mean"] == pytest.approx(runs[(runs["model"] == "XGBoost") & (runs["seed_rank"] < 3)]["recall"].mean())
    assert (unselected["valid_runs"], unselected["invalid_runs"]) == (2, 1)


def test_table6_interval_narrows_with_more_test_firms():
    small = synthetic({"EMDLOT": ("emdlot", 1.5)}, sizes=(60, 10, 8), rng_seed=1)
    large = synthetic({"EMDLOT": ("emdlot", 1.5)}, sizes=(600, 100, 80), rng_seed=1)
    widths = {}
    for name, predictions in [("small", small), ("large", large)]:
        row = table6(predictions, run_metrics(predictions), n_boot=150, n=3).iloc[0]
        widths[name] = {m: row[f"{m}_hi"] - row[f"{m}_lo"] for m in METRICS}
    for m in METRICS:
        assert widths["large"][m] < 0.7 * widths["small"][m], m


def test_table6_interval_spans_the_spread_between_splits():
    """Two splits where the same model is strong on one and weak on the other: with many firms the
    within-split noise is small, so only resampling splits can stretch the interval over both."""
    strong = synthetic({"EMDLOT": ("emdlot", 4.0)}, sizes=(400, 80, 80), splits=(1,), rng_seed=2)
    weak = synthetic({"EMDLOT": ("emdlot", 0.7)}, sizes=(400, 80, 80), splits=(2,), rng_seed=3)
    predictions = pd.concat([strong, weak], ignore_index=True)
    runs = run_metrics(predictions)
    row = table6(predictions, runs, n_boot=200, n=3).iloc[0]
    per_split = runs.groupby("split")["auc"].mean()
    assert row["splits"] == 2 and row["runs"] == 6
    assert row["auc_lo"] < per_split[2] + 0.02 and row["auc_hi"] > per_split[1] - 0.02


def test_table6_interval_is_centred_on_the_mean_with_a_paper_sized_minority():
    """With 9 minority firms a resample's duplicated positives tie with their copies and lift
    average precision; the interval must still sit around the reported mean, not above it."""
    predictions = synthetic({"EMDLOT": ("emdlot", 1.0)}, sizes=(390, 5, 4), seeds=10, rng_seed=1)
    row = table6(predictions, run_metrics(predictions), n_boot=200, rule="unselected").iloc[0]
    for m in METRICS:
        position = (row[f"{m}_mean"] - row[f"{m}_lo"]) / (row[f"{m}_hi"] - row[f"{m}_lo"])
        assert 0.3 < position < 0.7, (m, position)


def test_seed_average_is_the_mean_of_each_models_first_seeds_per_split_valid_or_not():
    predictions = synthetic({"EMDLOT": ("emdlot", 1.0), "ABL1": ("ablation", 0.5), "XGBoost": ("baseline", 2.0)},
                            splits=(1, 2), seeds=3, invalid={("EMDLOT", 1, 0)})
    averaged = seed_average(predictions, n=2)
    assert sorted(averaged["model"].unique()) == ["ABL1 (seed average)", "EMDLOT (seed average)"]  # no baseline
    assert len(averaged) == 2 * 2 * 78 and (averaged["seed"] == -1).all()
    one = averaged[(averaged["model"] == "EMDLOT (seed average)") & (averaged["split"] == 1)].set_index("firm_id")
    runs = predictions[(predictions["model"] == "EMDLOT") & (predictions["split"] == 1)]
    expected = runs[runs["seed_rank"] < 2].groupby("firm_id")[P_COLS].mean()  # the invalid seed counts; the third does not
    np.testing.assert_allclose(one.loc[expected.index, P_COLS].to_numpy(), expected.to_numpy())
    t6 = table6(averaged, run_metrics(averaged), n_boot=20, rule="unselected", n=1).set_index("model")
    assert (t6["runs"] == 2).all()  # one ensemble per split
    single = table6(predictions, run_metrics(predictions), n_boot=0, rule="unselected", n=2).set_index("model")
    assert t6.loc["EMDLOT (seed average)", "auc_mean"] > single.loc["EMDLOT", "auc_mean"]  # averaging noise helps


def test_table6_keeps_a_model_without_valid_runs():
    predictions = synthetic({"EMDLOT": ("emdlot", 2.0), "SVM": ("baseline", 1.0)}, seeds=2,
                            invalid={("SVM", 1, 0), ("SVM", 1, 1)})
    t6 = table6(predictions, run_metrics(predictions), n_boot=20, n=2).set_index("model")
    assert t6.at["SVM", "runs"] == 0 and t6.at["SVM", "invalid_runs"] == 2
    assert np.isnan(t6.at["SVM", "auc_mean"])
    assert np.isnan(table7(t6.reset_index()).set_index("model").at["SVM", "avg_rank"])


# ---------------------------------------------------------------------------------------------
# table7, table8


def _table6_by_hand(means):
    rows = []
    for model, (kind, values) in means.items():
        row = {"model": model, "kind": kind}
        for m, v in zip(METRICS, values):
            row.update({f"{m}_mean": v, f"{m}_sd": 0.01, f"{m}_lo": v - 0.05, f"{m}_hi": v + 0.05})
        rows.append({**row, "splits": 1, "runs": 10, "valid_runs": 10, "invalid_runs": 0})
    return pd.DataFrame(rows)


def test_table7_ranks_the_best_model_first_and_leaves_shortcuts_unranked():
    t6 = _table6_by_hand({
        "shortcut: sequence length": ("shortcut", [0.99, 0.99, 0.99, 0.99]),
        "LSTM": ("baseline", [0.60, 0.70, 0.80, 0.80]),
        "XGBoost": ("baseline", [0.60, 0.60, 0.70, 0.90]),
        "EMDLOT": ("emdlot", [0.80, 0.80, 0.85, 0.95]),
    })
    t7 = table7(t6)
    assert t7.iloc[0]["model"] == "EMDLOT"
    assert [t7.iloc[0][f"rank_{m}"] for m in METRICS] == [1, 1, 1, 1] and t7.iloc[0]["avg_rank"] == 1
    by_model = t7.set_index("model")
    assert by_model.at["LSTM", "rank_recall"] == 2.5 and by_model.at["XGBoost", "rank_recall"] == 2.5  # tie
    assert by_model.at["LSTM", "avg_rank"] == pytest.approx((2.5 + 2 + 2 + 3) / 4)
    assert t7.iloc[-1]["model"] == "shortcut: sequence length"
    assert t7.iloc[-1][[f"rank_{m}" for m in METRICS] + ["avg_rank"]].isna().all()


def test_table8_percentage_change_against_the_full_model():
    t6 = _table6_by_hand({
        "EMDLOT": ("emdlot", [0.80, 0.50, 0.40, 0.90]),
        "ABL1": ("ablation", [0.60, 0.55, 0.40, 0.45]),
        "ABL3": ("ablation", [0.20, 0.25, 0.30, 0.99]),
    })
    t8 = table8(t6).set_index("model")
    assert list(t8.index) == ["ABL1", "ABL3", "EMDLOT"]  # ABL2 absent, full model last
    assert [t8.at["ABL1", f"{m}_change_pct"] for m in METRICS] == pytest.approx([-25.0, 10.0, 0.0, -50.0])
    assert [t8.at["ABL3", f"{m}_change_pct"] for m in METRICS] == pytest.approx([-75.0, -50.0, -25.0, 10.0])
    assert t8.at["ABL3", "recall_mean"] == 0.20 and np.isnan(t8.at["EMDLOT", "recall_change_pct"])


# ---------------------------------------------------------------------------------------------
# shortcut check and writers


def _with_shortcuts():
    models = {"EMDLOT": ("emdlot", 2.5), "shortcut: sequence length": ("shortcut", 2.3),
              "shortcut: end date": ("shortcut", 0.0)}
    predictions = synthetic(models, sizes=(150, 25, 20), seeds=3, rng_seed=4)
    return predictions, table6(predictions, run_metrics(predictions), n_boot=100, rule="unselected", n=3)


def test_shortcut_check_flags_a_separating_shortcut_and_passes_a_random_one():
    _, t6 = _with_shortcuts()
    sentences = shortcut_check(t6)
    assert len(sentences) == 2
    length = next(s for s in sentences if "sequence length" in s)
    end = next(s for s in sentences if "end date" in s)
    assert length.startswith("The protocol leaks")
    assert "near chance" in end and "no leak seen" in end and "leaks" not in end


def test_write_table_writes_csv_markdown_and_png(tmp_path):
    predictions, t6 = _with_shortcuts()
    paths = write_table(t6, tmp_path / "tables", "table6", "Table 6: test metrics", notes=["ten seeds per split"])
    assert set(paths) == {"csv", "md", "png"} and all(p.exists() for p in paths.values())
    assert len(pd.read_csv(paths["csv"])) == len(t6)
    md = paths["md"].read_text()
    assert "Table 6: test metrics" in md and "ten seeds per split" in md
    assert "The protocol leaks" in md and "no leak seen" in md  # the shortcut check is always under Table 6
    row = t6.set_index("model").loc["EMDLOT"]
    assert f"{row['auc_mean']:.4f} ± {row['auc_sd']:.4f} [{row['auc_lo']:.4f}, {row['auc_hi']:.4f}]" in md
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_confusion_sums_the_selected_runs_and_figures_are_drawn(tmp_path):
    predictions = synthetic(MODELS, seeds=3, invalid={("XGBoost", 1, 0)})
    runs = run_metrics(predictions)
    chosen = select_runs(runs, "unselected", n=2).runs
    matrices = confusion(predictions, chosen)
    assert set(matrices) == {"EMDLOT", "XGBoost"}
    xgb = matrices["XGBoost"]
    assert list(xgb.index) == list(CLASSES) and list(xgb.columns) == list(CLASSES)
    assert xgb.to_numpy().sum() == 2 * 78 and list(xgb.sum(axis=1)) == [2 * 60, 2 * 10, 2 * 8]
    rank1 = confusion(predictions, chosen[(chosen["model"] == "XGBoost") & (chosen["seed_rank"] == 1)])["XGBoost"]
    assert xgb["Defaulted"].tolist() == rank1["Defaulted"].tolist()  # the rank-0 run never calls Defaulted
    assert confusion(predictions)["XGBoost"].to_numpy().sum() == 3 * 78  # no runs given: every run
    recall = per_class_recall(chosen).set_index("model")
    xgb_runs = chosen[chosen["model"] == "XGBoost"]
    assert recall.at["XGBoost", "recall_Defaulted"] == pytest.approx(xgb_runs["recall_Defaulted"].mean())
    diagonal = np.diag(xgb.to_numpy()) / xgb.sum(axis=1).to_numpy()
    assert diagonal == pytest.approx(recall.loc["XGBoost", [f"recall_{c}" for c in CLASSES]].to_numpy(dtype=float))
    for path in [confusion_figure(matrices, tmp_path / "confusion.png"),
                 per_class_recall_figure(recall.reset_index(), tmp_path / "recall.png")]:
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 2000


# ---------------------------------------------------------------------------------------------
# paired differences against the baselines


def test_a_paired_interval_keeps_what_two_models_share_out_of_the_difference():
    """A copy of EMDLOT's probabilities pulled towards uniform ranks and decides exactly as EMDLOT does: their paired
    difference is 0 with no width, although each one's own Table 6 interval is wide. A clearly better model's
    interval lies above 0, and the verdict says so."""
    predictions = synthetic({"EMDLOT": ("emdlot", 3.0), "Weak": ("baseline", 0.5)}, splits=(1, 2, 3), seeds=2)
    copy = predictions[predictions["model"] == "EMDLOT"].assign(model="Copy", kind="baseline")
    copy[P_COLS] = 0.5 * copy[P_COLS].to_numpy() + 0.5 / 3
    predictions = pd.concat([predictions, copy], ignore_index=True)
    runs = run_metrics(predictions)
    paired = paired_differences(predictions, runs, ["EMDLOT"], ["Copy", "Weak"], n_boot=100).set_index("against")
    t6 = table6(predictions, runs, n_boot=100, rule="unselected", n=2).set_index("model")
    for m in METRICS:
        assert paired.at["Copy", f"{m}_diff"] == pytest.approx(0.0, abs=1e-12)
        assert paired.at["Copy", f"{m}_lo"] == pytest.approx(0.0, abs=1e-12) == paired.at["Copy", f"{m}_hi"]
        assert t6.at["Copy", f"{m}_hi"] - t6.at["Copy", f"{m}_lo"] > 0.01
        assert paired.at["Weak", f"{m}_diff"] == pytest.approx(t6.at["EMDLOT", f"{m}_mean"] - t6.at["Weak", f"{m}_mean"])
        assert 0 < paired.at["Weak", f"{m}_lo"] <= paired.at["Weak", f"{m}_diff"] <= paired.at["Weak", f"{m}_hi"]
    assert list(paired["splits"]) == [3, 3]
    verdicts = paired_verdicts(paired.reset_index())
    assert verdicts[0] == "EMDLOT against Copy: no difference these test firms can tell apart."
    assert verdicts[1].startswith("EMDLOT against Weak: better on Recall, F1-score, mAP, AUC")
    reverse = paired_differences(predictions, runs, ["Weak"], ["EMDLOT"], n_boot=100)
    assert "worse on Recall, F1-score, mAP, AUC" in paired_verdicts(reverse)[0]


def test_only_the_splits_both_models_ran_on_are_compared():
    predictions = synthetic({"EMDLOT": ("emdlot", 2.0), "XGBoost": ("baseline", 1.0)}, splits=(1, 2, 3), seeds=2)
    predictions = predictions[~((predictions["model"] == "XGBoost") & (predictions["split"] == 3))]
    runs = run_metrics(predictions)
    (row,) = paired_differences(predictions, runs, ["EMDLOT"], ["XGBoost"], n_boot=0).itertuples(index=False)
    shared = runs[runs["split"] < 3]
    assert row.splits == 2
    assert row.f1_diff == pytest.approx(shared.loc[shared["model"] == "EMDLOT", "f1"].mean()
                                        - shared.loc[shared["model"] == "XGBoost", "f1"].mean())
    assert np.isnan(row.f1_lo) and np.isnan(row.f1_hi)
    assert paired_verdicts(pd.DataFrame([row])) == ["EMDLOT against XGBoost: no interval (n_boot 0), so no verdict."]
    assert paired_differences(predictions, runs[runs["split"] == 3], ["EMDLOT"], ["XGBoost"]).empty


def test_write_results_tables_emdlot_and_its_seed_average_against_every_baseline(tmp_path):
    models = {"EMDLOT": ("emdlot", 2.0), "ABL1": ("ablation", 1.0), "XGBoost": ("baseline", 1.5), "LR": ("baseline", 0.5)}
    predictions = synthetic(models, splits=(1, 2), seeds=3)
    frames = write_results(predictions, tmp_path, n=2, n_boot=20)
    for name in ("paired_paper", "paired_unselected", "paired_seed_average"):
        assert sorted(zip(frames[name]["model"], frames[name]["against"])) == sorted(
            (m, b) for m in [("EMDLOT (seed average)" if name.endswith("average") else "EMDLOT")] for b in ("LR", "XGBoost"))
        assert (tmp_path / f"{name}.png").exists()
    row = frames["paired_seed_average"].set_index("against").loc["XGBoost"]
    averaged = run_metrics(seed_average(predictions, 2))
    xgb = run_metrics(predictions).query("model == 'XGBoost' and seed_rank < 2")
    assert row["auc_diff"] == pytest.approx(averaged.query("model == 'EMDLOT (seed average)'")["auc"].mean() - xgb["auc"].mean())
    md = (tmp_path / "paired_seed_average.md").read_text()
    assert f"{row['auc_diff']:+.4f} [{row['auc_lo']:.4f}, {row['auc_hi']:.4f}]" in md and "AUC difference" in md
    assert "EMDLOT (seed average) against XGBoost:" in md
