"""The comparison models of the paper's Table 6 and the shortcut checks, on the arrays EMDLOT sees.

Every model here trains on the same (SMOTE-balanced) training firms as EMDLOT and returns class
probabilities for other firms, so a results table compares like with like. Models that cannot read
sequences get fixed-length views (emdlot.data.summary); text, where present, is appended flat.

The two shortcut models are deliberately blind: `shortcut_end` sees only the macro vector of a firm's
last kept quarter (that is, *when* its sequence ends) and `shortcut_length` only how many quarters it
has. If either scores near the real models, the cutoff protocol leaks the class (DESIGN.md section 5).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from lightgbm import LGBMClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from emdlot.data.arrays import SequenceArrays
from emdlot.data.summary import sequence_summary_features
from emdlot.schema import CLASSES


def summary_with_text(arrays: SequenceArrays) -> np.ndarray:
    """Sequence summaries (7F + 2) plus the flat text vectors (0 where a section is missing)."""
    text = np.where(arrays.text_mask[:, :, None], arrays.text, 0.0).reshape(len(arrays), -1)
    return np.concatenate([sequence_summary_features(arrays), text], axis=1)


def last_quarter_columns(columns: list[int]) -> Callable[[SequenceArrays], np.ndarray]:
    """Features of the last kept quarter only, restricted to `columns` (e.g. the macro indicators)."""
    return lambda arrays: arrays.X[:, -1, columns]


def sequence_length(arrays: SequenceArrays) -> np.ndarray:
    return arrays.mask.sum(axis=1, keepdims=True).astype(np.float32)


def _xgboost(seed: int):
    return XGBClassifier(n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
                         random_state=seed, n_jobs=1, verbosity=0)


def _lightgbm(seed: int):
    return LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, random_state=seed, n_jobs=1, verbose=-1)


def _logistic(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


# name -> (estimator factory, feature view); the shortcut views need the dataset's column layout.
TREE_BASELINES: dict[str, tuple[Callable, Callable[[SequenceArrays], np.ndarray]]] = {
    "XGBoost": (_xgboost, summary_with_text),
    "LightGBM": (_lightgbm, summary_with_text),
}


def shortcut_baselines(macro_columns: list[int]) -> dict[str, tuple[Callable, Callable[[SequenceArrays], np.ndarray]]]:
    """The two blind models; without macro indicators only the length shortcut can be built."""
    out = {"shortcut: sequence length": (_logistic, sequence_length)}
    if macro_columns:
        out["shortcut: when it ends (last quarter's macro)"] = (_logistic, last_quarter_columns(macro_columns))
    return out


def fit_predict(factory: Callable, view: Callable[[SequenceArrays], np.ndarray], train: SequenceArrays,
                evaluate_on: SequenceArrays, seed: int) -> np.ndarray:
    """Fit `factory(seed)` on the view of the training firms; class probabilities (N, 3) of `evaluate_on`."""
    model = factory(seed).fit(view(train), train.y)
    proba = np.zeros((len(evaluate_on), len(CLASSES)))
    proba[:, model.classes_] = model.predict_proba(view(evaluate_on))
    return proba
