"""The synthetic generator: class counts, shape of the data, planted drivers, determinism."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emdlot.config import SynthConfig
from emdlot.synth import generate
from emdlot.synth.generate import LOOKAHEAD_QUARTERS, MECHANISM_FEATURES
from emdlot.synth.text import DISTRESS


@pytest.fixture(scope="module")
def paper():
    return generate(SynthConfig())


def test_paper_size_class_counts(paper):
    assert paper.labels["label"].value_counts().to_dict() == {"Performing": 1956, "Extended": 24, "Defaulted": 14}
    assert paper.labels["firm_id"].is_unique


@pytest.mark.parametrize("firms", [500, 5000])
def test_other_sizes_keep_rate_and_ratio(firms):
    counts = generate(SynthConfig(firms=firms, seed=3)).labels["label"].value_counts()
    distressed = counts["Extended"] + counts["Defaulted"]
    assert abs(distressed / firms - 38 / 1994) < 0.003
    assert abs(counts["Extended"] / distressed - 24 / 38) < 0.1


def test_same_seed_same_tables_other_seed_differs():
    a, b = generate(SynthConfig(firms=120, seed=11)), generate(SynthConfig(firms=120, seed=11))
    for name, frame in a.tables().items():
        pd.testing.assert_frame_equal(frame, b.tables()[name])
    c = generate(SynthConfig(firms=120, seed=12))
    assert not a.panel.equals(c.panel)


def test_irregular_quarters_missing_values_and_span(paper):
    panel = paper.panel
    assert panel["date"].min() == pd.Timestamp("2015-03-31") and panel["date"].max() == pd.Timestamp("2024-09-30")
    per_firm = panel.groupby("firm_id")["date"]
    assert per_firm.size().max() <= 39
    assert per_firm.min().nunique() > 10  # firms start at different quarters
    gaps = panel.sort_values(["firm_id", "date"]).groupby("firm_id")["date"].diff().dt.days.dropna()
    assert (gaps > 100).mean() > 0.03  # skipped quarters exist
    features = panel.columns[2:]
    assert len(features) == 32 and 0.02 < panel[features].isna().mean().mean() < 0.1


def test_heavy_tails_and_negatives_like_table_a3(paper):
    panel = paper.panel
    ta = panel["TA"].dropna()
    assert ta.mean() / ta.median() > 2.5  # heavy right tail of firm size
    assert (panel["NP"] < 0).any() and (panel["CFI"] < 0).mean() > 0.9
    assert panel["MORGR"].max() > 1000 * panel["MORGR"].median()


def test_macro_has_36_indicators_and_2020_shock(paper):
    macro = paper.macro.set_index("date")
    assert macro.shape == (39, 36)
    assert macro["GDP YoY"].idxmin() == pd.Timestamp("2020-03-31")
    assert macro["GDP YoY"].idxmax() == pd.Timestamp("2021-03-31")


def test_drivers_cover_every_distressed_firm_and_name_real_features(paper):
    drivers, labels = paper.drivers, paper.labels
    distressed = set(labels.loc[labels["label"] != "Performing", "firm_id"])
    assert distressed <= set(drivers["firm_id"])
    assert set(drivers["mechanism"]) == set(MECHANISM_FEATURES)
    panel_features = set(paper.panel.columns)
    for features in drivers["features"]:
        for feature in features.split(";"):
            assert feature in panel_features or feature.startswith("prospectus:")
    mix = drivers.groupby(["label", "mechanism"]).size().unstack(fill_value=0)
    assert mix.loc["Defaulted", "liquidity_squeeze"] / mix.loc["Defaulted"].sum() > mix.loc["Extended", "liquidity_squeeze"] / mix.loc["Extended"].sum()
    partial = drivers[drivers["label"] == "Performing"]
    assert 0.03 < partial["firm_id"].nunique() / (labels["label"] == "Performing").sum() < 0.15


def test_planted_liquidity_squeeze_is_visible_before_the_window(paper):
    """MF/TD at the last kept quarter falls well below the firm's own earlier level."""
    drivers = paper.drivers
    squeezed = drivers[(drivers["mechanism"] == "liquidity_squeeze") & (drivers["label"] != "Performing")]
    panel = paper.panel.set_index(["firm_id", "date"])["MF/TD"]
    drops = []
    for _, row in squeezed.iterrows():
        history = panel.loc[row["firm_id"]].dropna()
        before = history[history.index < row["start_date"]]
        at_end = history[history.index <= row["end_date"]]
        if len(before) >= 2 and len(at_end):
            drops.append(np.log(at_end.iloc[-1]) - np.log(before.median()))
    assert len(drops) >= 5 and np.median(drops) < -0.5


def test_distressed_reports_stop_before_event(paper):
    events = paper.labels.dropna(subset=["event_date"]).set_index("firm_id")["event_date"]
    last = paper.panel.groupby("firm_id")["date"].max()
    assert (last[events.index] < events).all()
    window = events - pd.DateOffset(months=3 * LOOKAHEAD_QUARTERS)
    kept = paper.panel[paper.panel["firm_id"].isin(events.index)]
    assert (kept.groupby("firm_id")["date"].min() <= window[kept["firm_id"].unique()]).all()


def test_prospectus_text_long_sections_and_risk_language(paper):
    text = paper.prospectus
    assert set(text["section"]) == {"important_notice", "risk_factors"}
    assert (text["text"].str.len() > 512).mean() > 0.15
    assert text["firm_id"].nunique() < len(paper.labels)  # some issuers have no prospectus
    risk = text[text["section"] == "risk_factors"].merge(paper.labels, on="firm_id")
    risk["distress"] = risk["text"].map(lambda s: sum(p in s for p in DISTRESS))
    disclosed = set(paper.drivers.loc[paper.drivers["mechanism"] == "risk_disclosure", "firm_id"])
    flagged = risk["firm_id"].isin(disclosed)
    assert risk.loc[flagged, "distress"].min() >= 3
    assert 0 < (risk.loc[~flagged, "distress"] > 0).mean() < 0.3  # frequent but not deterministic
