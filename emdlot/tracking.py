"""Small MLflow helpers shared by the flows: where to log, which experiment, one run.

Default store: sqlite:///<EMDLOT home>/mlflow.db, an absolute path outside the working directory, so
records survive `ray job submit` (which runs the flow in a temporary copy of the working directory).
The home is EMDLOT_HOME, else ~/emdlot. MLFLOW_TRACKING_URI, or an explicit URI, wins.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

DEFAULT_DB = "mlflow.db"
_MAX_PARAM_CHARS = 6000  # MLflow rejects longer parameter values


def emdlot_home() -> Path:
    """Where flows keep records and outputs by default: EMDLOT_HOME, else ~/emdlot (absolute, created)."""
    home = Path(os.environ.get("EMDLOT_HOME") or Path.home() / "emdlot").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI to use: `explicit`, else MLFLOW_TRACKING_URI, else <EMDLOT home>/mlflow.db."""
    if explicit:
        return explicit
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{emdlot_home() / DEFAULT_DB}"


class TrackingError(RuntimeError):
    """The tracking store cannot be reached; the message names it."""


def check_tracking(uri: str) -> None:
    """Fail early, in one line, when a tracking server does not answer (sqlite files are created)."""
    if uri.startswith("sqlite:"):
        return
    # One quick try: the client otherwise retries with backoff for minutes before giving up.
    probe = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {key: os.environ.get(key) for key in probe}
    os.environ.update(probe)
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # the client raises many kinds; all mean the same to the user
        reason = (str(err).splitlines() or [""])[0][:200]
        raise TrackingError(f"MLflow tracking server {uri} cannot be reached: {type(err).__name__}: {reason}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def default_artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside its database file (mlartifacts/), not in whatever folder
    the command ran from; for a server, the server decides (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


@contextmanager
def mlflow_run(experiment: str, run_name: str | None = None, tags: Mapping[str, str] | None = None,
               uri: str | None = None, run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start a run in `experiment` (created if absent), or reopen `run_id`, and end it: FINISHED, or
    FAILED / KILLED (Ctrl-C) with the error kept, so a run that broke is on record."""
    uri = tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=default_artifact_location(uri))
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=dict(tags or {}))
    with _ended(), _sigterm_as_interrupt():
        yield run


@contextmanager
def _ended(error: str | None = None) -> Iterator[None]:
    """End the active run after the block: FINISHED; FAILED with `error`, or with the exception raised in
    the block (kept as the run's `error` tag); KILLED on Ctrl-C or SIGTERM."""
    try:
        yield
    except BaseException as err:
        mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
        mlflow.end_run("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    if error is not None:
        mlflow.set_tag("error", error[:5000])
    mlflow.end_run("FAILED" if error is not None else "FINISHED")


@contextmanager
def child_run(run_name: str, tags: Mapping[str, str] | None = None, error: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run nested in the active one, ended FINISHED, or FAILED with `error` (an error already caught
    elsewhere, e.g. in a Ray worker) or with the exception raised inside the block."""
    run = mlflow.start_run(run_name=run_name, nested=True, tags=dict(tags or {}))
    with _ended(error):
        yield run


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`ray job stop` and `kill` send SIGTERM, which would end Python without unwinding: raise
    KeyboardInterrupt instead, so the run is closed as KILLED (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as flat 'a.b.c' parameters, values as short strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            flat[name] = text[:_MAX_PARAM_CHARS]
    return flat


def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    mlflow.log_params(flatten(params, prefix))


def log_metrics(metrics: Mapping[str, Any]) -> None:
    """Log the finite numeric entries of `metrics`; others are skipped (MLflow wants floats)."""
    numeric = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
    mlflow.log_metrics(numeric)


def log_files(*paths: str | Path, artifact_path: str | None = None) -> None:
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_table(frame: pd.DataFrame, artifact_path: str, name: str) -> None:
    """Log a DataFrame as a CSV artifact (readable in the MLflow UI)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
