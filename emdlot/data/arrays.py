"""The array bundle every model and baseline consumes: one row per firm.

Sequences are *pre-padded*: a firm's valid steps sit at the end, so index T-1 is always
its latest usable quarter (Q-1) and padded positions (mask False) come first.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np


@dataclass
class SequenceArrays:
    firm_id: np.ndarray  # (N,) str; SMOTE samples are named "smote-<n>"
    X: np.ndarray  # (N, T, F) float32, transformed and standardised; 0 where mask is False
    mask: np.ndarray  # (N, T) bool, True on observed quarters
    delta_t: np.ndarray  # (N, T) float32, months since the previous valid step (first: 0)
    text: np.ndarray  # (N, S, D) float32, S = 2 prospectus sections, D = PCA dims per section
    text_mask: np.ndarray  # (N, S) bool, False for a section the firm has no features for; (N,) is read as every section
    y: np.ndarray  # (N,) int64, index into emdlot.schema.CLASSES

    def __post_init__(self) -> None:
        if np.ndim(self.text_mask) == 1:  # one flag per firm (datasets prepared before per-section masks)
            self.text_mask = np.repeat(np.asarray(self.text_mask, dtype=bool)[:, None], self.text.shape[1], axis=1)
        n = len(self.y)
        for f in fields(self):
            if len(getattr(self, f.name)) != n:
                raise ValueError(f"SequenceArrays.{f.name} has {len(getattr(self, f.name))} rows, y has {n}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> "SequenceArrays":
        return SequenceArrays(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, *parts: "SequenceArrays") -> "SequenceArrays":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> "SequenceArrays":
        with np.load(path, allow_pickle=False) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})
