"""Feature transforms fitted on training firms only: signed log1p, multiple imputation, standardisation.

Order matters: the heavy tails (Table A.3 has values like 45,236,383) are compressed first so the
imputation regressions are not dominated by outliers; the imputer draws from its posterior
(`sample_posterior=True`), so missing cells keep their variability instead of collapsing to a mean.
Fitted pipelines are saved with skops, which refuses unknown types on load instead of unpickling them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (registers IterativeImputer)
from sklearn.impute import IterativeImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from emdlot.config import PrepareConfig


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): keeps sign and order, turns 4.5e7 into 17.6. NaN stays NaN."""
    return np.sign(x) * np.log1p(np.abs(x))


def feature_pipeline(cfg: PrepareConfig) -> Pipeline:
    return Pipeline([
        ("signed_log1p", FunctionTransformer(signed_log1p, feature_names_out="one-to-one")),
        ("impute", IterativeImputer(
            sample_posterior=True, max_iter=cfg.imputer_max_iter, n_nearest_features=cfg.imputer_nearest_features,
            keep_empty_features=True, random_state=cfg.seed,
        )),
        ("standardise", StandardScaler()),
    ])


def save_pipeline(pipeline: Pipeline, path: str | Path) -> None:
    sio.dump(pipeline, path)


# Types of feature_pipeline() that skops does not trust by default; anything else in a file is refused.
TRUSTED_TYPES = [
    "emdlot.data.transforms.signed_log1p",
    "numpy.dtype",
    "sklearn.impute._iterative.IterativeImputer",
    "sklearn.impute._iterative._ImputerTriplet",
]


def load_pipeline(path: str | Path) -> Pipeline:
    untrusted = set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
    if untrusted:
        raise ValueError(f"{path}: refusing to load unexpected types {sorted(untrusted)}")
    return sio.load(path, trusted=TRUSTED_TYPES)
