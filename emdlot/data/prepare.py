"""`emdlot prepare`: a validated input folder -> a dataset folder ready for tuning and training.

Order of work (DESIGN.md section 2): validate; drop look-ahead rows; reject firms left without
observations; fix the stratified firm split (manifest.csv); fit the feature transforms on training
firms only; build padded sequences for every usable firm; assemble train/val/test arrays (SMOTE on
training firms only).
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from emdlot.config import ConfigError, PrepareConfig
from emdlot.data.arrays import SequenceArrays
from emdlot.data.assemble import (
    MANIFEST_FILE, META_FILE, SEQUENCES_FILE, TRANSFORMS_FILE, AssemblyError, DatasetMeta, assemble, read_text_features,
)
from emdlot.data.contract import InputTables, load_inputs
from emdlot.data.sequences import (
    cutoff_before, event_dates, exclude_lookahead, join_macro, keep_last, months_since_previous, pad_sequences,
)
from emdlot.data.split import SplitError, split_firms
from emdlot.data.transforms import feature_pipeline, save_pipeline
from emdlot.schema import CLASS_INDEX, CLASSES, SECTIONS, TEXT_DIMS

log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(tables: InputTables, kept: pd.DataFrame, events: pd.DataFrame, cfg: PrepareConfig) -> pd.DataFrame:
    """One row per labelled firm: its split, or 'rejected' with the reason; where its window counts
    from (event_date, event_source), the cutoff that follows and the date of its last kept row."""
    manifest = tables.labels[["firm_id", "label"]].copy()
    manifest = manifest.merge(events, on="firm_id", how="left")
    manifest["cutoff"] = cutoff_before(manifest["event_date"], cfg.exclusion_months)
    manifest["last_kept"] = manifest["firm_id"].map(kept.groupby("firm_id")["date"].max())
    manifest["split"] = "rejected"
    manifest["reason"] = ""
    span = tables.panel.groupby("firm_id")["date"].agg(["size", "min", "max"])
    empty = manifest["last_kept"].isna()
    manifest.loc[empty, "reason"] = [
        "no row in the panel" if firm not in span.index else
        f"every one of its {int(span.loc[firm, 'size'])} rows ({span.loc[firm, 'min']:%Y-%m-%d} to "
        f"{span.loc[firm, 'max']:%Y-%m-%d}) is dated after its {source} date {event:%Y-%m-%d}: no history before "
        f"the event" if span.loc[firm, "min"] > event else
        f"no observation on or before the cutoff {cutoff:%Y-%m-%d} ({cfg.exclusion_months} months before the "
        f"{source} date {event:%Y-%m-%d}); its {int(span.loc[firm, 'size'])} rows run from "
        f"{span.loc[firm, 'min']:%Y-%m-%d} to {span.loc[firm, 'max']:%Y-%m-%d}"
        for firm, cutoff, source, event in manifest.loc[empty, ["firm_id", "cutoff", "event_source", "event_date"]].itertuples(index=False)
    ]
    usable = manifest.loc[~empty, ["firm_id", "label"]]
    try:
        split = split_firms(usable, cfg)
    except SplitError as err:  # the manifest is not written then: say which firms were rejected, and why
        raise SplitError(f"{err}{_listed(manifest[empty])}") from None
    manifest.loc[~empty, "split"] = manifest.loc[~empty, "firm_id"].map(split).to_numpy()
    return manifest


def build_sequences(rows: pd.DataFrame, features: list[str], order: list[str], labels: pd.Series,
                    pipeline, max_len: int) -> SequenceArrays:
    """Transform rows (sorted by firm, date) and pad them into SequenceArrays in `order`."""
    firm_ids = rows["firm_id"].to_numpy()
    values = pipeline.transform(rows[features].to_numpy(dtype=float)).astype(np.float32)
    delta_t = months_since_previous(firm_ids, rows["date"])
    X, mask, dt = pad_sequences(firm_ids, values, delta_t, order, max_len)
    n = len(order)
    return SequenceArrays(
        firm_id=np.array(order), X=X, mask=mask, delta_t=dt,
        text=np.zeros((n, len(SECTIONS), TEXT_DIMS), dtype=np.float32), text_mask=np.zeros((n, len(SECTIONS)), dtype=bool),
        y=labels.reindex(order).map(CLASS_INDEX).to_numpy(dtype=np.int64),
    )


def text_coverage(text: pd.DataFrame, manifest: pd.DataFrame, path: Path) -> dict:
    """What meta.json records of the text features joined: the file, its hash, and how many firms of each
    split they cover (a firm without a row is trained and scored without text)."""
    covered = manifest["firm_id"].isin(set(text["firm_id"]))
    per_split = {name: {"firms": int(len(group)), "with_text": int(covered[group.index].sum())}
                 for name, group in manifest.groupby("split")}
    return {"path": str(path.resolve()), "sha256": _sha256(path), "firms_in_file": int(text["firm_id"].nunique()),
            "firms_matched": int(covered.sum()), "per_split": per_split}


def _listed(rejected: pd.DataFrame, shown: int = 3) -> str:
    if rejected.empty:
        return ""
    items = "; ".join(f"{r.firm_id} ({r.label}): {r.reason}" for r in rejected.head(shown).itertuples())
    more = f"; and {len(rejected) - shown} more" if len(rejected) > shown else ""
    return f" ({len(rejected)} firm(s) were rejected before the split: {items}{more})"


class PrepareError(ConfigError):
    """An --out that cannot hold a dataset (a one-line error in the CLI)."""


def prepare(input_dir: str | Path, out_dir: str | Path, cfg: PrepareConfig | None = None,
            text_features: str | Path | None = None) -> DatasetMeta:
    """Write a dataset folder all at once: the work goes to a hidden folder beside `out_dir`, which takes
    its place only when everything is written, so a failed or interrupted run leaves no half-written
    dataset (and an earlier dataset in `out_dir` stays as it was)."""
    cfg = cfg or PrepareConfig()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out}: is a file; name a folder for the dataset")
    if out.is_dir() and any(out.iterdir()) and not (out / META_FILE).exists():
        raise PrepareError(f"--out {out}: folder holds other files and no prepared dataset; name a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.preparing-", dir=out.parent))
    try:
        meta = _prepare_into(input_dir, work, cfg, text_features)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _prepare_into(input_dir: str | Path, out: Path, cfg: PrepareConfig, text_features: str | Path | None) -> DatasetMeta:
    tables = load_inputs(input_dir)
    features = tables.feature_names
    text = read_text_features(text_features) if text_features is not None else None

    events = event_dates(tables.panel, tables.labels, cfg.exclusion_months, cfg.performing_cutoff, cfg.seed)
    kept = keep_last(exclude_lookahead(tables.panel, tables.labels, cfg.exclusion_months, events), cfg.max_len)
    manifest = build_manifest(tables, kept, events, cfg)
    manifest.to_csv(out / MANIFEST_FILE, index=False)
    split = manifest.set_index("firm_id")["split"]
    log.info("split: %s", manifest["split"].value_counts().to_dict())

    rows = join_macro(kept, tables.macro, tables.macro_features)
    train_rows = np.flatnonzero(rows["firm_id"].map(split).eq("train").to_numpy())
    if cfg.transform_fit_rows is not None and len(train_rows) > cfg.transform_fit_rows:
        train_rows = np.sort(np.random.default_rng(cfg.seed).choice(train_rows, cfg.transform_fit_rows, replace=False))
    with threadpool_limits(limits=1, user_api="blas"):  # small regressions: BLAS threads only contend
        pipeline = feature_pipeline(cfg).fit(rows.iloc[train_rows][features].to_numpy(dtype=float))
    save_pipeline(pipeline, out / TRANSFORMS_FILE)

    usable = manifest.loc[manifest["split"] != "rejected", "firm_id"].tolist()
    label_of = tables.labels.set_index("firm_id")["label"]
    build_sequences(rows, features, usable, label_of, pipeline, cfg.max_len).save(out / SEQUENCES_FILE)

    counts = {
        name: {c: int(n) for c, n in group["label"].value_counts().reindex(list(CLASSES), fill_value=0).items()}
        for name, group in manifest.groupby("split")
    }
    meta = DatasetMeta(
        feature_names=features, financial_features=tables.financial_features, macro_features=tables.macro_features,
        config=cfg, inputs={name: _sha256(path) for name, path in tables.files.items()}, counts=counts,
    )
    if text is not None:
        meta.text = text_coverage(text, manifest, Path(text_features))
    meta.write(out)
    try:
        arrays = assemble(out, text, cfg)
    except AssemblyError as err:
        rejected = manifest[manifest["split"] == "rejected"]
        raise AssemblyError(f"{err}{_listed(rejected)}") from None
    for name, part in arrays.items():
        part.save(out / f"{name}.npz")
    meta.counts["train_balanced"] = {c: int(n) for c, n in zip(CLASSES, np.bincount(arrays["train"].y, minlength=len(CLASSES)))}
    meta.write(out)
    return meta
