"""Scores and explanations for the firms of an input folder, from a registered EMDLOT model.

    python flows/predict.py --model models:/emdlot/1 --input DIR --out scores.csv [--as-of 2024-06-30]
        [--tracking-uri URI] [--ray-address ADDR] [--batch-firms 5000]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python flows/predict.py --model models:/emdlot@champion --input /abs/DIR --out /abs/scores.parquet

MODEL: `models:/NAME/VERSION`, `models:/NAME@ALIAS`, `runs:/RUN_ID/emdlot`, or a package folder
(emdlot.runs.package.write_package). DIR: a folder in the data contract (panel, optional macro, optional
prospectus; labels are not needed, and when present only add their firms to the output). With a text model
in the package, the prospectus is extracted and embedded with the packaged settings on Ray Data (the TF-IDF
fallback is packaged; a BERT must be on this machine) and reduced with the packaged PCA; a firm without
prospectus text is scored without text. One output row per firm (emdlot.scoring.predict), one MLflow run in
experiment emdlot-predict. Bad input: one line (each contract violation on its own line), exit 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from emdlot import tracking
from emdlot.data.io import TableError, check_table_path, write_table
from emdlot.data.scoring import ScoringInputError
from emdlot.ray_init import init_ray
from emdlot.scoring.model import ModelLoadError
from emdlot.scoring.predict import DEFAULT_BATCH_FIRMS, InputError, describe_counts, predict_folder
from emdlot.scoring.text import TextModelError

EXPERIMENT = "emdlot-predict"




def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="models:/emdlot/VERSION, models:/emdlot@ALIAS, runs:/RUN_ID/emdlot, or a package folder")
    p.add_argument("--input", required=True, type=Path, help="input folder in the data contract (labels not needed)")
    p.add_argument("--out", required=True, type=Path, help="output table, .csv or .parquet")
    p.add_argument("--as-of", help="score as of this date: rows dated after it are ignored (default: each firm's full history)")
    p.add_argument("--batch-firms", type=int, default=DEFAULT_BATCH_FIRMS, help="firms scored at once")
    p.add_argument("--tracking-uri", help="MLflow URI (default: MLFLOW_TRACKING_URI, else EMDLOT_HOME/mlflow.db)")
    p.add_argument("--ray-address", help="Ray cluster for the text stages (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> pd.Timestamp | None:
    """What can be wrong before any work; returns the as-of date."""
    check_table_path(args.out, "--out")
    if not args.input.is_dir():
        raise InputError(f"--input {args.input}: no such folder")
    if args.batch_firms < 1:
        raise InputError("--batch-firms must be at least 1")
    if args.as_of is None:
        return None
    try:
        return pd.Timestamp(args.as_of)
    except (ValueError, TypeError):
        raise InputError(f"--as-of {args.as_of!r}: not a date (e.g. 2024-06-30)") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        as_of = check_args(args)
        uri = tracking.tracking_uri(args.tracking_uri)
        tracking.check_tracking(uri)
    except (InputError, TableError, tracking.TrackingError) as err:
        return fail(err)
    input_dir, out = args.input.resolve(), args.out.resolve()
    started = time.perf_counter()
    print(f"predict: {args.model} on {input_dir}"
          f"{f' as of {as_of:%Y-%m-%d}' if as_of is not None else ''}; MLflow {uri} (experiment {EXPERIMENT})", flush=True)
    try:
        with tracking.mlflow_run(EXPERIMENT, run_name=f"predict-{input_dir.name}", uri=uri, tags={"flow": "predict"}):
            tracking.log_params({"model_uri": args.model, "input_path": str(input_dir), "out": str(out),
                                 "as_of": f"{as_of:%Y-%m-%d}" if as_of is not None else "full history",
                                 "batch_firms": args.batch_firms})
            counts = predict(args, input_dir, out, as_of, uri)
            tracking.log_metrics(metric_names(counts) | {"wall_time_s": time.perf_counter() - started})
            tracking.log_files(out, artifact_path="predictions")
    except (InputError, ModelLoadError, TextModelError, ScoringInputError, TableError) as err:
        return fail(err)
    print(f"predict: {describe_counts(counts)} -> {out} [{time.perf_counter() - started:.0f}s]", flush=True)
    return 0


def predict(args: argparse.Namespace, input_dir: Path, out: Path, as_of: pd.Timestamp | None, uri: str) -> dict:
    """The flow's work inside its MLflow run; returns the counts."""
    frame, counts = predict_folder(args.model, input_dir, as_of, uri, args.batch_firms,
                                   start_ray=lambda: init_ray(args.ray_address, args.num_cpus))
    try:
        write_table(frame, out)
    except OSError as err:
        raise InputError(f"--out {out}: cannot be written: {err.strerror or err}") from None
    return counts


def metric_names(counts: dict) -> dict:
    """Counts as MLflow metrics: firms, scored, rejected, with_text, class_warnings, rejected.<reason>."""
    plain = ("firms", "scored", "rejected", "with_text", "class_warnings")
    return {k if k in plain else "rejected." + k.replace(" ", "_").replace("-", "_"): v for k, v in counts.items()}


def fail(err: BaseException) -> int:
    """Each line of the error as `predict: error: ...` on stderr; exit status 2."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    for line in lines:
        print(f"predict: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
