"""How hard is the synthetic dataset? A gradient-boosting model on last-quarter features against one on
summary features of the whole sequence, same folds, same model.

The classes should not be separable from the last observation alone: the planted mechanisms are
changes against a firm's own history. Repeated stratified 5-fold CV over all usable firms (the test
split alone holds about 8 minority firms). Writes benchmarks/results/difficulty.json.
Run: .venv/bin/python benchmarks/difficulty.py [--dataset DIR]   (prepares a paper-size dataset if none)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from lightgbm import LGBMClassifier
from sklearn.metrics import average_precision_score, f1_score, recall_score, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.preprocessing import label_binarize

from emdlot.data.arrays import SequenceArrays
from emdlot.data.summary import last_step_features, sequence_summary_features

RESULTS = Path(__file__).resolve().parent / "results" / "difficulty.json"


def cv_scores(features: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, float]:
    folds = RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=seed)
    scores = {"macro_recall": [], "macro_f1": [], "mAP": [], "macro_auc": []}
    for train, test in folds.split(features, y):
        model = LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, class_weight="balanced",
                               random_state=seed, n_jobs=1, verbose=-1)
        model.fit(features[train], y[train])
        proba = model.predict_proba(features[test])
        pred = proba.argmax(axis=1)
        onehot = label_binarize(y[test], classes=[0, 1, 2])
        scores["macro_recall"].append(recall_score(y[test], pred, average="macro", zero_division=0))
        scores["macro_f1"].append(f1_score(y[test], pred, average="macro", zero_division=0))
        scores["mAP"].append(average_precision_score(onehot, proba, average="macro"))
        scores["macro_auc"].append(roc_auc_score(onehot, proba, average="macro", multi_class="ovr"))
    return {k: round(float(np.mean(v)), 3) for k, v in scores.items()} | {k + "_sd": round(float(np.std(v)), 3) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", help="a prepared dataset folder (default: synth + prepare at paper size)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dataset = Path(args.dataset) if args.dataset else None
        if dataset is None:
            from emdlot.data.prepare import prepare
            from emdlot.synth import generate, write_dataset

            write_dataset(generate(), Path(work) / "in")
            dataset = Path(work) / "ds"
            prepare(Path(work) / "in", dataset)
        arrays = SequenceArrays.load(dataset / "sequences.npz")
    result = {
        "firms": int(len(arrays)), "class_counts": np.bincount(arrays.y).tolist(),
        "cv": "RepeatedStratifiedKFold(5 folds x 3), LightGBM 200 trees, class_weight=balanced",
        "last_quarter": cv_scores(last_step_features(arrays), arrays.y),
        "sequence_summary": cv_scores(sequence_summary_features(arrays), arrays.y),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
