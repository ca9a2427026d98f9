"""Fixed-length views of padded sequences for models that cannot read sequences (GBMs, baselines)."""
from __future__ import annotations

import numpy as np

from emdlot.data.arrays import SequenceArrays


def last_step_features(arrays: SequenceArrays) -> np.ndarray:
    """The latest observed quarter only (index T-1 in pre-padded sequences): (N, F)."""
    return arrays.X[:, -1, :]


def sequence_summary_features(arrays: SequenceArrays) -> np.ndarray:
    """Per feature over observed steps: mean, std, min, max, last, last - mean, least-squares slope per
    month; plus the number of observed steps and the mean gap: (N, 7F + 2)."""
    mask = arrays.mask[:, :, None]
    n_obs = np.maximum(arrays.mask.sum(axis=1), 1)[:, None]
    values = np.where(mask, arrays.X, 0.0)
    mean = values.sum(axis=1) / n_obs
    var = (np.where(mask, arrays.X - mean[:, None, :], 0.0) ** 2).sum(axis=1) / n_obs
    lo = np.where(mask, arrays.X, np.inf).min(axis=1)
    hi = np.where(mask, arrays.X, -np.inf).max(axis=1)
    last = arrays.X[:, -1, :]
    months = np.cumsum(arrays.delta_t, axis=1)[:, :, None]  # elapsed months since the first observed step
    t_mean = np.where(mask, months, 0.0).sum(axis=1) / n_obs
    t_centred = np.where(mask, months - t_mean[:, None, :], 0.0)
    slope = (t_centred * np.where(mask, arrays.X - mean[:, None, :], 0.0)).sum(axis=1) / np.maximum((t_centred**2).sum(axis=1), 1e-9)
    gap = arrays.delta_t.sum(axis=1, keepdims=True) / np.maximum(n_obs - 1, 1)
    return np.concatenate([mean, np.sqrt(var), lo, hi, last, last - mean, slope, n_obs.astype(float), gap], axis=1).astype(np.float32)
