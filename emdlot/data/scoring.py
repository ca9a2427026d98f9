"""Firms to score -> the arrays a fitted model reads, the way `prepare` built its own firms' arrays.

The input is contract rows: the panel's rows (firm_id, date, the financial indicators) with the macro
indicators of each row's calendar quarter (`contract_rows` joins them from an input folder). Each firm keeps
its latest `max_len` quarters, the saved transforms map them (deterministically: a firm gives the same
numbers alone or in any batch), and text features, when given, are joined by firm_id.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from emdlot.data.arrays import SequenceArrays
from emdlot.data.assemble import DatasetMeta, attach_text
from emdlot.data.contract import InputTables
from emdlot.data.sequences import join_macro, keep_last, months_since_previous, pad_sequences
from emdlot.schema import SECTIONS, TEXT_DIMS, text_feature_column

TEXT_COLUMNS = [text_feature_column(s, i) for s in SECTIONS for i in range(TEXT_DIMS)]


class ScoringInputError(ValueError):
    """Rows that cannot be scored; the message names the column and the first bad row."""


def contract_rows(tables: InputTables, cutoffs: pd.Series | None = None, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Panel rows with their quarter's macro indicators; with `cutoffs` (firm_id -> date), a firm's rows
    after its cutoff are dropped (firms without a cutoff keep every row). With `as_of`, the data as it
    stood on that date: panel and macro rows dated after it are dropped (so a quarter whose macro row
    is dated later gets no macro values, which the transforms impute)."""
    panel, macro = tables.panel, tables.macro
    if cutoffs is not None:
        limit = panel["firm_id"].map(cutoffs)
        panel = panel.loc[limit.isna() | (panel["date"] <= limit)]
    if as_of is not None:
        panel = panel.loc[panel["date"] <= as_of]
        macro = None if macro is None else macro.loc[macro["date"] <= as_of]
    return join_macro(panel, macro, tables.macro_features).reset_index(drop=True)


def check_rows(rows: pd.DataFrame, meta: DatasetMeta) -> None:
    """Every column the model was trained on is there; firm ids and dates are usable."""
    missing = [c for c in ["firm_id", "date", *meta.feature_names] if c not in rows.columns]
    if missing:
        raise ScoringInputError(f"scoring input lacks column(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                                f"expected firm_id, date and the {len(meta.feature_names)} indicators the model was trained on")
    for column in ("firm_id", "date"):
        bad = rows[column].isna()
        if bad.any():
            raise ScoringInputError(f"scoring input row {int(np.flatnonzero(bad.to_numpy())[0])}, column {column!r}: empty")
    if not pd.api.types.is_datetime64_any_dtype(rows["date"]):
        raise ScoringInputError(f"scoring input column 'date' has type {rows['date'].dtype}, expected dates")
    duplicated = rows.duplicated(["firm_id", "date"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise ScoringInputError(f"scoring input row {row}: firm {rows['firm_id'].iloc[row]!r} has two rows dated {rows['date'].iloc[row]:%Y-%m-%d}")


def text_table(rows: pd.DataFrame) -> pd.DataFrame | None:
    """The firm-level text features carried on the rows (first row per firm), or None without them."""
    if not any(c in rows.columns for c in TEXT_COLUMNS):
        return None
    return rows.drop_duplicates("firm_id")[["firm_id", *[c for c in TEXT_COLUMNS if c in rows.columns]]]


def scoring_arrays(rows: pd.DataFrame, meta: DatasetMeta, pipeline, text_features: pd.DataFrame | None = None) -> SequenceArrays:
    """Arrays of every firm in `rows` (sorted by firm_id), labels unknown (y = -1)."""
    check_rows(rows, meta)
    rows = keep_last(rows.assign(firm_id=rows["firm_id"].astype(str)), meta.config.max_len)
    firms = sorted(rows["firm_id"].unique())
    values = pipeline.transform(rows[meta.feature_names].to_numpy(dtype=float)).astype(np.float32)
    firm_ids = rows["firm_id"].to_numpy()
    X, mask, dt = pad_sequences(firm_ids, values, months_since_previous(firm_ids, rows["date"]), firms, meta.config.max_len)
    n = len(firms)
    arrays = SequenceArrays(firm_id=np.array(firms), X=X, mask=mask, delta_t=dt,
                            text=np.zeros((n, len(SECTIONS), TEXT_DIMS), dtype=np.float32),
                            text_mask=np.zeros((n, len(SECTIONS)), dtype=bool), y=np.full(n, -1, dtype=np.int64))
    return attach_text(arrays, text_features if text_features is not None else text_table(rows))
