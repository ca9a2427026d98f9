"""Decision layers compared on held-out folds only: development without test firms, from stored predictions.

A quality round stored with `quality.py --predictions` keeps, for every split, the cross-validation folds' held-out
predictions of EMDLOT's seeds and of the hybrid's tree (the firms inside training + validation, each predicted by a
fit that did not see it). Here each decision layer is fitted on two folds' held-out firms and applied to the third,
fold by fold, and the three folds' firms are scored together (recall, F1, mAP, AUC and the composite, DESIGN.md
section 4). No test firm is read, so a layer can be chosen here and then checked, as planned, on splits it has not
seen. Inputs: EMDLOT's seed average, the hybrid (w = 0.5, emdlot.training.blend) and the tree alone. Layers:

    none            p
    shift           p'(p, b), b = calibration.fit_prior_shift on GRID (the product's, without its nested check)
    shift, wide     the same on quality.WIDE_GRID (-8 ... 8)
    vector scaling  softmax(W log p + c), a class-balanced multinomial logistic regression on log p (scikit-learn):
                    it may rescale each class's log-probability, where a shift only offsets it

Means over splits with a bootstrap 95% interval over splits. Writes benchmarks/results/held_out_decisions.json.
Run: .venv/bin/python benchmarks/held_out_decisions.py benchmarks/results/quality_round19_predictions.npz
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression

from emdlot.evaluation.metrics import classification_metrics, composite_score
from emdlot.evaluation.uncertainty import mean_interval
from emdlot.training.blend import blend
from emdlot.training.calibration import GRID, apply_prior_shift, check_prior_shift, fit_prior_shift
from quality import WIDE_GRID, read_predictions

RESULTS = Path(__file__).resolve().parent / "results" / "held_out_decisions.json"
METRICS = ("composite", "recall", "f1", "average_precision", "auc")


LAYERS = ("none", "shift", "shift, wide", "vector scaling")


def fit_layer(layer: str, y: np.ndarray, proba: np.ndarray, fold: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The decision layer fitted on these firms' held-out probabilities (`fold`: each firm's fold), as a map from
    probabilities to new ones. Besides LAYERS, "checked shift": the shift kept only where its nested check on these
    firms' folds finds that it carries, as the product keeps it (benchmarks/held_out_ranking.py)."""
    if layer == "none":
        return lambda p: p
    if layer in ("shift", "shift, wide"):
        shift = fit_prior_shift(y, proba, grid=GRID if layer == "shift" else WIDE_GRID)
        return lambda p: apply_prior_shift(p, shift)
    if layer == "checked shift":
        shift = check_prior_shift(y, proba, fold, grid=GRID).shift
        return lambda p: apply_prior_shift(p, shift)
    model = LogisticRegression(class_weight="balanced", max_iter=2000).fit(np.log(np.clip(proba, 1e-9, None)), y)
    return lambda p: model.predict_proba(np.log(np.clip(p, 1e-9, None)))


def cross_fitted(y: np.ndarray, fold: np.ndarray, proba: np.ndarray, layer: str) -> np.ndarray:
    """Each fold's firms through the layer fitted on the other folds' firms."""
    out = np.empty_like(proba)
    for k in np.unique(fold):
        inside = fold == k
        out[inside] = fit_layer(layer, y[~inside], proba[~inside], fold[~inside])(proba[inside])
    return out


def held_out_by_split(runs: list[dict], seeds: list[int] | None = None) -> dict[int, dict]:
    """Per split: the held-out labels, folds and fold tree of the stored shift runs (of `seeds`, default all), and each
    seed's held-out probabilities; the seeds of a split must share their firms and folds."""
    by_split: dict[int, dict] = {}
    for run in runs:
        if "held_out" not in run or (seeds is not None and run["seed"] not in seeds):
            continue
        held = run["held_out"]
        entry = by_split.setdefault(run["split"], {"y": held["y"], "fold": held["fold"], "tree": held["tree"], "seeds": {}})
        if not (np.array_equal(entry["y"], held["y"]) and np.array_equal(entry["fold"], held["fold"])):
            raise ValueError(f"split {run['split']}: seed {run['seed']}'s held-out firms differ from another seed's")
        entry["seeds"][run["seed"]] = np.asarray(held["proba"])
    return dict(sorted(by_split.items()))


def split_inputs(runs: list[dict]) -> dict[int, dict]:
    """Per split: the held-out labels and folds, and each input's held-out probabilities."""
    out = {}
    for split, held in held_out_by_split(runs).items():
        emdlot = np.mean(list(held["seeds"].values()), axis=0)
        out[split] = {"y": held["y"], "fold": held["fold"],
                      "inputs": {"EMDLOT (seed average)": emdlot, "hybrid (w = 0.5)": blend(emdlot, held["tree"], 0.5),
                                 "XGBoost (the hybrid's tree)": held["tree"]}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("predictions", nargs="+", help=".npz files written by quality.py --predictions")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    rows: list[dict] = []
    for path in args.predictions:
        for split, data in split_inputs(read_predictions(path)).items():
            y, fold = np.asarray(data["y"]), np.asarray(data["fold"])
            for name, proba in data["inputs"].items():
                for layer in LAYERS:
                    m = classification_metrics(y, cross_fitted(y, fold, proba, layer))
                    rows.append({"input": name, "layer": layer, "split": split, "composite": composite_score(m), **m.as_dict()})
                    print(f"[held-out] split {split} {name} {layer}: composite {rows[-1]['composite']:.3f}", flush=True)
    table = {}
    lines = ["| input | layer | composite | recall | F1 | mAP | AUC | all classes |", "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["input"] for r in rows):
        for layer in LAYERS:
            mine = [r for r in rows if r["input"] == name and r["layer"] == layer]
            entry = {m: {"mean": float(np.mean([r[m] for r in mine])), "interval": mean_interval(np.array([r[m] for r in mine]))}
                     for m in METRICS}
            entry["all_classes"] = sum(r["n_predicted_classes"] == 3 for r in mine)
            table.setdefault(name, {})[layer] = entry
            cells = [f"{entry[m]['mean']:.3f} [{entry[m]['interval'][0]:.3f}, {entry[m]['interval'][1]:.3f}]" for m in METRICS]
            lines.append(f"| {name} | {layer} | " + " | ".join(cells) + f" | {entry['all_classes']}/{len(mine)} |")
    Path(args.out).write_text(json.dumps({"setup": {"predictions": args.predictions, "firms": "held-out folds only"},
                                          "summary": table, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
