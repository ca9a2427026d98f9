"""The input-folder data contract (DESIGN.md section 2): check every rule, report every violation.

Row numbers are spreadsheet-style: the header is row 1, the first data row is row 2 (for a CSV
this equals the line number).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emdlot.data.io import TableError, find_table, read_table, undecodable_cells, unread_neighbours
from emdlot.schema import CLASSES, DISTRESSED, LABELS, MACRO, PANEL, PROSPECTUS, SECTIONS

REQUIRED_COLUMNS = {
    PANEL: ("firm_id", "date"),
    MACRO: ("date",),
    PROSPECTUS: ("firm_id", "section", "text"),
    LABELS: ("firm_id", "label"),
}
OPTIONAL_TABLES = (MACRO, PROSPECTUS)


@dataclass(frozen=True)
class Violation:
    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


class ContractError(ValueError):
    """Raised by load_inputs when the folder breaks the contract; carries every violation."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        shown = "\n".join(f"  {v}" for v in violations[:20])
        more = f"\n  ... and {len(violations) - 20} more" if len(violations) > 20 else ""
        super().__init__(f"{len(violations)} data contract violation(s):\n{shown}{more}")


@dataclass
class InputTables:
    """A validated input folder, with parsed types: dates are Timestamps, indicators floats."""

    panel: pd.DataFrame
    labels: pd.DataFrame
    macro: pd.DataFrame | None
    prospectus: pd.DataFrame | None
    financial_features: list[str]
    macro_features: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was accepted but handled (counted), for the user

    @property
    def feature_names(self) -> list[str]:
        return self.financial_features + self.macro_features


# A time of day followed by a zone: Z, UTC, +08:00, -0500.
_ZONED = r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})$"


def _rows(index: pd.Index) -> list[int]:
    return [int(i) + 2 for i in index]


class _TableChecker:
    """Collects the violations of one table while converting its columns to their types."""

    def __init__(self, frame: pd.DataFrame, file: str, out: list[Violation]):
        self.frame, self.file, self.out = frame, file, out

    def add(self, row: int | None, column: str | None, message: str) -> None:
        if row is not None and (row - 2, column) in self.frame.attrs.get("undecodable", ()):
            return  # already reported as not UTF-8; its "missing" value would be a second report of one cell
        self.out.append(Violation(self.file, row, column, message))

    def require(self, columns: tuple[str, ...]) -> bool:
        missing = [c for c in columns if c not in self.frame.columns]
        for c in missing:
            self.add(None, c, "required column is missing")
        return not missing

    def text(self, column: str) -> pd.Series:
        """Identifiers and labels: stripped strings; empty cells are violations."""
        raw = self.frame[column]
        values = raw.astype("string").str.strip()
        for row in _rows(values.index[values.isna() | (values == "")]):
            self.add(row, column, "value is missing")
        return values.astype(object)

    def numeric(self, column: str) -> pd.Series:
        raw = self.frame[column]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            values = raw.astype(float)
        else:
            stripped = raw.astype("string").str.strip()
            values = pd.to_numeric(stripped, errors="coerce").astype(float)
            for idx in values.index[stripped.notna() & values.isna()]:
                self.add(int(idx) + 2, column, f"non-numeric value {str(raw[idx])!r}")
        for row in _rows(values.index[np.isinf(values.to_numpy())]):
            self.add(row, column, "infinite value")
        return values

    def dates(self, column: str, required: bool) -> pd.Series:
        """Timezone-naive dates. A date with a timezone is a violation, not converted: '2019-03-31T00:00+08:00'
        is 2019-03-30 in UTC, so any silent conversion could move a quarter-end into another quarter."""
        raw = self.frame[column]
        if isinstance(raw.dtype, pd.DatetimeTZDtype):
            self.add(None, column, f"dates carry a timezone ({raw.dtype.tz}); store timezone-naive dates (2019-03-31)")
            parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
        elif pd.api.types.is_datetime64_any_dtype(raw):
            parsed = raw
        else:
            text = raw.astype("string").str.strip()
            zoned = text.str.contains(_ZONED, regex=True).fillna(False).astype(bool)
            for idx in text.index[zoned]:
                self.add(int(idx) + 2, column, f"date {str(raw[idx])!r} carries a timezone; write plain dates (2019-03-31)")
            parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
            plain = text.notna() & ~zoned
            if plain.any():
                parsed[plain] = pd.to_datetime(text[plain], errors="coerce", format="mixed")
            for idx in parsed.index[plain & parsed.isna()]:
                self.add(int(idx) + 2, column, f"unparsable date {str(raw[idx])!r}")
        if required:
            for row in _rows(parsed.index[raw.isna()]):
                self.add(row, column, "date is missing")
        return parsed.astype("datetime64[ns]")

    def unique(self, keys: list[str], values: pd.DataFrame) -> None:
        dup = values.duplicated(subset=keys, keep="first") & values[keys].notna().all(axis=1)
        first_row = {}
        for idx, key in zip(values.index, map(tuple, values[keys].to_numpy())):
            first_row.setdefault(key, int(idx) + 2)
        for idx in values.index[dup]:
            key = tuple(values.loc[idx, keys])
            shown = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
            self.add(int(idx) + 2, keys[-1], f"duplicate key ({shown}) first seen in row {first_row[key]}")


def _read(folder: Path, stem: str, out: list[Violation], files: dict[str, Path], notes: list[str],
          optional: tuple[str, ...] = OPTIONAL_TABLES) -> pd.DataFrame | None:
    try:
        path = find_table(folder, stem)
        if path is None:
            hint = unread_neighbours(folder, stem)
            if stem not in optional or hint:
                out.append(Violation(f"{stem}.parquet|csv", None, None, f"required table '{stem}' is missing in {folder}{hint}"
                                     if stem not in optional else f"optional table '{stem}' not found{hint}"))
            return None
        files[stem] = path
        frame = read_table(path)
    except TableError as err:
        out.append(Violation(stem, None, None, str(err)))
        return None
    if len(frame) == 0:
        out.append(Violation(path.name, None, None, "the file has a header but no rows"))
        return None
    frame = _undecodable(frame, path.name, stem, out, notes)
    if not REQUIRED_COLUMNS[stem] or all(c in frame.columns for c in REQUIRED_COLUMNS[stem]):
        return frame
    _TableChecker(frame, path.name, out).require(REQUIRED_COLUMNS[stem])
    return None


def _printable(value: object) -> str:
    """A cell read with surrogateescape, its bad bytes shown as \\xNN."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _undecodable(frame: pd.DataFrame, name: str, stem: str, out: list[Violation], notes: list[str]) -> pd.DataFrame:
    """Cells with bytes that are not UTF-8 are violations naming row and column (and then read as empty),
    except prospectus text: that section is treated as missing, as flows/embed.py does, and counted."""
    cells = undecodable_cells(frame)
    if not cells:
        return frame
    frame = frame.copy()
    text_rows = []
    for idx, column in cells:
        if idx is None:
            shown = _printable(column)
            out.append(Violation(name, 1, shown, "column name is not UTF-8 text (save the file as UTF-8)"))
            continue
        if stem == PROSPECTUS and column == "text":
            text_rows.append(idx)
        else:
            out.append(Violation(name, idx + 2, column, f"not UTF-8 text: '{_printable(frame.loc[idx, column])}' "
                                                        "(save the file as UTF-8)"))
        frame.loc[idx, column] = None
    frame.columns = [_printable(c) for c in frame.columns]
    frame.attrs["undecodable"] = set(cells)
    if text_rows:
        rows = ", ".join(str(i + 2) for i in text_rows[:10]) + (" ..." if len(text_rows) > 10 else "")
        notes.append(f"{name}: {len(text_rows)} text cell(s) are not UTF-8 (rows {rows}); those sections are "
                     "treated as missing (no text for that section), as flows/embed.py does")
    return frame


def _check_panel(frame: pd.DataFrame, name: str, out: list[Violation]) -> tuple[pd.DataFrame, list[str]]:
    check = _TableChecker(frame, name, out)
    features = [c for c in frame.columns if c not in ("firm_id", "date")]
    if not features:
        check.add(None, None, "no indicator columns beside firm_id and date")
    panel = pd.DataFrame({"firm_id": check.text("firm_id"), "date": check.dates("date", required=True)})
    for column in features:
        panel[column] = check.numeric(column)
        if panel[column].isna().all():
            check.add(None, column, "column has no values at all")
    check.unique(["firm_id", "date"], panel)
    return panel, features


def _check_macro(frame: pd.DataFrame, name: str, out: list[Violation], panel_features: list[str]) -> tuple[pd.DataFrame, list[str]]:
    check = _TableChecker(frame, name, out)
    features = [c for c in frame.columns if c != "date"]
    macro = pd.DataFrame({"date": check.dates("date", required=True)})
    for column in features:
        if column in panel_features:
            check.add(None, column, "column name is also a panel indicator; rename one of them")
        macro[column] = check.numeric(column)
    check.unique(["date"], macro)
    return macro, features


def _check_labels(frame: pd.DataFrame, name: str, out: list[Violation]) -> pd.DataFrame:
    check = _TableChecker(frame, name, out)
    labels = pd.DataFrame({"firm_id": check.text("firm_id"), "label": check.text("label")})
    for idx in labels.index[labels["label"].notna() & ~labels["label"].isin(CLASSES)]:
        check.add(int(idx) + 2, "label", f"unknown label {labels.loc[idx, 'label']!r}; expected one of {', '.join(CLASSES)}")
    if "event_date" in frame.columns:
        labels["event_date"] = check.dates("event_date", required=False)
    else:
        labels["event_date"] = pd.Series(pd.NaT, index=labels.index, dtype="datetime64[ns]")
    needs_date = labels["label"].isin(DISTRESSED) & labels["event_date"].isna()
    if "event_date" in frame.columns:
        needs_date &= frame["event_date"].isna() | (frame["event_date"].astype("string").str.strip() == "")
    for idx in labels.index[needs_date]:
        check.add(int(idx) + 2, "event_date", f"{labels.loc[idx, 'label']} firm has no event_date")
    check.unique(["firm_id"], labels)
    return labels


def _check_prospectus(frame: pd.DataFrame, name: str, out: list[Violation]) -> pd.DataFrame:
    check = _TableChecker(frame, name, out)
    prospectus = pd.DataFrame({"firm_id": check.text("firm_id"), "section": check.text("section")})
    for idx in prospectus.index[prospectus["section"].notna() & ~prospectus["section"].isin(SECTIONS)]:
        check.add(int(idx) + 2, "section", f"unknown section {prospectus.loc[idx, 'section']!r}; expected one of {', '.join(SECTIONS)}")
    prospectus["text"] = frame["text"].astype("string").fillna("").astype(object)
    check.unique(["firm_id", "section"], prospectus)
    return prospectus


def _cross_check(panel: pd.DataFrame, labels: pd.DataFrame, files: dict[str, Path], out: list[Violation]) -> None:
    panel_firms = set(panel["firm_id"].dropna())
    for idx in labels.index[labels["firm_id"].notna() & ~labels["firm_id"].isin(panel_firms)]:
        out.append(Violation(files[LABELS].name, int(idx) + 2, "firm_id", f"labelled firm {labels.loc[idx, 'firm_id']!r} has no rows in the panel"))
    unlabelled = panel[panel["firm_id"].notna() & ~panel["firm_id"].isin(set(labels["firm_id"].dropna()))]
    for firm, rows in unlabelled.groupby("firm_id", sort=False).groups.items():
        out.append(Violation(files[PANEL].name, int(rows[0]) + 2, "firm_id", f"panel firm {firm!r} has no label ({len(rows)} rows)"))


def _no_labels() -> pd.DataFrame:
    """The labels of a folder that has none (scoring): no rows, the columns a labels table has."""
    return pd.DataFrame({"firm_id": pd.Series(dtype=object), "label": pd.Series(dtype=object),
                         "event_date": pd.Series(dtype="datetime64[ns]")})


def check_inputs(folder: str | Path, require_labels: bool = True) -> tuple[InputTables | None, list[Violation]]:
    """Read and check an input folder; return the typed tables (None if unusable) and every violation.

    `require_labels=False` (scoring new firms): the labels table may be absent (then `labels` has no rows);
    when present it is checked as usual, but a panel firm without a label and a labelled firm without panel
    rows are not violations (the scorer reports such firms itself)."""
    folder = Path(folder)
    out: list[Violation] = []
    if not folder.is_dir():
        return None, [Violation(str(folder), None, None, "input folder does not exist")]
    files: dict[str, Path] = {}
    notes: list[str] = []
    optional = OPTIONAL_TABLES if require_labels else (*OPTIONAL_TABLES, LABELS)
    raw = {stem: _read(folder, stem, out, files, notes, optional) for stem in (PANEL, MACRO, PROSPECTUS, LABELS)}
    panel = labels = macro = prospectus = None
    financial: list[str] = []
    macro_features: list[str] = []
    if raw[PANEL] is not None:
        panel, financial = _check_panel(raw[PANEL], files[PANEL].name, out)
    if raw[MACRO] is not None:
        macro, macro_features = _check_macro(raw[MACRO], files[MACRO].name, out, financial)
    if raw[LABELS] is not None:
        labels = _check_labels(raw[LABELS], files[LABELS].name, out)
    if raw[PROSPECTUS] is not None:
        prospectus = _check_prospectus(raw[PROSPECTUS], files[PROSPECTUS].name, out)
    if panel is not None and labels is not None and require_labels:
        _cross_check(panel, labels, files, out)
    if labels is None and not require_labels and LABELS not in files:
        labels = _no_labels()
    if panel is None or labels is None:
        return None, out
    tables = InputTables(panel, labels, macro, prospectus, financial, macro_features, files, notes)
    return tables, out


def load_inputs(folder: str | Path, require_labels: bool = True) -> InputTables:
    """The typed tables of a valid folder; ContractError listing every violation otherwise."""
    tables, violations = check_inputs(folder, require_labels)
    if violations or tables is None:
        raise ContractError(violations)
    return tables
