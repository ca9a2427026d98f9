"""What a fit remembers: its history, and between two epochs everything needed to continue it.

A `FitState` is what a Ray Train checkpoint holds. Continuing from it gives the very numbers an
uninterrupted fit gives (same seed, same data), because it carries the optimizer's moments, the batch-order
generator and torch's global RNG (dropout) along with the weights. It is written without pickle: tensors
with `torch.save` and read back with `weights_only=True`, the history as JSON.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from emdlot.training.init import InitReport

STATE_FILE = "fit_state.pt"
HISTORY_FILE = "history.json"


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float  # mean total loss over the epoch's batches, weighted by batch size
    train_cross_entropy: float
    train_distribution: float  # L_dist, unweighted
    train_separation: float  # L_sep, unweighted
    val_metrics: dict[str, float]
    val_score: float  # the composite objective (with its three-class penalty)
    stop_score: float  # what early stopping watches (TrainConfig.early_stopping); = val_score by default
    seconds: float


@dataclass
class History:
    seed: int
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0  # the epoch whose weights the returned model holds
    best_score: float = float("-inf")  # its stop_score
    stopped_early: bool = False
    init: InitReport | None = None
    wall_time_s: float = 0.0
    refit: "History | None" = None  # the refit on training + validation firms, when the run made one
    resumed_after: list[int] = field(default_factory=list)  # epochs after which an interrupted fit was continued
    # With model.prior_shift: the shift fitted on the cross-validation folds' predictions at best_epoch.
    # Zero where the nested check found that it does not carry (emdlot.training.calibration); the check itself:
    prior_shift: list[float] | None = None
    prior_shift_check: dict | None = None  # ShiftCheck's fields
    # The folds' predictions at best_epoch, unshifted, each firm's from the fold that held it out (cv1_val's firms,
    # then cv2_val's, ...): what a seed ensemble's own shift is fitted on (`calibration.ensemble_prior_shift`).
    held_out_proba: list[list[float]] | None = None
    # Where that shift carries: the folds' val_metrics and val_score at best_epoch as the run decides, fold k's firms
    # shifted by the b^(-k) fitted without them (what the run's validation numbers are, rather than the unshifted record).
    shifted_val: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: dict) -> "History":
        body = dict(body)
        body["epochs"] = [EpochRecord(**e) for e in body.get("epochs", [])]
        body["init"] = InitReport(**body["init"]) if body.get("init") else None
        body["refit"] = cls.from_dict(body["refit"]) if body.get("refit") else None
        return cls(**body)


@dataclass
class FitState:
    """A fit after `epoch` finished epochs: current and best weights, optimizer, RNGs, early-stopping count."""

    epoch: int
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict
    generator: torch.Tensor  # the batch-order generator's state
    torch_rng: torch.Tensor  # torch's global CPU RNG (dropout)
    epochs_without_gain: int
    history: History

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        tensors = {k: v for k, v in self.__dict__.items() if k != "history"}
        torch.save(tensors, folder / STATE_FILE)
        (folder / HISTORY_FILE).write_text(json.dumps(self.history.as_dict()), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "FitState":
        folder = Path(folder)
        tensors = torch.load(folder / STATE_FILE, weights_only=True)
        history = History.from_dict(json.loads((folder / HISTORY_FILE).read_text(encoding="utf-8")))
        return cls(**tensors, history=history)
