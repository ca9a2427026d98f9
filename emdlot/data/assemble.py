"""Assemble training arrays: join text features by firm, then balance the training firms with SMOTE.

One function serves `prepare`, tuning and training, so SMOTE always runs on the full assembly and
synthetic minority firms carry text features too. Validation and test firms are never resampled.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from sklearn.model_selection import StratifiedKFold

from emdlot.config import PrepareConfig
from emdlot.data.arrays import SequenceArrays
from emdlot.schema import CLASSES, SECTIONS, TEXT_DIMS, text_feature_column

SEQUENCES_FILE = "sequences.npz"
MANIFEST_FILE = "manifest.csv"
META_FILE = "meta.json"
TRANSFORMS_FILE = "transforms.skops"


@dataclass
class DatasetMeta:
    """What a prepared dataset needs to be reused: feature order, settings, provenance."""

    feature_names: list[str]
    financial_features: list[str]
    macro_features: list[str]
    config: PrepareConfig
    inputs: dict[str, str] = field(default_factory=dict)  # table -> sha256 of the input file
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> firms
    text: dict | None = None  # the text features joined at prepare time: file, sha256, firms covered per split

    def write(self, dataset: Path) -> None:
        body = asdict(self) | {"config": self.config.model_dump(), "classes": list(CLASSES)}
        (dataset / META_FILE).write_text(json.dumps(body, indent=2, ensure_ascii=False), encoding="utf-8")


def read_meta(dataset: str | Path) -> DatasetMeta:
    body = json.loads((Path(dataset) / META_FILE).read_text(encoding="utf-8"))
    body.pop("classes", None)
    return DatasetMeta(**(body | {"config": PrepareConfig(**body["config"])}))


class AssemblyError(ValueError):
    pass


def read_text_features(path: str | Path) -> pd.DataFrame:
    """flows/embed.py's text_features (.parquet, or .csv), firm_id as text; an AssemblyError naming the file
    when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise AssemblyError(f"--text-features {path}: no such file")
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        elif path.suffix == ".csv":
            table = pd.read_csv(path, dtype={"firm_id": str})
        else:
            raise AssemblyError(f"--text-features {path}: expected the .parquet written by flows/embed.py")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        if isinstance(err, AssemblyError):
            raise
        raise AssemblyError(f"--text-features {path}: cannot be read: {str(err).strip().splitlines()[0]}") from None
    if "firm_id" in table.columns:
        table["firm_id"] = table["firm_id"].astype(str).str.strip()
    return table


def attach_text(arrays: SequenceArrays, text_features: pd.DataFrame | None, dims: int = TEXT_DIMS) -> SequenceArrays:
    """Fill text (N, 2, dims) and the per-section text_mask (N, 2) from a firm_id-keyed table. A firm
    without a row has every section masked; a section whose values are missing (NaN) is masked alone."""
    n = len(arrays)
    text = np.zeros((n, len(SECTIONS), dims), dtype=np.float32)
    has_text = np.zeros((n, len(SECTIONS)), dtype=bool)
    if text_features is not None:
        columns = [text_feature_column(s, i) for s in SECTIONS for i in range(dims)]
        missing = [c for c in columns if c not in text_features.columns]
        if missing or "firm_id" not in text_features.columns:
            raise AssemblyError(f"text features lack columns: {(['firm_id'] if 'firm_id' not in text_features.columns else []) + missing[:5]}")
        table = text_features.drop_duplicates("firm_id").set_index("firm_id")[columns]
        present = pd.Index(arrays.firm_id).isin(table.index)
        if n and not present.any():
            raise AssemblyError(f"text features: none of their {len(table)} firm_ids (e.g. {str(table.index[0])!r}) is a firm "
                                f"of the dataset (e.g. {str(arrays.firm_id[0])!r}); are they from this input folder?")
        values = table.reindex(arrays.firm_id[present]).to_numpy(dtype=np.float32).reshape(-1, len(SECTIONS), dims)
        text[present] = np.nan_to_num(values, nan=0.0)
        has_text[present] = np.isfinite(values).all(axis=2)
    return SequenceArrays(arrays.firm_id, arrays.X, arrays.mask, arrays.delta_t, text, has_text, arrays.y)


def smote_balance(arrays: SequenceArrays, k_neighbors: int, seed: int, ratio: float = 1.0) -> SequenceArrays:
    """SMOTE to 1:1:1 on the flattened sequence + mask + delta_t + text; reshaped back, padding re-masked. With
    `ratio` < 1 each smaller class is made up only to that share of the largest class (never below its own count),
    so there are fewer near copies of each real minority firm; the loss weights then balance the rest."""
    counts = np.bincount(arrays.y, minlength=len(CLASSES))
    present = counts[counts > 0]
    if len(present) < 2:
        raise AssemblyError(f"SMOTE needs at least two classes among the training firms; counts {dict(zip(CLASSES, counts))}")
    smallest = int(present.min())
    if smallest < 2:
        thin = [c for c, k in zip(CLASSES, counts) if 0 < k < 2]
        raise AssemblyError(f"SMOTE needs at least 2 training firms per class; {', '.join(thin)} has 1. Add firms or lower --val-fraction.")
    k = min(k_neighbors, smallest - 1)
    n, t, f = arrays.X.shape
    s, d = arrays.text.shape[1:]
    flat = np.concatenate([
        arrays.X.reshape(n, -1), arrays.mask.astype(np.float32), arrays.delta_t,
        arrays.text.reshape(n, -1), arrays.text_mask.astype(np.float32),
    ], axis=1)
    target = {c: max(int(n_c), int(np.ceil(ratio * counts.max()))) for c, n_c in enumerate(counts) if n_c > 0}
    resampled, y = SMOTE(sampling_strategy="auto" if ratio == 1.0 else target, k_neighbors=k,
                         random_state=seed).fit_resample(flat, arrays.y)
    extra = len(y) - n
    cut = np.cumsum([t * f, t, t, s * d])
    X, mask, delta_t, text, text_mask = np.split(resampled, cut, axis=1)
    mask = mask >= 0.5
    text_mask = text_mask >= 0.5
    X = X.reshape(-1, t, f) * mask[:, :, None]
    delta_t = delta_t * mask
    first_valid = mask.argmax(axis=1)
    delta_t[np.arange(len(y)), first_valid] = 0.0
    text = text.reshape(-1, s, d) * text_mask[:, :, None]
    firm_id = np.concatenate([arrays.firm_id, np.array([f"smote-{i:06d}" for i in range(extra)])])
    return SequenceArrays(firm_id, X.astype(np.float32), mask, delta_t.astype(np.float32), text.astype(np.float32), text_mask, y.astype(np.int64))


def cv_folds(arrays: SequenceArrays, folds: int, k_neighbors: int, seed: int, balance: bool = True,
             smote_ratio: float = 1.0) -> dict[str, SequenceArrays]:
    """Stratified k-fold of real firms (seeded): "cv{i}_val" is fold i, "cv{i}_train" the other folds,
    SMOTE-balanced on their own (so no synthetic firm is built from a firm of the fold it is scored on)."""
    counts = np.bincount(arrays.y, minlength=len(CLASSES))
    if folds > counts.min():
        raise AssemblyError(f"{folds} folds need at least {folds} firms of each class; training + validation firms "
                            f"have {dict(zip(CLASSES, counts.tolist()))}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = {}
    for i, (train, val) in enumerate(splitter.split(np.zeros(len(arrays.y)), arrays.y), 1):
        fold_train = arrays.subset(train)
        out[f"cv{i}_train"] = smote_balance(fold_train, k_neighbors, seed, smote_ratio) if balance else fold_train
        out[f"cv{i}_val"] = arrays.subset(val)
    return out


def assemble(dataset: str | Path, text_features: str | Path | pd.DataFrame | None = None,
             cfg: PrepareConfig | None = None, balance: bool = True, with_train_val: bool = False,
             folds: int = 0, smote_ratio: float = 1.0) -> dict[str, SequenceArrays]:
    """Train (SMOTE-balanced, up to `smote_ratio` of the largest class), val and test arrays of a prepared dataset, with text joined by firm_id;
    with `with_train_val`, also "train_val": training and validation firms SMOTE-balanced together (for a
    refit once early stopping has chosen the epoch count); with `folds` >= 2, also `cv_folds` of the
    training and validation firms (for choosing that count by cross-validation)."""
    dataset = Path(dataset)
    cfg = cfg or read_meta(dataset).config
    if isinstance(text_features, (str, Path)):
        text_features = read_text_features(text_features)
    sequences = attach_text(SequenceArrays.load(dataset / SEQUENCES_FILE), text_features)
    manifest = pd.read_csv(dataset / MANIFEST_FILE, dtype={"firm_id": str}).set_index("firm_id")
    split = manifest["split"].reindex(sequences.firm_id).to_numpy()
    out = {name: sequences.subset(np.flatnonzero(split == name)) for name in ("train", "val", "test")}
    if with_train_val or folds:
        union = SequenceArrays.concat(out["train"], out["val"])
        if with_train_val:
            out["train_val"] = smote_balance(union, cfg.smote_k_neighbors, cfg.seed, smote_ratio) if balance else union
        if folds:
            out |= cv_folds(union, folds, cfg.smote_k_neighbors, cfg.seed, balance, smote_ratio)
    if balance:
        out["train"] = smote_balance(out["train"], cfg.smote_k_neighbors, cfg.seed, smote_ratio)
    return out
