"""Typed settings of the EMDLOT architecture, defaulting to the paper's Table 5 optimum.

Settings the paper does not state (marked "not in the paper") are ours; they are here so
that nothing is hidden as a constant deep in the code. How a model is trained (optimiser, loss
weights, early stopping) lives in emdlot.training.config.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from emdlot.config import StrictModel


class ModelConfig(StrictModel):
    """Architecture (DESIGN.md section 3) and the ablation switches (paper Table 8)."""

    hidden_size: int = Field(512, ge=1)  # Table 5
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # Table 5
    num_clusters: int = Field(8, ge=1)  # Table 5
    modal_temperature: float = Field(2.6, gt=0.0)  # Table 5
    numeric_feature_temperature: float = Field(0.9, gt=0.0)  # Table 5
    text_feature_temperature: float = Field(0.55, gt=0.0)  # Table 5
    # How the T-LSTM decays memory over the gap between quarters: "learned" is the paper's gate
    # gamma = sigmoid(W delta_t + b) (section 3.1); "baytas" is Baytas et al.'s fixed 1/log(e + delta_t).
    decay: Literal["learned", "baytas"] = "learned"
    # Not in the paper: width of each feature's own embedding e_{t,j} (= T-LSTM input size).
    feature_embed_size: int = Field(64, ge=1)
    # Not in the paper: temperature of the attention over time steps that pools the T-LSTM states.
    temporal_temperature: float = Field(1.0, gt=0.0)
    # Not in the paper: hidden width of the identifier and of each prediction head; None = hidden_size.
    head_hidden_size: int | None = Field(None, ge=1)
    use_text: bool = True  # False = ABL1 (no text modality)
    use_clustering: bool = True  # False = ABL2 (one prediction head, no clusters)
    use_attention: bool = True  # False = ABL3 (uniform weights at every attention level)
    # Not in the paper: a third modality, each feature's level and trend over the firm's quarters (mean,
    # sd, min, max, last, last - mean, slope: what a boosted tree reads), through a small MLP. It gives
    # the head the firm's own history in a form that needs no recurrence to learn from a few firms.
    use_summary: bool = False
    # Not in the paper: how the summary modality's inputs are scaled before its MLP. "none" feeds the raw
    # statistics (their scales differ a hundredfold: a slope per month against a maximum); "quantile" maps
    # each through its training firms' quantiles to N(0, 1) (emdlot.model.scaling), ranks as a tree reads them.
    summary_scaling: Literal["none", "quantile"] = "none"
    # Not in the paper: cross layers before the summary MLP (emdlot.model.cross), products between the
    # statistics written down explicitly; 0 = none.
    summary_cross_layers: int = Field(0, ge=0)
    # Not in the paper: what reads the summary statistics. "mlp" the MLP above; "forest" differentiable
    # oblivious trees (emdlot.model.trees), `summary_trees` of `summary_tree_depth` levels, each leaf a
    # hidden_size vector: a level cuts one statistic, a path is an interaction of a few, as a boosted tree's.
    summary_encoder: Literal["mlp", "forest"] = "mlp"
    summary_trees: int = Field(128, ge=1)
    summary_tree_depth: int = Field(4, ge=1, le=8)
    # Not in the paper: a per-class shift b of the output log-probabilities, log p'_c = log p_c + b_c - log
    # sum_k p_k exp(b_k), held in the buffer `prior_shift` (zero while training, so training is unchanged)
    # and fitted after training on out-of-fold predictions, kept only where a nested check finds that it carries
    # to firms its fit did not see (emdlot.training.calibration; needs epoch_folds).
    prior_shift: bool = False

    @property
    def head_width(self) -> int:
        return self.head_hidden_size or self.hidden_size
