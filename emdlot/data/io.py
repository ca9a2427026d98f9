"""Finding, reading and writing the contract's tables (Parquet or CSV, UTF-8)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

TABLE_SUFFIXES = (".parquet", ".csv")

# Strings a CSV uses for "no value"; Wind exports write "--".
MISSING_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "--")


class TableError(ValueError):
    """A table file that cannot be read at all (missing, ambiguous, empty, not UTF-8)."""


def find_table(folder: Path, stem: str) -> Path | None:
    """Return `folder/stem.parquet` or `folder/stem.csv`; both at once is ambiguous."""
    found = [folder / f"{stem}{suffix}" for suffix in TABLE_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise TableError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def read_table(path: Path) -> pd.DataFrame:
    """Read a table with every cell as written: CSV cells stay strings so validation can name bad values."""
    if path.stat().st_size == 0:
        raise TableError(f"{path.name}: the file is empty")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
            frame = frame.replace(list(MISSING_TOKENS), None)
    except UnicodeDecodeError as err:
        raise TableError(f"{path.name}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as err:
        raise TableError(f"{path.name}: cannot be read: {err}") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write Parquet or CSV by the path's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False, encoding="utf-8")
    else:
        raise ValueError(f"{path}: output must end in .parquet or .csv")
    return path
