"""Wind and iFinD Excel exports -> the data contract's `macro` and `labels` tables.

Three readers, all pure functions of an .xlsx path:

- `read_wind_macro`: a Wind EDB export (one or more sheets of time series) -> one row per
  quarter, column `date` (quarter end) and one float column per series.
- `read_wind_defaults`: Wind's bond default-event report -> one label per issuer from its
  first event: Extended when the event summary reports a maturity extension (展期), else Defaulted.
- `read_ifind_first_defaults`: iFinD's list of issuers' first defaults -> the same labels shape.

Layouts are checked cell by cell; anything unexpected raises `ImportFormatError` naming the
file, sheet, spreadsheet row (1-based, as Excel shows it) and column, never a pandas traceback.
"""
from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import openpyxl
import pandas as pd
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException
from pydantic import Field

from emdlot.config import StrictModel

# --------------------------------------------------------------------------------------------
# Errors and cell helpers shared by every reader
# --------------------------------------------------------------------------------------------


class ImportFormatError(ValueError):
    """The export's layout is not the one expected; says where (file, sheet, row, column) and why."""

    def __init__(self, path: str | Path, problem: str, sheet: str | None = None, row: int | None = None, column: str | None = None):
        self.path, self.sheet, self.row, self.column, self.problem = str(path), sheet, row, column, problem
        where = [str(path)]
        if sheet is not None:
            where.append(f"sheet '{sheet}'")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {problem}")


# Vendors put a banner ("Wind", "同花顺iFinD", an `=[1]!edb()` formula) above the header;
# the header must appear within this many rows.
HEADER_SEARCH_ROWS = 10
# Excel's escaped carriage return, left in long text cells of Wind/iFinD exports.
EXCEL_CR = "_x000D_"
# Cell texts that mean "no value" in a numeric column.
MISSING_NUMBER_TEXTS = frozenset({"", "--"})
# Text dates accepted in a date column (real exports hold Excel dates; CSV-to-xlsx copies hold text).
TEXT_DATE = re.compile(r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2})?)?$")


@dataclass(frozen=True)
class _Sheet:
    """All cell values of one sheet, rows padded to one width; row i is spreadsheet row i + 1."""

    path: Path
    name: str
    rows: list[tuple]

    def error(self, problem: str, row_index: int | None = None, column_index: int | None = None,
              header: object = None) -> ImportFormatError:
        column = None
        if column_index is not None:
            column = get_column_letter(column_index + 1)
            if not _is_blank(header):
                column += f" ('{header}')"
        return ImportFormatError(self.path, problem, self.name, None if row_index is None else row_index + 1, column)


def _open_sheets(path: str | Path, only: list[str] | None = None) -> list[_Sheet]:
    """Read the workbook's sheets (all, or `only` in that order) with cached formula values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as err:
        raise ImportFormatError(path, f"not a readable .xlsx workbook ({err})") from err
    try:
        names = list(book.sheetnames)
        for name in only or []:
            if name not in names:
                raise ImportFormatError(path, f"no sheet named '{name}'; the workbook has {names}")
        sheets = []
        for name in only or names:
            rows = list(book[name].iter_rows(values_only=True))
            width = max((len(r) for r in rows), default=0)
            sheets.append(_Sheet(path, name, [tuple(r) + (None,) * (width - len(r)) for r in rows]))
        return sheets
    finally:
        book.close()


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _as_date(value: object) -> pd.Timestamp | None:
    """An Excel date cell (or an ISO-like text date) as a Timestamp; None when it is not a date."""
    if isinstance(value, (datetime, date)):
        return pd.Timestamp(value)
    if isinstance(value, str) and TEXT_DATE.match(value.strip()):
        try:
            return pd.Timestamp(value.strip())
        except ValueError:
            return None
    return None


def _as_number(sheet: _Sheet, value: object, row_index: int, column_index: int, header: object) -> float:
    """A numeric cell as float; blank and '--' are missing (NaN); anything else is an error."""
    if _is_blank(value):
        return float("nan")
    if isinstance(value, bool):
        raise sheet.error(f"expected a number, found the boolean {value}", row_index, column_index, header)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text in MISSING_NUMBER_TEXTS:
            return float("nan")
        try:
            number = float(text.replace(",", ""))
        except ValueError:
            number = float("nan")
        if math.isfinite(number):
            return number
    raise sheet.error(f"expected a number, found {value!r}", row_index, column_index, header)


# --------------------------------------------------------------------------------------------
# Macro: Wind EDB sheets -> series -> quarterly table
# --------------------------------------------------------------------------------------------

# Wind's 频率 (frequency) metadata values, and what we call them.
FREQUENCY_NAMES = {
    "日": "daily", "周": "weekly", "旬": "ten-day", "月": "monthly", "季": "quarterly", "半年": "semiannual", "年": "annual",
}
# Fallback when a sheet has no 频率 row: the median gap between observations, in days, at most ...
FREQUENCY_BY_MEDIAN_GAP_DAYS = (
    (4, "daily"), (10, "weekly"), (20, "ten-day"), (45, "monthly"), (135, "quarterly"), (270, "semiannual"),
)
SLOWEST_FREQUENCY = "annual"


class MacroImportConfig(StrictModel):
    """How a Wind EDB export becomes the quarterly `macro` table."""

    # "last": the latest observation dated in the quarter (levels, indices, YoY and cumulative YoY
    # rates: the value as of the quarter's end); "mean": the mean of the quarter's observations
    # (e.g. flows such as 当月值). Quarterly and slower series have one value per quarter either way.
    aggregation: Literal["last", "mean"] = "last"
    sheets: list[str] | None = None  # None: every sheet, in workbook order
    # Column-A text of the header row: Wind EDB writes 指标名称; other vendors' sheets in the same
    # workbook (e.g. Goldman Sachs indices) write Date.
    header_labels: list[str] = Field(default_factory=lambda: ["指标名称", "日期", "Date"])
    frequency_label: str = "频率"  # metadata row giving each series' frequency
    unit_label: str = "单位"  # metadata row giving each series' unit


@dataclass(frozen=True)
class EdbSeries:
    """One column of a Wind EDB sheet: its observations and where it came from."""

    name: str  # unique column name in the macro table
    source_name: str  # the name as written in the export (several series may share it)
    sheet: str
    column: str  # spreadsheet column letter
    frequency: str
    frequency_source: Literal["metadata", "spacing"]
    unit: str | None
    observations: pd.Series  # float values indexed by observation date, sorted, no NaN


def _find_header(sheet: _Sheet, labels: list[str]) -> int:
    for index, row in enumerate(sheet.rows[:HEADER_SEARCH_ROWS]):
        if row and isinstance(row[0], str) and row[0].strip() in labels:
            return index
    raise sheet.error(f"not a recognised EDB layout: no header row with {' / '.join(labels)} in column A "
                      f"within the first {HEADER_SEARCH_ROWS} rows", column_index=0)


@dataclass(frozen=True)
class _EdbRows:
    """Where things are in an EDB sheet, as row indexes."""

    header: int
    metadata: dict[str, int]  # column-A label (频率, 单位, 指标ID ...) -> row
    data: list[int]  # dated rows
    dates: list[pd.Timestamp]


def _locate_rows(sheet: _Sheet, header_labels: list[str]) -> _EdbRows:
    """Sort the rows below the header into metadata (text in column A before the first date),
    data (a date in column A), blank rows and source notes (text in column A only, after the data)."""
    header = _find_header(sheet, header_labels)
    metadata: dict[str, int] = {}
    data: list[int] = []
    dates: list[pd.Timestamp] = []
    first_row_with_date: dict[pd.Timestamp, int] = {}
    note_row: int | None = None
    for index in range(header + 1, len(sheet.rows)):
        first, rest = sheet.rows[index][0], sheet.rows[index][1:]
        rest_blank = all(_is_blank(v) for v in rest)
        when = _as_date(first)
        if _is_blank(first):
            if not rest_blank:
                column = 1 + next(j for j, v in enumerate(rest) if not _is_blank(v))
                raise sheet.error("a value without a date in column A", index, column, sheet.rows[header][column])
        elif when is not None:
            if note_row is not None:
                raise sheet.error(f"a dated row below the source note in row {note_row + 1}", index, 0)
            if when in first_row_with_date:
                raise sheet.error(f"date {when.date()} already appears in row {first_row_with_date[when] + 1}", index, 0)
            first_row_with_date[when] = index
            data.append(index)
            dates.append(when)
        elif not isinstance(first, str):
            raise sheet.error(f"expected a date in column A, found {first!r}", index, 0)
        elif not data:
            metadata[first.strip()] = index
        elif rest_blank:
            note_row = index
        else:
            raise sheet.error(f"expected a date in column A, found the text {first!r} in a row with values", index, 0)
    if not data:
        raise sheet.error("no dated rows below the header", header, 0)
    return _EdbRows(header, metadata, data, dates)


def _frequency(sheet: _Sheet, rows: _EdbRows, column: int, observations: pd.Series, config: MacroImportConfig) -> tuple[str, str]:
    """The series' frequency from its 频率 metadata cell when there is one, else from its date spacing."""
    declared = sheet.rows[rows.metadata[config.frequency_label]][column] if config.frequency_label in rows.metadata else None
    if _is_blank(declared):
        return _frequency_from_spacing(observations.index), "spacing"
    if str(declared).strip() not in FREQUENCY_NAMES:
        expected = ", ".join(FREQUENCY_NAMES)
        raise sheet.error(f"unknown frequency {declared!r}; expected one of {expected}",
                          rows.metadata[config.frequency_label], column, sheet.rows[rows.header][column])
    return FREQUENCY_NAMES[str(declared).strip()], "metadata"


def _frequency_from_spacing(dates: pd.DatetimeIndex) -> str:
    if len(dates) < 2:
        return "unknown"
    median_gap = float(pd.Series(dates).diff().dt.days.median())
    for most_days, name in FREQUENCY_BY_MEDIAN_GAP_DAYS:
        if median_gap <= most_days:
            return name
    return SLOWEST_FREQUENCY


def _read_edb_sheet(sheet: _Sheet, config: MacroImportConfig) -> list[EdbSeries]:
    """One series per named header column; a column without a name must be empty (a spacer)."""
    rows = _locate_rows(sheet, config.header_labels)
    header = sheet.rows[rows.header]
    dates = pd.DatetimeIndex(rows.dates)
    series = []
    for column in range(1, len(header)):
        values = [_as_number(sheet, sheet.rows[i][column], i, column, header[column]) for i in rows.data]
        observations = pd.Series(values, index=dates, dtype=float).dropna().sort_index()
        if _is_blank(header[column]):
            if len(observations):
                first_value_row = next(i for i in rows.data if not _is_blank(sheet.rows[i][column]))
                raise sheet.error("a value in a column without a series name in the header row", first_value_row, column)
            continue
        frequency, source = _frequency(sheet, rows, column, observations, config)
        unit = sheet.rows[rows.metadata[config.unit_label]][column] if config.unit_label in rows.metadata else None
        name = str(header[column]).strip()
        series.append(EdbSeries(name, name, sheet.name, get_column_letter(column + 1), frequency, source,
                                None if _is_blank(unit) else str(unit).strip(), observations))
    return series


def _unique_names(path: str | Path, series: list[EdbSeries], reserved: tuple[str, ...] = ("date",)) -> list[EdbSeries]:
    """The first series with a name keeps it; later ones become 'name [sheet!column]'."""
    taken = set(reserved)
    renamed = []
    for s in series:
        name = s.source_name if s.source_name not in taken else f"{s.source_name} [{s.sheet}!{s.column}]"
        if name in taken:  # only if the export itself holds such a bracketed name
            raise ImportFormatError(path, f"cannot give the series a unique name (tried '{name}')", s.sheet, None, s.column)
        taken.add(name)
        renamed.append(replace(s, name=name))
    return renamed


def read_wind_edb(path: str | Path, config: MacroImportConfig | None = None) -> list[EdbSeries]:
    """Every series of a Wind EDB export, in sheet then column order, with unique names."""
    config = config or MacroImportConfig()
    series: list[EdbSeries] = []
    for sheet in _open_sheets(path, config.sheets):
        series.extend(_read_edb_sheet(sheet, config))
    return _unique_names(path, series)


def to_quarterly(series: list[EdbSeries], aggregation: Literal["last", "mean"] = "last") -> pd.DataFrame:
    """One row per quarter holding at least one observation: `date` (quarter end), then one column per series."""
    columns = {}
    for s in series:
        by_quarter = s.observations.groupby(s.observations.index.to_period("Q"))
        columns[s.name] = by_quarter.last() if aggregation == "last" else by_quarter.mean()
    quarters = pd.PeriodIndex(sorted(set().union(*(c.index for c in columns.values()))), freq="Q")
    table = pd.DataFrame({name: c.reindex(quarters) for name, c in columns.items()}, index=quarters, dtype=float)
    table = table.dropna(how="all")
    quarter_end = table.index.to_timestamp(how="end").normalize().astype("datetime64[ns]")
    table.insert(0, "date", quarter_end)
    return table.reset_index(drop=True)


def series_summary(series: list[EdbSeries]) -> pd.DataFrame:
    """One row per series: where it came from, its frequency and how it was detected, its span."""
    return pd.DataFrame(
        {
            "name": [s.name for s in series],
            "source_name": [s.source_name for s in series],
            "sheet": [s.sheet for s in series],
            "column": [s.column for s in series],
            "frequency": [s.frequency for s in series],
            "frequency_source": [s.frequency_source for s in series],
            "unit": [s.unit for s in series],
            "observations": [len(s.observations) for s in series],
            "first": [s.observations.index.min() for s in series],
            "last": [s.observations.index.max() for s in series],
        }
    )


def read_wind_macro(path: str | Path, config: MacroImportConfig | None = None) -> pd.DataFrame:
    """A Wind EDB export as the contract's quarterly `macro` table (see `to_quarterly`)."""
    config = config or MacroImportConfig()
    series = read_wind_edb(path, config)
    if not any(len(s.observations) for s in series):
        raise ImportFormatError(path, "the export holds no numeric observations")
    return to_quarterly(series, config.aggregation)


# --------------------------------------------------------------------------------------------
# Labels: default reports -> one label per issuer
# --------------------------------------------------------------------------------------------

EXTENDED, DEFAULTED = "Extended", "Defaulted"
# Clause boundaries inside an event summary (Chinese and ASCII punctuation, line breaks).
CLAUSE_BREAK = re.compile(r"[，,。；;！!？?\n\r]")


class ExtensionRule(StrictModel):
    """When a Wind event summary (事件摘要) reports a maturity extension.

    A keyword counts unless its clause negates it: a negation marker before it in the clause
    ("亦未能与债券持有人就展期事宜达成一致": no extension was agreed) or a rejection after it
    ("延期兑付的议案未通过": the extension motion failed). Only 展期, the formal term for an agreed
    maturity extension, counts by default: in Wind's reports 延期 mostly describes a unilateral
    delay of payment ("公司将延期支付本期利息") or a technical delay, which are defaults.
    Add "延期" to `keywords` to count it too.
    """

    keywords: list[str] = Field(default_factory=lambda: ["展期"])
    negations_before: list[str] = Field(default_factory=lambda: ["未"])
    rejections_after: list[str] = Field(default_factory=lambda: ["未通过", "未获"])

    def evidence(self, summary: str) -> str | None:
        """The first clause of `summary` that reports an extension, or None."""
        for clause in CLAUSE_BREAK.split(summary.replace(EXCEL_CR, "")):
            for keyword in self.keywords:
                for match in re.finditer(re.escape(keyword), clause):
                    before, after = clause[: match.start()], clause[match.end():]
                    negated = any(n in before for n in self.negations_before) or any(r in after for r in self.rejections_after)
                    if not negated:
                        return clause.strip()
        return None


class WindDefaultsConfig(StrictModel):
    """Column names of Wind's bond default report (违约债券报表)."""

    sheet: str | None = None  # None: the first sheet whose header holds the required columns
    issuer_column: str = "发行人"
    date_column: str = "发生日期"
    summary_column: str = "事件摘要"
    bond_code_column: str = "代码"
    bond_name_column: str = "名称"
    extension: ExtensionRule = Field(default_factory=ExtensionRule)


class IfindFirstDefaultsConfig(StrictModel):
    """Column names of iFinD's issuer first-default list (发行人首次债券违约)."""

    sheet: str | None = None
    issuer_column: str = "发行人"
    date_column: str = "首次违约日期"
    type_column: str = "首次违约类型"
    bond_code_column: str = "违约债券代码"
    bond_name_column: str = "违约债券简称"
    extension_types: list[str] = Field(default_factory=lambda: ["展期"])  # a type containing one -> Extended


@dataclass(frozen=True)
class _Report:
    """A one-row-per-record sheet: its header columns and its non-blank record rows."""

    sheet: _Sheet
    header_index: int
    columns: dict[str, int]  # header text -> column index
    record_rows: list[int]

    def cell(self, row_index: int, column: str) -> object:
        return self.sheet.rows[row_index][self.columns[column]]

    def error(self, problem: str, row_index: int, column: str) -> ImportFormatError:
        return self.sheet.error(problem, row_index, self.columns[column], column)

    def text(self, row_index: int, column: str, required: bool = True) -> str:
        value = self.cell(row_index, column) if column in self.columns else None
        if _is_blank(value):
            if required:
                raise self.error("value is missing", row_index, column)
            return ""
        return str(value).replace(EXCEL_CR, "").strip()

    def date(self, row_index: int, column: str) -> pd.Timestamp:
        value = self.cell(row_index, column)
        if _is_blank(value):
            raise self.error("date is missing", row_index, column)
        when = _as_date(value)
        if when is None:
            raise self.error(f"expected a date, found {value!r}", row_index, column)
        return when.normalize()


def _report_header(sheet: _Sheet, required: list[str]) -> tuple[int, dict[str, int]] | None:
    """The first row (within the first rows) naming every required column, with each name's column."""
    for header_index, row in enumerate(sheet.rows[:HEADER_SEARCH_ROWS]):
        names = ["" if _is_blank(v) else str(v).strip() for v in row]
        if not all(c in names for c in required):
            continue
        columns: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in columns and name in required:
                other = get_column_letter(columns[name] + 1)
                raise sheet.error(f"the header holds '{name}' twice (also column {other})", header_index, index, name)
            columns.setdefault(name, index)
        return header_index, columns
    return None


def _open_report(path: str | Path, sheet_name: str | None, required: list[str]) -> _Report:
    """The first sheet (or `sheet_name`) with a header holding the required columns, and its record rows.

    Blank rows are skipped; trailing rows with text in column A only are source notes.
    """
    sheets = _open_sheets(path, [sheet_name] if sheet_name else None)
    for sheet in sheets:
        found = _report_header(sheet, required)
        if found is None:
            continue
        header_index, columns = found
        records = [i for i in range(header_index + 1, len(sheet.rows)) if not all(_is_blank(v) for v in sheet.rows[i])]
        while records and isinstance(sheet.rows[records[-1]][0], str) and all(_is_blank(v) for v in sheet.rows[records[-1]][1:]):
            records.pop()
        if not records:
            raise sheet.error("the report has a header but no records", header_index)
        return _Report(sheet, header_index, columns, records)
    first = sheets[0]
    shown = [str(v).strip() for v in (first.rows[0] if first.rows else ()) if not _is_blank(v)][:12]
    raise first.error(f"not a recognised report: {'the sheet has no' if sheet_name else 'no sheet has a'} header row "
                      f"(within the first {HEADER_SEARCH_ROWS} rows) holding the columns {', '.join(required)}; "
                      f"row 1 here holds {shown}", 0)


def read_wind_defaults(path: str | Path, config: WindDefaultsConfig | None = None) -> pd.DataFrame:
    """Wind's default-event report as `labels`: one row per issuer, from its first event.

    The first event is the earliest 发生日期; when several events share it, the issuer is Extended
    if any of them reports an extension (`ExtensionRule`), and the bond columns name the first of
    them in file order. Columns: firm_id, label, event_date, bond_code, bond_name, n_events,
    extension_evidence (the clause that made it Extended, empty for Defaulted).
    """
    config = config or WindDefaultsConfig()
    report = _open_report(path, config.sheet, [config.issuer_column, config.date_column, config.summary_column])
    events = pd.DataFrame(
        {
            "firm_id": [report.text(i, config.issuer_column) for i in report.record_rows],
            "event_date": [report.date(i, config.date_column) for i in report.record_rows],
            "evidence": [config.extension.evidence(report.text(i, config.summary_column, required=False)) for i in report.record_rows],
            "bond_code": [report.text(i, config.bond_code_column, required=False) for i in report.record_rows],
            "bond_name": [report.text(i, config.bond_name_column, required=False) for i in report.record_rows],
            "row": [i + 1 for i in report.record_rows],
        }
    )
    events = events.sort_values(["firm_id", "event_date", "row"], kind="stable")
    labels = []
    for firm_id, firm_events in events.groupby("firm_id", sort=True):
        first_day = firm_events[firm_events["event_date"] == firm_events["event_date"].iloc[0]]
        evidence = first_day["evidence"].dropna()
        labels.append(
            {
                "firm_id": firm_id,
                "label": EXTENDED if len(evidence) else DEFAULTED,
                "event_date": first_day["event_date"].iloc[0],
                "bond_code": first_day["bond_code"].iloc[0],
                "bond_name": first_day["bond_name"].iloc[0],
                "n_events": len(firm_events),
                "extension_evidence": evidence.iloc[0] if len(evidence) else "",
            }
        )
    return _labels_frame(labels)


def read_ifind_first_defaults(path: str | Path, config: IfindFirstDefaultsConfig | None = None) -> pd.DataFrame:
    """iFinD's first-default list as `labels`: Extended when 首次违约类型 names an extension (展期资金未兑付).

    Columns: firm_id, label, event_date, bond_code, bond_name, event_type. An issuer listed twice is
    an error (the list is one first default per issuer).
    """
    config = config or IfindFirstDefaultsConfig()
    report = _open_report(path, config.sheet, [config.issuer_column, config.date_column, config.type_column])
    labels, first_row = [], {}
    for i in report.record_rows:
        firm_id = report.text(i, config.issuer_column)
        if firm_id in first_row:
            raise report.error(f"issuer {firm_id!r} is listed twice (also row {first_row[firm_id]})", i, config.issuer_column)
        first_row[firm_id] = i + 1
        event_type = report.text(i, config.type_column)
        labels.append(
            {
                "firm_id": firm_id,
                "label": EXTENDED if any(t in event_type for t in config.extension_types) else DEFAULTED,
                "event_date": report.date(i, config.date_column),
                "bond_code": report.text(i, config.bond_code_column, required=False),
                "bond_name": report.text(i, config.bond_name_column, required=False),
                "event_type": event_type,
            }
        )
    return _labels_frame(labels)


def _labels_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records).sort_values("firm_id", kind="stable").reset_index(drop=True)
    frame["event_date"] = frame["event_date"].astype("datetime64[ns]")
    return frame
