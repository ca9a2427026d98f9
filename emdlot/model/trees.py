"""Differentiable oblivious decision trees for the summary statistics (NODE, Popov et al. 2019, simplified).

A forest of T trees of depth D over inputs x (N, P). Tree t, level d picks a feature by a sparse choice
and splits it softly at a learnt threshold:

    c_td   = sparsemax(F_td)                    feature choice over the P inputs (mostly one-hot), F (T, D, P)
    f_td   = c_td . x                           the chosen feature's value
    s_td   = sigmoid((f_td - b_td) / tau_td)    the probability of going right at level d
    w_tl   = prod_d  s_td^[bit d of l] (1 - s_td)^[1 - bit d of l]     leaf l in 0 .. 2^D - 1 (sums to 1)
    y_t    = sum_l w_tl R_tl                    R (T, 2^D, O) the leaves' responses
    forest(x) = mean_t y_t                      (N, O)

Why: on the summary statistics a boosted tree's lead over an MLP is a few interactions between
statistics (benchmarks/summary_encoding.py: stumps score like a linear model, deeper trees well above it),
and dense products (cross layers) overfit the few distressed firms. A tree level picks one column and
cuts it; a path of D levels is an interaction of at most D columns, the inductive bias the trees have.
Sparsemax (Martins & Astudillo 2016) keeps the choice sparse, as NODE's entmax does; the thresholds
and temperatures start at the training firms' values (`init_from`), as NODE's data-aware start.
"""
from __future__ import annotations

import torch
from torch import nn


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of z onto the simplex along the last dim: p = max(z - tau, 0), sum p = 1."""
    srt, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cum = srt.cumsum(-1)
    support = (1 + k * srt > cum).sum(dim=-1, keepdim=True)  # the largest k with 1 + k z_(k) > sum_{j<=k} z_(j)
    tau = (cum.gather(-1, support - 1) - 1) / support.to(z.dtype)
    return torch.clamp(z - tau, min=0.0)


class ObliviousForest(nn.Module):
    """`num_trees` oblivious trees of `depth` levels over `in_features` inputs, each leaf an `out_features` vector."""

    def __init__(self, in_features: int, out_features: int, num_trees: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.choice_logits = nn.Parameter(torch.rand(num_trees, depth, in_features))  # uniform(0, 1), as NODE
        self.thresholds = nn.Parameter(torch.zeros(num_trees, depth))
        self.log_temperatures = nn.Parameter(torch.zeros(num_trees, depth))
        self.responses = nn.Parameter(torch.randn(num_trees, 2 ** depth, out_features) * out_features ** -0.5)
        bits = (torch.arange(2 ** depth)[:, None] >> torch.arange(depth)[None, :]) & 1  # (2^D, D) leaf codes
        self.register_buffer("bits", bits.float(), persistent=False)

    def chosen(self, x: torch.Tensor) -> torch.Tensor:
        """f (N, T, D): each level's chosen feature value."""
        return torch.einsum("np,tdp->ntd", x, sparsemax(self.choice_logits))

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Data-aware start on training inputs x (N, P): each threshold at a random firm's chosen value, each
        temperature at the typical distance to it, so every split starts inside the data and not saturated."""
        f = self.chosen(x)  # (N, T, D)
        pick = torch.randint(0, x.shape[0], self.thresholds.shape, generator=generator).to(x.device)
        b = torch.gather(f, 0, pick[None]).squeeze(0)
        self.thresholds.copy_(b)
        spread = (f - b).abs().median(dim=0).values.clamp_min(1e-3)
        self.log_temperatures.copy_(spread.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid((self.chosen(x) - self.thresholds) * torch.exp(-self.log_temperatures))  # (N, T, D)
        s = s[:, :, None, :]  # (N, T, 1, D) against bits (2^D, D)
        leaf = (self.bits * s + (1 - self.bits) * (1 - s)).prod(dim=-1)  # (N, T, 2^D)
        return torch.einsum("ntl,tlo->no", leaf, self.responses) / self.responses.shape[0]
