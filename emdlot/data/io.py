"""Finding, reading and writing the contract's tables (Parquet or CSV, UTF-8).

A CSV is read with every cell as written, so validation can name a bad value by row and column; bytes
that are not UTF-8 survive as surrogates (`undecodable_cells` finds them) instead of failing the whole
file at "byte N"; an Excel byte-order mark is dropped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

TABLE_SUFFIXES = (".parquet", ".csv")

# Strings a CSV uses for "no value"; Wind exports write "--".
MISSING_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "--")


class TableError(ValueError):
    """A table file that cannot be read at all (missing, ambiguous, empty, not a table)."""


def find_table(folder: Path, stem: str) -> Path | None:
    """Return `folder/stem.parquet` or `folder/stem.csv`; both at once is ambiguous."""
    found = [folder / f"{stem}{suffix}" for suffix in TABLE_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise TableError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def unread_neighbours(folder: Path, stem: str) -> str:
    """Why a table may look present to a person but not to EMDLOT (`labels.xlsx`, `labels.CSV`), as a
    sentence to append to "table missing"; empty when there is no such file."""
    others = sorted(p.name for p in Path(folder).glob(f"{stem}.*") if p.is_file() and p.suffix not in TABLE_SUFFIXES)
    if not others:
        return ""
    hints = []
    for name in others:
        suffix = Path(name).suffix
        if suffix.lower() in TABLE_SUFFIXES:
            hints.append(f"{name} is not read: name it {stem}{suffix.lower()} (lower-case suffix)")
        elif suffix.lower() in (".xlsx", ".xls", ".xlsm"):
            hints.append(f"{name} is not read: EMDLOT reads .parquet or .csv, not Excel; save the sheet as "
                         f"'CSV UTF-8' ({stem}.csv), or convert a Wind/iFinD export with `emdlot import`")
        else:
            hints.append(f"{name} is not read: tables must be {stem}.parquet or {stem}.csv")
    return "; " + "; ".join(hints)


def read_table(path: Path) -> pd.DataFrame:
    """Read a table with every cell as written: CSV cells stay strings so validation can name bad values."""
    if path.stat().st_size == 0:
        raise TableError(f"{path.name}: the file is empty")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            # header=None: the header row is read as data, so names with bad bytes survive (a pandas column
            # index of such names could not be built) and duplicate names are seen, not renamed X.1
            rows = pd.read_csv(path, header=None, dtype=object, keep_default_na=False, encoding="utf-8-sig",
                               encoding_errors="surrogateescape")
            names = ["" if pd.isna(v) else str(v).strip() for v in rows.iloc[0]]
            _check_header(path, names)
            frame = rows.iloc[1:].reset_index(drop=True)
            frame.columns = pd.Index(names, dtype=object)
            frame = frame.replace(list(MISSING_TOKENS), None)
            return frame
    except READ_ERRORS as err:
        if isinstance(err, TableError):
            raise
        raise unreadable(path.name, path, err) from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


# What pandas raises for a file it cannot read as a table.
READ_ERRORS = (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError)


def unreadable(shown: str | Path, path: Path, err: BaseException) -> TableError:
    """One line for a table file pandas could not read: the file as `shown`, its kind, the first line of why."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return TableError(f"{shown}: cannot be read as a {path.suffix[1:]} table: {first}")


def _check_header(path: Path, names: list[str]) -> None:
    """Duplicate column names (pandas would rename the second `X.1` and use it) and a header that is one
    cell holding separators (a ';'- or tab-separated file) are errors naming row 1 and the column."""
    if len(names) == 1:
        for sep, what in ((";", "semicolons"), ("\t", "tabs")):
            if sep in names[0]:
                raise TableError(f"{path.name}: row 1 (header) is one column separated by {what}; "
                                 "a .csv must be comma-separated")
    seen: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        seen.setdefault(name, []).append(position)
    for name, positions in seen.items():
        if len(positions) > 1 and name:
            shown = ", ".join(map(str, positions))
            raise TableError(f"{path.name}: row 1 (header), column '{name}': the name appears {len(positions)} times "
                             f"(columns {shown}); every column needs its own name")


def _decodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a byte that was not UTF-8
        return False
    return True


def undecodable_cells(frame: pd.DataFrame) -> list[tuple[int | None, str]]:
    """(frame index or None for the header, column) of every cell holding bytes that are not UTF-8."""
    found: list[tuple[int | None, str]] = [(None, c) for c in frame.columns if not _decodes(str(c))]
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        texts = [v for v in values if isinstance(v, str)]
        if _decodes("".join(texts)):  # the usual case: one check per column
            continue
        found.extend((int(i), column) for i, v in values.items() if isinstance(v, str) and not _decodes(v))
    return found


def check_table_path(path: str | Path, option: str) -> Path:
    """An output table path that can be written, checked before any work: .csv or .parquet, not a folder,
    its folder creatable and writable. A TableError naming the option otherwise."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise TableError(f"{option} {path}: the output must end in .csv or .parquet")
    if path.is_dir():
        raise TableError(f"{option} {path}: is a folder; name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TableError(f"{option} {path}: its folder cannot be made: {err.strerror or err}") from None
    if not os.access(path.parent, os.W_OK):
        raise TableError(f"{option} {path}: its folder is not writable")
    return path


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write Parquet or CSV by the path's suffix."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise TableError(f"{path}: output must end in .parquet or .csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, encoding="utf-8")
    return path
