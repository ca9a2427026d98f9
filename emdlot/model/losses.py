"""The three-part loss (paper section 3.4, DESIGN.md 3.6):

    L = CE(y_hat, y) + dist_loss_weight * L_dist + cluster_loss_weight * L_sep

L_dist = 1 - H(mean_batch pi) / log K is 0 when the batch uses all clusters equally and 1
when it uses one; L_sep = 1 / mean_{k<l} ||c_k - c_l|| falls as centroids move apart.
With one cluster (or no clustering) both terms are 0.

Not in the paper: the CE term may be the focal loss (Lin et al. 2017),

    FL = -(1 - p_y)^gamma * log p_y,

which is CE at gamma = 0 and, for gamma > 0, down-weights rows the model already gets right, such as the
many near copies SMOTE makes of each minority firm once they are learned. Or it may be smoothed (Szegedy et al.
2016): the target is (1 - eps) on the label and eps / K on every class,

    CE_eps = (1 - eps) * CE - eps / K * sum_k log p_k,

which bounds how sure the model can get of the few minority firms SMOTE copies, so that a firm like none of them
is not pushed to near-zero minority probability.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class LossTerms:
    total: torch.Tensor
    cross_entropy: torch.Tensor
    distribution: torch.Tensor  # L_dist, unweighted
    separation: torch.Tensor  # L_sep, unweighted


def classification_loss(log_probs: torch.Tensor, y: torch.Tensor, focal_gamma: float = 0.0,
                        class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the mixture's class probabilities (given as logs) against labels; with
    `focal_gamma` > 0 each row's term is scaled by (1 - p_y)^gamma (the focal loss); with `label_smoothing` > 0
    the targets are smoothed (torch's own: the log-probabilities are already normalised, so its log-softmax
    leaves them as they are). With `class_weights` (K,) the mean is weighted by each row's class weight, as
    `F.nll_loss(weight=...)` does."""
    if focal_gamma and label_smoothing:
        raise ValueError("focal_gamma and label_smoothing are alternatives: set one of them")
    if label_smoothing:
        return F.cross_entropy(log_probs, y, weight=class_weights, label_smoothing=label_smoothing)
    if focal_gamma == 0.0:
        return F.nll_loss(log_probs, y, weight=class_weights)
    log_p = log_probs.gather(1, y[:, None]).squeeze(1)
    terms = -(1.0 - log_p.exp()).clamp_min(0.0).pow(focal_gamma) * log_p
    if class_weights is None:
        return terms.mean()
    w = class_weights[y]
    return (w * terms).sum() / w.sum()


def balancing_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (K n_c) per class c of the labels `y` (a class with no row gets weight 0)."""
    counts = torch.bincount(y, minlength=num_classes).to(torch.float32)
    return torch.where(counts > 0, len(y) / (num_classes * counts.clamp_min(1.0)), torch.zeros_like(counts))


def distribution_loss(pi: torch.Tensor) -> torch.Tensor:
    """1 - normalised entropy of the batch-mean cluster membership; pi is (B, K)."""
    num_clusters = pi.shape[-1]
    if num_clusters < 2:
        return pi.new_zeros(())
    usage = pi.mean(dim=0)
    entropy = -(usage * torch.log(usage.clamp_min(torch.finfo(usage.dtype).tiny))).sum()
    return 1.0 - entropy / math.log(num_clusters)


def separation_loss(centroids: torch.Tensor) -> torch.Tensor:
    """Inverse mean pairwise Euclidean distance between the K centroids (K, H)."""
    if centroids.shape[0] < 2:
        return centroids.new_zeros(())
    return 1.0 / torch.pdist(centroids).mean()


def emdlot_loss(log_probs: torch.Tensor, y: torch.Tensor, pi: torch.Tensor, centroids: torch.Tensor | None,
                dist_loss_weight: float, cluster_loss_weight: float, focal_gamma: float = 0.0,
                class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> LossTerms:
    """All three terms and their weighted sum; `centroids` is None for the one-head ablation."""
    ce = classification_loss(log_probs, y, focal_gamma, class_weights, label_smoothing)
    dist = distribution_loss(pi)
    sep = separation_loss(centroids) if centroids is not None else ce.new_zeros(())
    return LossTerms(total=ce + dist_loss_weight * dist + cluster_loss_weight * sep, cross_entropy=ce, distribution=dist, separation=sep)
