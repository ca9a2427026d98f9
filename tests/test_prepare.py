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
from emdlot.data.sequences import exclude_lookahead, keep_last, months_since_previous, pad_sequences
from emdlot.data.transforms import load_pipeline
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
    assert "no observation left before the look-ahead window" in manifest.loc[victim, "reason"]
    assert len(manifest) == len(labels) and (manifest.loc[manifest["split"] != "rejected", "reason"] == "").all()


def test_test_firms_do_not_influence_fitted_transforms(small_csv, tmp_path):
    prepare(small_csv, tmp_path / "a", PrepareConfig(val_fraction=0.0))
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv", dtype={"firm_id": str})
    held_out = set(manifest.loc[manifest["split"].isin(["test"]), "firm_id"])
    panel = pd.read_csv(small_csv / "panel.csv")
    features = panel.columns[2:]
    hit = panel["firm_id"].isin(held_out)
    panel.loc[hit, features] = panel.loc[hit, features] * 1000 + 5
    panel.to_csv(small_csv / "panel.csv", index=False)
    prepare(small_csv, tmp_path / "b", PrepareConfig(val_fraction=0.0))

    a, b = load_pipeline(tmp_path / "a" / "transforms.skops"), load_pipeline(tmp_path / "b" / "transforms.skops")
    np.testing.assert_array_equal(a.named_steps["standardise"].mean_, b.named_steps["standardise"].mean_)
    probe = np.random.default_rng(0).normal(size=(50, len(features) + 36)) * 10
    probe[::3, 5] = np.nan
    np.testing.assert_array_equal(a.transform(probe), b.transform(probe))
    train_a, train_b = (SequenceArrays.load(tmp_path / d / "train.npz") for d in ("a", "b"))
    np.testing.assert_array_equal(train_a.X, train_b.X)
    test_a, test_b = (SequenceArrays.load(tmp_path / d / "test.npz") for d in ("a", "b"))
    assert not np.array_equal(test_a.X, test_b.X)  # the change itself did reach the test firms


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


def test_text_features_join_by_firm_and_synthetic_samples_carry_text(paper_dataset_noval):
    sequences = SequenceArrays.load(paper_dataset_noval / "sequences.npz")
    rng = np.random.default_rng(1)
    with_text = sequences.firm_id[::2]
    table = pd.DataFrame(rng.normal(size=(len(with_text), 2 * TEXT_DIMS)),
                         columns=[text_feature_column(s, i) for s in SECTIONS for i in range(TEXT_DIMS)])
    table.insert(0, "firm_id", with_text)
    joined = attach_text(sequences, table)
    assert joined.text_mask.sum() == len(with_text)
    row = int(np.flatnonzero(sequences.firm_id == with_text[3])[0])
    np.testing.assert_allclose(joined.text[row].reshape(-1), table.iloc[3, 1:].to_numpy(dtype=np.float32), rtol=1e-6)
    assert np.all(joined.text[~joined.text_mask] == 0)

    parts = assemble(paper_dataset_noval, table)
    train = parts["train"]
    synthetic = np.char.startswith(train.firm_id.astype(str), "smote-")
    assert train.text_mask[synthetic].mean() > 0.2 and np.abs(train.text[synthetic & train.text_mask]).sum() > 0
    assert np.all(train.text[~train.text_mask] == 0)


def test_cli_prepare_with_thin_class_is_a_clear_error(small_csv, tmp_path, capsys):
    labels = pd.read_csv(small_csv / "labels.csv", dtype=str, keep_default_na=False)
    keep_one = labels.index[labels["label"] == "Defaulted"][1:]
    labels.loc[keep_one, ["label", "event_date"]] = ["Performing", ""]
    labels.to_csv(small_csv / "labels.csv", index=False)
    assert main(["prepare", str(small_csv), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "too few firms in class (Defaulted: 1)" in err and "Traceback" not in err
