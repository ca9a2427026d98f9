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
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from emdlot.data.arrays import SequenceArrays
from emdlot.evaluation.metrics import ClassificationMetrics, CompositeWeights, classification_metrics, composite_score
from emdlot.model.batch import Batch, batch_size_of, eval_in_chunks, shuffled_batches, take, to_batch
from emdlot.training.config import EMDLOTConfig
from emdlot.model.emdlot import EMDLOT, Interpretation
from emdlot.model.losses import balancing_weights, emdlot_loss
from emdlot.schema import CLASSES
from emdlot.training.init import initialise_clusters
from emdlot.training.state import EpochRecord, FitState, History


class HasMembers:
    """A fitted run's models: `model` (its one model, or None) and `fold_models` (those that predict instead)."""

    model: EMDLOT | None
    fold_models: list[EMDLOT]

    @property
    def members(self) -> list[EMDLOT]:
        """The models whose mean probability is the run's prediction: its fold models, or its one model."""
        return self.fold_models or [self.model]


@dataclass
class FitResult(HasMembers):
    model: EMDLOT | None  # None: no model kept (a tuning trial with folds) or the fold models predict (`fold_models`)
    history: History
    # Per epoch run in this process, the validation firms' class probabilities (out-of-fold predictions
    # for a cross-validation fold; emdlot.training.calibration fits on them).
    val_proba: list[np.ndarray] = field(default_factory=list)
    # Per epoch run in this process, the class probabilities of `fit(predict=...)`'s firms (their labels unread).
    predicted: list[np.ndarray] = field(default_factory=list)
    # A run's fold models' mean probability of `fit_run(predict=...)`'s firms at the chosen epoch (emdlot.runs.single).
    cross_fit: np.ndarray | None = None
    # A run that predicts with its fold models (train.predict_with "folds"): each at the chosen epoch, with the run's shift.
    fold_models: list[EMDLOT] = field(default_factory=list)


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


def evaluate(model: EMDLOT, batch: Batch, batch_size: int, weights: CompositeWeights) -> tuple[ClassificationMetrics, float, np.ndarray]:
    """Metrics, composite score and class probabilities of the model on labelled rows."""
    proba = predict_proba(model, batch, batch_size)
    metrics = classification_metrics(batch["y"].cpu().numpy(), proba)
    return metrics, composite_score(metrics, weights), proba


def stopping_score(metrics: ClassificationMetrics, composite: float, rule: str) -> float:
    """The number early stopping maximises (TrainConfig.early_stopping)."""
    if rule == "ranking":
        return metrics.ranking
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
    weights = balancing_weights(train["y"], len(CLASSES)) if cfg.weighs_classes else None
    for index in shuffled_batches(batch_size_of(train), cfg.batch_size, generator):
        rows = take(train, index)
        out = model(rows)
        terms = emdlot_loss(out.log_probs, rows["y"], out.pi, model.centroids, cfg.dist_loss_weight, cfg.cluster_loss_weight,
                            cfg.focal_gamma, weights, cfg.label_smoothing)
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
        on_epoch: Callable[[EpochRecord], None] | None = None, epochs: int | None = None,
        checkpoint: Callable[[FitState], None] | None = None, resume: FitState | None = None,
        predict: SequenceArrays | None = None) -> FitResult:
    """Train EMDLOT on `train`, early-stop on `val`, and return the best model with its history.

    `on_epoch(record)` is called after every epoch (a Tune or Train report, a progress line): the
    caller's hook, so this layer needs no Ray. With `epochs`, exactly that many epochs run and the last
    one's weights are kept (a refit whose epoch count early stopping chose before). `checkpoint(state)`
    gets the fit's whole state after every epoch; `resume=state` continues from one, with the same
    result as a fit that was never interrupted. `predict`: firms whose probabilities are kept after every epoch
    (`FitResult.predicted`; their labels are never read, and nothing in the fit depends on them)."""
    _check_compatible(train, val)
    cfg = config.train
    started = time.perf_counter()
    with seeded(seed):
        train_batch = to_batch(train, device=cfg.device, name="train")
        val_batch = to_batch(val, device=cfg.device, name="val")
        predict_batch = None if predict is None else to_batch(predict, device=cfg.device, with_labels=False, name="predict")
        model = EMDLOT(config.model, num_features=train.X.shape[2], num_sections=train.text.shape[1], text_dim=train.text.shape[2]).to(cfg.device)
        generator = torch.Generator().manual_seed(seed)
        if resume is None:
            history = History(seed=seed)
            model.fit_input_scaling(train_batch)
            history.init = initialise_clusters(model, train_batch, cfg, seed, generator)
            optimizer = cfg.optimizer(model.parameters(), model.summary_parameters())
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            epochs_without_gain, done = 0, 0
        else:
            history, best_state, epochs_without_gain, done = resume.history, resume.best_model, resume.epochs_without_gain, resume.epoch
            history.resumed_after.append(done)
            model.load_state_dict(resume.model)
            optimizer = cfg.optimizer(model.parameters(), model.summary_parameters())
            optimizer.load_state_dict(resume.optimizer)
            generator.set_state(resume.generator)
            torch.set_rng_state(resume.torch_rng)
        total = epochs or cfg.max_epochs
        val_proba: list[np.ndarray] = []
        predicted: list[np.ndarray] = []
        bar = tqdm(range(done + 1, total + 1), desc=f"EMDLOT seed {seed}", unit="epoch", initial=done, total=total,
                   disable=not cfg.progress or history.stopped_early)
        for epoch in bar:
            if history.stopped_early:  # resumed from the checkpoint of the epoch that stopped it
                break
            epoch_start = time.perf_counter()
            losses = _train_one_epoch(model, optimizer, train_batch, config, generator)
            metrics, composite, proba = evaluate(model, val_batch, cfg.eval_batch_size, cfg.score_weights)
            val_proba.append(proba)
            if predict_batch is not None:
                predicted.append(predict_proba(model, predict_batch, cfg.eval_batch_size))
            score = stopping_score(metrics, composite, cfg.early_stopping)
            record = EpochRecord(epoch=epoch, **losses, val_metrics=metrics.as_dict(), val_score=composite,
                                 stop_score=score, seconds=time.perf_counter() - epoch_start)
            history.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if epochs is not None:  # a fixed length: the last epoch's weights are the result
                history.best_score, history.best_epoch = score, epoch
            elif score > history.best_score + cfg.min_improvement:
                history.best_score, history.best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                epochs_without_gain = 0
            else:
                epochs_without_gain += 1
            bar.set_postfix(loss=f"{losses['train_loss']:.4f}", val_score=f"{score:.4f}", best=f"{history.best_score:.4f}@{history.best_epoch}")
            history.stopped_early = epochs is None and epochs_without_gain >= cfg.patience
            if checkpoint is not None:
                checkpoint(FitState(epoch=epoch, model=model.state_dict(), best_model=best_state,
                                    optimizer=optimizer.state_dict(), generator=generator.get_state(),
                                    torch_rng=torch.get_rng_state(), epochs_without_gain=epochs_without_gain,
                                    history=history))
        bar.close()
        if epochs is None:
            model.load_state_dict(best_state)
        model.eval()
    history.wall_time_s += time.perf_counter() - started
    return FitResult(model=model, history=history, val_proba=val_proba, predicted=predicted)
