"""The model's input: a plain dict of tensors built from SequenceArrays.

Keys: "X" (B, T, F) float32, "summary" (B, 7F) float32 (each feature's level and trend over the
valid steps, emdlot.data.summary.trend_summary), "mask" (B, T) bool, "delta_t" (B, T) float32 months,
"text" (B, S, D) float32, "text_mask" (B, S) bool (per section), and "y" (B,) int64 when labels are wanted.
Arrays are checked once here, naming the firm, so the forward pass can trust its input.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from emdlot.data.arrays import SequenceArrays
from emdlot.data.summary import trend_summary

Batch = dict[str, torch.Tensor]


def check_arrays(arrays: SequenceArrays, name: str = "arrays") -> None:
    """Raise a ValueError naming the firm (and step or column) for input the model cannot use."""
    n, steps = arrays.mask.shape
    if arrays.X.ndim != 3 or arrays.X.shape[:2] != (n, steps):
        raise ValueError(f"{name}.X has shape {arrays.X.shape}, expected ({n}, {steps}, features) to match mask")
    if arrays.delta_t.shape != (n, steps):
        raise ValueError(f"{name}.delta_t has shape {arrays.delta_t.shape}, expected ({n}, {steps})")
    if arrays.text.ndim != 3:
        raise ValueError(f"{name}.text has shape {arrays.text.shape}, expected (firms, sections, dims)")
    empty = np.flatnonzero(~arrays.mask.any(axis=1))
    if empty.size:
        raise ValueError(f"{name}: firm {str(arrays.firm_id[empty[0]])!r} (row {empty[0]}) has no valid quarter")
    bad_x = ~np.isfinite(arrays.X) & arrays.mask[:, :, None]
    if bad_x.any():
        row, step, col = (int(i) for i in np.argwhere(bad_x)[0])
        raise ValueError(f"{name}.X: firm {str(arrays.firm_id[row])!r} (row {row}) has a non-finite value at step {step}, feature column {col}")
    bad_dt = (~np.isfinite(arrays.delta_t) | (arrays.delta_t < 0)) & arrays.mask
    if bad_dt.any():
        row, step = (int(i) for i in np.argwhere(bad_dt)[0])
        raise ValueError(f"{name}.delta_t: firm {str(arrays.firm_id[row])!r} (row {row}) has elapsed time {arrays.delta_t[row, step]} at step {step}; need finite months >= 0")
    bad_text = ~np.isfinite(arrays.text) & arrays.text_mask[:, :, None]
    if bad_text.any():
        row, section, col = (int(i) for i in np.argwhere(bad_text)[0])
        raise ValueError(f"{name}.text: firm {str(arrays.firm_id[row])!r} (row {row}) has a non-finite value in section {section}, dimension {col}")


def to_batch(arrays: SequenceArrays, device: str | torch.device = "cpu", with_labels: bool = True, name: str = "arrays") -> Batch:
    """All rows of `arrays` as tensors (checked first; errors start with `name`). Slice with `take`."""
    check_arrays(arrays, name)
    # Padded positions may hold anything upstream; the model must never see NaN there either.
    mask = np.asarray(arrays.mask, dtype=bool)
    X = np.where(mask[:, :, None], arrays.X, 0.0)
    delta_t = np.where(mask, arrays.delta_t, 0.0)
    batch = {
        "X": torch.as_tensor(X, dtype=torch.float32),
        "summary": torch.as_tensor(trend_summary(X, mask, delta_t), dtype=torch.float32),
        "mask": torch.as_tensor(mask),
        "delta_t": torch.as_tensor(delta_t, dtype=torch.float32),
        "text": torch.as_tensor(np.where(arrays.text_mask[:, :, None], arrays.text, 0.0), dtype=torch.float32),
        "text_mask": torch.as_tensor(np.asarray(arrays.text_mask, dtype=bool)),
    }
    if with_labels:
        batch["y"] = torch.as_tensor(np.asarray(arrays.y), dtype=torch.int64)
    return {key: value.to(device) for key, value in batch.items()}


def take(batch: Batch, index: torch.Tensor | slice) -> Batch:
    """Rows `index` of every tensor in the batch."""
    return {key: value[index] for key, value in batch.items()}


def batch_size_of(batch: Batch) -> int:
    return int(batch["mask"].shape[0])


def shuffled_batches(num_rows: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Row indices of one epoch in a seeded random order, cut into batches (the last may be shorter)."""
    return list(torch.randperm(num_rows, generator=generator).split(batch_size))


@torch.no_grad()
def eval_in_chunks(model: torch.nn.Module, batch: Batch, batch_size: int, fn: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
    """`fn` over `batch_size` rows at a time in eval mode (no dropout), concatenated; the mode is restored."""
    was_training = model.training
    model.eval()
    try:
        n = batch_size_of(batch)
        return torch.cat([fn(take(batch, slice(i, i + batch_size))) for i in range(0, n, batch_size)])
    finally:
        model.train(was_training)
