"""The attention levels of EMDLOT (paper section 3.3, DESIGN.md section 3).

Every level scores items with a learnable vector, divides by a temperature, and takes a
softmax over the items that are present (masked items get weight exactly 0). With
`uniform=True` (ablation ABL3) a level has no parameters and weighs present items equally.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the items where `mask` is True; masked items get 0, all-masked rows all 0."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask


def uniform_weights(mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Equal weights over present items (the no-attention ablation)."""
    present = mask.to(torch.get_default_dtype())
    return present / present.sum(dim=dim, keepdim=True).clamp_min(1.0)


def _uniform_init(tensor: torch.Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(tensor, -bound, bound)


class AdditiveAttention(nn.Module):
    """Pools N item vectors: score_n = v^T tanh(W x_n + b) / temperature, weights = softmax over items.

    With `num_item_vectors` each item position has its own scoring vector v_n (the paper's
    modality-specific projection vectors); otherwise one v is shared by all items.
    """

    def __init__(self, input_size: int, attention_size: int, temperature: float,
                 num_item_vectors: int | None = None, uniform: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"attention temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.uniform = uniform
        if not uniform:
            self.project = nn.Linear(input_size, attention_size)
            shape = (num_item_vectors, attention_size) if num_item_vectors else (attention_size,)
            self.score_vector = nn.Parameter(torch.empty(shape))
            _uniform_init(self.score_vector, attention_size)

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """items (B, N, D), mask (B, N) bool -> pooled (B, D), weights (B, N)."""
        if self.uniform:
            weights = uniform_weights(mask).to(items.dtype)
        else:
            # Only present items are scored (a masked one gets weight 0 whatever it scores): over a batch's
            # quarters about a third are padding, and the projection is a (D x attention_size) product per item.
            vectors = self.score_vector.expand(*mask.shape, self.score_vector.shape[-1])[mask]
            present = (torch.tanh(self.project(items[mask])) * vectors).sum(dim=-1) / self.temperature
            weights = masked_softmax(items.new_zeros(mask.shape).masked_scatter(mask, present), mask)
        pooled = torch.einsum("bn,bnd->bd", weights, items)
        return pooled, weights


class FeatureAttention(nn.Module):
    """Feature-level attention per time step (DESIGN.md 3.1).

    Each feature j has its own embedding e_{t,j} = x_{t,j} w_j + b_j; scores
    s_{t,j} = v^T tanh(e_{t,j}); alpha_{t,j} = softmax_j(s_{t,j} / tau); the step's input is
    u_t = sum_j alpha_{t,j} e_{t,j}. alpha is the feature-by-quarter map of Figures 8 and 9;
    it is 0 on padded steps.
    """

    def __init__(self, num_features: int, embed_size: int, temperature: float, uniform: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"feature attention temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.uniform = uniform
        self.embed_weight = nn.Parameter(torch.empty(num_features, embed_size))
        self.embed_bias = nn.Parameter(torch.empty(num_features, embed_size))
        _uniform_init(self.embed_weight, 1)
        _uniform_init(self.embed_bias, 1)
        if not uniform:
            self.score_vector = nn.Parameter(torch.empty(embed_size))
            _uniform_init(self.score_vector, embed_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, F), mask (B, T) -> step inputs u (B, T, d), alpha (B, T, F).

        u_t = sum_j alpha_{t,j} (x_{t,j} w_j + b_j) = (alpha_t * x_t) W + alpha_t B, with W and B the
        stacked w_j and b_j: two matrix products over all steps instead of a (F x d) product per step
        (the per-feature embeddings are still formed, for the scores)."""
        step_valid = mask.unsqueeze(-1)  # (B, T, 1)
        if self.uniform:
            alpha = torch.full_like(x, 1.0 / x.shape[-1]) * step_valid
        else:
            # Scored at observed steps only (alpha is 0 on padded ones whatever they score; about a third of a
            # batch's steps are padding, and e_{t,j} is the largest tensor of the model).
            embedded = torch.addcmul(self.embed_bias, x[mask].unsqueeze(-1), self.embed_weight)  # (observed, F, d)
            scores = torch.tanh(embedded) @ (self.score_vector / self.temperature)  # (observed, F)
            alpha = x.new_zeros(x.shape).masked_scatter(step_valid, torch.softmax(scores, dim=-1))
        step_input = (alpha * x) @ self.embed_weight + alpha @ self.embed_bias
        return step_input, alpha


class ChapterAttention(nn.Module):
    """Chapter-level attention over the prospectus sections (DESIGN.md 3.3).

    Each section's PCA vector is mapped to the hidden size by its own linear map (the PCA
    axes of different sections mean different things), then pooled by additive attention.
    """

    def __init__(self, num_sections: int, text_dim: int, hidden_size: int, temperature: float, uniform: bool = False) -> None:
        super().__init__()
        self.section_weight = nn.Parameter(torch.empty(num_sections, text_dim, hidden_size))
        self.section_bias = nn.Parameter(torch.empty(num_sections, hidden_size))
        _uniform_init(self.section_weight, text_dim)
        _uniform_init(self.section_bias, text_dim)
        self.pool = AdditiveAttention(hidden_size, hidden_size, temperature, uniform=uniform)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, S, D), section mask (B, S) -> z_text (B, H), chapter weights (B, S): a missing
        section gets weight 0, a firm without any section all 0."""
        chapters = torch.einsum("bsd,sdh->bsh", text, self.section_weight) + self.section_bias
        return self.pool(chapters, text_mask)
