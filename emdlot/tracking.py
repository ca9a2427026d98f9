"""Small MLflow helpers shared by the flows: where to log, which experiment, one run.

Default store: sqlite:///mlflow.db in the working directory (MLflow 3's file store under
./mlruns is deprecated). MLFLOW_TRACKING_URI, or an explicit URI, wins.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

DEFAULT_DB = "mlflow.db"
_MAX_PARAM_CHARS = 6000  # MLflow rejects longer parameter values


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI to use: `explicit`, else MLFLOW_TRACKING_URI, else ./mlflow.db."""
    if explicit:
        return explicit
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def default_artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside its database file (mlartifacts/), not in whatever folder
    the command ran from; for a server, the server decides (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


@contextmanager
def mlflow_run(experiment: str, run_name: str | None = None, tags: Mapping[str, str] | None = None,
               uri: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start a run in `experiment` (created if absent) and end it, failed or not."""
    uri = tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=default_artifact_location(uri))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
        yield run


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
