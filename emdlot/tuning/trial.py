"""One Tune trial: train one EMDLOT configuration through the run layer, report every epoch to Tune,
and record the trial as a child MLflow run of the search's parent run.

The objective is the composite score on the validation firms (with the three-class penalty). A trial
reports the best so far after every epoch (so ASHA can stop it early), then once more, after its last
epoch, the run's own validation score (`RunResult.val_score`), which is what Optuna learns from: at the
epoch the run chose, which differs from the best composite's where early stopping watches another score,
and with the folds' firms shifted where the run's prior shift carries (a trial is scored on the decision
the run would make). The test firms are never loaded.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import torch
from ray import tune

from emdlot.runs import assemble_for, train_and_score
from emdlot.tracking import flatten
from emdlot.training.config import EMDLOTConfig

OBJECTIVE = "val_composite_best"


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its hyperparameters (passed with tune.with_parameters)."""

    dataset: str
    text_features: str | None
    base: dict  # EMDLOTConfig.model_dump() the trial's values override
    seed: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    threads: int = 1


def trial_config(params: dict[str, Any], ctx: TrialContext) -> EMDLOTConfig:
    device = "cuda" if torch.cuda.is_available() and tune.get_context().get_trial_resources().required_resources.get("GPU", 0) > 0 else "cpu"
    return EMDLOTConfig.model_validate(ctx.base).with_params({**params, "progress": False, "device": device})


def run_trial(params: dict[str, Any], ctx: TrialContext) -> None:
    from mlflow import MlflowClient

    torch.set_num_threads(ctx.threads)
    client = MlflowClient(tracking_uri=ctx.tracking_uri)
    name = tune.get_context().get_trial_name()
    run = client.create_run(ctx.experiment_id, run_name=name, tags={"mlflow.parentRunId": ctx.parent_run_id,
                                                                     "trial_id": tune.get_context().get_trial_id()})
    run_id = run.info.run_id
    state = {"epoch": 0, "decided": False}
    try:
        config = trial_config(params, ctx)
        for key, value in flatten(config.model_dump() | {"seed": ctx.seed}).items():
            client.log_param(run_id, key, value)
        parts = assemble_for(config, ctx.dataset, ctx.text_features, refit=False)  # a trial stops before any refit
        parts.pop("test")  # tuning never sees the test firms
        best = float("-inf")

        def report(record) -> None:
            nonlocal best
            best = max(best, record.val_score)
            state["epoch"] = record.epoch
            metrics = {"val_composite": record.val_score, OBJECTIVE: best, "train_loss": record.train_loss,
                       **{f"val_{k}": float(v) for k, v in record.val_metrics.items()}}
            for key, value in metrics.items():
                client.log_metric(run_id, key, value, step=record.epoch)
            tune.report(metrics | {"epoch": record.epoch})

        result = train_and_score(parts, config, ctx.seed, on_epoch=report, refit=False)
        for key, value in result.summary().items():
            client.log_metric(run_id, f"final_{key}", float(value))
        state["decided"] = True
        client.log_metric(run_id, OBJECTIVE, result.val_score, step=state["epoch"] + 1)
        tune.report({OBJECTIVE: result.val_score, "val_composite": result.val_score, "epoch": state["epoch"], "decision": True})
        client.set_terminated(run_id, "FINISHED")
    except SystemExit as err:
        if err.code not in (0, None):
            raise
        # Tune ends a function trial this way when its scheduler (ASHA) stops it, at the latest on its decision.
        if not state["decided"]:
            client.set_tag(run_id, "stopped_by", "scheduler")
            client.set_tag(run_id, "epochs_run", str(state["epoch"]))
        client.set_terminated(run_id, "FINISHED")
        raise
    except BaseException as err:  # a failed or stopped trial is on record with its error, then Tune sees it
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        client.log_text(run_id, traceback.format_exc(), "error.txt")
        client.set_terminated(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
