"""Issue-level explanations: the numbers behind Figures 7-9 and Table D.1, one issuer's explanation (hand-built
and from a tiny trained model), the figures, the `emdlot explain` command, and the faithfulness benchmark."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from emdlot.cli import main
from emdlot.data.arrays import SequenceArrays
from emdlot.evaluation import explain
from emdlot.evaluation.explain import InterpretedRun, cluster_heatmaps, cluster_table, explain_firm
from emdlot.evaluation.explain_figures import build_explanations
from emdlot.model.emdlot import Interpretation
from emdlot.schema import CLASSES, SECTIONS

STEPS, FEATURES, CLUSTERS = 10, 6, 3
NAMES = ["CFO", "D/A", "ROA", "GDP", "CPI", "M2"]
FINANCIAL, MACRO = NAMES[:3], NAMES[3:]
PADDED_GARBAGE = 50.0  # what a padded step holds in these tests: it must never show up anywhere


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def fake_run(n: int = 60, seed: int = 0, split: int = 1, steps: int = STEPS, firm_prefix: str = "F") -> InterpretedRun:
    """An InterpretedRun shaped like EMDLOT.interpret's, with random but valid maps; padded steps (pre-padded,
    as in SequenceArrays) hold PADDED_GARBAGE on feature 0 instead of zeros, to catch any use of them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    lengths = rng.integers(2, steps + 1, n)
    mask = np.arange(steps)[None, :] >= (steps - lengths)[:, None]
    alpha = _softmax(rng.normal(size=(n, steps, FEATURES)), axis=2)
    alpha[~mask] = 0.0
    alpha[~mask, 0] = PADDED_GARBAGE
    temporal = np.where(mask, _softmax(np.where(mask, rng.normal(size=(n, steps)), -np.inf), axis=1), 0.0)
    text_mask = rng.random((n, len(SECTIONS))) < 0.8
    chapters = np.where(text_mask, rng.random((n, len(SECTIONS))), 0.0)
    chapters = np.divide(chapters, chapters.sum(axis=1, keepdims=True), out=np.zeros_like(chapters), where=chapters.sum(axis=1, keepdims=True) > 0)
    text_share = np.where(text_mask.any(axis=1), rng.uniform(0.1, 0.4, n), 0.0)
    modality = np.stack([1 - text_share, text_share, np.zeros(n)], axis=1)
    membership = rng.dirichlet(np.ones(CLUSTERS), n)
    probabilities = _softmax(2.0 * np.eye(3)[y] + rng.normal(size=(n, 3)), axis=1)
    interp = Interpretation(probabilities=probabilities, predicted_class=probabilities.argmax(axis=1), feature_attention=alpha,
                            temporal_weights=temporal, chapter_weights=chapters, modality_weights=modality,
                            cluster_membership=membership, cluster=membership.argmax(axis=1))
    return InterpretedRun(interp, np.array([f"{firm_prefix}{i:04d}" for i in range(n)]), y, mask, text_mask, list(NAMES),
                          "EMDLOT", split, 100 + seed)


# ---------------------------------------------------------------------------------------------
# Figure 8's data: shape and masks


def test_attention_window_is_the_mean_over_firms_valid_at_each_quarter_only():
    run = fake_run()
    mean, counts = explain.attention_window(run)
    assert mean.shape == (explain.QUARTERS, FEATURES) and counts.shape == (explain.QUARTERS,)
    window_mask = run.mask[:, -explain.QUARTERS:]
    np.testing.assert_array_equal(counts, window_mask.sum(axis=0))
    alpha = run.interpretation.feature_attention[:, -explain.QUARTERS:]
    for q in range(explain.QUARTERS):
        valid = window_mask[:, q]
        np.testing.assert_allclose(mean[q], alpha[valid, q].mean(axis=0))  # not diluted by padded firms' zeros
    assert np.nanmax(mean) < 1.0  # the garbage on padded steps never got in


def test_window_longer_than_the_sequences_is_blank_where_no_firm_reaches():
    run = fake_run(steps=5)
    mean, counts = explain.attention_window(run, quarters=8)
    assert mean.shape == (8, FEATURES)
    assert counts[:3].tolist() == [0, 0, 0] and np.isnan(mean[:3]).all()
    assert np.isfinite(mean[3:]).all()


def test_cluster_heatmaps_have_top_features_by_quarter_and_ignore_padded_steps():
    run = fake_run()
    heat = cluster_heatmaps(run, FINANCIAL, top=2)
    clusters = explain.hard_clusters(run)
    assert sorted(heat["cluster"].unique()) == sorted(set(clusters))
    for k, part in heat.groupby("cluster"):
        assert len(part) == 2 * explain.QUARTERS  # top 2 features x Q-8..Q-1
        assert part["quarter"].drop_duplicates().tolist() == explain.quarter_labels()
        assert set(part["feature"]) <= set(FINANCIAL)
        assert part["firms"].iloc[0] == (clusters == k).sum()
    assert heat["attention_pct"].max() < 100  # a padded step's 50.0 (5000%) would dominate

    # Garbage on padded steps, whatever it is, changes nothing; so does attention on a feature only where padded.
    other = fake_run()
    other.interpretation.feature_attention[~other.mask] = 7.0
    pd.testing.assert_frame_equal(heat, cluster_heatmaps(other, FINANCIAL, top=2))


def test_a_feature_attended_only_on_padded_quarters_never_ranks_first():
    run = fake_run()
    alpha = run.interpretation.feature_attention
    alpha[run.mask] = np.where(np.arange(FEATURES) == 0, 0.0, 1.0 / (FEATURES - 1))  # feature 0 gets no valid attention
    heat = cluster_heatmaps(run, NAMES, top=FEATURES)
    assert (heat.loc[heat["feature"] == "CFO", "rank"] == FEATURES).all()
    assert heat.loc[heat["feature"] == "CFO", "attention_pct"].fillna(0).max() == 0.0


# ---------------------------------------------------------------------------------------------
# Table D.1, Figure 7 and Figure 9's data


def test_cluster_table_sums_to_the_test_sets_label_counts():
    run = fake_run(n=61)
    table = cluster_table(run, FINANCIAL)
    assert table["cluster"].tolist() == list(range(CLUSTERS))  # every cluster, empty or not
    counts = np.bincount(run.y, minlength=3)
    assert table[list(CLASSES)].sum().tolist() == counts.tolist()
    assert table["firms"].sum() == len(run.y)
    by_argmax = np.bincount(run.interpretation.cluster_membership.argmax(axis=1), minlength=CLUSTERS)
    assert table["firms"].tolist() == by_argmax.tolist()
    first = table.loc[table["firms"] > 0, "top_features"].iloc[0]
    assert first.split(" ")[0] in FINANCIAL


def test_attention_summary_averages_per_run_then_over_runs():
    runs = [fake_run(seed=s) for s in range(3)]
    summary = explain.attention_summary(runs)
    numeric_all = summary.query("level == 'modality' and item == 'numeric' and group == 'All'").iloc[0]
    per_run = [r.interpretation.modality_weights[:, 0].mean() for r in runs]
    assert numeric_all["mean"] == pytest.approx(np.mean(per_run)) and numeric_all["sd"] == pytest.approx(np.std(per_run, ddof=1))
    assert "summary" not in set(summary["item"])  # a modality no run uses is not drawn
    risk = summary.query("level == 'chapter' and item == 'risk_factors' and group == 'Defaulted'").iloc[0]
    run = runs[0]
    rows = (run.y == 2) & run.text_mask.any(axis=1)
    assert risk["firms"] == sum(((r.y == 2) & r.text_mask.any(axis=1)).sum() for r in runs)
    assert 0 < risk["mean"] < 1 and rows.any()


def test_macro_attention_ranks_the_most_attended_macro_feature_first():
    runs = [fake_run(seed=s) for s in range(2)]
    for run in runs:
        run.interpretation.feature_attention[run.mask, 4] += 1.0  # CPI
    table = explain.macro_attention(runs, MACRO)
    assert table["feature"].tolist()[0] == "CPI" and table["rank"].tolist() == [1, 2, 3]
    assert list(table.columns[1:1 + explain.QUARTERS]) == explain.quarter_labels()


# ---------------------------------------------------------------------------------------------
# One issuer


def test_explain_firm_ranks_a_firms_only_signal_first_and_is_json():
    run = fake_run()
    i = 5
    alpha = run.interpretation.feature_attention
    alpha[i][run.mask[i]] = [0.05, 0.05, 0.05, 0.05, 0.75, 0.05]  # all its attention on CPI, on valid quarters
    extractions = pd.DataFrame({"firm_id": [run.firm_id[i], run.firm_id[i], "other"],
                                "section": ["risk_factors", "important_notice", "risk_factors"],
                                "text": ["偿债风险较高。", "本期债券评级为AA。", "x"]})
    e = explain_firm(run, run.firm_id[i], extractions, top=3)
    json.dumps(e)
    assert e["top_features"][0]["feature"] == "CPI" and e["top_features"][0]["share_pct"] == pytest.approx(75.0)
    assert "CFO" not in [f["feature"] for f in e["top_features"]][:1]  # padded garbage sits on CFO
    assert len(e["temporal_weights"]) == e["quarters"] == run.mask[i].sum()
    assert sum(e["temporal_weights"].values()) == pytest.approx(1.0)
    assert set(e["temporal_weights"]) == {f"Q-{k}" for k in range(1, e["quarters"] + 1)}
    assert [s["section"] for s in e["key_sentences"]] == ["important_notice", "risk_factors"]
    assert e["probabilities"][e["predicted_class"]] == max(e["probabilities"].values())
    assert e["true_class"] == CLASSES[run.y[i]]
    with pytest.raises(KeyError, match="not among"):
        explain_firm(run, "nobody")


def test_explain_firm_for_a_new_firm_without_label_or_text():
    run = fake_run()
    run.y[:] = -1
    run.text_mask[3] = False
    run.interpretation.chapter_weights[3] = 0.0
    e = explain_firm(run, run.firm_id[3])
    assert e["true_class"] is None and e["chapter_weights"] is None and e["key_sentences"] == []


def _planted(n: int, seed: int) -> SequenceArrays:
    """Three classes told apart only by feature 2 (level and trend over the last quarters); everything else noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 6, 4)).astype(np.float32)
    x[:, :, 2] += (y[:, None] - 1) * np.linspace(0.5, 2.0, 6)[None, :]
    mask = np.ones((n, 6), bool)
    delta_t = np.full((n, 6), 3.0, np.float32)
    delta_t[:, 0] = 0.0
    return SequenceArrays(np.array([f"p{seed}-{i}" for i in range(n)]), x, mask, delta_t,
                          np.zeros((n, 2, 4), np.float32), np.zeros((n, 2), bool), y.astype(np.int64))


def test_a_tiny_trained_model_explains_a_hand_built_firm_by_its_only_signal():
    """End to end through EMDLOT.interpret: a firm whose only non-zero input is the signal feature."""
    from emdlot.training import fit, interpret
    from emdlot.training.config import EMDLOTConfig

    config = EMDLOTConfig().with_params(dict(hidden_size=16, feature_embed_size=8, num_clusters=2, batch_size=16, learning_rate=1e-2,
                                             max_epochs=8, patience=8, warmup_epochs=1, identifier_epochs=2, kmeans_n_init=2,
                                             use_text=False, progress=False))
    torch.manual_seed(0)
    model = fit(_planted(150, 0), _planted(45, 1), config, seed=3).model
    firm = _planted(3, 2)
    firm.X[:] = 0.0
    firm.X[:, :, 2] = np.linspace(0.5, 2.0, 6)[None, :] * np.array([-1.0, 0.0, 1.0])[:, None]
    firm.y[:] = -1
    run = InterpretedRun(interpret(model, firm), firm.firm_id, firm.y, firm.mask, firm.text_mask, ["a", "b", "signal", "d"])
    distressed = explain_firm(run, firm.firm_id[2], top=4)
    assert distressed["top_features"][0]["feature"] == "signal"
    assert distressed["predicted_class"] == "Defaulted"  # the model did learn the planted signal


# ---------------------------------------------------------------------------------------------
# Figures and the command


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_build_explanations_writes_each_figure_and_table_as_png_and_csv(tmp_path):
    runs = [fake_run(seed=s, split=s) for s in range(3)]
    paths = build_explanations(runs, tmp_path, FINANCIAL, MACRO, top=2)
    for name in ("figure7", "figure8", "figure9", "tableD1"):
        assert _is_png(paths[f"{name}_png"]), name
        assert paths[f"{name}_csv"].exists()
    heat = pd.read_csv(paths["figure8_csv"])
    assert set(heat["feature"]) <= set(FINANCIAL) and (heat.groupby("cluster").size() == 2 * explain.QUARTERS).all()
    assert pd.read_csv(paths["figure9_csv"])["feature"].tolist().__len__() == len(MACRO)
    chosen = json.loads(paths["summary_json"].read_text())["representative"]
    table = pd.read_csv(paths["tableD1_csv"])
    assert table[list(CLASSES)].to_numpy().sum() == len(runs[chosen["index"]].y)

    only_financial = build_explanations(runs[:1], tmp_path / "no_macro")  # no groups: no Figure 9
    assert "figure9_png" not in only_financial and _is_png(only_financial["figure8_png"])


def test_cli_explain_prints_a_summary_json_and_rejects_unknown_firms(tmp_path, capsys):
    run = fake_run()
    npz = tmp_path / "EMDLOT-split1-seed100.npz"
    run.save(npz)
    extractions = tmp_path / "extractions.parquet"
    pd.DataFrame({"firm_id": ["F0004"], "section": ["risk_factors"], "text": ["流动性风险：短期债务集中到期。"]}).to_parquet(extractions)

    assert main(["explain", str(npz), "--firm", "F0004", "--extractions", str(extractions)]) == 0
    text = capsys.readouterr().out
    assert "Issuer F0004: predicted" in text and "流动性风险" in text and "features that drove the prediction" in text

    assert main(["explain", str(npz), "--firm", "F0004", "--json", "--top", "3"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["firm_id"] == "F0004" and len(body["top_features"]) == 3

    assert main(["explain", str(npz), "--firm", "missing"]) == 2
    assert "not among" in capsys.readouterr().err
    assert main(["explain", str(extractions), "--firm", "F0004"]) == 2  # not an interpretation
    assert "not an interpretation" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The faithfulness benchmark, small


@pytest.mark.slow
def test_faithfulness_benchmark_runs_small_and_writes_json_and_both_figures(tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "faithfulness.py"
    spec = importlib.util.spec_from_file_location("benchmarks_faithfulness", path)
    bench = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(bench)

    result = bench.run(tmp_path / "work", out_dir=tmp_path / "results", **bench.SMALL)
    body = json.loads((tmp_path / "results" / "faithfulness.json").read_text())
    assert body == json.loads(json.dumps(result))
    for name in ("faithfulness_top5.png", "faithfulness_deletion.png"):
        assert _is_png(tmp_path / "results" / name)
    top5 = body["top5"]
    firms = body["setup"]["distressed_test_firms_evaluated"]
    assert firms > 0
    for method in ("EMDLOT attention", "EMDLOT permutation", "XGBoost SHAP", "XGBoost permutation"):
        assert 0.0 <= top5[method]["share"] <= 1.0 and top5[method]["firms"] == firms
    assert 0.0 < top5["chance"]["share"] < 1.0
    deletion = body["deletion"]
    # Masking every valid cell is the same mask whichever way cells were chosen: all must agree.
    everything = deletion["by_k"][-1]
    assert everything["k"] >= 10_000
    assert everything["random"] == pytest.approx(everything["attention"]) and everything["same_quarters"] == pytest.approx(everything["attention"])
    assert all(min(row["attention"], row["random"], row["same_quarters"]) >= 0 for row in deletion["by_k"])
    assert all(0 <= row["share_attention_larger_than_random"] <= 1 for row in deletion["by_k"])
