"""The comparison models of the paper's Table 6 and the shortcut checks, on the arrays EMDLOT sees.

Every model here trains on the same (SMOTE-balanced) training firms as EMDLOT and returns class
probabilities for other firms, so a results table compares like with like. Models that cannot read
sequences get fixed-length views (emdlot.data.summary); text, where present, is appended flat.

The two shortcut models are deliberately blind: `shortcut_end` sees only the macro vector of a firm's
last kept quarter (that is, *when* its sequence ends) and `shortcut_length` only how many quarters it
has. If either scores near the real models, the cutoff protocol leaks the class (DESIGN.md section 5).

`BASELINES` holds the nine comparison models in Table 6's order. Settings are library defaults or common
small-data choices, fixed here and never tuned on test firms: a baseline tuned harder than EMDLOT, or less,
would bias the comparison. Every model is seeded (where it has randomness) and single-threaded (n_jobs=1),
so a seed gives the same probabilities and parallel runs do not oversubscribe the cores. The LSTM reads the sequences themselves
(emdlot.training.lstm); its view is the identity.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from lightgbm import LGBMClassifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from emdlot.data.arrays import SequenceArrays
from emdlot.data.summary import sequence_summary_features
from emdlot.schema import CLASSES
from emdlot.training.calibration import apply_prior_shift, check_prior_shift, fold_labels
from emdlot.training.lstm import LSTMClassifier


def summary_with_text(arrays: SequenceArrays) -> np.ndarray:
    """Sequence summaries (7F + 2) plus the flat text vectors (0 where a section is missing)."""
    text = np.where(arrays.text_mask[:, :, None], arrays.text, 0.0).reshape(len(arrays), -1)
    return np.concatenate([sequence_summary_features(arrays), text], axis=1)


def last_quarter_columns(columns: list[int]) -> Callable[[SequenceArrays], np.ndarray]:
    """Features of the last kept quarter only, restricted to `columns` (e.g. the macro indicators)."""
    return lambda arrays: arrays.X[:, -1, columns]


def identity(arrays: SequenceArrays) -> SequenceArrays:
    """The view of models that read SequenceArrays themselves (the LSTM)."""
    return arrays


def sequence_length(arrays: SequenceArrays) -> np.ndarray:
    return arrays.mask.sum(axis=1, keepdims=True).astype(np.float32)


def _xgboost(seed: int):
    return XGBClassifier(n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
                         random_state=seed, n_jobs=1, verbosity=0)


def _lightgbm(seed: int):
    return LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, random_state=seed, n_jobs=1, verbose=-1)


def _logistic(seed: int):
    # L2 at C=1 (the library default); scaled so the penalty treats all features alike; 2000 iterations to converge.
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def _svm(seed: int):
    # RBF kernel, C=1, gamma="scale" (library defaults), on scaled features. Platt-scaled probabilities from
    # 5-fold cross-validated decision values, as SVC(probability=True) computes them; that flag is deprecated
    # from scikit-learn 1.9 (removed in 1.11) in favour of exactly this wrapper. Unshuffled folds: deterministic.
    return make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", cv=5, ensemble=False))


def _decision_tree(seed: int):
    # Depth 6 and 5 firms per leaf: an unpruned tree memorises the SMOTE points and gives only 0/1 probabilities.
    return DecisionTreeClassifier(max_depth=6, min_samples_leaf=5, random_state=seed)


def _knn(seed: int):
    # 15 neighbours, uniform weights, on scaled features: SMOTE places synthetic firms next to their sources, so a
    # small k (or distance weights) would mostly vote with one firm's copies. No randomness; `seed` is unused.
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15))


def _random_forest(seed: int):
    # 500 deep trees, sqrt(features) tried per split (the standard recipe); 2 firms per leaf smooths the probabilities.
    return RandomForestClassifier(n_estimators=500, min_samples_leaf=2, random_state=seed, n_jobs=1)


def _ann(seed: int):
    # One hidden layer of 64 ReLU units, Adam, L2 alpha=1e-3 for a few hundred to a few thousand firms; at most 300
    # epochs, stopping when the training loss stalls. No early_stopping: it would hold out a tenth of the firms.
    return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=300,
                                                         early_stopping=False, random_state=seed))


def _lstm(seed: int):
    # One 32-unit layer, Adam 3e-3, 30 epochs of batch 64: see emdlot.training.lstm.LSTMClassifier for why.
    return LSTMClassifier(random_state=seed)


# name -> (estimator factory, view); a view maps SequenceArrays to what the estimator's fit/predict_proba read.
View = Callable[[SequenceArrays], Any]

# The shortcut views need the dataset's column layout (shortcut_baselines).
TREE_BASELINES: dict[str, tuple[Callable, View]] = {
    "XGBoost": (_xgboost, summary_with_text),
    "LightGBM": (_lightgbm, summary_with_text),
}

# The paper's Table 6 comparison models, in its order.
BASELINES: dict[str, tuple[Callable, View]] = {
    "Logistic Regression": (_logistic, summary_with_text),
    "SVM": (_svm, summary_with_text),
    "Decision Tree": (_decision_tree, summary_with_text),
    "KNN": (_knn, summary_with_text),
    "Random Forest": (_random_forest, summary_with_text),
    "LightGBM": TREE_BASELINES["LightGBM"],
    "XGBoost": TREE_BASELINES["XGBoost"],
    "ANN": (_ann, summary_with_text),
    "LSTM": (_lstm, identity),
}


def shortcut_baselines(macro_columns: list[int]) -> dict[str, tuple[Callable, View]]:
    """The two blind models; without macro indicators only the length shortcut can be built."""
    out = {"shortcut: sequence length": (_logistic, sequence_length)}
    if macro_columns:
        out["shortcut: when it ends (last quarter's macro)"] = (_logistic, last_quarter_columns(macro_columns))
    return out


def fit_predict(factory: Callable, view: View, train: SequenceArrays,
                evaluate_on: SequenceArrays, seed: int,
                folds: list[tuple[SequenceArrays, SequenceArrays]] = ()) -> np.ndarray:
    """Fit `factory(seed)` on the view of the training firms; class probabilities (N, 3) of `evaluate_on`.
    With `folds` (cross-validation (train, held-out) pairs inside the training firms), the probabilities
    carry the prior shift fitted on the same model's held-out predictions where its nested check keeps it
    (emdlot.training.calibration), as an EMDLOT configuration with `prior_shift` gets it."""
    proba = predict_proba(fit_model(factory, view, train, seed), view, evaluate_on)
    if not folds:
        return proba
    held_out, fold = fold_labels([fold_val.y for _, fold_val in folds])
    return apply_prior_shift(proba, check_prior_shift(held_out, held_out_proba(factory, view, folds, seed), fold).shift)


def fit_model(factory: Callable, view: View, train: SequenceArrays, seed: int):
    """`factory(seed)` fitted on the view of the training firms."""
    return factory(seed).fit(view(train), train.y)


def predict_proba(model, view: View, arrays: SequenceArrays) -> np.ndarray:
    """A fitted model's class probabilities (N, 3) of `arrays`; 0 for a class it never saw."""
    proba = np.zeros((len(arrays), len(CLASSES)))
    proba[:, model.classes_] = model.predict_proba(view(arrays))
    return proba


def held_out_fits(factory: Callable, view: View, folds: list[tuple[SequenceArrays, SequenceArrays]],
                  seed: int) -> tuple[np.ndarray, list]:
    """The model's predictions for each fold's held-out firms from its fit on that fold's training firms, fold after
    fold (the order of `calibration.fold_labels`), and those fits."""
    models = [fit_model(factory, view, fold_train, seed) for fold_train, _ in folds]
    return np.concatenate([predict_proba(m, view, fold_val) for m, (_, fold_val) in zip(models, folds)]), models


def held_out_proba(factory: Callable, view: View, folds: list[tuple[SequenceArrays, SequenceArrays]], seed: int) -> np.ndarray:
    """`held_out_fits`' predictions alone."""
    return held_out_fits(factory, view, folds, seed)[0]
