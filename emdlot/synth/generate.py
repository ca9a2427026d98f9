"""Generate the paper-shaped synthetic dataset: panel, macro, prospectus, labels and ground-truth drivers.

How it is built, top-down:
1. a timeline per firm (start quarter, skipped quarters, end or credit-event date);
2. latent firm states over quarters (size, leverage, profitability, liquidity, debt maturity) as AR(1)
   processes around firm-specific levels, so one quarter alone says little about a firm;
3. planted mechanisms (liquidity squeeze, leverage build-up, profit collapse, risk disclosure) ramping
   up over the quarters before the look-ahead window; inside that window distress accelerates, so a
   preparation step that fails to drop it leaks the answer;
4. the 32 financial indicators of Table A.1 derived from the latents with accounting identities, plus
   rare heavy-tailed outliers and missing cells (Table A.3's shape);
5. the 36 macro indicators of Table A.2 with seasonality and a 2020 shock (Table A.4's shape);
6. two Chinese prospectus sections per firm.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emdlot.config import SynthConfig
from emdlot.data.io import write_table
from emdlot.synth.indicators import FINANCIAL, MACRO
from emdlot.synth.text import prospectus_sections

# Mechanism -> indicators it moves (the drivers table lists these per firm).
MECHANISM_FEATURES = {
    "liquidity_squeeze": ("CFO", "CFF", "MF/TD", "CR*", "CR", "QR", "MA", "STD/TD"),
    "leverage_buildup": ("D/A", "STD/TD", "IBD/TIC", "TD", "IBD", "ND", "NA", "ICR"),
    "profit_collapse": ("ROA", "ROE", "NP", "EBIT", "EBITDA", "MOP", "MOPM", "MOR", "MORGR", "ICR"),
    "risk_disclosure": ("prospectus:risk_factors", "prospectus:important_notice"),
}
# Extended and Defaulted differ in mechanism mix and severity; Performing firms carry weak partial signals.
MECHANISM_WEIGHTS = {
    "Extended": {"leverage_buildup": 0.40, "profit_collapse": 0.20, "liquidity_squeeze": 0.15, "risk_disclosure": 0.25},
    "Defaulted": {"liquidity_squeeze": 0.40, "profit_collapse": 0.25, "leverage_buildup": 0.15, "risk_disclosure": 0.20},
    "Performing": {"liquidity_squeeze": 0.3, "profit_collapse": 0.3, "leverage_buildup": 0.3, "risk_disclosure": 0.1},
}
SEVERITY = {"Extended": (0.5, 0.9), "Defaulted": (0.8, 1.3), "Performing": (0.2, 0.6)}
DURATION = {"liquidity_squeeze": (3, 6), "leverage_buildup": (8, 16), "profit_collapse": (4, 8), "risk_disclosure": (1, 1)}
LOOKAHEAD_QUARTERS = 2  # the window prepare must drop (DESIGN.md section 2)
OUTLIER_PROBABILITY = 0.001
MATURED_SHARE = 0.6  # Performing issuers whose reports stop before the last quarter
HIGH_MISSING = {"EBIT-E": 3.0, "EBITDA-E": 3.0, "ITR": 2.5}  # multipliers of the base missing rate


@dataclass
class SyntheticData:
    panel: pd.DataFrame
    macro: pd.DataFrame
    prospectus: pd.DataFrame
    labels: pd.DataFrame
    drivers: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"panel": self.panel, "macro": self.macro, "prospectus": self.prospectus, "labels": self.labels, "drivers": self.drivers}


def _ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float) -> np.ndarray:
    noise = rng.standard_normal(shape)
    out = np.empty(shape)
    out[:, 0] = noise[:, 0]
    scale = np.sqrt(1 - rho**2)
    for t in range(1, shape[1]):
        out[:, t] = rho * out[:, t - 1] + scale * noise[:, t]
    return out


def _class_counts(cfg: SynthConfig) -> dict[str, int]:
    distressed = max(2, round(cfg.firms * cfg.distressed_rate))
    extended = max(1, round(distressed * cfg.extended_share))
    defaulted = max(1, distressed - extended)
    return {"Performing": cfg.firms - extended - defaulted, "Extended": extended, "Defaulted": defaulted}


@dataclass
class _Timeline:
    labels: np.ndarray  # (N,) str
    start: np.ndarray  # (N,) first quarter index
    last_row: np.ndarray  # (N,) last quarter index with a report
    last_kept: np.ndarray  # (N,) last quarter before the look-ahead window (= last_row for Performing)
    event_date: list  # Timestamp or NaT


def _timeline(cfg: SynthConfig, rng: np.random.Generator, n_quarters: int, period_starts: pd.DatetimeIndex) -> _Timeline:
    counts = _class_counts(cfg)
    labels = np.array([lab for lab, n in counts.items() for _ in range(n)])
    rng.shuffle(labels)
    n = len(labels)
    start = np.where(rng.random(n) < 0.6, 0, rng.integers(1, n_quarters - 11, n))
    last_row = np.full(n, n_quarters - 1)
    # Many issuers leave the sample early (bonds mature): otherwise "last report in the final quarter"
    # would give Performing away through the calendar (the macro values of the last step).
    matured = rng.random(n) < MATURED_SHARE
    last_row[matured] = [int(rng.integers(min(s + 8, n_quarters - 2), n_quarters - 1)) for s in start[matured]]
    last_kept = last_row.copy()
    event_date: list = [pd.NaT] * n
    for i in np.flatnonzero(labels != "Performing"):
        event_q = int(rng.integers(start[i] + 10, n_quarters + 1))  # may fall in the quarter after the data ends
        event = period_starts[event_q] + pd.Timedelta(days=int(rng.integers(0, 88)))
        event_date[i] = event
        last_row[i] = min(event_q - 1, n_quarters - 1)  # reports stop at the event
        last_kept[i] = event_q - LOOKAHEAD_QUARTERS - 1
    return _Timeline(labels, start, last_row, last_kept, event_date)


def _ramp(n_quarters: int, end: int, duration: int, distressed: bool) -> np.ndarray:
    """0 before the mechanism, rising to 1 at `end`; afterwards accelerating (distress) or fading (recovery)."""
    t = np.arange(n_quarters, dtype=float)
    ramp = np.clip((t - (end - duration)) / duration, 0.0, 1.0)
    after = t > end
    ramp[after] = 1.0 + 0.75 * (t[after] - end) if distressed else np.clip(1.0 - (t[after] - end) / 2.0, 0.0, 1.0)
    return ramp


def _plant_mechanisms(cfg: SynthConfig, rng: np.random.Generator, tl: _Timeline, n_quarters: int, quarter_ends: pd.DatetimeIndex):
    """Choose each firm's mechanisms; return their effect strengths (N, Q) and the drivers table."""
    n = len(tl.labels)
    effect = {m: np.zeros((n, n_quarters)) for m in MECHANISM_FEATURES}
    disclosed = np.zeros(n, dtype=bool)
    rows = []
    partial = (tl.labels == "Performing") & (rng.random(n) < cfg.performing_partial_signal)
    for i in np.flatnonzero((tl.labels != "Performing") | partial):
        label = str(tl.labels[i])
        weights = MECHANISM_WEIGHTS[label]
        names = list(weights)
        k = 1 if label == "Performing" or rng.random() < 0.5 else 2
        chosen = rng.choice(names, size=k, replace=False, p=np.array(list(weights.values())) / sum(weights.values()))
        for mech in chosen:
            severity = float(rng.uniform(*SEVERITY[label]))
            lo, hi = DURATION[mech]
            duration = int(rng.integers(lo, hi + 1))
            if label == "Performing":
                end = int(rng.integers(tl.start[i] + 2, tl.last_row[i] + 1))
            else:
                end = int(tl.last_kept[i])
            if mech == "risk_disclosure":
                disclosed[i] = True
            else:
                effect[mech][i] = severity * _ramp(n_quarters, end, duration, label != "Performing")
            first = max(end - duration + 1, int(tl.start[i]))
            rows.append({
                "firm_id": i, "label": label, "mechanism": str(mech), "severity": round(severity, 3),
                "features": ";".join(MECHANISM_FEATURES[mech]),
                "start_date": quarter_ends[first] if mech != "risk_disclosure" else pd.NaT,
                "end_date": quarter_ends[min(end, n_quarters - 1)] if mech != "risk_disclosure" else pd.NaT,
            })
    drivers = pd.DataFrame(rows, columns=["firm_id", "label", "mechanism", "severity", "features", "start_date", "end_date"])
    return effect, disclosed, drivers


def _financials(rng: np.random.Generator, n: int, n_quarters: int, effect: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Table A.1's indicators, (N, Q) each, from firm latents and accounting identities."""
    shape = (n, n_quarters)
    t = np.arange(n_quarters)
    q4 = (t % 4 == 3).astype(float)
    season = 1.0 + 0.25 * q4 - 0.1 * (t % 4 == 0)
    col = lambda v: v[:, None]  # noqa: E731 - broadcast a per-firm value over quarters

    liq_fx, lev_fx, prof_fx = effect["liquidity_squeeze"], effect["leverage_buildup"], effect["profit_collapse"]
    log_ta = col(rng.normal(np.log(380.0), 1.6, n)) + col(rng.normal(0.012, 0.01, n)) * t + 0.04 * _ar1(rng, shape, 0.9)
    ta = np.exp(log_ta)
    da = np.clip(col(rng.normal(58.0, 14.0, n)) + 3.0 * _ar1(rng, shape, 0.85) + 18.0 * lev_fx, 3.0, 99.0)
    roa = col(rng.normal(3.3, 2.5, n)) + 1.2 * _ar1(rng, shape, 0.6) + 0.8 * q4 - 5.0 * prof_fx
    liq = col(rng.normal(0.0, 0.8, n)) + 0.35 * _ar1(rng, shape, 0.7) - 2.0 * liq_fx
    std_td = np.clip(col(rng.normal(54.0, 18.0, n)) + 5.0 * _ar1(rng, shape, 0.8) + 10.0 * liq_fx + 8.0 * lev_fx, 2.0, 99.0)
    ibd_tic = np.clip(0.8 * da - 5.0 + col(rng.normal(0.0, 12.0, n)) + 4.0 * _ar1(rng, shape, 0.7) + 15.0 * lev_fx, 1.0, 97.0)

    td = da / 100.0 * ta
    na = ta - td
    ibd = ibd_tic / (100.0 - ibd_tic) * na
    mf_td = 0.15 * np.exp(0.6 * liq)
    ma = mf_td * td
    turnover = col(np.exp(rng.normal(np.log(0.18), 0.6, n))) * np.exp(0.08 * _ar1(rng, shape, 0.5))
    mor = ta * turnover * season * (1.0 - 0.4 * np.minimum(prof_fx, 1.0))
    mopm = col(rng.normal(14.0, 8.0, n)) + 3.0 * rng.standard_normal(shape) + 1.5 * (roa - roa.mean(axis=1, keepdims=True)) - 10.0 * prof_fx
    np_ = roa / 100.0 / 4.0 * ta
    interest = 0.012 * ibd
    ebit = 1.33 * np_ + interest
    ebitda = ebit + 0.006 * ta
    cfo = (np_ + 0.006 * ta) * (1.0 + 0.8 * (q4 - 0.25) + 0.6 * rng.standard_normal(shape)) - 0.03 * liq_fx * ta
    cfi = -0.025 * ta * np.exp(0.5 * rng.standard_normal(shape))
    cff = -0.6 * (cfo + cfi) + 0.01 * ta * rng.standard_normal(shape) - 0.02 * liq_fx * ta
    mor_lag = np.concatenate([np.full((n, 4), np.nan), mor[:, :-4]], axis=1)
    morgr = np.where(np.isnan(mor_lag), rng.normal(8.0, 15.0, shape), (mor / mor_lag - 1.0) * 100.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {
            "EBIT": ebit, "EBIT-E": ebit * (1 + 0.05 * rng.standard_normal(shape)),
            "EBITDA": ebitda, "EBITDA-E": ebitda * (1 + 0.08 * rng.standard_normal(shape)),
            "MOR": mor, "MOP": mor * mopm / 100.0, "NP": np_, "MOPM": mopm, "MORGR": morgr,
            "ROA": roa, "ROE": np_ * 4.0 / na * 100.0, "EBITDA/TR": ebitda / mor * 100.0, "OCF/EBITDA": cfo / ebitda,
            "CR": 1.3 * np.exp(0.4 * liq + 0.1 * rng.standard_normal(shape)),
            "QR": 1.3 * np.exp(0.4 * liq) * col(rng.uniform(0.6, 0.95, n)),
            "ITR": col(np.exp(rng.normal(np.log(4.0), 0.8, n))) * np.exp(0.1 * rng.standard_normal(shape)),
            "D/A": da, "STD/TD": std_td, "IBD/TIC": ibd_tic, "CR*": ma / (std_td / 100.0 * td), "MF/TD": mf_td,
            "ICR": ebit / interest, "EBITDA/IBD": ebitda * 4.0 / ibd * 100.0,
            "CFO": cfo, "CFI": cfi, "CFF": cff, "ND": ibd - ma, "IBD": ibd, "TD": td, "NA": na, "MA": ma, "TA": ta,
        }
    return values


def _heavy_tails(rng: np.random.Generator, values: dict[str, np.ndarray]) -> None:
    """Rare extreme and sign-flipped values (data errors included), then clipped to Table A.3's range."""
    for name, arr in values.items():
        _, lo, hi, _, _ = FINANCIAL[name]
        arr[~np.isfinite(arr)] = hi
        # outliers spread log-uniformly between 1/1000 of Table A.3's extreme and the extreme itself
        hit = rng.random(arr.shape) < OUTLIER_PROBABILITY
        toward_low = (rng.random(hit.sum()) < 0.3) & (lo < 0)
        arr[hit] = np.where(toward_low, lo, hi) * 10.0 ** -rng.uniform(0.0, 3.0, hit.sum())
        if lo < 0:
            flip = rng.random(arr.shape) < OUTLIER_PROBABILITY / 2
            arr[flip] *= -1.0
        np.clip(arr, lo, hi, out=arr)


def _macro(rng: np.random.Generator, quarters: pd.PeriodIndex) -> pd.DataFrame:
    """Table A.2's indicators per quarter: trends, seasonality and the 2020 shock and rebound."""
    n = len(quarters)
    t = np.arange(n)
    qtr = np.asarray(quarters.quarter)
    year = np.asarray(quarters.year)
    shock = np.zeros(n)
    for (y, q), s in {(2020, 1): -1.0, (2020, 2): -0.35, (2020, 3): -0.1, (2021, 1): 1.0, (2021, 2): 0.3, (2022, 2): -0.25}.items():
        shock[(year == y) & (qtr == q)] = s
    noise = lambda scale: scale * rng.standard_normal(n)  # noqa: E731

    yoy = np.clip(6.8 - 0.18 * t / 4 + 12.5 * shock + noise(0.3), -6.9, 18.3)
    ytd_share = np.array([0.0, 0.22, 0.47, 0.73, 1.0])[qtr]
    annual = 680000.0 * np.cumprod(1 + (yoy / 100.0) / 4)
    gdp = annual * ytd_share * 1.3
    out = {
        "GDP": gdp, "GDP-P": gdp * (0.05 + 0.05 * (qtr == 3)), "GDP-S": gdp * 0.39, "GDP-T": gdp * (0.56 - 0.05 * (qtr == 3)),
        "GDP YoY": yoy, "GDP-P YoY": np.clip(3.5 + 3.0 * shock + noise(0.4), -3.1, 8.1),
        "GDP-S YoY": np.clip(yoy - 0.5 + 5.0 * shock + noise(0.4), -9.7, 24.4), "GDP-T YoY": np.clip(yoy + 0.6 + 2.0 * shock + noise(0.4), -5.4, 15.6),
        "GDP QoQ": np.clip(1.5 + 10.0 * np.where(shock < -0.9, -1.15, np.where((year == 2020) & (qtr == 2), 1.0, 0.0)) + noise(0.3), -10.1, 11.6),
        "CPI": 101.8 + 0.9 * np.sin(t / 3.0) + noise(0.3), "CPI-U": 101.7 + 0.8 * np.sin(t / 3.0) + noise(0.3),
        "CPI-R": 101.9 + 1.2 * np.sin(t / 3.0 + 0.4) + noise(0.35),
        "TIE": 2600.0 * (1 + 0.03 * t) * (1 + 0.25 * shock) * (1 + 0.05 * (qtr == 4)), "TIE YoY": np.clip(5 + 20.0 * shock + noise(6.0), -11.3, 38.6),
        "TB": np.clip(300.0 + 12.0 * t + noise(60.0), 13.06, 877.6),
        "M2": 127533.28 * np.exp(0.022 * t), "M1": 40000.0 * np.exp(0.012 * t) + noise(800.0), "M0": 6000.0 * np.exp(0.011 * t) * (1 + 0.04 * (qtr == 1)),
        "M2 YoY": np.clip(10.0 - 0.05 * t + 1.5 * (shock < 0) + noise(0.4), 6.2, 13.4), "M1 YoY": np.clip(8.0 + 8.0 * np.sin(t / 4.0) + noise(2.0), -7.4, 24.7),
        "M0 YoY": np.clip(6.5 + 4.0 * (shock < -0.5) + noise(1.5), 2.2, 15.3),
        "FXR": 3150.0 + 60.0 * np.sin(t / 5.0) + noise(25.0), "EoP Rate": np.clip(6.6 + 0.3 * np.sin(t / 6.0) + 0.005 * t + noise(0.05), 6.11, 7.23),
        "FI": 1386501.07 * np.exp(0.024 * t), "FI Bonds": 30000.0 + 3000.0 * t + noise(2000.0),
        "BCI": 115.0 + 15.0 * shock + noise(3.0), "ICI": 114.0 + 40.0 * shock + noise(6.0), "ECI": 92.0 + 25.0 * shock + noise(6.0),
        "AFRE": 50000.0 * (1 + 0.02 * t) * (1 + 0.35 * (qtr == 1)) * (1 - 0.2 * shock), "AFRE YoY": np.clip(11.0 + noise(15.0), -1366.16, 372.26),
        "AFRE QoQ": np.clip(np.where(qtr == 1, 45.0, -8.0) + noise(12.0), -63.29, 1062.07),
        "CCI": np.where(year >= 2022, 88.0, 118.0) + 5.0 * shock + noise(2.0),
        "FR": 12420.0 * (1 + 0.015 * t) * (1 + 0.15 * (qtr == 1)) * (1 + 0.2 * shock), "FR YoY": np.clip(5.0 + 18.0 * shock + noise(3.0), -14.3, 24.2),
        "FE": 14580.0 * (1 + 0.015 * t) * (1 + 0.3 * (qtr == 4)), "FE YoY": np.clip(7.0 + noise(4.0), -52.32, 270.79),
    }
    frame = pd.DataFrame({"date": quarters.end_time.normalize()})
    for name in MACRO:
        frame[name] = np.round(out[name], 2)
    return frame


def generate(cfg: SynthConfig | None = None) -> SyntheticData:
    """Build the whole dataset in memory; the same config (seed included) gives the same tables."""
    cfg = cfg or SynthConfig()
    rng = np.random.default_rng(cfg.seed)
    quarters = pd.period_range(cfg.first_quarter, cfg.last_quarter, freq="Q")
    n_quarters = len(quarters)
    quarter_ends = quarters.end_time.normalize()
    period_starts = pd.period_range(cfg.first_quarter, periods=n_quarters + 1, freq="Q").start_time

    tl = _timeline(cfg, rng, n_quarters, period_starts)
    n = len(tl.labels)
    firm_ids = np.array([f"F{i:05d}" for i in range(n)])
    effect, disclosed, drivers = _plant_mechanisms(cfg, rng, tl, n_quarters, quarter_ends)
    drivers["firm_id"] = firm_ids[drivers["firm_id"].to_numpy(dtype=int)]
    values = _financials(rng, n, n_quarters, effect)
    _heavy_tails(rng, values)

    # Which firm-quarters have a report: the firm's span, with skipped quarters (never the first or last).
    t = np.arange(n_quarters)
    in_span = (t[None, :] >= tl.start[:, None]) & (t[None, :] <= tl.last_row[:, None])
    skipped = rng.random((n, n_quarters)) < cfg.skip_probability
    skipped[np.arange(n), tl.start] = False
    skipped[np.arange(n), tl.last_row] = False
    skipped[np.arange(n), np.clip(tl.last_kept, 0, n_quarters - 1)] = False
    observed = in_span & ~skipped
    firm_idx, quarter_idx = np.nonzero(observed)
    panel = pd.DataFrame({"firm_id": firm_ids[firm_idx], "date": quarter_ends[quarter_idx]})
    for name in FINANCIAL:
        column = np.round(values[name][firm_idx, quarter_idx], 4)
        rate = cfg.missing_probability * HIGH_MISSING.get(name, 1.0)
        column[rng.random(len(column)) < rate] = np.nan
        panel[name] = column

    labels = pd.DataFrame({"firm_id": firm_ids, "label": tl.labels, "event_date": pd.to_datetime(pd.Series(tl.event_date))})
    texts = []
    for i in range(n):
        roll = rng.random()
        sections = prospectus_sections(rng, bool(disclosed[i]), cfg.long_text_share)
        if roll < 0.03:
            continue  # no prospectus found for this issuer
        for section, text in sections.items():
            if roll < 0.04 and section == "important_notice":
                continue  # only the risk section could be extracted
            texts.append({"firm_id": firm_ids[i], "section": section, "text": text})
    return SyntheticData(panel, _macro(rng, quarters), pd.DataFrame(texts), labels, drivers)


def write_dataset(data: SyntheticData, out: str | Path, fmt: str = "parquet") -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {name: write_table(frame, out / f"{name}.{fmt}") for name, frame in data.tables().items()}
