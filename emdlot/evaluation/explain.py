"""Population summaries of the model's own explanations (`EMDLOT.interpret`), as tables.

These are the numbers behind the paper's Figure 7 (modality and chapter attention) and the
feature rankings of Figures 8 and 9, averaged over firms' valid quarters.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from emdlot.model.emdlot import MODALITIES, Interpretation
from emdlot.schema import CLASSES, SECTIONS


def modality_weights(interp: Interpretation, y: np.ndarray) -> pd.DataFrame:
    """Mean modality weights per true class (Figure 7, left)."""
    frame = pd.DataFrame(interp.modality_weights, columns=list(MODALITIES))
    frame["label"] = np.asarray(CLASSES)[y]
    return frame.groupby("label").mean().reindex(list(CLASSES)).reset_index()


def chapter_weights(interp: Interpretation, y: np.ndarray, text_mask: np.ndarray) -> pd.DataFrame:
    """Mean chapter weights per true class over firms with any text (Figure 7, right)."""
    has_text = text_mask.any(axis=1) if text_mask.ndim == 2 else text_mask
    frame = pd.DataFrame(interp.chapter_weights[has_text], columns=list(SECTIONS))
    frame["label"] = np.asarray(CLASSES)[y[has_text]]
    return frame.groupby("label").mean().reindex(list(CLASSES)).reset_index()


def feature_importance(interp: Interpretation, mask: np.ndarray, feature_names: list[str]) -> pd.DataFrame:
    """Each feature's attention averaged over valid quarters and firms, in percent, highest first."""
    valid = mask[:, :, None]
    mean = (interp.feature_attention * valid).sum(axis=(0, 1)) / max(int(mask.sum()), 1)
    frame = pd.DataFrame({"feature": feature_names, "attention_pct": 100 * mean / mean.sum()})
    return frame.sort_values("attention_pct", ascending=False, ignore_index=True)
