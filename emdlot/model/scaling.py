"""Quantile scaling inside the model: each input column through its training firms' quantiles to N(0, 1).

For column j with reference quantiles q_j,1 <= ... <= q_j,Q at levels r_1 = 0 < ... < r_Q = 1:

    u_j(x)  = piecewise-linear interpolation of (q_j, r) at x; 0 at or below q_j,1, 1 at or above q_j,Q
              (averaged over interpolating from below and from above, so tied quantiles map to
              the middle of their levels)
    x~_j    = Phi^{-1}(clip(u_j, eps, 1 - eps))

This is scikit-learn's QuantileTransformer(output_distribution="normal"): scikit-learn fits it (the
quantiles and levels become buffers, saved with the weights), torch applies it, so scoring needs
nothing beside the weights and a GPU batch never leaves the device. Why: the summary statistics
(level, spread, extremes, trend) live on scales a hundredfold apart and are heavy-tailed; an MLP
reads them far better as ranks, which is how a boosted tree sees them.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.preprocessing import QuantileTransformer
from torch import nn

EPS = 1e-7  # scikit-learn's clip before the normal quantile function (|x~| <= 5.2)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor, right: bool) -> torch.Tensor:
    """Per column j, the line through (xp[:, j], fp) at x[:, j]; flat beyond the ends. x (N, D), xp (Q, D)."""
    q = xp.shape[0]
    idx = torch.searchsorted(xp.T.contiguous(), x.T.contiguous(), right=right).T.clamp(1, q - 1)  # (N, D)
    lo, hi = torch.gather(xp, 0, idx - 1), torch.gather(xp, 0, idx)
    width = hi - lo
    w = torch.where(width > 0, (x - lo) / torch.where(width > 0, width, torch.ones_like(width)), torch.zeros_like(x))
    return fp[idx - 1] + w.clamp(0.0, 1.0) * (fp[idx] - fp[idx - 1])


class QuantileScaler(nn.Module):
    """Maps (N, D) inputs to N(0, 1) scores by the training quantiles; identity until `fit` is called."""

    def __init__(self, num_columns: int, num_quantiles: int) -> None:
        super().__init__()
        self.register_buffer("levels", torch.from_numpy(np.linspace(0.0, 1.0, num_quantiles)))  # as scikit-learn's
        self.register_buffer("quantiles", torch.zeros(num_quantiles, num_columns, dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, values: np.ndarray) -> "QuantileScaler":
        """Take the quantiles of `values` (N, D), the training firms' inputs, with scikit-learn."""
        q = self.quantiles.shape[0]
        transformer = QuantileTransformer(n_quantiles=min(q, len(values)), output_distribution="normal", subsample=None)
        transformer.fit(np.asarray(values, dtype=np.float64))
        quantiles = transformer.quantiles_
        if len(quantiles) < q:  # fewer rows than levels: scikit-learn used fewer; resample its curve onto ours
            quantiles = np.maximum.accumulate(np.stack([np.interp(self.levels.cpu().numpy(), transformer.references_, column)
                                                        for column in quantiles.T], axis=1), axis=0)
        self.quantiles.copy_(torch.from_numpy(quantiles))
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            return x
        x64 = x.to(torch.float64)
        u = 0.5 * (_interp(x64, self.quantiles, self.levels, right=False) + _interp(x64, self.quantiles, self.levels, right=True))
        u = torch.where(x64 - EPS < self.quantiles[0], 0.0, torch.where(x64 + EPS > self.quantiles[-1], 1.0, u))
        return torch.special.ndtri(u.clamp(EPS, 1.0 - EPS)).to(x.dtype)
