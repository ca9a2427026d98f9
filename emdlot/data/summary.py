"""Fixed-length views of padded sequences for models that cannot read sequences (GBMs, baselines)."""
from __future__ import annotations

import numpy as np

from emdlot.data.arrays import SequenceArrays


def last_step_features(arrays: SequenceArrays) -> np.ndarray:
    """The latest observed quarter only (index T-1 in pre-padded sequences): (N, F)."""
    return arrays.X[:, -1, :]


def sequence_summary_features(arrays: SequenceArrays) -> np.ndarray:
    """`trend_summary` plus the number of observed steps and the mean gap: (N, 7F + 2). The last two say
    how long and how dense a history is, which under the paper's cutoffs also says when it ends."""
    trend = trend_summary(arrays.X, arrays.mask, arrays.delta_t)
    n_obs = np.maximum(arrays.mask.sum(axis=1), 1)[:, None]
    gap = arrays.delta_t.sum(axis=1, keepdims=True) / np.maximum(n_obs - 1, 1)
    return np.concatenate([trend, n_obs.astype(np.float32), gap.astype(np.float32)], axis=1)


def trend_summary(X: np.ndarray, mask: np.ndarray, delta_t: np.ndarray) -> np.ndarray:
    """Per feature over observed steps: mean, std, min, max, last, last - mean, least-squares slope per
    month: (N, 7F). Nothing about the sequence's length or timing, only its values' level and trend."""
    valid = mask[:, :, None]
    n_obs = np.maximum(mask.sum(axis=1), 1)[:, None]
    mean = np.where(valid, X, 0.0).sum(axis=1) / n_obs
    centred = np.where(valid, X - mean[:, None, :], 0.0)
    var = (centred**2).sum(axis=1) / n_obs
    lo = np.where(valid, X, np.inf).min(axis=1)
    hi = np.where(valid, X, -np.inf).max(axis=1)
    last = X[:, -1, :]
    months = np.cumsum(delta_t, axis=1)[:, :, None]  # elapsed months since the first observed step
    t_mean = np.where(valid, months, 0.0).sum(axis=1) / n_obs
    t_centred = np.where(valid, months - t_mean[:, None, :], 0.0)
    slope = (t_centred * centred).sum(axis=1) / np.maximum((t_centred**2).sum(axis=1), 1e-9)
    return np.concatenate([mean, np.sqrt(var), lo, hi, last, last - mean, slope], axis=1).astype(np.float32)
