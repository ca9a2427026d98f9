"""Feature transforms fitted on training firms only: signed log1p, iterative imputation, standardisation
(or, as a setting, quantile scaling).

Order matters: the heavy tails (Table A.3 has values like 45,236,383) are compressed first so the
imputation regressions are not dominated by outliers. The imputer is fitted as multiple imputation
(`sample_posterior=True`: during the fit's rounds missing cells are drawn from the posterior, so the
round-robin regressions are not fitted on collapsed means), but once fitted it transforms with the
posterior mean. Training, validation, test and new firms all go through that one deterministic map:
a firm's numbers are a function of its own rows only, the same every time it is scored and the same
alone or in any batch. A posterior draw at transform time would differ between calls and between
batches (up to 3 standard deviations for one cell) and make a score depend on who else was scored.

Fitted pipelines are saved with skops, which refuses unknown types on load instead of unpickling them;
`load_pipeline` also turns a file written before this change (a plain, posterior-sampling
IterativeImputer) into the deterministic imputer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (registers IterativeImputer)
from sklearn.impute import IterativeImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, QuantileTransformer, StandardScaler
from sklearn.utils.validation import FLOAT_DTYPES, check_array, check_is_fitted

from emdlot.config import PrepareConfig


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): keeps sign and order, turns 4.5e7 into 17.6. NaN stays NaN."""
    return np.sign(x) * np.log1p(np.abs(x))


class PosteriorMeanImputer(IterativeImputer):
    """IterativeImputer that fits as configured and, once fitted, transforms with the posterior mean.

    With `sample_posterior=False`, IterativeImputer.transform fills a row's missing cells from the fitted
    initial means and then, round by round, from the fitted regressions applied to that row's own
    (observed or already imputed) values, clipped to fitted bounds: no random draw and nothing from other
    rows. One exception in scikit-learn's transform: a batch whose every cell is missing skips the
    regressions and returns the initial means, which a row with all cells missing would not get inside a
    larger batch. Transform therefore always adds one fully observed anchor row to the batch and drops it.
    """

    def fit_transform(self, X, y=None, **params):
        Xt = super().fit_transform(X, y, **params)  # posterior draws during the fit's rounds, as configured
        self.sample_posterior = False  # from here on: the posterior mean
        return Xt

    def transform(self, X):
        check_is_fitted(self)
        self.sample_posterior = False
        X = check_array(X, dtype=FLOAT_DTYPES, ensure_all_finite="allow-nan", ensure_min_samples=0)
        if X.shape[1] != self.n_features_in_:
            return super().transform(X)  # scikit-learn's own error for the wrong number of features
        anchor = np.nan_to_num(self.initial_imputer_.statistics_.astype(X.dtype))[None, :]
        return super().transform(np.vstack([anchor, X]))[1:]


def feature_pipeline(cfg: PrepareConfig) -> Pipeline:
    """`cfg.scaling`: "standard" (the paper: z-scores of the log-compressed values) or "quantile" (each
    feature mapped through its training quantiles to a standard normal: ranks, as a tree sees them, so a
    heavy tail that survives the log cannot dominate attention and gradients)."""
    scale = (StandardScaler() if cfg.scaling == "standard" else
             QuantileTransformer(n_quantiles=cfg.quantiles, output_distribution="normal", subsample=None,
                                 random_state=cfg.seed))
    return Pipeline([
        ("signed_log1p", FunctionTransformer(signed_log1p, feature_names_out="one-to-one")),
        ("impute", PosteriorMeanImputer(
            sample_posterior=True, max_iter=cfg.imputer_max_iter, n_nearest_features=cfg.imputer_nearest_features,
            keep_empty_features=True, random_state=cfg.seed,
        )),
        ("standardise" if cfg.scaling == "standard" else "quantile", scale),
    ])


def deterministic(pipeline: Pipeline) -> Pipeline:
    """The fitted `pipeline` with every IterativeImputer step transforming by the posterior mean
    (a PosteriorMeanImputer with the same fitted state); changes `pipeline` in place and returns it."""
    for i, (name, step) in enumerate(pipeline.steps):
        if isinstance(step, IterativeImputer) and not isinstance(step, PosteriorMeanImputer):
            converted = PosteriorMeanImputer.__new__(PosteriorMeanImputer)
            converted.__dict__.update(step.__dict__)
            step = converted
            pipeline.steps[i] = (name, step)
        if isinstance(step, PosteriorMeanImputer):
            step.sample_posterior = False
    return pipeline


def save_pipeline(pipeline: Pipeline, path: str | Path) -> None:
    sio.dump(pipeline, path)


# Types of feature_pipeline() that skops does not trust by default; anything else in a file is refused.
TRUSTED_TYPES = [
    "emdlot.data.transforms.PosteriorMeanImputer",
    "emdlot.data.transforms.signed_log1p",
    "numpy.dtype",
    "sklearn.impute._iterative.IterativeImputer",  # files written before the posterior-mean transform
    "sklearn.impute._iterative._ImputerTriplet",
]


def load_pipeline(path: str | Path) -> Pipeline:
    """A saved feature pipeline, transforming deterministically (also when saved before that change)."""
    untrusted = set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
    if untrusted:
        raise ValueError(f"{path}: refusing to load unexpected types {sorted(untrusted)}")
    return deterministic(sio.load(path, trusted=TRUSTED_TYPES))
