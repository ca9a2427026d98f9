"""A fitted EMDLOT with everything scoring needs beside it, as an MLflow pyfunc model.

The package is one folder: the weights (safetensors; a seed ensemble adds its other members' weights as
member-1.safetensors, member-2.safetensors, ... and scores with the mean of their probabilities, or, with
`train.ensemble` "shift" or "hybrid", with the decision layer of emdlot.runs.ensemble on the mean of their
unshifted probabilities: ensemble.json, and the tree of a hybrid), the run's settings (JSON), the dataset's meta (feature
order, macro indicators, max_len, prepare settings), the fitted transforms (skops) and, when text was used,
the text model (text_pca.skops: PCA per section and the embedder it expects). Nothing in it is a pickle,
and the pyfunc itself is logged as code (`pyfunc_model.py`), not as a pickled object.

Input to `predict`: contract rows (emdlot.data.scoring): firm_id, date, the financial and macro indicators,
optionally the 80 text features per firm. Output: one row per firm with the three class probabilities,
the predicted class and the main cluster.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature
from safetensors.torch import load_file, save_file

from emdlot.data.assemble import META_FILE, TRANSFORMS_FILE, read_meta
from emdlot.data.scoring import scoring_arrays
from emdlot.data.transforms import load_pipeline
from emdlot.data.arrays import SequenceArrays
from emdlot.model.emdlot import EMDLOT, Interpretation
from emdlot.runs.ensemble import ENSEMBLE_FILE, TREE_FILE, Ensemble
from emdlot.schema import CLASSES, PROBABILITY_COLUMNS
from emdlot.text.reduce import TEXT_MODEL_FILE
from emdlot.training.config import EMDLOTConfig
from emdlot.training.loop import interpret

WEIGHTS_FILE = "model.safetensors"
MEMBER_FILE = "member-{}.safetensors"  # a seed ensemble's members after the lead (numbered from 1)
CONFIG_FILE = "emdlot_config.json"
MODEL_CODE = files("emdlot") / "runs" / "pyfunc_model.py"


def write_package(folder: str | Path, model: EMDLOT | list[EMDLOT], config: EMDLOTConfig, dataset: str | Path,
                  text_model: str | Path | None = None, ensemble: Ensemble | None = None) -> Path:
    """The scoring folder of one fitted model, or of a seed ensemble (a list, its lead first: the lead's
    clusters are the ones scoring reports), trained on `dataset` (a prepared dataset folder) with `config`.
    With `ensemble` (a decision layer fitted on the members' held-out predictions) the members are saved without
    their own prior shifts, which the ensemble's one shift replaces."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob(MEMBER_FILE.format("*")), folder / ENSEMBLE_FILE, folder / TREE_FILE]:
        stale.unlink(missing_ok=True)
    models = [model] if isinstance(model, EMDLOT) else list(model)
    for i, member in enumerate(models):
        weights = {k: v.detach().cpu().contiguous() for k, v in member.state_dict().items()}
        if ensemble is not None and "prior_shift" in weights:
            weights["prior_shift"] = torch.zeros_like(weights["prior_shift"])
        save_file(weights, str(folder / (MEMBER_FILE.format(i) if i else WEIGHTS_FILE)))
    if ensemble is not None:
        ensemble.save(folder)
    (folder / CONFIG_FILE).write_text(config.model_dump_json(indent=1), encoding="utf-8")
    for name in (META_FILE, TRANSFORMS_FILE):
        shutil.copy2(Path(dataset) / name, folder / name)
    if text_model is not None:
        shutil.copy2(text_model, folder / TEXT_MODEL_FILE)
    return folder


class Scorer:
    """A package folder loaded for scoring (outside MLflow too)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.meta = read_meta(folder)
        self.config = EMDLOTConfig.model_validate_json((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        self.pipeline = load_pipeline(folder / TRANSFORMS_FILE)
        files = [folder / WEIGHTS_FILE]
        while (folder / MEMBER_FILE.format(len(files))).exists():
            files.append(folder / MEMBER_FILE.format(len(files)))
        self.models = [EMDLOT.from_weights(self.config.model, load_file(str(f)), len(self.meta.feature_names)) for f in files]
        self.text_model = folder / TEXT_MODEL_FILE if (folder / TEXT_MODEL_FILE).exists() else None
        self.ensemble = Ensemble.load(folder)

    def interpret(self, rows: pd.DataFrame, text_features: pd.DataFrame | None = None) -> tuple[SequenceArrays, Interpretation]:
        """The firms' arrays and the model's own explanation of each (probabilities included); a seed
        ensemble's is its members' average (`Interpretation.average`), its probabilities and classes the
        ensemble's decision layer's where the package has one."""
        arrays = scoring_arrays(rows, self.meta, self.pipeline, text_features)
        with torch.inference_mode():
            out = Interpretation.average([interpret(m, arrays, self.config.train.eval_batch_size) for m in self.models])
        if self.ensemble is None:
            return arrays, out
        proba = self.ensemble.predict(out.probabilities, arrays)
        return arrays, replace(out, probabilities=proba.astype(out.probabilities.dtype), predicted_class=proba.argmax(axis=1))

    def score(self, rows: pd.DataFrame, text_features: pd.DataFrame | None = None) -> pd.DataFrame:
        return score_frame(*self.interpret(rows, text_features))


def score_frame(arrays: SequenceArrays, out: Interpretation) -> pd.DataFrame:
    """One row per firm: the three probabilities, the predicted class, the main cluster, whether text was read."""
    frame = pd.DataFrame(out.probabilities.astype(np.float64), columns=PROBABILITY_COLUMNS)
    frame.insert(0, "firm_id", arrays.firm_id.astype(str))
    frame["predicted_class"] = [CLASSES[i] for i in out.predicted_class]
    frame["cluster"] = out.cluster.astype(np.int64)
    frame["has_text"] = arrays.text_mask.any(axis=1)
    return frame


class EMDLOTPyfunc(mlflow.pyfunc.PythonModel):
    """The registered model: `mlflow.pyfunc.load_model(uri).predict(contract_rows)`."""

    def load_context(self, context) -> None:
        self.scorer = Scorer(context.artifacts["package"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.scorer.score(model_input)


def log_package(folder: Path, input_example: pd.DataFrame, registered_name: str | None = "emdlot") -> mlflow.models.model.ModelInfo:
    """Log the package as a pyfunc model in the active run (signature from the example) and register it."""
    output = Scorer(folder).score(input_example)
    return mlflow.pyfunc.log_model(
        name="emdlot", python_model=str(MODEL_CODE), artifacts={"package": str(folder)},
        signature=infer_signature(input_example, output), input_example=input_example,
        registered_model_name=registered_name, pip_requirements=_requirements(folder),
    )


def _requirements(folder: Path) -> list[str]:
    """The packages scoring imports, at the versions that trained the model (emdlot itself from its repository)."""
    from importlib.metadata import packages_distributions, version

    packages = ["torch", "scikit-learn", "skops", "safetensors", "pandas", "numpy", "mlflow", "pydantic"]
    if (Path(folder) / TREE_FILE).exists():  # a hybrid's tree; xgboost ships as xgboost or xgboost-cpu
        packages.append(packages_distributions().get("xgboost", ["xgboost"])[0])
    return [f"{p}=={version(p)}" for p in packages]
