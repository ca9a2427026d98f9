"""Which fitted model to score with: a registered model, a run's model, or a package folder on disk.

The registered `emdlot` is a pyfunc whose artifact `package` is the package folder (emdlot.runs.package).
Scoring loads that folder itself (not the pyfunc), so it can also read the model's own explanations.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emdlot.runs.package import CONFIG_FILE, WEIGHTS_FILE
from emdlot.data.assemble import META_FILE, TRANSFORMS_FILE

PACKAGE_FILES = (WEIGHTS_FILE, CONFIG_FILE, META_FILE, TRANSFORMS_FILE)
MLMODEL = "MLmodel"
_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")


class ModelLoadError(ValueError):
    """The model cannot be found or is not an EMDLOT package; the message says which and why, in one line."""


@dataclass
class ResolvedModel:
    """A package folder on this machine and where it came from (for logs)."""

    uri: str
    folder: Path
    details: dict[str, str] = field(default_factory=dict)  # registered name/version/run, when known
    _tmp: tempfile.TemporaryDirectory | None = None

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def is_mlflow_uri(model: str) -> bool:
    return model.startswith(("models:/", "runs:/"))


def check_package(folder: Path, what: str) -> Path:
    """`folder` if it holds a package; else a one-line ModelLoadError naming the missing files."""
    missing = [name for name in PACKAGE_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"{what} is not an EMDLOT package (no {', '.join(missing)} in {folder})")
    return folder


def _package_path(mlmodel: dict | None, what: str) -> str:
    """The package artifact's path inside a saved pyfunc model, from its parsed MLmodel file."""
    try:
        return str(mlmodel["flavors"]["python_function"]["artifacts"]["package"]["path"])
    except (KeyError, TypeError):
        raise ModelLoadError(f"{what} is not an EMDLOT model (its MLmodel names no 'package' artifact)") from None


def _read_mlmodel(path: Path, what: str) -> dict | None:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        raise ModelLoadError(f"{what} is not an EMDLOT model (its MLmodel cannot be read)") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def resolve_model(model: str, tracking_uri: str | None = None) -> ResolvedModel:
    """`models:/NAME/VERSION`, `models:/NAME@ALIAS`, `runs:/RUN_ID/PATH`, a package folder, or a saved
    pyfunc model folder -> the package folder (downloaded into a temporary folder for MLflow URIs)."""
    if not is_mlflow_uri(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model {model!r}: no such folder, and not a models:/ or runs:/ URI")
        path = path.resolve()
        what = f"model folder {path}"
        if (path / MLMODEL).is_file():
            return ResolvedModel(model, check_package(path / _package_path(_read_mlmodel(path / MLMODEL, what), what), what))
        return ResolvedModel(model, check_package(path, what))

    import mlflow
    from mlflow.exceptions import MlflowException

    details = registered_details(model, tracking_uri)
    tmp = tempfile.TemporaryDirectory(prefix="emdlot-model-")
    try:
        base = _artifact_location(model, details, tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{MLMODEL}", dst_path=tmp.name,
                                                         tracking_uri=tracking_uri, registry_uri=tracking_uri))
        relative = _package_path(_read_mlmodel(local, f"model {model}"), f"model {model}")
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{relative}", dst_path=tmp.name,
                                                          tracking_uri=tracking_uri, registry_uri=tracking_uri))
        check_package(folder, f"model {model}")
    except ModelLoadError:
        tmp.cleanup()
        raise
    except (MlflowException, OSError, ValueError, yaml.YAMLError) as err:
        tmp.cleanup()
        raise ModelLoadError(f"model {model} cannot be loaded from {tracking_uri or mlflow.get_tracking_uri()}: "
                             f"{_first_line(err)}") from None
    return ResolvedModel(model, folder, details, tmp)


def _artifact_location(model: str, details: dict[str, str], tracking_uri: str | None) -> str:
    """Where a models:/ URI's files are, asked of the store at `tracking_uri`. MLflow's own models:/
    resolution reads the process's registry URI (mlflow.get_registry_uri), whatever store the caller named;
    asking a client bound to the named store leaves the process's settings (and any active run) alone."""
    if "version" not in details:  # runs:/ URIs take tracking_uri as they are; a stage name is MLflow's to find
        return model.rstrip("/")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    location = client.get_model_version_download_uri(details["name"], details["version"])
    logged = re.match(r"^models:/(m-[0-9a-f]+)/?$", location)
    if logged:  # an MLflow 3 logged model: its own artifact folder
        location = client.get_logged_model(logged[1]).artifact_location
    return location.rstrip("/")


def registered_details(model: str, tracking_uri: str | None) -> dict[str, str]:
    """name / version / run_id of a models:/ URI (empty for other URIs); a one-line error if unknown."""
    match = _REGISTERED.match(model)
    if not match:
        return {}
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        if alias is not None:
            found = client.get_model_version_by_alias(name, alias)
        elif version is not None and version.isdigit():
            found = client.get_model_version(name, version)
        else:  # a stage name (deprecated in MLflow): leave it to the download
            return {"name": name}
    except MlflowException as err:
        raise ModelLoadError(f"model {model} cannot be loaded from {tracking_uri or mlflow.get_tracking_uri()}: "
                             f"{_first_line(err)}") from None
    return {"name": name, "version": str(found.version), "run_id": str(found.run_id or "")}
