"""Soft clustering as a mixture of prediction heads (paper section 3.2, DESIGN.md 3.5).

An identifier MLP gives each firm a membership pi over K clusters; each cluster k has a
learnable centroid c_k and its own head reading [z ; c_k]; the prediction is the
pi-weighted mixture of the heads' class probabilities:

    y_hat = sum_k pi_k softmax(head_k([z ; c_k]))

computed in log space (logsumexp) so the cross-entropy of the mixture stays finite.
`SingleHead` is the one-head model of ablation ABL2 and the plain warm-up head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class HeadOutput:
    log_probs: torch.Tensor  # (B, C) log of the predicted class probabilities
    pi: torch.Tensor  # (B, K) cluster memberships (K = 1 for a single head)
    identifier_logits: torch.Tensor | None  # (B, K) before the softmax; None for a single head


def mixture_log_probs(log_pi: torch.Tensor, head_log_probs: torch.Tensor) -> torch.Tensor:
    """log sum_k pi_k p_k(y): log_pi (B, K), head_log_probs (B, K, C) -> (B, C)."""
    return torch.logsumexp(log_pi.unsqueeze(-1) + head_log_probs, dim=1)


def mlp(input_size: int, hidden_size: int, output_size: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, output_size))


class SingleHead(nn.Module):
    """One MLP from z to class log-probabilities; pi is 1 for everyone."""

    def __init__(self, latent_size: int, hidden_size: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.net = mlp(latent_size, hidden_size, num_classes, dropout)

    def forward(self, z: torch.Tensor) -> HeadOutput:
        log_probs = F.log_softmax(self.net(z), dim=-1)
        return HeadOutput(log_probs=log_probs, pi=z.new_ones(z.shape[0], 1), identifier_logits=None)


class ClusterHeads(nn.Module):
    """K independent two-layer heads; head k reads [z ; c_k]. Weights are stacked to run all K at once."""

    def __init__(self, num_clusters: int, latent_size: int, hidden_size: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        # The first layer's weight on [z ; c_k] is kept as its z part and its c_k part.
        self.weight_z = nn.Parameter(torch.empty(num_clusters, latent_size, hidden_size))
        self.weight_centroid = nn.Parameter(torch.empty(num_clusters, latent_size, hidden_size))
        self.bias_in = nn.Parameter(torch.empty(num_clusters, hidden_size))
        self.weight_out = nn.Parameter(torch.empty(num_clusters, hidden_size, num_classes))
        self.bias_out = nn.Parameter(torch.empty(num_clusters, num_classes))
        self.dropout = nn.Dropout(dropout)
        # Same scheme as nn.Linear's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) per head.
        for tensor, fan_in in ((self.weight_z, 2 * latent_size), (self.weight_centroid, 2 * latent_size),
                               (self.bias_in, 2 * latent_size), (self.weight_out, hidden_size), (self.bias_out, hidden_size)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(tensor, -bound, bound)

    def forward(self, z: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """z (B, H), centroids (K, H) -> each head's class log-probabilities (B, K, C)."""
        # Batched products over the K heads that read the stacked weights in place: forward and backward
        # then never copy a (K, H, hidden) tensor into another layout (an einsum did, twice per step).
        heads = self.weight_z.shape[0]
        from_z = torch.bmm(z.expand(heads, *z.shape), self.weight_z)  # (K, B, hidden)
        from_centroid = torch.baddbmm(self.bias_in.unsqueeze(1), centroids.unsqueeze(1), self.weight_centroid)  # (K, 1, hidden)
        hidden = self.dropout(torch.relu(from_z + from_centroid).transpose(0, 1).contiguous())  # (B, K, hidden)
        logits = torch.einsum("bko,koc->bkc", hidden, self.weight_out) + self.bias_out
        return F.log_softmax(logits, dim=-1)


class SoftClustering(nn.Module):
    """Identifier + centroids + K heads, mixed by the memberships pi."""

    def __init__(self, num_clusters: int, latent_size: int, hidden_size: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.identifier = mlp(latent_size, hidden_size, num_clusters, dropout)
        self.centroids = nn.Parameter(torch.randn(num_clusters, latent_size) / math.sqrt(latent_size))
        self.heads = ClusterHeads(num_clusters, latent_size, hidden_size, num_classes, dropout)

    def forward(self, z: torch.Tensor) -> HeadOutput:
        identifier_logits = self.identifier(z)
        log_pi = F.log_softmax(identifier_logits, dim=-1)  # (B, K)
        head_log_probs = self.heads(z, self.centroids)  # (B, K, C)
        return HeadOutput(log_probs=mixture_log_probs(log_pi, head_log_probs), pi=log_pi.exp(), identifier_logits=identifier_logits)
