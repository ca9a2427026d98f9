"""How to fit the prior shift (emdlot.training.calibration), measured on the trees, where it is cheap.

On each split of the paper-size synthetic set (matched cutoffs), XGBoost and LightGBM on sequence summaries
fit on the training + validation firms (SMOTE'd together) and on each of 3 cross-validation folds inside
them; the folds' held-out predictions fit a shift four ways, and the test firms are scored with each:
- "none": the trees' own probabilities;
- "log-loss": b minimising the class-balanced log-loss of the shifted probabilities (scipy L-BFGS; the
  textbook fit, kept here as the rejected alternative);
- "composite": the grid search on the tuning objective that emdlot.training.calibration does;
- "composite wide": the same grid widened to -8..8 (many fitted shifts sit at the default grid's edge).
And a nested check that needs no test firm ("nested ..." rows, one per split and fold): each fold's held-out
firms are scored with a shift fitted on the other folds' held-out predictions alone, against no shift. It asks
whether a shift fitted on a few dozen minority firms carries to firms it did not see, on validation data only.
Mean and split-level bootstrap interval per metric, and the fitted shifts. Writes
benchmarks/results/prior_shift.json.
Run: .venv/bin/python benchmarks/prior_shift.py [--splits 5] [--scaling quantile]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from quality import SHIFT_FOLDS, SPLIT_SEEDS, _threads, prepare_split

RESULTS = Path(__file__).resolve().parent / "results" / "prior_shift.json"
WIDE_GRID = np.arange(-8.0, 8.0 + 1e-9, 1.0)
FITS = ("none", "log-loss", "composite", "composite wide", "nested none", "nested composite", "nested composite wide")


def log_loss_shift(y: np.ndarray, proba: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """b (b_0 = 0) minimising the class-balanced negative log-likelihood of p exp(b) / sum_k p_k exp(b_k)."""
    logp = np.log(np.clip(proba, 1e-12, None))
    weight = (len(y) / (3 * np.bincount(y, minlength=3)))[y]
    weight = weight / weight.sum()
    target = np.eye(3)[y]

    def loss(free: np.ndarray) -> tuple[float, np.ndarray]:
        z = logp + np.r_[0.0, free]
        z = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        grad = (weight[:, None] * (np.exp(z - log_norm[:, None]) - target)).sum(axis=0)[1:] + 2 * ridge * free
        return float(weight @ (log_norm - z[np.arange(len(y)), y])) + ridge * float(free @ free), grad

    return np.r_[0.0, minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B").x]


def one_split(inputs: str, work: str, split: int, scaling: str) -> list[dict]:
    _threads()
    from emdlot.data.assemble import assemble
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.training.baselines import TREE_BASELINES, fit_predict
    from emdlot.training.calibration import apply_prior_shift, fit_prior_shift

    dataset = prepare_split(inputs, f"{work}/{split}", "matched", split, scaling)["dataset"]
    parts = assemble(dataset, with_train_val=True, folds=SHIFT_FOLDS)
    out = []
    for name, (factory, view) in TREE_BASELINES.items():
        test = fit_predict(factory, view, parts["train_val"], parts["test"], split)
        held = [parts[f"cv{i}_val"] for i in range(1, SHIFT_FOLDS + 1)]
        oof = np.concatenate([fit_predict(factory, view, parts[f"cv{i}_train"], held[i - 1], split)
                              for i in range(1, SHIFT_FOLDS + 1)])
        y_oof = np.concatenate([h.y for h in held])
        for fit_name, shift in (("none", np.zeros(3)), ("log-loss", log_loss_shift(y_oof, oof)),
                                ("composite", fit_prior_shift(y_oof, oof)),
                                ("composite wide", fit_prior_shift(y_oof, oof, grid=WIDE_GRID))):
            metrics = classification_metrics(parts["test"].y, apply_prior_shift(test, shift))
            out.append({"model": name, "fit": fit_name, "split": split, "shift": shift.round(3).tolist(), **metrics.as_dict()})
        fold_of = np.concatenate([np.full(len(h), i) for i, h in enumerate(held)])
        for k in range(SHIFT_FOLDS):  # nested: fit on the other folds' held-out firms, score fold k's
            rest, own = fold_of != k, fold_of == k
            for fit_name, shift in (("nested none", np.zeros(3)), ("nested composite", fit_prior_shift(y_oof[rest], oof[rest])),
                                    ("nested composite wide", fit_prior_shift(y_oof[rest], oof[rest], grid=WIDE_GRID))):
                metrics = classification_metrics(y_oof[own], apply_prior_shift(oof[own], shift))
                out.append({"model": name, "fit": fit_name, "split": split, "fold": k + 1, "shift": shift.round(3).tolist(),
                            **metrics.as_dict()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--scaling", default="quantile", choices=["standard", "quantile"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    from emdlot.config import SynthConfig
    from emdlot.evaluation.uncertainty import METRICS, mean_interval
    from emdlot.synth import generate, write_dataset

    started = time.perf_counter()
    splits = SPLIT_SEEDS[: args.splits]
    with tempfile.TemporaryDirectory() as work, ProcessPoolExecutor(args.workers) as pool:
        write_dataset(generate(SynthConfig(firms=1994)), f"{work}/in")
        rows = [r for rs in pool.map(one_split, [f"{work}/in"] * len(splits), [work] * len(splits), splits,
                                     [args.scaling] * len(splits)) for r in rs]
    summary: dict = {}
    for model in sorted({r["model"] for r in rows}):
        for fit_name in FITS:
            group = [r for r in rows if r["model"] == model and r["fit"] == fit_name]
            cells = {}
            for m in METRICS:
                values = np.array([r[m] for r in group])
                lo, hi = mean_interval(values, groups=np.array([r["split"] for r in group]))
                cells[m] = {"mean": float(values.mean()), "ci_low": lo, "ci_high": hi}
            cells["valid_runs"] = sum(r["n_predicted_classes"] == 3 for r in group)
            summary.setdefault(model, {})[fit_name] = cells
            print(f"{model:9s} {fit_name:9s} " + "  ".join(f"{m} {cells[m]['mean']:.3f} [{cells[m]['ci_low']:.2f}, "
                                                           f"{cells[m]['ci_high']:.2f}]" for m in METRICS), flush=True)
    body = {"setup": {"splits": splits, "scaling": args.scaling, "folds": SHIFT_FOLDS, "protocol": "matched",
                      "models": "XGBoost / LightGBM on sequence summaries, fit on train + val (SMOTE'd)",
                      "nested": "rows 'nested ...' score each fold's held-out firms (not test firms), one row per split "
                                "and fold; every interval resamples whole splits",
                      "wall_time_s": round(time.perf_counter() - started, 1)},
            "summary": summary, "runs": rows}
    Path(args.out).write_text(json.dumps(body, indent=1))


if __name__ == "__main__":
    main()
