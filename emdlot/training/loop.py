"""Fit one EMDLOT model: initialisation, then AdamW with early stopping on the validation score.

The validation score is the composite objective of DESIGN.md section 4 (with its
three-class penalty); the weights of the best epoch are restored at the end. Everything
random (weights, dropout, batch order, K-Means) follows from `seed`, so on the CPU the same
seed and data give bit-identical results. Ray stays out of this layer: the Tune and Train
flows call `fit` inside their workers.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from emdlot.data.arrays import SequenceArrays
from emdlot.evaluation.metrics import ClassificationMetrics, CompositeWeights, classification_metrics, composite_score
from emdlot.model.batch import Batch, batch_size_of, eval_in_chunks, shuffled_batches, take, to_batch
from emdlot.training.config import EMDLOTConfig
from emdlot.model.emdlot import EMDLOT, Interpretation
from emdlot.model.losses import emdlot_loss
from emdlot.schema import CLASSES
from emdlot.training.init import InitReport, initialise_clusters


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    model: EMDLOT
    history: History


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch and ask for deterministic kernels for the duration of one run."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    # warn_only: on a GPU some kernels have no deterministic version; on the CPU all used here do.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def predict_proba(model: EMDLOT, batch: Batch, batch_size: int) -> np.ndarray:
    """Class probabilities (N, 3) in eval mode, computed `batch_size` rows at a time."""
    return eval_in_chunks(model, batch, batch_size, lambda rows: model(rows).probs).cpu().numpy()


def interpret(model: EMDLOT, arrays: SequenceArrays, batch_size: int = 256, device: str = "cpu") -> Interpretation:
    """`model.interpret` over a whole array bundle, in chunks of `batch_size` firms."""
    batch = to_batch(arrays, device=device, with_labels=False)
    n = batch_size_of(batch)
    parts = [model.interpret(take(batch, slice(i, i + batch_size))) for i in range(0, n, batch_size)]
    return Interpretation(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in Interpretation.__dataclass_fields__})


def evaluate(model: EMDLOT, batch: Batch, batch_size: int, weights: CompositeWeights) -> tuple[ClassificationMetrics, float]:
    """Metrics and composite score of the model on labelled rows."""
    metrics = classification_metrics(batch["y"].cpu().numpy(), predict_proba(model, batch, batch_size))
    return metrics, composite_score(metrics, weights)


def stopping_score(metrics: ClassificationMetrics, composite: float, rule: str) -> float:
    """The number early stopping maximises (TrainConfig.early_stopping)."""
    if rule == "ranking":
        return 0.5 * (metrics.average_precision + metrics.auc)
    return composite


def _check_compatible(train: SequenceArrays, val: SequenceArrays) -> None:
    if train.X.shape[2] != val.X.shape[2]:
        raise ValueError(f"train has {train.X.shape[2]} features per step, val has {val.X.shape[2]}")
    if train.text.shape[1:] != val.text.shape[1:]:
        raise ValueError(f"train text is {train.text.shape[1:]} per firm, val text is {val.text.shape[1:]}")
    missing = [CLASSES[c] for c in range(len(CLASSES)) if not np.any(val.y == c)]
    if missing:
        raise ValueError(f"the validation set has no {', '.join(missing)} firms; early stopping needs every class in it")


def _train_one_epoch(model: EMDLOT, optimizer: torch.optim.Optimizer, train: Batch, config: EMDLOTConfig,
                     generator: torch.Generator) -> dict[str, float]:
    """One pass over the training rows in a seeded order; returns mean loss terms."""
    model.train()
    cfg = config.train
    sums = {"train_loss": 0.0, "train_cross_entropy": 0.0, "train_distribution": 0.0, "train_separation": 0.0}
    for index in shuffled_batches(batch_size_of(train), cfg.batch_size, generator):
        rows = take(train, index)
        out = model(rows)
        terms = emdlot_loss(out.log_probs, rows["y"], out.pi, model.centroids, cfg.dist_loss_weight, cfg.cluster_loss_weight)
        optimizer.zero_grad()
        terms.total.backward()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
        optimizer.step()
        weight = len(index)
        sums["train_loss"] += terms.total.item() * weight
        sums["train_cross_entropy"] += terms.cross_entropy.item() * weight
        sums["train_distribution"] += terms.distribution.item() * weight
        sums["train_separation"] += terms.separation.item() * weight
    n = batch_size_of(train)
    return {key: value / n for key, value in sums.items()}


def fit(train: SequenceArrays, val: SequenceArrays, config: EMDLOTConfig, seed: int,
        on_epoch: Callable[[EpochRecord], None] | None = None, epochs: int | None = None) -> FitResult:
    """Train EMDLOT on `train`, early-stop on `val`, and return the best model with its history.

    `on_epoch(record)` is called after every epoch (a Tune or Train report, a progress line): the
    caller's hook, so this layer needs no Ray. With `epochs`, exactly that many epochs run and the last
    one's weights are kept (a refit whose epoch count early stopping chose before)."""
    _check_compatible(train, val)
    cfg = config.train
    started = time.perf_counter()
    history = History(seed=seed)
    with seeded(seed):
        train_batch = to_batch(train, device=cfg.device, name="train")
        val_batch = to_batch(val, device=cfg.device, name="val")
        model = EMDLOT(config.model, num_features=train.X.shape[2], num_sections=train.text.shape[1], text_dim=train.text.shape[2]).to(cfg.device)
        generator = torch.Generator().manual_seed(seed)

        history.init = initialise_clusters(model, train_batch, cfg, seed, generator)

        optimizer = cfg.optimizer(model.parameters())
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        epochs_without_gain = 0
        bar = tqdm(range(1, (epochs or cfg.max_epochs) + 1), desc=f"EMDLOT seed {seed}", unit="epoch", disable=not cfg.progress)
        for epoch in bar:
            epoch_start = time.perf_counter()
            losses = _train_one_epoch(model, optimizer, train_batch, config, generator)
            metrics, composite = evaluate(model, val_batch, cfg.eval_batch_size, cfg.score_weights)
            score = stopping_score(metrics, composite, cfg.early_stopping)
            record = EpochRecord(epoch=epoch, **losses, val_metrics=metrics.as_dict(), val_score=composite,
                                 stop_score=score, seconds=time.perf_counter() - epoch_start)
            history.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if epochs is not None:  # a fixed length: the last epoch's weights are the result
                history.best_score, history.best_epoch = score, epoch
                continue
            if score > history.best_score + cfg.min_improvement:
                history.best_score, history.best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                epochs_without_gain = 0
            else:
                epochs_without_gain += 1
            bar.set_postfix(loss=f"{losses['train_loss']:.4f}", val_score=f"{score:.4f}", best=f"{history.best_score:.4f}@{history.best_epoch}")
            if epochs_without_gain >= cfg.patience:
                history.stopped_early = True
                break
        bar.close()
        if epochs is None:
            model.load_state_dict(best_state)
        model.eval()
    history.wall_time_s = time.perf_counter() - started
    return FitResult(model=model, history=history)
