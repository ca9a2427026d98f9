"""Figures beside the tables: where each model's errors fall.

Drawn on matplotlib's Agg canvas with `Figure` objects (no pyplot), so nothing needs a display and
no figure stays open in a long-running flow.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emdlot.schema import CLASSES

SHORT = {"Performing": "Perf.", "Extended": "Ext.", "Defaulted": "Def."}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def confusion_figure(matrices: dict[str, pd.DataFrame], path: str | Path, columns: int = 4) -> Path:
    """One heatmap per model of the summed confusion matrix (rows true, columns predicted), each cell
    annotated with its count; colour is the row share, so a missed minority class shows even though
    its counts are tiny next to Performing."""
    if not matrices:
        raise ValueError("confusion_figure: no matrices to draw")
    n = len(matrices)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (model, matrix) in zip(axes.ravel(), matrices.items()):
        counts = matrix.to_numpy()
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=9,
                        color="white" if share[i, j] > 0.6 else "black")
        labels = [SHORT.get(c, c) for c in matrix.columns]
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), [SHORT.get(c, c) for c in matrix.index], fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(model, fontsize=9)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def per_class_recall_figure(recall: pd.DataFrame, path: str | Path) -> Path:
    """Grouped bars of each class's mean recall per model (the `per_class_recall` table): macro recall
    can look fine while Extended or Defaulted firms are never found."""
    columns = [f"recall_{c}" for c in CLASSES]
    missing = [c for c in ["model", *columns] if c not in recall.columns]
    if missing:
        raise ValueError(f"per_class_recall_figure: table lacks columns {missing}")
    x = np.arange(len(recall))
    width = 0.8 / len(CLASSES)
    fig = Figure(figsize=(max(6.0, 0.8 * len(recall) + 2), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (cls, column) in enumerate(zip(CLASSES, columns)):
        ax.bar(x + (i - (len(CLASSES) - 1) / 2) * width, recall[column].to_numpy(dtype=float), width, label=cls)
    ax.set_xticks(x, recall["model"].tolist(), rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall (mean over runs)")
    ax.legend(fontsize=8, ncols=len(CLASSES), loc="upper center", bbox_to_anchor=(0.5, 1.15), frameon=False)
    fig.tight_layout()
    return _save(fig, path)
