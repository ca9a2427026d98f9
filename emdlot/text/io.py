"""Reading the prospectus table and the train/test split, with errors that name file, row, column.

Structural problems (missing column, unknown section, duplicate firm/section) stop the
run. Problems of one document (no text, empty, bytes that are not UTF-8) do not: the
document is kept with a status, so its firm is reported instead of vanishing.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from emdlot.data.io import READ_ERRORS, TableError, find_table, unreadable
from emdlot.schema import PROSPECTUS, SECTIONS

PROSPECTUS_COLUMNS = ("firm_id", "section", "text")
MANIFEST_COLUMNS = ("firm_id", "split")
SPLITS = ("train", "val", "test", "rejected")


def find_prospectus(data_dir: str | Path) -> Path:
    """`prospectus.parquet` or `prospectus.csv` inside `data_dir` (exactly one of them)."""
    data_dir = Path(data_dir)
    found = find_table(data_dir, PROSPECTUS)
    if found is None:
        raise TableError(f"{data_dir}: no {PROSPECTUS}.parquet or {PROSPECTUS}.csv")
    return found


def _decode(value: object) -> tuple[str | None, str]:
    """(text, status) of one cell: ok, missing (null), empty, or non_utf8."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None, "missing"
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, "non_utf8"
    text = str(value)
    try:
        text.encode("utf-8")  # lone surrogates: what surrogateescape made of invalid bytes
    except UnicodeEncodeError:
        return None, "non_utf8"
    if not text.strip():
        return None, "empty"
    return text, "ok"


def read_prospectus(path: str | Path) -> pd.DataFrame:
    """Rows (firm_id, section, text, status) of a prospectus file; text is None unless status is ok.

    Rows are numbered as in the file: CSV data rows from 2 (line 1 is the header),
    Parquet rows from 1.
    """
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise TableError(f"{path}: expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise TableError(f"{path}: the file is empty")
    try:
        if path.suffix == ".csv":
            raw = pd.read_csv(path, dtype=object, keep_default_na=False, na_values=[],
                              encoding="utf-8-sig", encoding_errors="surrogateescape")
            first_row = 2
        else:
            raw = pd.read_parquet(path)
            first_row = 1
    except READ_ERRORS as err:
        raise unreadable(path, path, err) from err
    missing = [c for c in PROSPECTUS_COLUMNS if c not in raw.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {missing}; found {list(raw.columns)}")

    rows = []
    for i, (firm, section, value) in enumerate(zip(raw["firm_id"], raw["section"], raw["text"])):
        where = f"{path}: row {i + first_row}"
        firm_text, _ = _decode(firm)
        if firm_text is None:
            raise TableError(f"{where}, column firm_id: empty or unreadable firm_id")
        if section not in SECTIONS:
            raise TableError(f"{where}, column section: {section!r} is not one of {list(SECTIONS)}")
        text, status = _decode(value)
        rows.append((firm_text.strip(), section, text, status, i + first_row))
    table = pd.DataFrame(rows, columns=["firm_id", "section", "text", "status", "source_row"])
    dup = table.duplicated(["firm_id", "section"], keep="first")
    if dup.any():
        first = table[dup].iloc[0]
        raise TableError(
            f"{path}: row {first.source_row}, columns firm_id/section: duplicate "
            f"({first.firm_id!r}, {first.section!r}); each firm has at most one row per section"
        )
    return table


def check_coverage(prospectus: pd.DataFrame, split: pd.DataFrame, source: str | Path, split_source: str | Path) -> int:
    """Fail before any extraction when the prospectus and the split do not name the same firms: the text
    model (fallback embedder, PCA) is fitted on training firms' texts and needs at least two. Returns how
    many prospectus firms the split does not list (they are embedded and marked `unlisted`)."""
    train = set(split.loc[split["split"] == "train", "firm_id"])
    firms = set(prospectus["firm_id"])
    usable = set(prospectus.loc[prospectus["status"] == "ok", "firm_id"]) & train
    if len(usable) < 2:
        example = f" (e.g. prospectus {sorted(firms)[0]!r}, split {sorted(train)[0]!r})" if firms and train else ""
        raise TableError(f"{source}: {len(usable)} of its {len(firms)} firms are training firms of {split_source} with "
                         f"readable text{example}; the text model is fitted on training firms and needs at least 2 "
                         f"(is the split from this input folder?)")
    return len(firms - set(split["firm_id"]))


def read_split(manifest: str | Path) -> pd.DataFrame:
    """(firm_id, split) of the prepare step's manifest.csv."""
    manifest = Path(manifest)
    if not manifest.exists():
        raise TableError(f"manifest not found: {manifest}")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise TableError(f"{manifest}: missing column(s) {missing}; found {list(table.columns)}")
    bad = ~table["split"].isin(SPLITS)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise TableError(f"{manifest}: row {i + 2}, column split: {table['split'].iloc[i]!r} is not one of {list(SPLITS)}")
    dup = table["firm_id"].duplicated()
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise TableError(f"{manifest}: row {i + 2}, column firm_id: duplicate firm {table['firm_id'].iloc[i]!r}")
    return table[["firm_id", "split"]].assign(firm_id=lambda t: t["firm_id"].str.strip())


def read_firm_list(path: str | Path) -> pd.DataFrame:
    """(firm_id, split='train') from a file with one training firm_id per line."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"train-firms file not found: {path}")
    firms = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not firms:
        raise TableError(f"{path}: no firm ids (one per line expected)")
    return pd.DataFrame({"firm_id": pd.unique(pd.Series(firms)), "split": "train"})
