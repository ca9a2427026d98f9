"""prepare: exclusion window, sequences, leakage-free transforms, split, SMOTE, manifest."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emdlot.cli import main
from emdlot.config import PrepareConfig
from emdlot.data.arrays import SequenceArrays
from emdlot.data.assemble import AssemblyError, assemble, attach_text, read_meta, smote_balance
from emdlot.data.prepare import prepare
from emdlot.data.contract import load_inputs
from emdlot.data.sequences import (
    event_dates, exclude_lookahead, join_macro, keep_last, months_since_previous, pad_sequences,
)
from emdlot.data.transforms import feature_pipeline, load_pipeline, save_pipeline
from emdlot.schema import SECTIONS, TEXT_DIMS, text_feature_column


def test_exclusion_window_on_hand_made_dates():
    dates = pd.to_datetime(["2019-09-30", "2019-12-31", "2020-03-31", "2020-06-30", "2020-09-30", "2020-12-31"])
    panel = pd.DataFrame({"firm_id": ["D"] * 6 + ["P"] * 6, "date": list(dates) * 2, "x": range(12)})
    labels = pd.DataFrame({"firm_id": ["D", "P"], "label": ["Defaulted", "Performing"],
                           "event_date": pd.to_datetime(["2020-09-15", None])})
    kept = exclude_lookahead(panel, labels, months=6)
    # event 2020-09-15: cutoff 2020-03-15; Q1 2020 (03-31) is inside the two quarters before it
    assert list(kept.loc[kept["firm_id"] == "D", "date"]) == list(dates[:2])
    assert len(kept[kept["firm_id"] == "P"]) == 6  # Performing keeps its full history
    on_cutoff = exclude_lookahead(panel, labels.assign(event_date=pd.to_datetime(["2020-06-30", None])), months=6)
    assert on_cutoff.loc[on_cutoff["firm_id"] == "D", "date"].max() == pd.Timestamp("2019-12-31")


def test_delta_t_in_months_padding_and_cap():
    rows = pd.DataFrame({"firm_id": ["A"] * 4 + ["B"] * 2,
                         "date": pd.to_datetime(["2015-03-31", "2015-06-30", "2016-03-31", "2016-06-30", "2020-12-31", "2021-03-31"])})
    delta = months_since_previous(rows["firm_id"].to_numpy(), rows["date"])
    assert delta.tolist() == [0, 3, 9, 3, 0, 3]
    X, mask, dt = pad_sequences(rows["firm_id"].to_numpy(), np.arange(6, dtype=float)[:, None], delta, ["B", "A"], max_len=5)
    assert mask.tolist() == [[False, False, False, True, True], [False, True, True, True, True]]
    assert X[0, -1, 0] == 5 and X[1, -1, 0] == 3 and X[0, 0, 0] == 0
    assert dt[1].tolist() == [0, 0, 3, 9, 3]
    capped = keep_last(rows.iloc[::-1], max_len=2)
    assert capped.loc[capped["firm_id"] == "A", "date"].tolist() == list(pd.to_datetime(["2016-03-31", "2016-06-30"]))


def test_paper_table4_smote_counts(paper_dataset_noval):
    meta = read_meta(paper_dataset_noval)
    assert meta.counts["train"] == {"Performing": 1565, "Extended": 19, "Defaulted": 11}
    assert meta.counts["train_balanced"] == {"Performing": 1565, "Extended": 1565, "Defaulted": 1565}
    train = SequenceArrays.load(paper_dataset_noval / "train.npz")
    test = SequenceArrays.load(paper_dataset_noval / "test.npz")
    assert np.bincount(train.y).tolist() == [1565, 1565, 1565]
    assert np.bincount(test.y).tolist() == [meta.counts["test"][c] for c in ("Performing", "Extended", "Defaulted")]
    assert not any(f.startswith("smote-") for f in test.firm_id)


def test_smote_keeps_padding_masked(paper_dataset_noval):
    train = SequenceArrays.load(paper_dataset_noval / "train.npz")
    synthetic = np.char.startswith(train.firm_id.astype(str), "smote-")
    assert synthetic.sum() == 2 * 1565 - 19 - 11
    assert train.mask[:, -1].all()  # pre-padded: the latest step is always observed
    assert np.all(train.X[~train.mask] == 0) and np.all(train.delta_t[~train.mask] == 0)
    # masks stay contiguous blocks at the end (padding first, then observations)
    assert np.all(np.diff(train.mask.astype(int), axis=1) >= 0)
    assert set(train.y[synthetic]) == {1, 2}


def test_manifest_accounts_for_every_input_firm(paper_dataset_noval, paper_inputs):
    manifest = pd.read_csv(paper_dataset_noval / "manifest.csv", dtype={"firm_id": str})
    labels = pd.read_parquet(paper_inputs / "labels.parquet")
    assert sorted(manifest["firm_id"]) == sorted(labels["firm_id"])
    assert set(manifest["split"]) <= {"train", "test", "rejected"}
    sequences = SequenceArrays.load(paper_dataset_noval / "sequences.npz")
    assert set(sequences.firm_id) == set(manifest.loc[manifest["split"] != "rejected", "firm_id"])


def test_rejected_firm_gets_a_reason(small_csv, tmp_path):
    labels = pd.read_csv(small_csv / "labels.csv", dtype=str, keep_default_na=False)
    panel = pd.read_csv(small_csv / "panel.csv", dtype=str, keep_default_na=False)
    victim = labels.loc[labels["label"] == "Defaulted", "firm_id"].iloc[0]
    first = pd.to_datetime(panel.loc[panel["firm_id"] == victim, "date"]).min()
    labels.loc[labels["firm_id"] == victim, "event_date"] = (first + pd.DateOffset(months=2)).strftime("%Y-%m-%d")
    labels.to_csv(small_csv / "labels.csv", index=False)
    # keep at least two usable Defaulted firms so the stratified split still works
    extra = labels[labels["label"] == "Performing"].head(2).assign(label="Defaulted", event_date="2024-12-01")
    labels = pd.concat([labels[~labels["firm_id"].isin(extra["firm_id"])], extra])
    labels.to_csv(small_csv / "labels.csv", index=False)
    prepare(small_csv, tmp_path / "ds", PrepareConfig(val_fraction=0.0))
    manifest = pd.read_csv(tmp_path / "ds" / "manifest.csv", dtype={"firm_id": str}, keep_default_na=False).set_index("firm_id")
    assert manifest.loc[victim, "split"] == "rejected"
    assert manifest.loc[victim, "reason"].startswith("no observation on or before the cutoff")
    assert "6 months before the event date" in manifest.loc[victim, "reason"]
    assert len(manifest) == len(labels) and (manifest.loc[manifest["split"] != "rejected", "reason"] == "").all()


@pytest.mark.parametrize("val_fraction", [0.0, 0.25])
def test_held_out_firms_do_not_influence_fitted_transforms(small_csv, tmp_path, val_fraction):
    """Test firms, and validation firms when there are any, never reach a fitted transform."""
    prepare(small_csv, tmp_path / "a", PrepareConfig(val_fraction=val_fraction))
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv", dtype={"firm_id": str})
    held_out = set(manifest.loc[manifest["split"].isin(["test", "val"]), "firm_id"])
    assert (manifest["split"] == "val").any() == (val_fraction > 0)
    panel = pd.read_csv(small_csv / "panel.csv")
    features = panel.columns[2:]
    hit = panel["firm_id"].isin(held_out)
    panel.loc[hit, features] = panel.loc[hit, features] * 1000 + 5
    panel.to_csv(small_csv / "panel.csv", index=False)
    prepare(small_csv, tmp_path / "b", PrepareConfig(val_fraction=val_fraction))

    a, b = load_pipeline(tmp_path / "a" / "transforms.skops"), load_pipeline(tmp_path / "b" / "transforms.skops")
    np.testing.assert_array_equal(a.named_steps["standardise"].mean_, b.named_steps["standardise"].mean_)
    probe = np.random.default_rng(0).normal(size=(50, len(features) + 36)) * 10
    probe[::3, 5] = np.nan
    np.testing.assert_array_equal(a.transform(probe), b.transform(probe))
    train_a, train_b = (SequenceArrays.load(tmp_path / d / "train.npz") for d in ("a", "b"))
    np.testing.assert_array_equal(train_a.X, train_b.X)
    test_a, test_b = (SequenceArrays.load(tmp_path / d / "test.npz") for d in ("a", "b"))
    assert not np.array_equal(test_a.X, test_b.X)  # the change itself did reach the test firms
    if val_fraction:
        val_a, val_b = (SequenceArrays.load(tmp_path / d / "val.npz") for d in ("a", "b"))
        assert not np.array_equal(val_a.X, val_b.X)  # ... and the validation firms


def _heavy_tailed_rows(n: int = 400, features: int = 12, seed: int = 0) -> np.ndarray:
    """Correlated columns on very different scales, 20% of the cells missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) @ rng.normal(size=(3, features)) + 0.3 * rng.normal(size=(n, features))
    x *= 10 ** rng.uniform(0, 6, size=features)
    x[rng.random(x.shape) < 0.2] = np.nan
    return x


def _probe(rows: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """80 rows to score; one firm's rows are 9..12: one with every cell missing, one with all but one."""
    probe = rows[:80].copy()
    probe[10] = np.nan
    probe[11, 1:] = np.nan
    return probe, [9, 10, 11, 12]


def _assert_deterministic_and_row_independent(pipeline, rows: np.ndarray) -> np.ndarray:
    probe, firm = _probe(rows)
    once = pipeline.transform(probe)
    np.testing.assert_array_equal(once, pipeline.transform(probe))  # the same numbers every time
    assert np.isnan(probe[firm]).any() and not np.isnan(once).any()
    alone = pipeline.transform(probe[firm])
    # alone, in the first batch, and among other firms' rows: equal up to BLAS rounding (the old
    # posterior draw differed by whole standard deviations)
    np.testing.assert_allclose(alone, once[firm], rtol=0, atol=1e-12)
    elsewhere = pipeline.transform(np.vstack([rows[200:260], probe[firm], rows[300:310]]))
    np.testing.assert_allclose(elsewhere[60:64], alone, rtol=0, atol=1e-12)
    # a batch with nothing observed at all gets what such a row gets inside any other batch
    np.testing.assert_allclose(pipeline.transform(probe[[10, 10]]), once[[10, 10]], rtol=0, atol=1e-12)
    return once


def test_fitted_transforms_are_deterministic_and_independent_of_the_batch():
    rows = _heavy_tailed_rows()
    pipeline = feature_pipeline(PrepareConfig()).fit(rows)
    assert pipeline.named_steps["impute"].sample_posterior is False  # fitted with draws, transforms by the mean
    _assert_deterministic_and_row_independent(pipeline, rows)


def test_loaded_transforms_are_deterministic_also_from_files_written_before_the_change(tmp_path):
    rows = _heavy_tailed_rows()
    cfg = PrepareConfig()
    pipeline = feature_pipeline(cfg).fit(rows)
    save_pipeline(pipeline, tmp_path / "transforms.skops")
    loaded = load_pipeline(tmp_path / "transforms.skops")
    expected = _assert_deterministic_and_row_independent(loaded, rows)
    np.testing.assert_array_equal(expected, pipeline.transform(_probe(rows)[0]))

    # The format written before: a plain IterativeImputer that drew from its posterior at transform time.
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    old = feature_pipeline(cfg)
    old.steps[1] = ("impute", IterativeImputer(**old.named_steps["impute"].get_params()))
    old.fit(rows)
    assert old.named_steps["impute"].sample_posterior is True
    save_pipeline(old, tmp_path / "old.skops")
    reloaded = load_pipeline(tmp_path / "old.skops")
    assert reloaded.named_steps["impute"].sample_posterior is False
    # the fit is unchanged, so the old file now gives exactly the new map
    np.testing.assert_array_equal(_assert_deterministic_and_row_independent(reloaded, rows), expected)


def test_quantile_scaling_maps_each_training_feature_to_a_standard_normal_and_round_trips(tmp_path):
    """scaling: quantile (not the default): ranks, as a tree sees them; a heavy tail cannot stretch the scale."""
    rows = _heavy_tailed_rows()
    standard = feature_pipeline(PrepareConfig()).fit(rows)
    quantile = feature_pipeline(PrepareConfig(scaling="quantile")).fit(rows)
    assert "standardise" in standard.named_steps and "quantile" in quantile.named_steps
    out = quantile.transform(rows)
    assert np.abs(np.median(out, axis=0)).max() < 0.1 and np.abs(out).max() < 5.3  # N(0, 1) quantiles, clipped
    ranks = lambda a: np.argsort(np.argsort(a, axis=0), axis=0)
    observed = ~np.isnan(rows).any(axis=1)
    assert (np.abs(ranks(out[observed]) - ranks(standard.transform(rows)[observed])) <= 1).mean() > 0.95  # same order
    save_pipeline(quantile, tmp_path / "q.skops")
    np.testing.assert_array_equal(_assert_deterministic_and_row_independent(load_pipeline(tmp_path / "q.skops"), rows),
                                  quantile.transform(_probe(rows)[0]))


def test_prepared_sequences_equal_each_firm_transformed_alone(small_csv, tmp_path):
    """prepare transforms every firm in one batch; a scorer transforms one firm: the same numbers."""
    cfg = PrepareConfig(val_fraction=0.0)
    prepare(small_csv, tmp_path / "ds", cfg)
    tables = load_inputs(small_csv)
    events = event_dates(tables.panel, tables.labels, cfg.exclusion_months, cfg.performing_cutoff, cfg.seed)
    kept = keep_last(exclude_lookahead(tables.panel, tables.labels, cfg.exclusion_months, events), cfg.max_len)
    rows = join_macro(kept, tables.macro, tables.macro_features)
    features = tables.feature_names
    pipeline = load_pipeline(tmp_path / "ds" / "transforms.skops")
    sequences = SequenceArrays.load(tmp_path / "ds" / "sequences.npz")
    gaps = rows[features].isna().any(axis=1).groupby(rows["firm_id"]).sum()
    firms = [f for f in gaps[gaps > 0].index if f in set(sequences.firm_id)][:6]
    assert len(firms) == 6
    for firm in firms:
        own = rows[rows["firm_id"] == firm].sort_values("date")[features].to_numpy(dtype=float)
        i = int(np.flatnonzero(sequences.firm_id == firm)[0])
        np.testing.assert_allclose(sequences.X[i][sequences.mask[i]], pipeline.transform(own).astype(np.float32),
                                   rtol=0, atol=1e-6)


def test_smote_lowers_neighbours_for_thin_classes_and_stops_clearly_below_two():
    rng = np.random.default_rng(0)
    n, t, f = 40, 5, 3

    def arrays(y):
        return SequenceArrays(np.array([f"f{i}" for i in range(len(y))]), rng.normal(size=(len(y), t, f)).astype(np.float32),
                              np.ones((len(y), t), bool), np.full((len(y), t), 3, np.float32),
                              np.zeros((len(y), 2, 4), np.float32), np.zeros(len(y), bool), np.array(y))

    out = smote_balance(arrays([0] * (n - 4) + [1, 1, 2, 2]), k_neighbors=5, seed=1)
    assert np.bincount(out.y).tolist() == [n - 4] * 3
    with pytest.raises(AssemblyError, match="at least 2 training firms per class; Defaulted has 1"):
        smote_balance(arrays([0] * (n - 3) + [1, 1, 2]), k_neighbors=5, seed=1)
    # a smote_ratio below 1 makes each smaller class up to that share of the largest, never below its own count
    base = arrays([0] * 200 + [1] * 12 + [2] * 30)
    partial = smote_balance(base, k_neighbors=5, seed=1, ratio=0.1)
    assert np.bincount(partial.y).tolist() == [200, 20, 30]
    real = np.isin(partial.firm_id, base.firm_id)
    assert real.sum() == len(base.y) and (partial.y[~real] == 1).all()  # every real firm kept; the copies are Extended
    np.testing.assert_array_equal(smote_balance(base, 5, 1, ratio=1.0).y, smote_balance(base, 5, 1).y)


def test_text_features_join_by_firm_and_synthetic_samples_carry_text(paper_dataset_noval):
    sequences = SequenceArrays.load(paper_dataset_noval / "sequences.npz")
    rng = np.random.default_rng(1)
    with_text = sequences.firm_id[::2]
    table = pd.DataFrame(rng.normal(size=(len(with_text), 2 * TEXT_DIMS)),
                         columns=[text_feature_column(s, i) for s in SECTIONS for i in range(TEXT_DIMS)])
    table.insert(0, "firm_id", with_text)
    table.iloc[5, 1:TEXT_DIMS + 1] = np.nan  # this firm lacks its first section
    joined = attach_text(sequences, table)
    assert joined.text_mask.shape == (len(sequences), len(SECTIONS))
    assert joined.text_mask.any(axis=1).sum() == len(with_text)
    assert joined.text_mask.sum() == 2 * len(with_text) - 1
    lacking = int(np.flatnonzero(sequences.firm_id == with_text[5])[0])
    assert joined.text_mask[lacking].tolist() == [False, True] and np.all(joined.text[lacking, 0] == 0)
    row = int(np.flatnonzero(sequences.firm_id == with_text[3])[0])
    np.testing.assert_allclose(joined.text[row].reshape(-1), table.iloc[3, 1:].to_numpy(dtype=np.float32), rtol=1e-6)
    assert np.all(joined.text[~joined.text_mask] == 0)
    table.iloc[5, 1:TEXT_DIMS + 1] = 0.0

    parts = assemble(paper_dataset_noval, table)
    train = parts["train"]
    synthetic = np.char.startswith(train.firm_id.astype(str), "smote-")
    assert train.text_mask[synthetic].mean() > 0.2 and np.abs(train.text[synthetic[:, None] & train.text_mask]).sum() > 0
    assert np.all(train.text[~train.text_mask] == 0)


def test_cli_prepare_with_thin_class_is_a_clear_error(small_csv, tmp_path, capsys):
    labels = pd.read_csv(small_csv / "labels.csv", dtype=str, keep_default_na=False)
    keep_one = labels.index[labels["label"] == "Defaulted"][1:]
    labels.loc[keep_one, ["label", "event_date"]] = ["Performing", ""]
    labels.to_csv(small_csv / "labels.csv", index=False)
    assert main(["prepare", str(small_csv), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "too few firms in class (Defaulted: 1)" in err and "Traceback" not in err


def _prepared(small_csv, tmp_path, protocol, seed=86):
    out = tmp_path / f"{protocol}-{seed}"
    prepare(small_csv, out, PrepareConfig(performing_cutoff=protocol, seed=seed, val_fraction=0.0))
    return pd.read_csv(out / "manifest.csv", dtype={"firm_id": str}, parse_dates=["event_date", "cutoff", "last_kept"]), out


def test_matched_cutoffs_end_performing_firms_before_a_recorded_pseudo_event(small_csv, tmp_path):
    manifest, _ = _prepared(small_csv, tmp_path, "matched")
    performing = manifest[manifest["label"] == "Performing"]
    assert performing["event_source"].str.startswith("matched").all()
    assert performing["event_date"].notna().all() and performing["last_kept"].notna().all()
    # every kept quarter lies at least the exclusion window before the (pseudo-)event, for every firm
    window = manifest["event_date"] - pd.DateOffset(months=6)
    assert (manifest["last_kept"] <= window + pd.offsets.MonthEnd(0)).all()
    assert (manifest["last_kept"] <= manifest["cutoff"]).all()
    # pseudo-events are drawn from the distressed firms' real event dates where one falls in the history
    events = set(manifest.loc[manifest["event_source"] == "event", "event_date"])
    drawn = performing[performing["event_source"] == "matched: distressed event"]
    assert len(drawn) > 0.5 * len(performing) and set(drawn["event_date"]) <= events
    # seeded: the same seed draws the same dates, another seed others
    again, _ = _prepared(small_csv, tmp_path / "again", "matched")
    pd.testing.assert_frame_equal(manifest, again)
    other, _ = _prepared(small_csv, tmp_path, "matched", seed=7)
    assert not other.set_index("firm_id")["event_date"].equals(manifest.set_index("firm_id")["event_date"])


def test_paper_cutoffs_keep_performing_history_and_match_matched_for_distressed_firms(small_csv, tmp_path):
    paper, paper_dir = _prepared(small_csv, tmp_path, "paper")
    matched, matched_dir = _prepared(small_csv, tmp_path, "matched")
    panel = pd.read_csv(small_csv / "panel.csv", dtype={"firm_id": str}, parse_dates=["date"])
    last_row = panel.groupby("firm_id")["date"].max()
    performing = paper[paper["label"] == "Performing"]
    assert (performing["event_source"] == "full history").all() and performing["event_date"].isna().all()
    assert (performing["last_kept"] == performing["firm_id"].map(last_row)).all()
    a, b = (SequenceArrays.load(d / "sequences.npz") for d in (paper_dir, matched_dir))
    assert a.firm_id.tolist() == b.firm_id.tolist()
    distressed = a.y > 0
    np.testing.assert_array_equal(a.mask[distressed], b.mask[distressed])
    # Performing sequences are shorter under matched: they end before the pseudo-event
    assert b.mask[~distressed].sum() < a.mask[~distressed].sum()


def test_exclusion_on_explicit_events_uses_each_firms_own_date():
    from emdlot.data.sequences import event_dates

    dates = pd.to_datetime(["2019-09-30", "2019-12-31", "2020-03-31", "2020-06-30", "2020-09-30", "2020-12-31"])
    panel = pd.DataFrame({"firm_id": ["D"] * 6 + ["P"] * 6, "date": list(dates) * 2, "x": range(12)})
    labels = pd.DataFrame({"firm_id": ["D", "P"], "label": ["Defaulted", "Performing"],
                           "event_date": pd.to_datetime(["2020-09-15", None])})
    events = event_dates(panel, labels, months=6, protocol="matched", seed=0)
    assert events.set_index("firm_id").loc["P", "event_date"] == pd.Timestamp("2020-09-15")  # the only event inside
    kept = exclude_lookahead(panel, labels, 6, events)
    assert kept.groupby("firm_id")["date"].max().tolist() == [dates[1], dates[1]]
    with pytest.raises(ValueError, match="unknown performing-cutoff protocol"):
        event_dates(panel, labels, 6, protocol="late")


def test_a_prepare_that_fails_leaves_no_half_written_dataset_and_keeps_the_earlier_one(small_csv, tmp_path, monkeypatch):
    import emdlot.data.prepare as prep
    from emdlot.data.prepare import PrepareError

    out = tmp_path / "ds"
    prep.prepare(small_csv, out, PrepareConfig(seed=3))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while writing the training arrays")

    monkeypatch.setattr(prep, "assemble", broken)  # fails after manifest, transforms and sequences were written
    with pytest.raises(RuntimeError, match="disk full"):
        prep.prepare(small_csv, out, PrepareConfig(seed=4))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier dataset, untouched
    with pytest.raises(RuntimeError):
        prep.prepare(small_csv, tmp_path / "fresh", PrepareConfig(seed=4))
    assert not (tmp_path / "fresh").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind either
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PrepareError, match="is a file"):
        prep.prepare(small_csv, tmp_path / "afile", PrepareConfig(seed=4))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_text("x")
    with pytest.raises(PrepareError, match="no prepared dataset"):
        prep.prepare(small_csv, tmp_path / "photos", PrepareConfig(seed=4))
