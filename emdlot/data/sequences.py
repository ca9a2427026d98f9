"""From panel rows to per-firm irregular sequences: look-ahead exclusion, macro join, padding.

Sequences are pre-padded (latest usable quarter at index T-1); delta_t is the number of months since
the firm's previous kept observation (0 on its first step).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from emdlot.schema import DISTRESSED


def exclude_lookahead(panel: pd.DataFrame, labels: pd.DataFrame, months: int) -> pd.DataFrame:
    """Drop, for Extended/Defaulted firms, every row dated after `event_date - months` (the event included).

    A row exactly `months` before the event is kept: "within two quarters before" excludes its start.

    Performing firms keep their full history. Rows of firms not in `labels` are kept untouched.
    """
    events = labels.loc[labels["label"].isin(DISTRESSED), ["firm_id", "event_date"]]
    event = events.set_index("firm_id")["event_date"]
    cutoff = event - pd.DateOffset(months=months)
    # month-end events keep month-end cutoffs: 2020-06-30 minus two quarters is 2019-12-31, not 12-30
    cutoff = cutoff.where(~event.dt.is_month_end, cutoff + pd.offsets.MonthEnd(0))
    firm_cutoff = panel["firm_id"].map(cutoff)
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
