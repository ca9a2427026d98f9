"""Ranking levers of the hybrid compared on held-out folds only: which output ranks issuers best, without test firms.

mAP and AUC read the probabilities, not the decided class, so a lever for them changes how the hybrid's
probabilities are formed. From the held-out fold predictions a quality round stores (`quality.py --predictions`),
each split's firms inside training + validation, each predicted by a fit that did not see it, get:

    EMDLOT               p_E = mean over seeds
    tree                 p_T, the hybrid's XGBoost
    arithmetic, w        w p_E + (1 - w) p_T                       (the product: w = 0.5)
    ..., first n seeds   w = 0.5 with p_E from the first n seeds alone, in the order run (86, 127, 71):
                         does averaging more seeds still help?
    geometric, w = 0.5   p_E^w p_T^(1-w) / sum_k p_E,k^w p_T,k^(1-w)   (log-linear pooling)
    stacked, C           a multinomial logistic regression on (log p_E, log p_T), fitted on the other two folds' firms
                         (C: its inverse L2 strength; "balanced": classes weighted by inverse frequency)
    arithmetic, shifted  p'(w p_E + (1 - w) p_T, b), b fitted on the other two folds' firms (as in held_out_decisions)
    ..., checked shift   the same b, kept only where its nested check on those two folds finds that it carries, as
                         the product's shift is kept or dropped before it reaches test firms
    with --second-tree, LightGBM's held-out predictions p_L from the same folds' same SMOTE'd firms (refitted here: the
    split is prepared again and XGBoost's refit must equal the stored p_T, so the firms are the round's), and
    LightGBM             p_L alone
    two trees            (p_T + p_L) / 2
    arithmetic, two trees, w   w p_E + (1 - w) (p_T + p_L) / 2      (w = 0.5, and 1/3: each model a third)

Each is paired by split with the arithmetic blend at w = 0.5, unshifted: mean difference, a bootstrap 95% interval over
splits, and the splits up and down. Runs are read for one recipe (`--recipe`), since a round may hold two.
Writes benchmarks/results/held_out_ranking.json.
Run: .venv/bin/python benchmarks/held_out_ranking.py --recipe NAME benchmarks/results/quality_round2*_predictions.npz
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emdlot.evaluation.metrics import classification_metrics
from emdlot.evaluation.uncertainty import mean_interval
from emdlot.training.blend import blend
from held_out_decisions import cross_fitted, held_out_by_split
from quality import read_predictions

RESULTS = Path(__file__).resolve().parent / "results" / "held_out_ranking.json"
REFERENCE = "arithmetic, w = 0.5"


def geometric(emdlot_proba: np.ndarray, tree_proba: np.ndarray, weight: float) -> np.ndarray:
    """Log-linear pooling: the weighted mean of log-probabilities, renormalised per firm."""
    logs = weight * np.log(np.clip(emdlot_proba, 1e-12, None)) + (1 - weight) * np.log(np.clip(tree_proba, 1e-12, None))
    pooled = np.exp(logs - logs.max(axis=1, keepdims=True))
    return pooled / pooled.sum(axis=1, keepdims=True)


def stacked(y: np.ndarray, fold: np.ndarray, emdlot_proba: np.ndarray, tree_proba: np.ndarray, strength: float,
            class_weight: str | None = None) -> np.ndarray:
    """Each fold's firms through a logistic stacker of both models' log-probabilities fitted on the other folds' firms:
    a blend whose weights are learned per class, not fixed."""
    from sklearn.linear_model import LogisticRegression

    features = np.log(np.clip(np.hstack([emdlot_proba, tree_proba]), 1e-12, None))
    out = np.empty_like(emdlot_proba)
    for k in np.unique(fold):
        inside = fold == k
        model = LogisticRegression(C=strength, class_weight=class_weight, max_iter=2000).fit(features[~inside], y[~inside])
        out[inside] = model.predict_proba(features[inside])
    return out


def levers(y: np.ndarray, fold: np.ndarray, seeds: list[np.ndarray], tree_proba: np.ndarray,
           second_tree: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every lever's held-out probabilities for one split, from each EMDLOT seed's and the tree's (and LightGBM's
    from the same folds, where given)."""
    emdlot_proba = np.mean(seeds, axis=0)
    out = {"EMDLOT": emdlot_proba, "tree": tree_proba}
    out |= {f"arithmetic, w = {w}": blend(emdlot_proba, tree_proba, w) for w in (0.3, 0.5, 0.7)}
    out["geometric, w = 0.5"] = geometric(emdlot_proba, tree_proba, 0.5)
    out |= {f"stacked, C = {c}": stacked(y, fold, emdlot_proba, tree_proba, c) for c in (0.01, 0.1, 1.0)}
    out["stacked, C = 0.1, balanced"] = stacked(y, fold, emdlot_proba, tree_proba, 0.1, "balanced")
    out["arithmetic, w = 0.5, shifted"] = cross_fitted(y, fold, out[REFERENCE], "shift")
    out["arithmetic, w = 0.5, checked shift"] = cross_fitted(y, fold, out[REFERENCE], "checked shift")
    out |= {f"arithmetic, w = 0.5, first {n} seed{'s' * (n > 1)}": blend(np.mean(seeds[:n], axis=0), tree_proba, 0.5)
            for n in range(1, len(seeds))}
    if second_tree is not None:
        trees = (tree_proba + second_tree) / 2
        out |= {"LightGBM": second_tree, "two trees": trees}
        out |= {f"arithmetic, two trees, w = {w:.2f}": blend(emdlot_proba, trees, w) for w in (1 / 3, 0.5)}
    return out


def second_tree_held_out(splits: list[int], scaling: str, firms: int = 1994) -> dict[int, dict[str, np.ndarray]]:
    """Per split, XGBoost's and LightGBM's held-out fold predictions, refitted as quality.py fits the hybrid's tree:
    the synthetic set generated again, each split prepared again (matched cutoffs, `scaling`), the same folds SMOTE'd
    1:1:1, the split's seed as the trees' seed."""
    import tempfile

    from emdlot.config import SynthConfig
    from emdlot.data.assemble import assemble
    from emdlot.synth import generate, write_dataset
    from emdlot.training.baselines import TREE_BASELINES, held_out_proba
    from quality import SHIFT_FOLDS, prepare_split

    out = {}
    with tempfile.TemporaryDirectory() as work:
        inputs = str(Path(work) / "in")
        write_dataset(generate(SynthConfig(firms=firms)), inputs)
        for split in splits:
            dataset = prepare_split(inputs, str(Path(work) / str(split)), "matched", split, scaling)["dataset"]
            parts = assemble(dataset, balance=True, with_train_val=True, folds=SHIFT_FOLDS, smote_ratio=1.0)
            folds = [(parts[f"cv{i}_train"], parts[f"cv{i}_val"]) for i in range(1, SHIFT_FOLDS + 1)]
            out[split] = {name: held_out_proba(*TREE_BASELINES[name], folds, split) for name in ("XGBoost", "LightGBM")}
            print(f"[held-out ranking] split {split}: trees refitted", flush=True)
    return out


def lever_rows(runs: list[dict], recipe: str, trees: dict[int, dict[str, np.ndarray]] | None = None) -> list[dict]:
    """Per split and lever, the held-out mAP and AUC of `recipe`'s runs (a round may hold another recipe's runs on the
    same splits and seeds, which must not be mixed in); `trees`: `second_tree_held_out`'s refits, whose XGBoost must
    be the stored tree (else they saw other firms or folds)."""
    rows = []
    for split, held in held_out_by_split([r for r in runs if r["model"].startswith(f"EMDLOT {recipe} ")]).items():
        y, fold = np.asarray(held["y"]), np.asarray(held["fold"])
        second = None
        if trees is not None:
            if not np.allclose(trees[split]["XGBoost"], held["tree"], atol=1e-6):
                raise ValueError(f"split {split}: the refitted XGBoost differs from the stored tree, so its firms or folds differ")
            second = trees[split]["LightGBM"]
        for name, proba in levers(y, fold, list(held["seeds"].values()), np.asarray(held["tree"]), second).items():
            m = classification_metrics(y, proba)
            rows.append({"lever": name, "split": split, "average_precision": m.average_precision, "auc": m.auc})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("predictions", nargs="+", help=".npz files written by quality.py --predictions")
    parser.add_argument("--recipe", required=True, help="the EMDLOT variant whose runs are read")
    parser.add_argument("--second-tree", choices=["standard", "quantile"], default=None, metavar="SCALING",
                        help="also refit LightGBM on the same folds (the splits prepared again with this scaling)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    rows = []
    for path in args.predictions:
        runs = read_predictions(path)
        trees = None
        if args.second_tree:
            trees = second_tree_held_out(sorted({r["split"] for r in runs if "held_out" in r}), args.second_tree)
        rows += lever_rows(runs, args.recipe, trees)
    if not rows:
        raise SystemExit(f"no held-out predictions of recipe {args.recipe} in {', '.join(args.predictions)}")
    reference = {r["split"]: r for r in rows if r["lever"] == REFERENCE}
    table, lines = {}, ["| lever | mAP | AUC | mAP - reference | up / down |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["lever"] for r in rows):
        mine = [r for r in rows if r["lever"] == name]
        diff = np.array([r["average_precision"] - reference[r["split"]]["average_precision"] for r in mine])
        entry = {"splits": len(mine), "average_precision": float(np.mean([r["average_precision"] for r in mine])),
                 "auc": float(np.mean([r["auc"] for r in mine])), "average_precision_diff": float(diff.mean()),
                 "interval": mean_interval(diff), "up": int((diff > 1e-12).sum()), "down": int((diff < -1e-12).sum())}
        table[name] = entry
        lines.append(f"| {name} | {entry['average_precision']:.3f} | {entry['auc']:.3f} | {entry['average_precision_diff']:+.3f} "
                     f"[{entry['interval'][0]:+.3f}, {entry['interval'][1]:+.3f}] | {entry['up']} / {entry['down']} |")
    Path(args.out).write_text(json.dumps({"setup": {"predictions": args.predictions, "recipe": args.recipe,
                                                    "firms": "held-out folds only", "reference": REFERENCE,
                                                    "second_tree": args.second_tree},
                                          "summary": table, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
