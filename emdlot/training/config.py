"""Typed settings of one training run: the model's architecture (emdlot.model.config) and how it is
trained, defaulting to the paper's Table 5 optimum, loadable from YAML with sections `model:` and `train:`.

Settings the paper does not state (marked "not in the paper") are ours.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable, Literal

import torch
import yaml
from pydantic import Field, model_validator

from emdlot.config import StrictModel, load_config
from emdlot.evaluation.metrics import CompositeWeights
from emdlot.model.config import ModelConfig


class TrainConfig(StrictModel):
    """Optimisation, loss weights, initialisation and early stopping."""

    learning_rate: float = Field(0.0006175651418191845, gt=0.0)  # Table 5
    weight_decay: float = Field(1.0162398945608497e-06, ge=0.0)  # Table 5 (AdamW)
    batch_size: int = Field(8, ge=1)  # Table 5
    patience: int = Field(13, ge=1)  # Table 5: epochs without a better validation score
    cluster_loss_weight: float = Field(0.004, ge=0.0)  # Table 5: beta, weight of L_sep
    dist_loss_weight: float = Field(0.035, ge=0.0)  # Table 5: alpha, weight of L_dist
    # Not in the paper: an upper bound so a run always ends even if the score keeps creeping up.
    max_epochs: int = Field(100, ge=1)
    # Not in the paper: CAMELOT-style initialisation lengths (encoder + plain head, then identifier).
    warmup_epochs: int = Field(3, ge=0)
    identifier_epochs: int = Field(10, ge=0)
    kmeans_n_init: int = Field(10, ge=1)
    # Not in the paper: gradient-norm clipping; None leaves gradients as they are.
    grad_clip_norm: float | None = Field(None, gt=0.0)
    # What early stopping watches on the validation firms: "composite" (the paper's tuning objective, with
    # its three-class penalty; argmax-based, so with a handful of minority firms it moves in big steps) or
    # "ranking" (mean of macro mAP and macro AUC: threshold-free, steadier). Not in the paper.
    early_stopping: Literal["composite", "ranking"] = "composite"
    # Not in the paper: after early stopping on the validation firms, train a fresh model (same seed) on
    # the training and validation firms together (SMOTE'd together) for the best epoch count, and keep that
    # one: the few minority firms held out for early stopping are then learned from too.
    refit_on_val: bool = False
    # Not in the paper: 0 chooses the refit's epoch count by early stopping on the validation firms (a
    # handful of minority firms decide it); k >= 2 chooses it by stratified k-fold cross-validation over
    # the training and validation firms (each fold SMOTE'd on its own, every fold run to max_epochs, the
    # epoch with the best mean stop score wins). Needs refit_on_val; costs k full-length fits.
    epoch_folds: int = Field(0, ge=0)
    # Not in the paper: which models make a run's predictions. "refit": the refit on training + validation firms.
    # "folds": the epoch_folds fold models themselves, each at the chosen epoch (refitted to it: the fit is
    # deterministic), their mean probability, with the prior shift that their own held-out predictions fitted; no
    # refit. The shift is then applied to the models it was fitted on (the refit is surer on new firms than the fold
    # models: benchmarks/refit_drift.py). Needs epoch_folds.
    predict_with: Literal["refit", "folds"] = "refit"
    # How the rare classes get their weight: "smote" (the paper: training firms SMOTE'd to 1:1:1) or
    # "class_weight" (not in the paper: the real training firms only, each class's loss terms weighted by
    # n / (K n_c), so a minority firm counts as much as SMOTE's copies of it would, without the copies).
    balance: Literal["smote", "class_weight"] = "smote"
    # Not in the paper: with "smote", each smaller class is SMOTE'd up to this share of the largest class (1: 1:1:1,
    # the paper); below 1 there are fewer near copies of each real minority firm and the loss's class weights
    # n / (K n_c), over the resampled firms, balance the rest.
    smote_ratio: float = Field(1.0, gt=0.0, le=1.0)
    # Not in the paper: focal loss in place of the CE term (0: plain cross-entropy, the paper).
    focal_gamma: float = Field(0.0, ge=0.0)
    # Not in the paper: label smoothing of the CE term's targets (0: none, the paper); not with focal_gamma.
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # Early stopping counts an epoch as better only if it beats the best score by more than this.
    min_improvement: float = Field(0.0, ge=0.0)
    # Not in the paper: the summary encoder's own learning rate (None: learning_rate). A forest's feature
    # choices and thresholds move little at the T-LSTM's rate in a few hundred steps.
    summary_learning_rate: float | None = Field(None, gt=0.0)
    # Not in the paper: how a seed ensemble (a seed-averaged package, the seed-average table) makes one prediction
    # of its members (emdlot.runs.ensemble). "average": the mean of their probabilities, each as fitted. "shift":
    # the mean of their unshifted probabilities, shifted once by the checked shift of their mean held-out fold
    # prediction. "hybrid": that mean blended with XGBoost on the summary statistics (weight ensemble_weight), then
    # one checked shift from the same held-out folds (emdlot.training.blend). Both need model.prior_shift's folds.
    ensemble: Literal["average", "shift", "hybrid"] = "average"
    # The hybrid's weight on EMDLOT (the rest on XGBoost); None chooses it on the held-out folds by ranking. Equal
    # weights by default: the fitted weight swung from 0 to 1 between splits and scored lower (quality round 17).
    ensemble_weight: float | None = Field(0.5, ge=0.0, le=1.0)
    eval_batch_size: int = Field(256, ge=1)  # validation / prediction batches (no effect on results)
    score_weights: CompositeWeights = CompositeWeights()  # DESIGN.md section 4
    device: str = "cpu"
    progress: bool = True  # tqdm bars for warm-up and epochs

    @model_validator(mode="after")
    def _folds_need_a_refit(self) -> "TrainConfig":
        if self.epoch_folds == 1:
            raise ValueError("epoch_folds must be 0 (early stopping on the validation firms) or at least 2")
        if self.balance == "class_weight" and self.smote_ratio < 1.0:
            raise ValueError("smote_ratio is a share of SMOTE's copies: it needs balance smote")
        if self.focal_gamma and self.label_smoothing:
            raise ValueError("focal_gamma and label_smoothing are alternatives: set one of them")
        if self.epoch_folds and not self.refit_on_val:
            raise ValueError("epoch_folds chooses the epoch count of a refit: set refit_on_val true as well")
        if self.predict_with == "folds" and not self.epoch_folds:
            raise ValueError("predict_with 'folds' predicts with the epoch_folds fold models: set epoch_folds to 2 or more")
        return self

    @property
    def weighs_classes(self) -> bool:
        """Whether the loss weights each class n / (K n_c): without SMOTE's copies, or with fewer of them."""
        return self.balance == "class_weight" or self.smote_ratio < 1.0

    def optimizer(self, params: Iterable[torch.nn.Parameter],
                  summary: Iterable[torch.nn.Parameter] = ()) -> torch.optim.AdamW:
        """AdamW with this run's learning rate and weight decay; the fused kernel (about 30% faster per
        step at the paper's model size on the CPU) updates each tensor in one pass. With
        summary_learning_rate, those of `params` that are in `summary` (the summary encoder's) learn at it."""
        params = list(params)
        own = {id(p) for p in summary} if self.summary_learning_rate is not None else set()
        groups = [{"params": [p for p in params if id(p) not in own]}]
        if any(id(p) in own for p in params):
            groups.append({"params": [p for p in params if id(p) in own], "lr": self.summary_learning_rate})
        return torch.optim.AdamW(groups, lr=self.learning_rate, weight_decay=self.weight_decay, fused=True)


# Where each Table 5 hyperparameter (the tuning search space) lives.
_MODEL_KEYS = frozenset(ModelConfig.model_fields)
_TRAIN_KEYS = frozenset(TrainConfig.model_fields)


class EMDLOTConfig(StrictModel):
    """Everything one training run needs besides data and seed; YAML sections `model:` and `train:`."""

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _shift_needs_folds(self) -> "EMDLOTConfig":
        if self.model.prior_shift and not self.train.epoch_folds:
            raise ValueError("model.prior_shift is fitted on cross-validation folds' predictions: set train.epoch_folds "
                             "(and refit_on_val) as well")
        if self.train.ensemble != "average" and not self.model.prior_shift:
            raise ValueError(f"train.ensemble {self.train.ensemble!r} is fitted on the members' held-out fold predictions, "
                             "which runs keep only with model.prior_shift: set it (and train.epoch_folds) as well")
        return self

    def with_params(self, params: dict[str, Any]) -> "EMDLOTConfig":
        """Copy with flat hyperparameters (e.g. one Tune trial's Table 5 values) routed to their section."""
        model_updates: dict[str, Any] = {}
        train_updates: dict[str, Any] = {}
        for key, value in params.items():
            if key in _MODEL_KEYS:
                model_updates[key] = value
            elif key in _TRAIN_KEYS:
                train_updates[key] = value
            else:
                raise ValueError(f"unknown EMDLOT hyperparameter {key!r}; model keys: {sorted(_MODEL_KEYS)}, train keys: {sorted(_TRAIN_KEYS)}")
        return EMDLOTConfig(
            model=ModelConfig.model_validate({**self.model.model_dump(), **model_updates}),
            train=TrainConfig.model_validate({**self.train.model_dump(), **train_updates}),
        )

    def ablation(self, name: Literal["EMDLOT", "ABL1", "ABL2", "ABL3"]) -> "EMDLOTConfig":
        """The same configuration with one component removed, as in the paper's Table 8."""
        switches = {
            "EMDLOT": {},
            "ABL1": {"use_text": False},
            "ABL2": {"use_clustering": False},
            "ABL3": {"use_attention": False},
        }
        if name not in switches:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(switches)}")
        return self.with_params(switches[name])


def load_emdlot_config(path: str | Path | None = None) -> EMDLOTConfig:
    """Read a YAML file with optional `model:` and `train:` sections (yaml.safe_load; unknown keys fail)."""
    return load_config(EMDLOTConfig, path)


VARIANTS_FILE = Path(str(files("emdlot") / "configs" / "variants.yaml"))


def training_variants() -> dict[str, dict[str, Any]]:
    """The named training recipes of emdlot/configs/variants.yaml ("paper" is the paper's)."""
    return yaml.safe_load(VARIANTS_FILE.read_text(encoding="utf-8"))


def with_variant(config: EMDLOTConfig, name: str) -> EMDLOTConfig:
    """`config` with a named recipe's settings on top."""
    variants = training_variants()
    if name not in variants:
        raise ValueError(f"unknown training variant {name!r}; choose from {sorted(variants)}")
    return config.with_params(variants[name])
