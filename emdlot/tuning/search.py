"""Build, run or resume a Table 5 search on Ray Tune with a seeded Optuna TPE searcher.

Resume: Tune's experiment checkpoint holds the searcher's state (Optuna's study included), so
`Tuner.restore` continues where the search stopped; finished trials are not run again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from emdlot import tracking
from emdlot.training.config import EMDLOTConfig
from emdlot.tuning.space import grid_top, paper_optimum, tune_space
from emdlot.tuning.trial import OBJECTIVE, TrialContext, run_trial


@dataclass(frozen=True)
class SearchSettings:
    trials: int
    seed: int = 86
    max_concurrent: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions share one GPU between trials
    asha: bool = False
    asha_grace_epochs: int = 3
    max_epochs: int | None = None  # an epoch cap for every trial (None: the base config's max_epochs)


def build_tuner(space: dict, base: EMDLOTConfig, ctx: TrialContext, settings: SearchSettings, storage: Path, name: str) -> tune.Tuner:
    searcher = OptunaSearch(metric=OBJECTIVE, mode="max", sampler=optuna.samplers.TPESampler(seed=settings.seed),
                            points_to_evaluate=[paper_optimum(space, base)])
    # A trial's last report, its decision, comes one report after its last epoch: max_t lets it through.
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=base.train.max_epochs + 1,
                              grace_period=settings.asha_grace_epochs) if settings.asha else None
    return tune.Tuner(
        trainable(ctx, settings),
        param_space=tune_space(space),
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=settings.trials, max_concurrent_trials=settings.max_concurrent,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def trainable(ctx: TrialContext, settings: SearchSettings):
    resources = {"cpu": settings.cpus_per_trial} | ({"gpu": settings.gpus_per_trial} if settings.gpus_per_trial else {})
    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources)


def restore_tuner(path: Path, ctx: TrialContext, settings: SearchSettings) -> tune.Tuner:
    return tune.Tuner.restore(str(path), trainable=trainable(ctx, settings), resume_unfinished=True, resume_errored=False)


def trials_frame(results: tune.ResultGrid, space: dict) -> pd.DataFrame:
    """One row per trial: id, status, best objective, epochs run, error if any, and its parameters (also
    kept whole, with their Python types, in the `params` column)."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        params = {name: (result.config or {}).get(name) for name in space}
        rows.append({"trial_id": metrics.get("trial_id", ""), "path": result.path,
                     "status": "ERROR" if result.error else "TERMINATED",
                     OBJECTIVE: metrics.get(OBJECTIVE, math.nan), "epochs": metrics.get("epoch", 0),
                     "error": f"{type(result.error).__name__}: {result.error}"[:300] if result.error else "",
                     **params, "params": params})
    return pd.DataFrame(rows)


def _distribution(entry: dict):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    (kind, args), = entry.items()
    if kind == "choice":
        return CategoricalDistribution(list(args))
    if kind == "loguniform":
        return FloatDistribution(args[0], args[1], log=True)
    if kind == "qrandint":
        return IntDistribution(args[0], args[1], step=args[2])
    low, high, step = args
    return FloatDistribution(low, grid_top(low, high, step), step=step)


def study_of(frame: pd.DataFrame, space: dict) -> optuna.Study:
    """An Optuna study holding the finished trials (in the order they ran), for its plots and importances."""
    distributions = {name: _distribution(entry) for name, entry in space.items()}
    study = optuna.create_study(direction="maximize")
    for params, value in frame.dropna(subset=[OBJECTIVE])[["params", OBJECTIVE]].itertuples(index=False):
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(value)))
    return study


def best_config(frame: pd.DataFrame, base: EMDLOTConfig) -> tuple[EMDLOTConfig, pd.Series]:
    """The base configuration with the best finished trial's values, and that trial's row."""
    done = frame.dropna(subset=[OBJECTIVE])
    if done.empty:
        raise RuntimeError("no trial finished: nothing to choose from (see the trials' errors in MLflow)")
    row = done.loc[done[OBJECTIVE].idxmax()]
    return base.with_params(row["params"]), row


def record_best(frame: pd.DataFrame, base: EMDLOTConfig, out: Path) -> tuple[EMDLOTConfig, pd.Series]:
    """`best_config`, written to out/best_config.yaml and logged to the active MLflow run (the file, and
    the winning values and trial as `best.*` tags)."""
    best, row = best_config(frame, base)
    out.mkdir(parents=True, exist_ok=True)
    (out / "best_config.yaml").write_text(yaml.safe_dump(best.model_dump(), sort_keys=False))
    tracking.log_files(out / "best_config.yaml", artifact_path="search")
    mlflow.set_tags({f"best.{k}": v for k, v in row["params"].items()} | {"best.trial_id": row["trial_id"]})
    return best, row
