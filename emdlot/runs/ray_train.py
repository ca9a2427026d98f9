"""One EMDLOT run as a Ray Train job: `fit_run` on a Train worker, checkpointed every epoch, so a worker
that dies mid-run is restarted (`FailureConfig`) and continues from its last finished epoch with the numbers
an uninterrupted run gives.

One `TorchTrainer` per (model, split, seed): each run is small (a few MB of weights, minutes on a CPU), so
runs go in parallel as separate trainers (`fit_many`) rather than as data-parallel ranks of one model. The
arrays travel once through the object store. The worker returns the final weights (of the fold models where
those predict) and history; the driver rebuilds the model and scores it (`score_run`), so scoring is the same code
wherever the fit ran.
"""
from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import ray
import torch
from ray import train
from ray.train.torch import TorchTrainer

from emdlot.data.arrays import SequenceArrays
from emdlot.model.emdlot import EMDLOT
from emdlot.runs.single import RunState, fit_run
from emdlot.training.config import EMDLOTConfig
from emdlot.training.loop import FitResult
from emdlot.training.state import History

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Where and how the Ray Train jobs run."""

    storage: Path  # Ray Train's persistent storage (checkpoints), absolute
    use_gpu: bool = False
    cpus_per_run: float = 1.0
    max_failures: int = 2  # worker restarts per run, each from the last checkpoint
    max_concurrent: int = 1  # runs at once (one trainer each)
    torch_threads: int = 1
    fail_at_epoch: int | None = None  # fault injection for tests: the worker dies once after this epoch


def train_loop(loop_config: dict) -> dict:
    """The Train worker: resume from the latest checkpoint if there is one, fit, report every epoch."""
    torch.set_num_threads(loop_config["torch_threads"])
    parts: dict[str, SequenceArrays] = ray.get(loop_config["parts"])
    config = EMDLOTConfig.model_validate(loop_config["config"])
    if loop_config["use_gpu"]:
        config = config.with_params({"device": str(train.torch.get_device())})
    resume = None
    if (latest := train.get_checkpoint()) is not None:
        with latest.as_directory() as folder:
            resume = RunState.load(folder)
        print(f"[train] {loop_config['name']}: resuming after epoch {resume.state.epoch} ({resume.phase})", flush=True)
    fail_at = loop_config["fail_at_epoch"] if resume is None else None

    def report(state: RunState) -> None:
        record = state.state.history.epochs[-1]
        metrics = {"phase": state.phase, "epoch": state.state.epoch, "val_score": record.val_score,
                   "stop_score": record.stop_score, "train_loss": record.train_loss}
        with tempfile.TemporaryDirectory() as folder:
            state.save(folder)
            train.report(metrics, checkpoint=train.Checkpoint.from_directory(folder))
        if fail_at is not None and state.phase == "fit" and state.state.epoch == fail_at:
            os._exit(1)  # a worker that dies without warning (OOM kill, lost node)

    predict = parts.get("test") if config.train.epoch_folds else None  # as train_and_score: the folds' cross-fit
    fitted = fit_run(parts, config, loop_config["seed"], checkpoint=report, resume=resume, predict=predict)
    weights = [{k: v.detach().cpu().numpy() for k, v in m.state_dict().items()} for m in fitted.members]
    return {"weights": weights, "folds": bool(fitted.fold_models), "history": fitted.history.as_dict(),
            "cross_fit": fitted.cross_fit}


def rebuild(config: EMDLOTConfig, like: SequenceArrays, weights: dict[str, np.ndarray]) -> EMDLOT:
    """An EMDLOT of `config` for arrays shaped like `like`, holding `weights`, in eval mode."""
    return EMDLOT.from_weights(config.model, weights, like.X.shape[2], like.text.shape[1], like.text.shape[2])


def fit_on_ray(parts_ref: ray.ObjectRef, like: SequenceArrays, config: EMDLOTConfig, seed: int, name: str,
               settings: TrainSettings) -> FitResult:
    """Fit one run on a Ray Train worker (restarted from its checkpoint after a failure)."""
    loop_config = {"parts": parts_ref, "config": config.model_dump(), "seed": seed, "name": name,
                   "use_gpu": settings.use_gpu, "torch_threads": settings.torch_threads,
                   "fail_at_epoch": settings.fail_at_epoch}
    resources = {"CPU": settings.cpus_per_run} | ({"GPU": 1} if settings.use_gpu else {})
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_config,
        scaling_config=train.ScalingConfig(num_workers=1, use_gpu=settings.use_gpu, resources_per_worker=resources),
        run_config=train.RunConfig(name=name, storage_path=str(settings.storage),
                                   failure_config=train.FailureConfig(max_failures=settings.max_failures),
                                   checkpoint_config=train.CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    out = result.return_value
    models, folds = [rebuild(config, like, weights) for weights in out["weights"]], out["folds"]
    return FitResult(model=None if folds else models[0], history=History.from_dict(out["history"]),
                     cross_fit=out["cross_fit"], fold_models=models if folds else [])


def fit_many(jobs: list[tuple[str, EMDLOTConfig, int]], parts: dict[str, SequenceArrays],
             settings: TrainSettings) -> Iterator[tuple[str, int, FitResult | Exception]]:
    """Fit (name, config, seed) jobs on one split's arrays, `settings.max_concurrent` trainers at a time;
    yields (name, seed, fit result or the error) in this thread as each ends, so one failing run is
    recorded and the others go on."""
    parts_ref = ray.put(parts)
    with ThreadPoolExecutor(max_workers=max(1, settings.max_concurrent)) as pool:
        futures = {pool.submit(fit_on_ray, parts_ref, parts["train"], config, seed, name, settings): (name, seed)
                   for name, config, seed in jobs}
        for future in as_completed(futures):
            name, seed = futures[future]
            try:
                yield name, seed, future.result()
            except Exception as err:  # noqa: BLE001  (recorded by the caller as a failed run)
                log.warning("run %s failed: %s", name, err)
                yield name, seed, err
