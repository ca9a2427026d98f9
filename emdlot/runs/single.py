"""Train one EMDLOT model on a prepared dataset's arrays and score it.

Validation is always scored (it is what early stopping and tuning look at); the test firms are
scored only when the caller asks, once, at the end of a final run.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from emdlot.data.arrays import SequenceArrays
from emdlot.data.assemble import assemble
from emdlot.evaluation.metrics import ClassificationMetrics, classification_metrics, composite_score
from emdlot.model.batch import to_batch
from emdlot.model.emdlot import EMDLOT, Interpretation
from emdlot.training.calibration import apply_prior_shift, check_prior_shift, fold_labels
from emdlot.training.config import EMDLOTConfig
from emdlot.training.loop import FitResult, HasMembers, fit, interpret, predict_proba
from emdlot.training.state import EpochRecord, FitState, History

RUN_STATE_FILE = "run_state.json"


@dataclass
class RunResult(HasMembers):
    config: EMDLOTConfig
    seed: int
    model: EMDLOT | None  # None: a tuning trial's cross-validated epoch count, not refitted, or fold models predict
    history: History
    val_metrics: ClassificationMetrics
    val_score: float  # composite objective on the validation firms (with the three-class penalty)
    test_metrics: ClassificationMetrics | None = None
    test_score: float | None = None
    test_proba: np.ndarray | None = None  # (N_test, 3)
    test_interpretation: Interpretation | None = None
    test_cross_fit_proba: np.ndarray | None = None  # (N_test, 3): the fold models' mean, unshifted (epoch_folds only)
    fold_models: list[EMDLOT] = field(default_factory=list)  # train.predict_with "folds": the run's models (FitResult)

    def summary(self) -> dict[str, float]:
        """Flat numbers for a log line or an MLflow run."""
        out = {f"val_{k}": v for k, v in self.val_metrics.as_dict().items()} | {
            "val_composite": self.val_score, "best_epoch": self.history.best_epoch,
            "epochs": len(self.history.epochs), "wall_time_s": self.history.wall_time_s,
            "resumes": len(self.history.resumed_after)}
        check = self.history.prior_shift_check
        if check is not None:  # the shift applied, and the nested check that decided it (emdlot.training.calibration)
            out |= {"prior_shift_extended": self.history.prior_shift[1], "prior_shift_defaulted": self.history.prior_shift[2],
                    "prior_shift_nested_none": check["nested_none"], "prior_shift_nested_shift": check["nested_shift"]}
        if self.test_metrics is not None:
            out |= {f"test_{k}": v for k, v in self.test_metrics.as_dict().items()} | {"test_composite": self.test_score}
        return out


def score(models: EMDLOT | list[EMDLOT], arrays: SequenceArrays, config: EMDLOTConfig) -> tuple[ClassificationMetrics, float, np.ndarray]:
    """Metrics, composite score and class probabilities of a fitted model, or of the mean of a run's members (its
    fold models), on labelled firms."""
    members = [models] if isinstance(models, EMDLOT) else models
    batch = to_batch(arrays, device=config.train.device)
    proba = np.mean([predict_proba(m, batch, config.train.eval_batch_size) for m in members], axis=0)
    metrics = classification_metrics(arrays.y, proba)
    return metrics, composite_score(metrics, config.train.score_weights), proba


@dataclass
class RunState:
    """A run between two epochs: which fit it is in and that fit's state. During the refit it also holds
    the early-stopped fit's history (its best epoch fixes the refit's length)."""

    phase: Literal["fit", "refit"]
    state: FitState
    fitted: History | None = None

    def save(self, folder: str | Path) -> None:
        self.state.save(folder)
        body = {"phase": self.phase, "fitted": self.fitted.as_dict() if self.fitted else None}
        (Path(folder) / RUN_STATE_FILE).write_text(json.dumps(body), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "RunState":
        body = json.loads((Path(folder) / RUN_STATE_FILE).read_text(encoding="utf-8"))
        fitted = History.from_dict(body["fitted"]) if body["fitted"] else None
        return cls(phase=body["phase"], state=FitState.load(folder), fitted=fitted)


def assemble_for(config: EMDLOTConfig, dataset: str | Path, text_features=None,
                 balance: bool | None = None, refit: bool = True) -> dict[str, SequenceArrays]:
    """The parts a run of `config` reads from a prepared dataset: SMOTE'd training firms when its balance is
    "smote" (up to its `smote_ratio`), "train_val" for a refit (not with `refit=False`, as `fit_run` takes
    it), the cross-validation folds for `epoch_folds`. `balance` True gives the same firms SMOTE'd 1:1:1 whatever
    the config says (what the trees learn from), False the real firms alone."""
    return assemble(dataset, text_features, balance=config.train.balance == "smote" if balance is None else balance,
                    with_train_val=config.train.refit_on_val and refit, folds=config.train.epoch_folds,
                    smote_ratio=config.train.smote_ratio if balance is None else 1.0)


def fit_run(parts: dict[str, SequenceArrays], config: EMDLOTConfig, seed: int,
            on_epoch: Callable[[EpochRecord], None] | None = None,
            checkpoint: Callable[[RunState], None] | None = None, resume: RunState | None = None,
            refit: bool = True, predict: SequenceArrays | None = None) -> FitResult:
    """Fit on parts["train"], early-stop on parts["val"]; with `train.refit_on_val`, then train a second
    model (same seed) on parts["train_val"] for the best epoch count, which replaces the first (its
    history goes to `history.refit`); with `train.epoch_folds`, the epoch count comes from
    `cross_validated_epochs` instead of that first fit, and with `train.predict_with` "folds" the fold models at
    that epoch replace the refit (`FitResult.fold_models`). `checkpoint`/`resume` carry the run across an
    interruption. `refit=False` stops once the epoch count is chosen: a tuning trial is scored on that
    choice alone, so the refit would be work nobody reads (with folds there is then no model). With folds,
    `predict`'s firms get a cross-fitted prediction (`FitResult.cross_fit`, see `cross_validated_epochs`)."""
    cross_fit = None
    if resume is not None and resume.phase == "refit":
        fitted, history = None, resume.fitted
    elif config.train.epoch_folds:
        fitted, (history, cross_fit) = None, cross_validated_epochs(parts, config, seed, on_epoch, predict)
    else:
        fitted = fit(parts["train"], parts["val"], config, seed, on_epoch=on_epoch,
                     checkpoint=None if checkpoint is None else lambda s: checkpoint(RunState("fit", s)),
                     resume=None if resume is None else resume.state)
        history = fitted.history
    if not (config.train.refit_on_val and refit):
        return FitResult(model=fitted.model if fitted else None, history=history, cross_fit=cross_fit)
    if config.train.predict_with == "folds":
        return FitResult(model=None, history=history, cross_fit=cross_fit, fold_models=fold_models(parts, config, seed, history))
    if "train_val" not in parts:
        raise ValueError("refit_on_val needs parts['train_val']: assemble(..., with_train_val=True)")
    refit = fit(parts["train_val"], parts["val"], config, seed, epochs=history.best_epoch,
                checkpoint=None if checkpoint is None else lambda s: checkpoint(RunState("refit", s, history)),
                resume=resume.state if resume is not None and resume.phase == "refit" else None)
    history.refit = refit.history
    if history.prior_shift is not None:
        refit.model.set_prior_shift(history.prior_shift)
    return FitResult(model=refit.model, history=history, cross_fit=cross_fit)


_MEAN_FIELDS = [f.name for f in fields(EpochRecord) if f.name not in ("epoch", "val_metrics", "seconds")]  # losses, scores


def cross_validated_epochs(parts: dict[str, SequenceArrays], config: EMDLOTConfig, seed: int,
                           on_epoch: Callable[[EpochRecord], None] | None = None,
                           predict: SequenceArrays | None = None) -> tuple[History, np.ndarray | None]:
    """`train.epoch_folds` fits, fold i on parts["cv{i}_train"] scored on parts["cv{i}_val"], each for
    max_epochs; the history of their mean per epoch (losses, metrics, scores; classes predicted: the
    fewest of any fold), whose best mean stop score fixes the refit's length. With `model.prior_shift`,
    the folds' predictions at that epoch (each firm's, from the fold that held it out) fit the shift and
    check that it carries (`history.prior_shift`, `history.prior_shift_check`); where it does, the folds' scores with
    it (`history.shifted_val`). Not checkpointed: an interrupted run repeats its folds.

    With `predict`, also those firms' cross-fitted probability: the mean over the fold models, each at the chosen
    epoch, unshifted. These are the models the shift was fitted on, where the refit is another model (surer on new
    firms: benchmarks/refit_drift.py). Their labels are never read; nothing above depends on them."""
    folds = config.train.epoch_folds
    missing = [f"cv{i}_{part}" for i in range(1, folds + 1) for part in ("train", "val") if f"cv{i}_{part}" not in parts]
    if missing:
        raise ValueError(f"epoch_folds {folds} needs parts {', '.join(missing)}: assemble(..., folds={folds})")
    fitted = [fit(parts[f"cv{i}_train"], parts[f"cv{i}_val"], config, seed, epochs=config.train.max_epochs, predict=predict)
              for i in range(1, folds + 1)]
    runs = [f.history for f in fitted]
    history = History(seed=seed, wall_time_s=sum(r.wall_time_s for r in runs))
    for records in zip(*(r.epochs for r in runs)):
        record = EpochRecord(epoch=records[0].epoch, val_metrics=mean_over_folds([r.val_metrics for r in records]),
                             seconds=sum(r.seconds for r in records),
                             **{key: float(np.mean([getattr(r, key) for r in records])) for key in _MEAN_FIELDS})
        history.epochs.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if record.stop_score > history.best_score:
            history.best_score, history.best_epoch = record.stop_score, record.epoch
    if config.model.prior_shift:
        held_out, fold = held_out_labels(parts, folds)
        proba = np.concatenate([f.val_proba[history.best_epoch - 1] for f in fitted])
        check = check_prior_shift(held_out, proba, fold, config.train.score_weights)
        history.prior_shift, history.prior_shift_check = check.shift.tolist(), asdict(check)
        history.held_out_proba = proba.tolist()
        if check.carries:  # the folds' scores as the run decides: fold k's firms shifted by b^(-k), fitted without them
            metrics = [classification_metrics(held_out[fold == k], apply_prior_shift(proba[fold == k], b))
                       for k, b in enumerate(check.fold_shifts)]
            history.shifted_val = {"val_metrics": mean_over_folds([m.as_dict() for m in metrics]),
                                   "val_score": float(np.mean([composite_score(m, config.train.score_weights) for m in metrics]))}
    cross_fit = None if predict is None else np.mean([f.predicted[history.best_epoch - 1] for f in fitted], axis=0)
    return history, cross_fit


def mean_over_folds(metrics: list[dict[str, float]]) -> dict[str, float]:
    """The folds' validation metrics as one: each metric's mean, and the fewest classes any fold predicted."""
    mean = {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]}
    return mean | {"n_predicted_classes": min(m["n_predicted_classes"] for m in metrics)}


def fold_models(parts: dict[str, SequenceArrays], config: EMDLOTConfig, seed: int, history: History) -> list[EMDLOT]:
    """Each fold's model at the chosen epoch, carrying the run's shift. `cross_validated_epochs` ran every fold to
    max_epochs and kept none of their states (a Table 5 model's 11M weights for every epoch of every fold would not
    fit in memory); fitting a fold again for exactly that many epochs gives the weights its longer fit had then, since
    nothing in an epoch depends on the epochs after it and the fit is deterministic (tests/test_ensemble.py checks it)."""
    models = [fit(parts[f"cv{i}_train"], parts[f"cv{i}_val"], config, seed, epochs=history.best_epoch).model
              for i in range(1, config.train.epoch_folds + 1)]
    if history.prior_shift is not None:
        for model in models:
            model.set_prior_shift(history.prior_shift)
    return models


def held_out_labels(parts: dict[str, SequenceArrays], folds: int) -> tuple[np.ndarray, np.ndarray]:
    """The labels and folds of `History.held_out_proba`'s firms: cv1_val's, then cv2_val's, ..."""
    return fold_labels([parts[f"cv{i}_val"].y for i in range(1, folds + 1)])


def score_run(fitted: FitResult, parts: dict[str, SequenceArrays], config: EMDLOTConfig, seed: int,
              score_test: bool = False) -> RunResult:
    """A fitted run's numbers: validation from its best epoch's record (the restored weights were scored
    then; a refit has seen the validation firms), with the folds' firms shifted where the run's prior shift
    carries (`History.shifted_val`), the test firms scored once if asked (with the fold models' cross-fitted
    probabilities where `fit_run` was given them to predict)."""
    best = fitted.history.shifted_val or asdict(fitted.history.epochs[fitted.history.best_epoch - 1])
    result = RunResult(config=config, seed=seed, model=fitted.model, history=fitted.history, fold_models=fitted.fold_models,
                       val_metrics=ClassificationMetrics(**best["val_metrics"]), val_score=best["val_score"])
    if score_test:
        test = parts["test"]
        result.test_metrics, result.test_score, result.test_proba = score(result.members, test, config)
        result.test_interpretation = Interpretation.average(
            [interpret(m, test, config.train.eval_batch_size, config.train.device) for m in result.members])
        result.test_cross_fit_proba = fitted.cross_fit
    return result


def train_and_score(parts: dict[str, SequenceArrays], config: EMDLOTConfig, seed: int, score_test: bool = False,
                    on_epoch: Callable[[EpochRecord], None] | None = None, refit: bool = True) -> RunResult:
    """One whole run in this process: `fit_run`, then `score_run` (a scored run with folds also gets the test firms'
    cross-fitted probabilities)."""
    predict = parts["test"] if score_test and config.train.epoch_folds else None
    return score_run(fit_run(parts, config, seed, on_epoch=on_epoch, refit=refit, predict=predict), parts, config, seed, score_test)
