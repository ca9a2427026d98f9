"""From panel rows to per-firm irregular sequences: cutoffs, look-ahead exclusion, macro join, padding.

Cutoff protocols for Performing firms (DESIGN.md section 2):
- "paper": they keep their full history while distressed firms stop `months` before their event, so
  *when* a sequence ends (its length, the macro vector of its last quarter) tells the class apart.
- "matched" (default): each Performing firm gets a seeded pseudo-event date drawn from the distressed
  firms' event dates that fall inside its history (else a date inside its own history) and loses the
  same window, so both classes end the same way.

Sequences are pre-padded (latest usable quarter at index T-1); delta_t is the number of months since
the firm's previous kept observation (0 on its first step).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from emdlot.schema import DISTRESSED

PROTOCOLS = ("matched", "paper")


def cutoff_before(event: pd.Series, months: int) -> pd.Series:
    """The last date a row may carry: `months` before the event (month-end events keep month-end
    cutoffs: 2020-06-30 minus two quarters is 2019-12-31, not 12-30)."""
    cutoff = event - pd.DateOffset(months=months)
    return cutoff.where(~event.dt.is_month_end, cutoff + pd.offsets.MonthEnd(0))


def event_dates(panel: pd.DataFrame, labels: pd.DataFrame, months: int, protocol: str = "matched",
                seed: int = 0) -> pd.DataFrame:
    """Per labelled firm: the date its look-ahead window is counted from and where that date came from.

    Columns firm_id, event_date (NaT: full history), event_source ("event", "matched: distressed event",
    "matched: own history", "full history"). Under "matched" a Performing firm's pseudo-event is drawn
    (seeded, firms in sorted order) from the distressed events e with first + months <= e <= last + months
    (its first and last observation), so at least one row survives the window; where no event falls
    there, e = d + months for one of its own observation dates d.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown performing-cutoff protocol {protocol!r}; choose from {PROTOCOLS}")
    out = labels[["firm_id"]].copy()
    distressed = labels["label"].isin(DISTRESSED).to_numpy()
    out["event_date"] = labels["event_date"].where(distressed)
    out["event_source"] = np.where(distressed, "event", "full history")
    if protocol == "paper":
        return out.reset_index(drop=True)

    pool = np.sort(labels.loc[distressed, "event_date"].dropna().to_numpy(dtype="datetime64[ns]"))
    span = panel.groupby("firm_id")["date"].agg(["min", "max"])
    shift = pd.DateOffset(months=months)
    rng = np.random.default_rng(seed)
    own_dates = panel.groupby("firm_id")["date"].unique()
    performing = out.loc[~distressed, "firm_id"]
    drawn: dict[str, tuple[pd.Timestamp, str]] = {}
    for firm in sorted(performing[performing.isin(span.index)]):
        first, last = span.loc[firm, "min"], span.loc[firm, "max"]
        lo, hi = np.datetime64(first + shift, "ns"), np.datetime64(last + shift, "ns")
        inside = pool[(pool >= lo) & (pool <= hi)]
        if len(inside):
            drawn[firm] = pd.Timestamp(inside[rng.integers(len(inside))]), "matched: distressed event"
        else:
            own = np.sort(own_dates[firm])
            drawn[firm] = pd.Timestamp(own[rng.integers(len(own))]) + shift, "matched: own history"
    hit = out["firm_id"].isin(drawn.keys()).to_numpy()
    out.loc[hit, "event_date"] = [drawn[f][0] for f in out.loc[hit, "firm_id"]]
    out.loc[hit, "event_source"] = [drawn[f][1] for f in out.loc[hit, "firm_id"]]
    return out.reset_index(drop=True)


def exclude_lookahead(panel: pd.DataFrame, labels: pd.DataFrame, months: int,
                      events: pd.DataFrame | None = None) -> pd.DataFrame:
    """Drop every row dated after `event_date - months` (the event included) of each firm with an event.

    A row exactly `months` before the event is kept: "within two quarters before" excludes its start.
    `events` (from `event_dates`) gives each firm's date; by default the distressed firms' own events,
    so Performing firms keep their full history (the paper's protocol). Rows of firms without a date
    are kept untouched.
    """
    if events is None:
        events = event_dates(panel, labels, months, protocol="paper")
    event = events.dropna(subset=["event_date"]).set_index("firm_id")["event_date"]
    firm_cutoff = panel["firm_id"].map(cutoff_before(event, months))
    keep = firm_cutoff.isna() | (panel["date"] <= firm_cutoff)
    return panel.loc[keep]


def keep_last(panel: pd.DataFrame, max_len: int) -> pd.DataFrame:
    """Each firm's latest `max_len` rows, sorted by firm and date."""
    ordered = panel.sort_values(["firm_id", "date"], kind="stable")
    return ordered.groupby("firm_id", sort=False).tail(max_len)


def join_macro(panel: pd.DataFrame, macro: pd.DataFrame | None, macro_features: list[str]) -> pd.DataFrame:
    """Attach the macro row of each firm-quarter's calendar quarter (last macro row within that quarter)."""
    if macro is None or not macro_features:
        return panel
    by_quarter = macro.assign(_q=macro["date"].dt.to_period("Q")).sort_values("date").groupby("_q")[macro_features].last()
    quarter = panel["date"].dt.to_period("Q")
    joined = by_quarter.reindex(quarter.to_numpy())
    joined.index = panel.index
    return pd.concat([panel, joined], axis=1)


def months_since_previous(firm_ids: np.ndarray, dates: pd.Series) -> np.ndarray:
    """Elapsed months between consecutive rows of the same firm (rows sorted by firm, date); 0 at each firm's start."""
    month = (dates.dt.year * 12 + dates.dt.month).to_numpy(dtype=float)
    delta = np.diff(month, prepend=month[:1])
    first = np.ones(len(firm_ids), dtype=bool)
    first[1:] = firm_ids[1:] != firm_ids[:-1]
    delta[first] = 0.0
    return delta


def pad_sequences(firm_ids: np.ndarray, values: np.ndarray, delta_t: np.ndarray, order: list[str], max_len: int):
    """Scatter sorted per-firm rows into pre-padded (N, T, F) arrays in the order of `order`."""
    position = {firm: i for i, firm in enumerate(order)}
    n, f = len(order), values.shape[1]
    X = np.zeros((n, max_len, f), dtype=np.float32)
    mask = np.zeros((n, max_len), dtype=bool)
    dt = np.zeros((n, max_len), dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, firm_ids[1:] != firm_ids[:-1]])
    ends = np.r_[starts[1:], len(firm_ids)]
    for s, e in zip(starts, ends):
        row = position[firm_ids[s]]
        length = e - s
        X[row, max_len - length:] = values[s:e]
        mask[row, max_len - length:] = True
        dt[row, max_len - length:] = delta_t[s:e]
    return X, mask, dt
