"""How much to trust a number measured on a handful of minority firms.

Two sources of spread: which firms land in the test set (repeated stratified splits), and which of
them happen to be there (bootstrap over test firms). `bootstrap_interval` resamples test firms within
one run; `mean_interval` resamples whole splits (runs that share a split move together).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from emdlot.evaluation.metrics import ClassificationMetrics, classification_metrics

METRICS = ("recall", "f1", "average_precision", "auc")


def bootstrap_interval(y_true: np.ndarray, proba: np.ndarray, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile interval of each macro metric over test sets resampled with replacement, stratified by
    class so every resample keeps every class (macro AUC and mAP need them all)."""
    y_true = np.asarray(y_true)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y_true == c) for c in np.unique(y_true)]
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(n_boot):
        rows = np.concatenate([rng.choice(idx, size=len(idx), replace=True) for idx in by_class])
        metrics = classification_metrics(y_true[rows], proba[rows])
        for m in METRICS:
            draws[m].append(getattr(metrics, m))
    tail = (1 - level) / 2 * 100
    return {m: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for m, v in draws.items()}


def mean_interval(values: np.ndarray, groups: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95, statistic: Callable[[np.ndarray], float] = np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-run `values`, resampling whole `groups` (splits)
    when given, so runs on the same split are not counted as independent evidence."""
    values = np.asarray(values, dtype=float)
    groups = np.arange(len(values)) if groups is None else np.asarray(groups)
    keys = np.unique(groups)
    members = [values[groups == k] for k in keys]
    rng = np.random.default_rng(seed)
    stats = [statistic(np.concatenate([members[i] for i in rng.integers(len(keys), size=len(keys))])) for _ in range(n_boot)]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


def summarise(runs: list[ClassificationMetrics], groups: list | None = None) -> dict[str, dict[str, float]]:
    """Mean, sd and a split-level bootstrap interval of each metric over runs, plus how many were valid."""
    out: dict[str, dict[str, float]] = {}
    for m in METRICS:
        values = np.array([getattr(r, m) for r in runs])
        lo, hi = mean_interval(values, None if groups is None else np.asarray(groups))
        out[m] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                  "ci_low": lo, "ci_high": hi}
    out["valid_runs"] = {"count": sum(r.covers_all_classes for r in runs), "of": len(runs)}
    return out
