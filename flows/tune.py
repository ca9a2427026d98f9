"""Search the paper's Table 5 space: Ray Tune + Optuna (seeded TPE), composite objective on validation firms.

    python flows/tune.py --data DATASET --trials N [--text-features FILE] [--config base.yaml] [--variant NAME] [--space space.yaml]
        [--asha] [--max-epochs E] [--max-concurrent K] [--cpus-per-trial C] [--gpus-per-trial G] [--resume]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python flows/tune.py --data /abs/DATASET ...

One MLflow parent run per search (experiment emdlot-tune), one child run per trial; the best configuration
as best_config.yaml (read by flows/train.py --config), tags on the parent, the optimisation history and
parameter importances as PNG. Outputs default to EMDLOT_HOME/tune/NAME (EMDLOT_HOME=~/emdlot), absolute,
so they outlive a `ray job submit` working-directory copy; --resume continues an interrupted search.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import mlflow  # noqa: E402

from emdlot import tracking  # noqa: E402
from emdlot.ray_init import init_ray  # noqa: E402
from emdlot.config import ConfigError, check_at_least  # noqa: E402
from emdlot.data.assemble import META_FILE  # noqa: E402
from emdlot.training.config import load_emdlot_config, with_variant  # noqa: E402
from emdlot.tuning.search import SearchSettings, build_tuner, record_best, restore_tuner, study_of, trials_frame  # noqa: E402
from emdlot.tuning.space import DEFAULT_SPACE, paper_optimum, read_space  # noqa: E402
from emdlot.tuning.trial import OBJECTIVE, TrialContext  # noqa: E402

EXPERIMENT = "emdlot-tune"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="a dataset folder written by `emdlot prepare`")
    p.add_argument("--trials", required=True, type=int, help="number of trials (the paper's optimum is the first)")
    p.add_argument("--text-features", type=Path, help="text_features.parquet from flows/embed.py")
    p.add_argument("--config", type=Path, help="base EMDLOT YAML the trials override (default: the paper's optimum)")
    p.add_argument("--variant", default="paper", help="training recipe from emdlot/configs/variants.yaml on top of --config")
    p.add_argument("--space", type=Path, help=f"search space YAML (default: Table 5, {DEFAULT_SPACE.name})")
    p.add_argument("--name", default="table5", help="search name: folder and MLflow run name")
    p.add_argument("--out", type=Path, help="output folder (default: EMDLOT_HOME/tune/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search in --out")
    p.add_argument("--seed", type=int, default=86, help="seed of the TPE sampler and of every trial's training")
    p.add_argument("--asha", action="store_true", help="stop poor trials early (ASHA on the per-epoch objective)")
    p.add_argument("--grace-epochs", type=int, default=3, help="ASHA: epochs every trial gets")
    p.add_argument("--max-epochs", type=int, help="epoch cap for every trial")
    p.add_argument("--max-concurrent", type=int, default=1)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="e.g. 0.25: four trials share one GPU")
    p.add_argument("--tracking-uri", help="MLflow URI (default: MLFLOW_TRACKING_URI, else EMDLOT_HOME/mlflow.db)")
    p.add_argument("--ray-address", help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = args.data.resolve()
        check_at_least([("--trials", args.trials, 1), ("--max-concurrent", args.max_concurrent, 1),
                        ("--grace-epochs", args.grace_epochs, 1), ("--max-epochs", args.max_epochs, 1)])
        if not (data / META_FILE).exists():
            raise ConfigError(f"--data {data}: not a prepared dataset (no {META_FILE}); run `emdlot prepare` first")
        if args.text_features and not args.text_features.exists():
            raise ConfigError(f"--text-features {args.text_features}: file not found")
        space = read_space(args.space)
        base = with_variant(load_emdlot_config(args.config), args.variant)
        if args.max_epochs:
            base = base.with_params({"max_epochs": args.max_epochs})
        paper_optimum(space, base)  # the first trial: its values must lie in the space
        uri = tracking.tracking_uri(args.tracking_uri)
        tracking.check_tracking(uri)
    except (ConfigError, tracking.TrackingError, ValueError) as err:
        print(f"tune: error: {'; '.join(line.strip() for line in str(err).splitlines() if line.strip())}", file=sys.stderr)
        return 2
    out = (args.out or tracking.emdlot_home() / "tune" / args.name).resolve()
    state_file = out / "search.json"
    if args.resume and not state_file.exists():
        print(f"tune: error: --resume: no search to resume in {out} (no search.json)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    settings = SearchSettings(trials=args.trials, seed=args.seed, max_concurrent=args.max_concurrent,
                              cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, asha=args.asha,
                              asha_grace_epochs=args.grace_epochs, max_epochs=args.max_epochs)
    print(f"tune: outputs in {out}; MLflow {uri} (experiment {EXPERIMENT})", flush=True)

    parent_id = json.loads(state_file.read_text())["parent_run_id"] if args.resume else None
    with tracking.mlflow_run(EXPERIMENT, run_name=args.name, uri=uri, run_id=parent_id, tags={"flow": "tune"}) as parent:
        if not args.resume:
            state_file.write_text(json.dumps({"parent_run_id": parent.info.run_id, "name": args.name}))
            tracking.log_params({"data": str(data), "text_features": str(args.text_features.resolve()) if args.text_features else "none",
                                 "space": str(args.space or DEFAULT_SPACE), "out": str(out), "variant": args.variant} | vars(settings))
            tracking.log_params(base.model_dump(), prefix="base.")
        init_ray(args.ray_address, args.num_cpus)
        ctx = TrialContext(dataset=str(data), text_features=str(args.text_features.resolve()) if args.text_features else None,
                           base=base.model_dump(), seed=args.seed, tracking_uri=uri,
                           experiment_id=parent.info.experiment_id, parent_run_id=parent.info.run_id,
                           threads=max(1, int(args.cpus_per_trial)))
        tuner = restore_tuner(out / args.name, ctx, settings) if args.resume else build_tuner(space, base, ctx, settings, out, args.name)
        started = time.perf_counter()
        results = tuner.fit()
        frame = trials_frame(results, space)
        failed = {r.metrics.get("trial_id") for r in results if r.error is not None}
        stopped = close_child_runs(uri, parent.info.run_id, failed)
        seconds = time.perf_counter() - started
        finished = report(frame, space, base, out, {"wall_time_s": round(seconds, 1), "stopped_early_by_scheduler": stopped,
                                                    "trials_per_hour": round(3600 * len(frame) / max(seconds, 1e-9), 2)})
    if not finished:
        print(f"tune: error: no trial finished; each trial's error is in its child run and in {out / 'trials.csv'}", file=sys.stderr)
        return 1
    return 0


def close_child_runs(uri: str, parent_id: str, failed_trials: set) -> int:
    """Close child runs whose trial process ended before it could close its run (Tune ends a stopped trial's
    process; on a loaded machine that can come before the run's last write): FINISHED, and tagged as stopped
    by the scheduler unless it had scored its decision (`final_` metrics), when Tune saw no error, else KILLED.
    Returns how many trials of this search the scheduler stopped early (earlier sessions of it included)."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_run(parent_id).info.experiment_id
    for run in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"):
        ok = run.data.tags.get("trial_id") not in failed_trials
        if "final_val_composite" not in run.data.metrics:
            client.set_tag(run.info.run_id, "stopped_by", "scheduler" if ok else "trial process ended")
        client.set_terminated(run.info.run_id, "FINISHED" if ok else "KILLED")
    return len(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}' and tags.stopped_by = 'scheduler'"))


def report(frame, space: dict, base, out: Path, timing: dict) -> bool:
    """Best configuration (YAML + tags), trials table, optimisation history and importances, a summary
    (search_summary.json and a line). False when no trial finished."""
    import optuna
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    frame.drop(columns=["params"]).to_csv(out / "trials.csv", index=False)
    tracking.log_files(out / "trials.csv", artifact_path="search")
    done = frame.dropna(subset=[OBJECTIVE]).reset_index(drop=True)
    optimum = paper_optimum(space, base)
    is_paper = done["params"].map(lambda p: all(p[k] == v for k, v in optimum.items()))
    ranks = done[OBJECTIVE].rank(ascending=False, method="min")
    summary = {"trials": len(frame), "trials_finished": len(done), "trials_failed": int((frame["status"] == "ERROR").sum()),
               "paper_optimum_rank": int(ranks[is_paper].min()) if is_paper.any() else -1} | timing
    if not done.empty:
        _, row = record_best(frame, base, out)
        summary |= {"best_" + OBJECTIVE: float(row[OBJECTIVE])}
    tracking.log_metrics(summary)
    (out / "search_summary.json").write_text(json.dumps(summary | {"best": row["params"] if not done.empty else None}, indent=1, default=str))
    study = study_of(frame, space)
    if len(study.trials) >= 2:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with tempfile.TemporaryDirectory() as tmp:
            for name, plot in (("optimisation_history.png", plot_optimization_history), ("param_importances.png", plot_param_importances)):
                try:
                    axes = plot(study)
                except (RuntimeError, ValueError) as err:  # e.g. importances need variation in the values
                    print(f"tune: {name} not drawn: {err}")
                    continue
                axes.figure.savefig(Path(tmp) / name, dpi=120, bbox_inches="tight")
                tracking.log_files(Path(tmp) / name, artifact_path="search")
    print(f"tune: {summary}; best configuration: {out / 'best_config.yaml'}")
    return not done.empty


if __name__ == "__main__":
    sys.exit(main())
