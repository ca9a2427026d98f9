"""Cross layers for the summary statistics: explicit products between columns (DCN-v2, Wang et al. 2021).

    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l,      l = 0 .. L - 1,   x_0 the (scaled) statistics (N, D)

Layer l makes x_{l+1} a polynomial of degree l + 2 in x_0, each term weighted by W; the residual keeps
the lower degrees. Why: on the summary statistics a boosted tree's lead comes from interactions between
columns (depth-1 stumps score no better than a linear model; benchmarks/summary_encoding.py), and a ReLU
MLP learns products poorly from a few dozen distressed firms. A cross layer writes them down directly.
"""
from __future__ import annotations

import torch
from torch import nn


class CrossNetwork(nn.Module):
    """`num_layers` cross layers of width D; the identity at num_layers = 0."""

    def __init__(self, width: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
