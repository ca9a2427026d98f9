"""The firm-level split, fixed once by `prepare` and recorded in manifest.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from emdlot.config import PrepareConfig


class SplitError(ValueError):
    pass


def _stratified(firms: np.ndarray, labels: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    counts = pd.Series(labels).value_counts()
    thin = counts[counts < 2]
    if len(thin):
        detail = ", ".join(f"{label}: {n}" for label, n in thin.items())
        raise SplitError(f"cannot carve a stratified {what} split: too few firms in class ({detail}); need at least 2 per class")
    try:
        return train_test_split(firms, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError as err:
        raise SplitError(f"cannot carve a stratified {what} split of {len(firms)} firms at {fraction:.0%}: {err}") from err


def split_firms(firms: pd.DataFrame, cfg: PrepareConfig) -> pd.Series:
    """Map firm_id -> 'train' | 'val' | 'test', stratified by label and seeded; val is carved from train."""
    ids, labels = firms["firm_id"].to_numpy(), firms["label"].to_numpy()
    train, test = _stratified(ids, labels, cfg.test_fraction, cfg.seed, "test")
    split = pd.Series("train", index=pd.Index(ids, name="firm_id"))
    split[test] = "test"
    if cfg.val_fraction > 0:
        train_labels = firms.set_index("firm_id").loc[train, "label"].to_numpy()
        _, val = _stratified(train, train_labels, cfg.val_fraction, cfg.seed, "validation")
        split[val] = "val"
    return split
