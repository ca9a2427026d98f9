"""Does EMDLOT beat a boosted tree on the same firms? Repeated stratified splits under both cutoff protocols.

For each protocol ("matched", "paper") and each split seed, the paper-size synthetic set is prepared
afresh (its own split, transforms and SMOTE); on that split every model trains on the same SMOTE'd
training firms and is scored once on the same test firms: EMDLOT recipes (emdlot/configs/variants.yaml,
each over several training seeds, plus the average of those seeds' probabilities), XGBoost and LightGBM
on sequence summaries (fit on the training firms, and again on the training + validation firms, SMOTE'd
together, which is what a refit recipe learns from, and once more with a prior shift fitted on their own
3-fold cross-validation predictions, as EMDLOT's `prior_shift` recipes get it), and the two shortcut models that see only when a sequence ends or how long it
is. Mean, sd and a split-level bootstrap 95% interval per metric; valid runs (all three classes
predicted) counted, never dropped. An EMDLOT recipe with a prior shift is also scored without it ("no shift":
the same weights) and with the fitted shift even where its nested check dropped it ("unchecked shift"), so
the shift's and the check's own effects are measured; its seeds are also averaged first and then shifted once, on
their mean held-out fold prediction ("seed average, then shift", checked and unchecked), and blended with XGBoost
on the same folds ("hybrid: ...", emdlot.training.blend: the weight fitted on the held-out folds with the checked
shift, without the shift, and equal weights), per run and per seed average; and the seed average and its
equal-weight hybrid once more from the fold models' own test predictions ("fold models": the models the shift was
fitted on, in place of the refit), and that hybrid and the tree alone with the tree's fold fits in place of its
refit ("tree fold models", round 24). Writes benchmarks/results/quality.json and prints a Markdown table.

The EMDLOT size is emdlot/configs/demo_model.yaml (hidden 64, batch 32, at most 15 epochs) without the
text modality (the synthetic prospectus is not embedded here): a Table 5 model takes about 28 min a run.
Run: .venv/bin/python benchmarks/quality.py [--splits 5] [--seeds 3] [--variants paper summary] [--workers 2]
A round run in parts (--first-split) is pooled with --merge A.json B.json --pairs "MODEL=AGAINST" ...: paired
differences by split, with a bootstrap interval over the splits. --predictions NPZ stores every run's predictions (a
shift run's held-out folds too), and --from-predictions NPZ summarises them again without training, so a decision
layer can be measured on runs already made; --wide-grid adds the shift searched past GRID's edge.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

import numpy as np

from emdlot.training.calibration import GRID, apply_prior_shift
from emdlot.training.config import training_variants

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
# Rounds 18 to 25 each added five, drawn by numpy.random.default_rng(19).permutation(range(40, 150)), used ones skipped.
SPLIT_SEEDS = [86, 127, 71, 61, 84, 140, 88, 46, 131, 53, 125, 134, 50, 114, 138, 135, 108, 106, 126, 43, 64, 47, 44, 144, 75,
               70, 74, 56, 55, 41, 105, 77, 76, 115, 68, 40, 100, 133, 137, 99, 117, 103, 109, 65, 111]
TRAIN_SEEDS = [86, 127, 71, 61, 84]
SHIFT_FOLDS = 3  # the trees' prior shift folds: the cross-validation folds of the variants with epoch_folds 3
SHIFT_GRID = GRID  # the shift grid of the rows derived here (the product's); read at call time, so a test can shrink it
WIDE_GRID = np.union1d(GRID, [-8.0, -7.0, -6.0, -5.0, 5.0, 6.0, 7.0, 8.0])  # --wide-grid: GRID past its edge, whole steps


def _threads() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def prepare_split(inputs: str, out: str, protocol: str, split_seed: int, scaling: str = "standard") -> dict:
    from emdlot.config import PrepareConfig
    from emdlot.data.prepare import prepare

    meta = prepare(inputs, out, PrepareConfig(seed=split_seed, performing_cutoff=protocol, scaling=scaling))
    return {"dataset": out, "protocol": protocol, "split": split_seed, "counts": meta.counts,
            "tag": "" if scaling == "standard" else f" [{scaling} scaling]"}


def run_baselines(dataset: str, protocol: str, split_seed: int, tag: str = "") -> list[dict]:
    _threads()
    from emdlot.data.assemble import assemble, read_meta
    from emdlot.training.baselines import TREE_BASELINES, fit_predict, shortcut_baselines

    parts, meta = assemble(dataset, with_train_val=True, folds=SHIFT_FOLDS), read_meta(dataset)
    macro = [meta.feature_names.index(c) for c in meta.macro_features]
    folds = [(parts[f"cv{i}_train"], parts[f"cv{i}_val"]) for i in range(1, SHIFT_FOLDS + 1)]
    models = [(name, spec, "train", ()) for name, spec in (TREE_BASELINES | shortcut_baselines(macro)).items()]
    models += [(f"{name} (train + val)", spec, "train_val", ()) for name, spec in TREE_BASELINES.items()]  # a refit's firms
    models += [(f"{name} (train + val, prior shift)", spec, "train_val", folds) for name, spec in TREE_BASELINES.items()]
    out = []
    for name, (factory, view), firms, shift_folds in models:
        started = time.perf_counter()
        proba = fit_predict(factory, view, parts[firms], parts["test"], seed=split_seed, folds=shift_folds)
        out.append({"model": name + tag, "protocol": protocol, "split": split_seed, "seed": split_seed,
                    "proba": proba.tolist(), "y": parts["test"].y.tolist(), "seconds": time.perf_counter() - started})
    return out + decision_rows(out, tag)


def decision_rows(rows: list[dict], tag: str) -> list[dict]:
    """Each tree's shift as a decision rule only (round 22's plan): the class from its shifted fit on the training +
    validation firms, the probabilities from the same fit unshifted (the "(train + val)" row: one seeded fit,
    deterministic), as metrics.classification_metrics reads a `predicted`."""
    from emdlot.training.baselines import TREE_BASELINES

    named = {r["model"]: r for r in rows}
    return [named[f"{name} (train + val){tag}"] | {"model": f"{name} (train + val, shift as decision){tag}",
            "predicted": np.argmax(named[f"{name} (train + val, prior shift){tag}"]["proba"], axis=1).tolist()}
            for name in TREE_BASELINES]


def run_emdlot(dataset: str, protocol: str, split_seed: int, variant: str, params: dict, seed: int, tag: str = "") -> dict | list[dict]:
    _threads()
    from emdlot.runs import assemble_for, train_and_score
    from emdlot.runs.ensemble import fit_tree
    from emdlot.runs.single import held_out_labels
    from emdlot.training.baselines import TREE_BASELINES, predict_proba
    from emdlot.training.config import load_emdlot_config

    config = load_emdlot_config(files("emdlot") / "configs" / "demo_model.yaml").with_params(
        {"use_text": False, "progress": False, **params})
    started = time.perf_counter()
    parts = assemble_for(config, dataset)
    result = train_and_score(parts, config, seed, score_test=True)
    run = {"model": f"EMDLOT {variant}{tag}", "protocol": protocol, "split": split_seed, "seed": seed,
           "proba": result.test_proba.tolist(), "y": parts["test"].y.tolist(),
           "best_epoch": result.history.best_epoch, "epochs": len(result.history.epochs),
           "val_composite": result.val_score, "val_stop_score": result.history.best_score,
           "seconds": time.perf_counter() - started}
    if result.history.prior_shift is None:
        return run
    # The same run without its shift (the shift's inverse), so the shift's effect is measured on identical weights.
    unshifted = apply_prior_shift(result.test_proba, -np.asarray(result.history.prior_shift))
    y, fold = held_out_labels(parts, config.train.epoch_folds)
    # The hybrid's tree (emdlot.runs.ensemble): XGBoost on the same folds' SMOTE'd training firms, and on the SMOTE'd
    # training + validation firms for the test firms (also where the run weighs classes instead), seeded as
    # run_baselines seeds it (w = 0 is its shifted row).
    smoted = assemble_for(config, dataset, balance=True) if config.train.weighs_classes else parts
    tree_held_out, tree, fold_trees = fit_tree(smoted, config.train.epoch_folds, split_seed)
    view = TREE_BASELINES["XGBoost"][1]
    held_out = {"y": y, "fold": fold, "proba": np.asarray(result.history.held_out_proba), "test": unshifted,
                "cross_fit": result.test_cross_fit_proba,  # the fold models' mean at the chosen epoch, unshifted
                "tree": tree_held_out, "tree_test": predict_proba(tree, view, parts["test"]),
                "tree_fold_test": np.mean([predict_proba(t, view, parts["test"]) for t in fold_trees], axis=0)}
    run |= {"variant": variant, "tag": tag, "prior_shift": result.history.prior_shift,
            "prior_shift_check": result.history.prior_shift_check, "held_out": held_out}
    return [run] + shift_rows(run)


def shift_rows(run: dict) -> list[dict]:
    """A shift run's rows read off its stored predictions: the same weights without the shift, with the fitted shift
    whether or not its check kept it, and its hybrids (emdlot.training.blend) with the tree of the same folds."""
    base = {k: v for k, v in run.items() if k not in ("variant", "tag", "prior_shift", "prior_shift_check", "held_out")}
    base["derived"] = True  # not stored with --predictions: read off the run again when they are loaded
    variant, tag, unshifted = run["variant"], run["tag"], np.asarray(run["held_out"]["test"])
    hybrids = [base | {"model": f"hybrid: EMDLOT {variant} + XGBoost {name}{tag}", **row}
               for name, row in hybrid_rows([run["held_out"]]).items()]
    return [base | {"model": f"EMDLOT {variant} (no shift){tag}", "proba": unshifted.tolist()},
            base | {"model": f"EMDLOT {variant} (unchecked shift){tag}",
                    "proba": apply_prior_shift(unshifted, np.asarray(run["prior_shift_check"]["fitted"])).tolist()}] + hybrids


def hybrid_rows(held: list[dict]) -> dict[str, dict]:
    """EMDLOT blended with XGBoost (emdlot.training.blend) from runs' held-out fold predictions: the weight fitted
    and the checked shift, the weight fitted without a shift, equal weights and the checked shift. Several runs
    (seeds of one split) blend their mean probability."""
    from emdlot.training.blend import blend, fit_blend

    h0 = held[0]
    emdlot_held, emdlot_test = (np.mean([h[k] for h in held], axis=0) for k in ("proba", "test"))
    fitted = fit_blend(h0["y"], h0["fold"], emdlot_held, h0["tree"], grid=SHIFT_GRID)
    equal = fit_blend(h0["y"], h0["fold"], emdlot_held, h0["tree"], weight=0.5, grid=SHIFT_GRID)
    return {"(fitted weight, shift)": {"proba": fitted.apply(emdlot_test, h0["tree_test"]).tolist(), "blend": fitted.as_dict()},
            "(fitted weight, no shift)": {"proba": blend(emdlot_test, h0["tree_test"], fitted.weight).tolist(), "blend": fitted.as_dict()},
            "(equal weights, shift)": {"proba": equal.apply(emdlot_test, h0["tree_test"]).tolist(), "blend": equal.as_dict()}}


def summarise_runs(runs: list[dict], wide: bool = False) -> dict:
    """Per (protocol, model): metrics of every run and their summary; EMDLOT seed averages added (`wide`: and the
    rows of `wide_grid_rows`)."""
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.evaluation.uncertainty import summarise

    table: dict = {}
    keyed: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        keyed.setdefault((run["protocol"], run["model"]), []).append(run)
    for (protocol, model), group in list(keyed.items()):
        if model.startswith("EMDLOT") and len({r["seed"] for r in group}) > 1:
            by_split: dict[int, list[dict]] = {}
            for r in group:
                by_split.setdefault(r["split"], []).append(r)
            keyed[(protocol, f"{model} (seed average)")] = [
                {"split": s, "seed": None, "y": rs[0]["y"], "proba": np.mean([r["proba"] for r in rs], axis=0).tolist()}
                for s, rs in by_split.items()]
            if all("held_out" in r for r in group):
                keyed |= ensemble_shift_rows(protocol, model, by_split)
                keyed |= wide_grid_rows(protocol, model, by_split) if wide else {}
    for (protocol, model), group in sorted(keyed.items()):
        metrics = [classification_metrics(np.array(r["y"]), np.array(r["proba"]), r.get("predicted")) for r in group]
        entry = summarise(metrics, [r["split"] for r in group])
        entry["runs"] = [{"split": r["split"], "seed": r["seed"], **m.as_dict(),
                          **{k: r[k] for k in ("best_epoch", "epochs", "val_composite", "val_stop_score", "prior_shift", "prior_shift_check", "blend", "seconds") if k in r}}
                         for r, m in zip(group, metrics)]
        table.setdefault(protocol, {})[model] = entry
    return table


def ensemble_shift_rows(protocol: str, model: str, by_split: dict[int, list[dict]]) -> dict:
    """A shift recipe's seeds averaged first and then shifted once (calibration.ensemble_prior_shift, fitted on
    the mean of their held-out fold predictions), checked and unchecked; and the seed averages' hybrids. Where the
    runs kept their fold models' test predictions ("cross_fit"), the same shift and equal-weight hybrid applied to
    those instead of the refits': "fold models" rows, the models the shift was fitted on (the hybrid's tree keeps its
    fit on the training + validation firms: it drifts little, refit_drift.json); their equal-weight hybrid also without
    the shift, and with the shift as a decision rule only (its class from the shifted blend, its probabilities
    unshifted: round 22's plan). Where the runs also kept the tree's fold fits' test predictions ("tree_fold_test"),
    the fold models' hybrid with those in place of the tree's refit ("tree fold models": both sides of the blend
    predicted by the fits its weight and shift were fitted on), and that tree alone, unshifted and with its own
    checked shift from the same folds (the yardstick's tree, predicting with its fold fits: round 24's plan)."""
    from emdlot.training.blend import Blend, blend
    from emdlot.training.calibration import ShiftCheck, apply_prior_shift, check_prior_shift, ensemble_prior_shift

    checked, unchecked, fold_models, fold_models_shift = [], [], [], []
    variant, tag = model.removeprefix("EMDLOT ").partition(" [")[::2]  # the hybrid's seed averages, named as its runs
    out: dict = {}
    for split, rs in by_split.items():
        held = [r["held_out"] for r in rs]
        if any(not (np.array_equal(h["y"], held[0]["y"]) and np.array_equal(h["fold"], held[0]["fold"])) for h in held):
            raise ValueError(f"{model}, split {split}: the seeds' held-out firms differ, so their predictions cannot be averaged")
        check = ensemble_prior_shift(held[0]["y"], held[0]["fold"], [h["proba"] for h in held], grid=SHIFT_GRID)
        test = np.mean([h["test"] for h in held], axis=0)
        row = {"split": split, "seed": None, "y": rs[0]["y"], "prior_shift_check": asdict(check)}
        checked.append(row | {"proba": apply_prior_shift(test, check.shift).tolist(), "prior_shift": check.shift.tolist()})
        unchecked.append(row | {"proba": apply_prior_shift(test, np.asarray(check.fitted)).tolist(), "prior_shift": check.fitted})
        hybrids = hybrid_rows(held)
        for name, hybrid in hybrids.items():
            key = (protocol, f"hybrid: EMDLOT {variant} + XGBoost {name} (seed average)" + (f" [{tag}" if tag else ""))
            out.setdefault(key, []).append({"split": split, "seed": None, "y": rs[0]["y"], **hybrid})
        if all(h.get("cross_fit") is not None for h in held):
            cross_fit = np.mean([h["cross_fit"] for h in held], axis=0)
            fold_models.append({"split": split, "seed": None, "y": rs[0]["y"], "proba": cross_fit.tolist()})
            fold_models_shift.append(row | {"proba": apply_prior_shift(cross_fit, check.shift).tolist(), "prior_shift": check.shift.tolist()})
            fold_hybrid = f"hybrid: EMDLOT {variant} + XGBoost (equal weights, {{}}, fold models) (seed average)" + (f" [{tag}" if tag else "")
            equal = hybrids["(equal weights, shift)"]["blend"]  # the same held-out fit, applied to the fold models
            shifted = Blend(equal["weight"], ShiftCheck(**equal["prior_shift_check"])).apply(cross_fit, held[0]["tree_test"])
            plain = blend(cross_fit, held[0]["tree_test"], equal["weight"])
            base = {"split": split, "seed": None, "y": rs[0]["y"], "blend": equal}
            for rule, proba, decided in (("shift", shifted, {}), ("no shift", plain, {}),
                                         ("shift as decision", plain, {"predicted": shifted.argmax(axis=1).tolist()})):
                out.setdefault((protocol, fold_hybrid.format(rule)), []).append(base | {"proba": proba.tolist()} | decided)
            if held[0].get("tree_fold_test") is not None:
                tree_folds = np.asarray(held[0]["tree_fold_test"])
                both = Blend(equal["weight"], ShiftCheck(**equal["prior_shift_check"])).apply(cross_fit, tree_folds)
                name = fold_hybrid.format("shift").replace("fold models)", "fold models, tree fold models)")
                out.setdefault((protocol, name), []).append(base | {"proba": both.tolist()})
                tree_check = check_prior_shift(held[0]["y"], held[0]["tree"], held[0]["fold"], grid=SHIFT_GRID)
                trees = {"XGBoost (fold models)": (tree_folds, {}),
                         "XGBoost (fold models, prior shift)": (apply_prior_shift(tree_folds, tree_check.shift),
                                                                {"prior_shift": tree_check.shift.tolist(), "prior_shift_check": asdict(tree_check)})}
                for name, (proba, extra) in trees.items():
                    out.setdefault((protocol, name + (f" [{tag}" if tag else "")), []).append(
                        {"split": split, "seed": None, "y": rs[0]["y"], "proba": proba.tolist(), **extra})
    out |= {(protocol, f"{model} (fold models, seed average)"): fold_models,
            (protocol, f"{model} (fold models, seed average, then shift)"): fold_models_shift} if fold_models else {}
    return {(protocol, f"{model} (seed average, then shift)"): checked,
            (protocol, f"{model} (seed average, then unchecked shift)"): unchecked} | out


def wide_grid_rows(protocol: str, model: str, by_split: dict[int, list[dict]]) -> dict:
    """The checked shift searched on WIDE_GRID instead of GRID (round 19: round 18's fitted shifts sat on GRID's edge,
    4, in 7 of 10 splits) for the seed average, its equal-weight hybrid and the hybrid's tree alone. That tree is the
    yardstick's recipe (XGBoost on the training + validation firms, shifted from the same folds), so the yardstick
    gets the wider search too."""
    from emdlot.training.blend import fit_blend
    from emdlot.training.calibration import check_prior_shift

    variant, tag = model.removeprefix("EMDLOT ").partition(" [")[::2]
    tag = f" [{tag}" if tag else ""
    out: dict = {}
    for split, rs in by_split.items():
        held = [r["held_out"] for r in rs]
        y, fold, tree, tree_test = (held[0][k] for k in ("y", "fold", "tree", "tree_test"))
        emdlot_held, emdlot_test = (np.mean([h[k] for h in held], axis=0) for k in ("proba", "test"))
        alone, tree_check = (check_prior_shift(y, p, fold, grid=WIDE_GRID) for p in (emdlot_held, tree))
        hybrid = fit_blend(y, fold, emdlot_held, tree, weight=0.5, grid=WIDE_GRID)
        rows = {f"{model} (seed average, then shift, wide grid)": (apply_prior_shift(emdlot_test, alone.shift), alone),
                f"hybrid: EMDLOT {variant} + XGBoost (equal weights, shift, wide grid) (seed average){tag}":
                    (hybrid.apply(emdlot_test, tree_test), hybrid.check),
                f"XGBoost (train + val, prior shift, wide grid){tag}": (apply_prior_shift(tree_test, tree_check.shift), tree_check)}
        for name, (proba, check) in rows.items():
            out.setdefault((protocol, name), []).append({"split": split, "seed": None, "y": rs[0]["y"], "proba": proba.tolist(),
                                                         "prior_shift": check.shift.tolist(), "prior_shift_check": asdict(check)})
    return out


def save_predictions(runs: list[dict], path: str) -> None:
    """Every run's test probabilities and a shift run's held-out fold predictions, so a decision layer can be measured
    again without training (--from-predictions). A compressed .npz: arrays, and the runs' other fields as JSON."""
    stored = [r for r in runs if not r.get("derived")]
    arrays = {"runs": np.array(json.dumps([{k: v for k, v in r.items() if k not in ("proba", "held_out")} for r in stored]))}
    for i, run in enumerate(stored):
        arrays[f"{i}/proba"] = np.asarray(run["proba"], dtype=np.float64)
        arrays |= {f"{i}/held_out/{k}": np.asarray(v) for k, v in run.get("held_out", {}).items()}
    np.savez_compressed(path, **arrays)


def read_predictions(path: str) -> list[dict]:
    """The runs `save_predictions` stored, as they were stored."""
    with np.load(path, allow_pickle=False) as stored:
        runs = json.loads(str(stored["runs"]))
        for i, run in enumerate(runs):
            run["proba"] = stored[f"{i}/proba"].tolist()
            held = {k.rsplit("/", 1)[1]: stored[k] for k in stored.files if k.startswith(f"{i}/held_out/")}
            run |= {"held_out": held} if held else {}
    return runs


def load_predictions(path: str) -> list[dict]:
    """The runs `save_predictions` stored, with the rows a shift run derives (`shift_rows`) read off them again."""
    runs = read_predictions(path)
    return runs + [row for run in runs if "held_out" in run for row in shift_rows(run)]


def merge_results(paths: list[str]) -> dict:
    """Several result files of one recipe on different splits (a round run in parts) as one table: each model's runs
    put together and summarised again from their stored metrics. A split found in two files is refused."""
    from emdlot.evaluation.metrics import ClassificationMetrics
    from emdlot.evaluation.uncertainty import summarise

    fields = ("recall", "f1", "average_precision", "auc", "n_predicted_classes")
    pooled: dict[tuple[str, str], list[dict]] = {}
    for path in paths:
        for protocol, models in json.loads(Path(path).read_text())["results"].items():
            for model, entry in models.items():
                earlier = pooled.setdefault((protocol, model), [])
                twice = {r["split"] for r in entry["runs"]} & {r["split"] for r in earlier}
                if twice:
                    raise ValueError(f"{path}: {model} has splits {sorted(twice)} in an earlier file too")
                earlier.extend(entry["runs"])
    table: dict = {}
    for (protocol, model), runs in sorted(pooled.items()):
        entry = summarise([ClassificationMetrics(**{k: r[k] for k in fields}) for r in runs], [r["split"] for r in runs])
        table.setdefault(protocol, {})[model] = entry | {"runs": runs}
    return table


def paired(table: dict, model: str, against: str) -> dict:
    """`model` minus `against`, paired by split: each one's runs on a split averaged first (a seed average is one run),
    the mean over the splits both have, a bootstrap 95% interval over those splits, and the splits above and below.
    Also the composite's weighted sum of the four (DESIGN.md section 4) without its penalty for a missing class: the
    table's valid count says where one is missing."""
    from emdlot.evaluation.metrics import CompositeWeights
    from emdlot.evaluation.uncertainty import METRICS, mean_interval

    weights = CompositeWeights()

    def by_split(name: str) -> dict[int, dict[str, float]]:
        runs = table[name]["runs"]
        means = {s: {m: float(np.mean([r[m] for r in runs if r["split"] == s])) for m in METRICS} for s in {r["split"] for r in runs}}
        return {s: {"composite": sum(getattr(weights, m) * v[m] for m in METRICS), **v} for s, v in means.items()}

    mine, theirs = by_split(model), by_split(against)
    shared = sorted(set(mine) & set(theirs))
    out: dict = {"model": model, "against": against, "splits": shared}
    for m in ("composite", *METRICS):
        diffs = np.array([mine[s][m] - theirs[s][m] for s in shared])
        lo, hi = mean_interval(diffs)
        out[m] = {"diff": float(diffs.mean()), "ci_low": lo, "ci_high": hi,
                  "above": int((diffs > 0).sum()), "below": int((diffs < 0).sum())}
    return out


def paired_markdown(rows: list[dict]) -> str:
    lines = ["| model | against | composite | recall | F1 | mAP | AUC |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[m]['diff']:+.3f} [{r[m]['ci_low']:+.3f}, {r[m]['ci_high']:+.3f}] ({r[m]['above']} up, {r[m]['below']} down)"
                 for m in ("composite", "recall", "f1", "average_precision", "auc")]
        lines.append(f"| {r['model']} | {r['against']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(table: dict) -> str:
    lines = []
    for protocol, models in table.items():
        lines += [f"\n### {protocol} cutoffs\n", "| model | macro recall | macro F1 | mAP | macro AUC | valid |", "|---|---|---|---|---|---|"]
        order = sorted(models, key=lambda m: -models[m]["f1"]["mean"])
        for model in order:
            e = models[model]
            cells = [f"{e[m]['mean']:.3f} ± {e[m]['sd']:.3f} [{e[m]['ci_low']:.3f}, {e[m]['ci_high']:.3f}]"
                     for m in ("recall", "f1", "average_precision", "auc")]
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {e['valid_runs']['count']}/{e['valid_runs']['of']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--first-split", type=int, default=0,
                        help="index into SPLIT_SEEDS of the first split (--first-split 5 --splits 5: the second five)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--protocols", nargs="+", default=["matched", "paper"])
    parser.add_argument("--variants", nargs="*", default=None,
                        help="names from emdlot/configs/variants.yaml (default: all; none: the baselines alone)")
    parser.add_argument("--paper-variants", nargs="+", default=None, help="variants run under the paper protocol (default: all)")
    parser.add_argument("--scaling", nargs="+", default=["standard"], choices=["standard", "quantile"],
                        help="feature scaling of `prepare` (each gets its own datasets; non-standard ones are tagged)")
    parser.add_argument("--firms", type=int, default=1994)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--merge", nargs="+", default=None, metavar="RESULTS",
                        help="run nothing: pool result files of one recipe on different splits into --out")
    parser.add_argument("--pairs", nargs="*", default=[], metavar="MODEL=AGAINST",
                        help="with --merge or --from-predictions: paired differences by split to add (names as in the "
                             "results, protocol matched)")
    parser.add_argument("--wide-grid", action="store_true",
                        help="add rows with the checked shift searched on WIDE_GRID (seed average, hybrid, its tree)")
    parser.add_argument("--predictions", default=None, metavar="NPZ", help="also store every run's predictions here")
    parser.add_argument("--from-predictions", default=None, metavar="NPZ",
                        help="train nothing: summarise the runs stored with --predictions into --out")
    args = parser.parse_args()
    if args.from_predictions or args.merge:  # train nothing: a table of runs already made, with the asked-for pairs
        if args.from_predictions:
            table = summarise_runs(load_predictions(args.from_predictions), wide=args.wide_grid)
            setup = {"from_predictions": args.from_predictions}
        else:
            table = merge_results(args.merge)
            setups = [json.loads(Path(p).read_text())["setup"] for p in args.merge]
            setup = {"merged": args.merge, "splits": [s for part in setups for s in part["splits"]], "parts": setups}
        pairs = [paired(table["matched"], *pair.split("=", 1)) for pair in args.pairs]
        Path(args.out).write_text(json.dumps({"setup": setup, "paired": pairs, "results": table}, indent=1))
        print(markdown(table) + "\n\n" + paired_markdown(pairs))
        return

    all_variants = training_variants()
    variants = {name: all_variants[name] for name in (all_variants if args.variants is None else args.variants)}
    splits = SPLIT_SEEDS[args.first_split: args.first_split + args.splits]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work, ProcessPoolExecutor(max_workers=args.workers) as pool:
        from emdlot.config import SynthConfig
        from emdlot.synth import generate, write_dataset

        inputs = str(Path(work) / "in")
        write_dataset(generate(SynthConfig(firms=args.firms)), inputs)
        jobs = [pool.submit(prepare_split, inputs, str(Path(work) / f"{p}-{s}-{c}"), p, s, c)
                for c in args.scaling for p in args.protocols for s in splits]
        datasets = [j.result() for j in jobs]
        print(f"[quality] {len(datasets)} datasets prepared in {time.perf_counter() - started:.0f}s", flush=True)
        tasks = []
        for d in datasets:
            tasks.append(pool.submit(run_baselines, d["dataset"], d["protocol"], d["split"], d["tag"]))
            names = variants if d["protocol"] == "matched" or args.paper_variants is None else {
                n: variants[n] for n in args.paper_variants}
            for name, params in names.items():
                for seed in TRAIN_SEEDS[: args.seeds]:
                    tasks.append(pool.submit(run_emdlot, d["dataset"], d["protocol"], d["split"], name, params, seed, d["tag"]))
        runs = []
        for done, job in enumerate(as_completed(tasks), 1):
            result = job.result()
            result = result if isinstance(result, list) else [result]
            runs += result
            print(f"[quality] {done}/{len(tasks)} {result[-1]['protocol']} split {result[-1]['split']} {result[-1]['model']} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    if args.predictions:
        save_predictions(runs, args.predictions)
    table = summarise_runs(runs, wide=args.wide_grid)
    body = {
        "setup": {"firms": args.firms, "scaling": args.scaling, "splits": splits, "train_seeds": TRAIN_SEEDS[: args.seeds],
                  "variants": variants, "wide_grid": args.wide_grid, "predictions": args.predictions, "emdlot_size": "emdlot/configs/demo_model.yaml, use_text false",
                  "baselines": "XGBoost / LightGBM on sequence summaries (7F + length + gap), fit on train and on train + val; shortcut models: "
                               "logistic regression on the last quarter's macro vector / on the sequence length",
                  "intervals": "bootstrap 95% over splits (runs on one split resampled together)",
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  "wall_time_s": round(time.perf_counter() - started, 1)},
        "results": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(body, indent=1))
    print(markdown(table))


if __name__ == "__main__":
    main()
