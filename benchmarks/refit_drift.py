"""Does the refitted model decide like the fold models whose held-out predictions fitted its shift? No test label read.

A shift recipe fits its prior shift on the cross-validation folds' held-out predictions, then applies it to a model
refitted on all training + validation firms. If the refit is surer than the fold models, the shift carries less than
the nested check on the folds says. From a quality round's stored predictions (`quality.py --predictions`), per run:

    drift    = median_i(log p_min(i) - log p_Perf(i)) over the test firms (the refit)
             - the same over the held-out firms (the fold models),   p_min = p_Ext + p_Def
    named    = share of firms whose argmax is a minority class under the shift fitted on the held-out firms (GRID),
               on the test firms and on the held-out firms

for EMDLOT's run and for the hybrid's tree (fold trees against the refitted tree). Only predictions are read, never a
test label. Writes benchmarks/results/refit_drift.json.
Run: .venv/bin/python benchmarks/refit_drift.py benchmarks/results/quality_round19_predictions.npz
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emdlot.training.calibration import GRID, apply_prior_shift, fit_prior_shift
from quality import read_predictions

RESULTS = Path(__file__).resolve().parent / "results" / "refit_drift.json"


def median_log_odds(proba: np.ndarray) -> float:
    """Median over firms of log(p_Extended + p_Defaulted) - log p_Performing."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-300, None)
    return float(np.median(np.log(p[:, 1] + p[:, 2]) - np.log(p[:, 0])))


def named_minority(proba: np.ndarray, shift: np.ndarray) -> float:
    return float(np.mean(apply_prior_shift(proba, shift).argmax(axis=1) > 0))


def drift(y: np.ndarray, held_out: np.ndarray, test: np.ndarray) -> dict:
    """The refit's drift from its fold models, and the minority share each names under the folds' shift."""
    shift = fit_prior_shift(y, held_out, grid=GRID)
    return {"drift": median_log_odds(test) - median_log_odds(held_out), "shift": shift.tolist(),
            "named_test": named_minority(test, shift), "named_held_out": named_minority(held_out, shift)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("predictions")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    rows, trees = [], {}
    for run in read_predictions(args.predictions):
        if "held_out" not in run:
            continue
        held = run["held_out"]
        rows.append({"model": "EMDLOT", "split": run["split"], "seed": run["seed"],
                     **drift(held["y"], held["proba"], held["test"])})
        trees.setdefault(run["split"], {"model": "XGBoost (the hybrid's tree)", "split": run["split"], "seed": None,
                                        **drift(held["y"], held["tree"], held["tree_test"])})
    rows += list(trees.values())
    summary = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        d = np.array([r["drift"] for r in mine])
        summary[model] = {"runs": len(mine), "drift_mean": float(d.mean()), "drift_min": float(d.min()),
                          "drift_max": float(d.max()), "drift_below_zero": int((d < 0).sum()),
                          "named_test": float(np.mean([r["named_test"] for r in mine])),
                          "named_held_out": float(np.mean([r["named_held_out"] for r in mine])),
                          "named_none_on_test": sum(r["named_test"] == 0 for r in mine)}
        print(f"{model}: drift {d.mean():+.2f} [{d.min():+.2f}, {d.max():+.2f}], below 0 in {(d < 0).sum()}/{len(d)}; "
              f"minority named {summary[model]['named_test']:.4f} on test vs {summary[model]['named_held_out']:.4f} held out")
    Path(args.out).write_text(json.dumps({"setup": {"predictions": args.predictions, "labels_read": "held-out only"},
                                          "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
