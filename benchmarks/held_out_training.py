"""Training recipes compared on held-out folds only: development of what EMDLOT learns, without test firms.

A quality round stored with `quality.py --predictions` keeps, per split and seed, the held-out predictions of its
recipe's cross-validation folds (each firm inside training + validation predicted by the fold fit that did not see
it). Here a candidate change to that recipe (a flat parameter set on top of it, e.g. `label_smoothing: 0.1`) is fitted
on the same splits, folds and seeds, stopping once the folds have chosen their epoch (`fit_run(refit=False)`: no
refit, no test firm read), and its held-out predictions are scored against the stored recipe's on the same firms:
recall, F1, mAP, AUC and the composite (DESIGN.md section 4) of the seed average, with no decision layer and with the
shift cross-fitted over the folds (`held_out_decisions.cross_fitted`), alone and in the hybrid (w = 0.5, with the stored
fold tree). Differences are paired by split with a bootstrap 95% interval over splits. A candidate found here is then
checked, as planned, on splits it has not seen.

Run: .venv/bin/python benchmarks/held_out_training.py benchmarks/results/quality_round19_predictions.npz \
         --candidate smooth_0.1='{"label_smoothing": 0.1}' [--seeds 1] [--splits 125 134]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.resources import files
from pathlib import Path

import numpy as np

from emdlot.evaluation.metrics import classification_metrics, composite_score
from emdlot.evaluation.uncertainty import mean_interval
from emdlot.training.blend import blend
from emdlot.training.config import training_variants
from held_out_decisions import METRICS, cross_fitted, held_out_by_split
from quality import _threads, prepare_split, read_predictions

RESULTS = Path(__file__).resolve().parent / "results" / "held_out_training.json"
LAYERS = ("none", "shift")


def held_out_fit(dataset: str, params: dict, seed: int) -> dict:
    """One seed of a recipe on a prepared split, to the folds' chosen epoch: its held-out labels, folds and predictions."""
    _threads()
    from emdlot.runs import assemble_for
    from emdlot.runs.single import fit_run, held_out_labels
    from emdlot.training.config import load_emdlot_config

    config = load_emdlot_config(files("emdlot") / "configs" / "demo_model.yaml").with_params(
        {"use_text": False, "progress": False, **params})
    if not (config.train.epoch_folds and config.model.prior_shift):
        raise ValueError("a held-out comparison needs a recipe with epoch_folds and prior_shift")
    parts = assemble_for(config, dataset, refit=False)
    history = fit_run(parts, config, seed, refit=False).history
    y, fold = held_out_labels(parts, config.train.epoch_folds)
    return {"y": y, "fold": fold, "proba": np.asarray(history.held_out_proba), "best_epoch": history.best_epoch}


def stored_recipe(runs: list[dict], seeds: list[int]) -> tuple[str, dict[int, dict]]:
    """The stored round's variant and, per split, its held-out labels, folds, fold tree and the named seeds' runs."""
    variants = {r["variant"] for r in runs if "held_out" in r and r["seed"] in seeds}
    if len(variants) != 1:
        raise ValueError(f"the stored predictions hold {len(variants)} shift recipes ({sorted(variants)}); one is needed")
    by_split = held_out_by_split(runs, seeds)
    for split, entry in by_split.items():
        if sorted(entry["seeds"]) != sorted(seeds):
            raise ValueError(f"split {split}: stored seeds {sorted(entry['seeds'])}, asked for {sorted(seeds)}")
    return variants.pop(), by_split


def score(y: np.ndarray, fold: np.ndarray, proba: np.ndarray, tree: np.ndarray) -> dict[str, dict[str, float]]:
    """Held-out metrics of a seed average, alone and in the hybrid, without and with the cross-fitted shift."""
    out = {}
    for name, p in (("alone", proba), ("hybrid", blend(proba, tree, 0.5))):
        for layer in LAYERS:
            m = classification_metrics(y, cross_fitted(y, fold, p, layer))
            out[f"{name}, {layer}"] = {"composite": composite_score(m), **m.as_dict()}
    return out


def compare(stored: dict[int, dict], fitted: dict[str, dict[int, list[dict]]]) -> dict:
    """Per candidate and row: the candidate's and the stored recipe's means over splits, and their paired difference."""
    base = {split: score(e["y"], e["fold"], np.mean(list(e["seeds"].values()), axis=0), e["tree"])
            for split, e in stored.items()}
    table = {}
    for name, by_split in fitted.items():
        for split, fits in by_split.items():
            entry = stored[split]
            for fit in fits:
                if not (np.array_equal(fit["y"], entry["y"]) and np.array_equal(fit["fold"], entry["fold"])):
                    raise ValueError(f"split {split}: {name}'s held-out firms are not the stored round's")
        mine = {split: score(stored[split]["y"], stored[split]["fold"], np.mean([f["proba"] for f in fits], axis=0),
                             stored[split]["tree"]) for split, fits in by_split.items()}
        for row in next(iter(mine.values())):
            splits = sorted(mine)
            entry = {}
            for m in METRICS:
                diff = np.array([mine[s][row][m] - base[s][row][m] for s in splits])
                entry[m] = {"candidate": float(np.mean([mine[s][row][m] for s in splits])),
                            "stored": float(np.mean([base[s][row][m] for s in splits])),
                            "difference": float(diff.mean()), "interval": mean_interval(diff),
                            "up": int((diff > 0).sum()), "down": int((diff < 0).sum())}
            entry["best_epochs"] = {str(s): [f["best_epoch"] for f in by_split[s]] for s in splits}
            table.setdefault(name, {})[row] = entry
    return table


def markdown(table: dict) -> str:
    lines = ["| candidate | row | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, rows in table.items():
        for row, entry in rows.items():
            cells = [f"{entry[m]['candidate']:.3f} vs {entry[m]['stored']:.3f}: {entry[m]['difference']:+.3f} "
                     f"[{entry[m]['interval'][0]:+.3f}, {entry[m]['interval'][1]:+.3f}] ({entry[m]['up']}/{entry[m]['down']})"
                     for m in METRICS]
            lines.append(f"| {name} | {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("predictions", help="an .npz written by quality.py --predictions (one shift recipe)")
    parser.add_argument("--candidate", action="append", required=True, metavar="NAME=JSON",
                        help="parameters on top of the stored recipe, e.g. smooth='{\"label_smoothing\": 0.1}'")
    parser.add_argument("--seeds", type=int, default=1, help="how many of the stored training seeds, in their order")
    parser.add_argument("--splits", type=int, nargs="*", default=None, help="split seeds (default: all stored)")
    parser.add_argument("--firms", type=int, default=1994)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    runs = read_predictions(args.predictions)
    seeds = list(dict.fromkeys(r["seed"] for r in runs if "held_out" in r))[: args.seeds]
    variant, stored = stored_recipe(runs, seeds)
    stored = {s: e for s, e in stored.items() if args.splits is None or s in args.splits}
    recipe = training_variants()[variant]
    candidates = {name: json.loads(spec) for name, spec in (c.split("=", 1) for c in args.candidate)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work, ProcessPoolExecutor(max_workers=args.workers) as pool:
        from emdlot.config import SynthConfig
        from emdlot.synth import generate, write_dataset

        inputs = str(Path(work) / "in")
        write_dataset(generate(SynthConfig(firms=args.firms)), inputs)
        datasets = {s: pool.submit(prepare_split, inputs, str(Path(work) / f"matched-{s}"), "matched", s, "quantile")
                    for s in stored}
        datasets = {s: job.result()["dataset"] for s, job in datasets.items()}
        jobs = {(name, s, seed): pool.submit(held_out_fit, datasets[s], recipe | params, seed)
                for name, params in candidates.items() for s in stored for seed in seeds}
        fitted: dict[str, dict[int, list[dict]]] = {}
        for done, ((name, s, seed), job) in enumerate(jobs.items(), 1):
            fitted.setdefault(name, {}).setdefault(s, []).append(job.result())
            print(f"[held-out training] {done}/{len(jobs)} {name} split {s} seed {seed} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    table = compare(stored, fitted)
    Path(args.out).write_text(json.dumps({
        "setup": {"predictions": args.predictions, "variant": variant, "candidates": candidates, "seeds": seeds,
                  "splits": sorted(stored), "firms": "held-out folds of training + validation only; no test firm",
                  "wall_time_s": round(time.perf_counter() - started, 1)},
        "results": table}, indent=1))
    print(markdown(table))


if __name__ == "__main__":
    main()
