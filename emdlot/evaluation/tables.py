"""The paper's results tables (Tables 6, 7 and 8) from one long frame of test-set predictions.

Input: `predictions`, one row per (model, split, seed, test firm) with columns `model`, `kind`
("emdlot", "ablation", "baseline", "shortcut"), `split` (the split's seed), `seed`, `seed_rank`
(0-based order in which the seed was drawn for that model and split), `firm_id`, `y` (0..2) and
`p_Performing`, `p_Extended`, `p_Defaulted`.

The chain, top-down:
1. `run_metrics`: the four macro metrics of every run, and whether it predicts all three classes;
2. `select_runs`: which runs count. The paper's rule (first ten *valid* runs) selects on the test
   set, so DESIGN.md section 5 asks for the unselected table over the ten seeds beside it;
3. `table6`: mean, sd and a bootstrap interval per model. About 8 minority firms sit in a test set,
   so the interval resamples test firms as well as splits;
4. `table7` (ranks), `table8` (ablations against the full model), `shortcut_check` (does a model that
   sees only the shape of a sequence score like the real ones? then the protocol leaks), `paired_differences`
   (EMDLOT minus each baseline on the same test firms, with a paired interval);
5. `seed_average`: the first seeds of each EMDLOT model as one ensemble per split (what a seed-averaged
   package scores), tabled like Table 6;
6. `confusion`, `per_class_recall`: where the errors fall;
7. `write_table`: csv, Markdown and png of any of these frames.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emdlot.evaluation.metrics import classification_metrics
from emdlot.evaluation.uncertainty import METRICS
from emdlot.schema import CLASSES

PROBA_COLUMNS = tuple(f"p_{c}" for c in CLASSES)
KEY = ["model", "kind", "split", "seed", "seed_rank"]
REQUIRED = ["model", "kind", "split", "seed", "seed_rank", "firm_id", "y", *PROBA_COLUMNS]
KINDS = ("emdlot", "ablation", "baseline", "shortcut")
RULES = ("paper", "unselected")
METRIC_LABELS = {"recall": "Recall", "f1": "F1-score", "average_precision": "mAP", "auc": "AUC"}

# Leak rule of `shortcut_check` (documented there).
CHANCE_AUC = 0.5
LEAK_AUC_FLOOR = 0.55
LEAK_NEAR_BEST = 0.05


def _check_predictions(predictions: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lacks columns {missing}; expected {REQUIRED}")
    unknown = sorted(set(predictions["kind"]) - set(KINDS))
    if unknown:
        raise ValueError(f"predictions has kind values {unknown}; expected one of {KINDS}")


def _proba(frame: pd.DataFrame) -> np.ndarray:
    """Rows normalised to sum to one, exactly as `classification_metrics` does before ranking."""
    proba = frame[list(PROBA_COLUMNS)].to_numpy(dtype=np.float64)
    return proba / proba.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# 1. One row per run


def run_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Macro metrics of each run on its test firms (scikit-learn, via `classification_metrics`).

    scikit-learn's input checks dominate: about 25 ms a run, half a minute for a 1000-run study.
    Columns: model, kind, split, seed, seed_rank, recall, f1, average_precision, auc,
    n_predicted_classes, valid (argmax covers all three classes: the paper's validity rule),
    recall_Performing, recall_Extended, recall_Defaulted.
    """
    _check_predictions(predictions)
    rows = []
    for key, run in predictions.groupby(KEY, sort=False):
        y = run["y"].to_numpy()
        proba = _proba(run)
        m = classification_metrics(y, proba)
        per_class = _class_recall(y, proba.argmax(axis=1))
        rows.append({**dict(zip(KEY, key)), **m.as_dict(), "valid": m.covers_all_classes,
                     **{f"recall_{c}": float(r) for c, r in zip(CLASSES, per_class)}})
    columns = [*KEY, *METRICS, "n_predicted_classes", "valid", *(f"recall_{c}" for c in CLASSES)]
    return pd.DataFrame(rows, columns=columns)


def _class_recall(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Share of each class's firms called that class (scikit-learn's recall_score(average=None))."""
    k = len(CLASSES)
    hits = np.bincount(y[predicted == y], minlength=k)
    support = np.bincount(y, minlength=k)
    return np.divide(hits, support, out=np.zeros(k), where=support > 0)


# ---------------------------------------------------------------------------------------------
# 2. Which runs count


class Selection(NamedTuple):
    """The runs that count under a rule, and per model what the rule had to skip."""

    runs: pd.DataFrame  # rows of `run_metrics` that were selected
    report: pd.DataFrame  # model, kind, splits, runs, valid_runs, invalid_drawn, short_splits, complete


def seed_average(predictions: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """Each EMDLOT-family model's first `n` seeds on a split as one run, the mean of their probabilities
    (model "<name> (seed average)", seed -1): what a seed-averaged package scores. No run is selected
    on the test set, valid or not."""
    _check_predictions(predictions)
    runs = predictions[predictions["kind"].isin(("emdlot", "ablation")) & (predictions["seed_rank"] < n)]
    out = runs.groupby(["model", "kind", "split", "firm_id", "y"], sort=False)[list(PROBA_COLUMNS)].mean().reset_index()
    return out.assign(model=out["model"] + " (seed average)", seed=-1, seed_rank=0)[REQUIRED]


def select_runs(runs: pd.DataFrame, rule: str = "paper", n: int = 10) -> Selection:
    """Pick the runs a table averages over.

    "unselected": seed_rank < n, valid or not (the ten seeds as drawn; selects nothing on the test set).
    "paper": per (model, split) the first n valid runs in seed_rank order; invalid runs are replaced by
    the next seeds, as in the paper.

    The report has one row per model: `invalid_drawn` counts the invalid runs among those examined
    (paper: drawn before the n-th valid one, or all of them when fewer than n are valid; unselected:
    invalid among the first n), `short_splits` the splits with fewer than n selected runs, and
    `complete` is True when there are none.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    runs = runs.reset_index(drop=True)
    ordered = runs.sort_values(["model", "split", "seed_rank"], kind="stable")
    if rule == "unselected":
        examined = ordered["seed_rank"] < n
        keep = examined
    else:
        # Valid runs up to and including this one; for an invalid run that is the count before it.
        valid_so_far = ordered["valid"].astype(int).groupby([ordered["model"], ordered["split"]]).cumsum()
        keep = ordered["valid"] & (valid_so_far <= n)
        examined = keep | (~ordered["valid"] & (valid_so_far < n))
    flagged = ordered.assign(_keep=keep, _invalid=examined & ~ordered["valid"])

    per_split = flagged.groupby(["model", "kind", "split"], sort=False).agg(
        runs=("_keep", "sum"), invalid=("_invalid", "sum"))
    report = per_split.groupby(level=["model", "kind"], sort=False).agg(
        splits=("runs", "size"), runs=("runs", "sum"), invalid_drawn=("invalid", "sum"),
        short_splits=("runs", lambda r: int((r < n).sum())))
    valid = flagged[flagged["_keep"] & flagged["valid"]].groupby(["model", "kind"]).size()
    report["valid_runs"] = valid.reindex(report.index, fill_value=0)
    report["complete"] = report["short_splits"] == 0
    report = report.reset_index()[["model", "kind", "splits", "runs", "valid_runs", "invalid_drawn",
                                   "short_splits", "complete"]]
    order = pd.Index(runs["model"].drop_duplicates())
    report = report.iloc[np.argsort(order.get_indexer(report["model"]), kind="stable")].reset_index(drop=True)
    selected = runs.loc[flagged.index[flagged["_keep"].to_numpy()]].sort_index().reset_index(drop=True)
    return Selection(selected, report)


# ---------------------------------------------------------------------------------------------
# 3. Table 6 with a two-level bootstrap


def _weighted_metrics(y: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro recall, F1, mAP and AUC of one run under K firm weightings at once: (K, 4).

    A bootstrap resample with replacement is the original firms weighted by how often each was drawn,
    so each metric is computed from weighted counts instead of re-calling scikit-learn K times.
    Definitions match scikit-learn: F1 = 2TP / (2TP + FP + FN), 0 when undefined; AP is the step
    sum over distinct thresholds; AUC counts tied scores as half.
    """
    k_draws, n = weights.shape
    k = len(CLASSES)
    predicted = proba.argmax(axis=1)
    cells = np.zeros((n, k * k))
    cells[np.arange(n), y * k + predicted] = 1.0
    confusion = (weights @ cells).reshape(k_draws, k, k)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support, called = confusion.sum(axis=2), confusion.sum(axis=1)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0).mean(axis=1)
    f1 = np.divide(2 * tp, support + called, out=np.zeros_like(tp), where=(support + called) > 0).mean(axis=1)

    ap, auc = np.zeros((k_draws, k)), np.zeros((k_draws, k))
    for c in range(k):
        order = np.argsort(-proba[:, c], kind="stable")
        score = proba[order, c]
        starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])  # blocks of tied scores
        positive = (y[order] == c)
        w = weights[:, order]
        pos = np.add.reduceat(w * positive, starts, axis=1)  # (K, blocks), highest score first
        neg = np.add.reduceat(w * ~positive, starts, axis=1)
        tp_cum, fp_cum = pos.cumsum(axis=1), neg.cumsum(axis=1)
        p_total, n_total = tp_cum[:, -1], fp_cum[:, -1]
        cut = tp_cum + fp_cum
        precision = np.divide(tp_cum, cut, out=np.zeros_like(cut), where=cut > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[:, c] = (pos * precision).sum(axis=1) / p_total
            auc[:, c] = (pos * (n_total[:, None] - fp_cum + 0.5 * neg)).sum(axis=1) / (p_total * n_total)
    return np.column_stack([recall, f1, ap.mean(axis=1), auc.mean(axis=1)])


class _TestSets:
    """Each split's test firms in a fixed order, and stratified bootstrap weights over them.

    Weights depend only on (seed, split, draws), so every model on a split sees the same resampled
    firms: differences between models are not blurred by different draws (common random numbers).
    """

    def __init__(self, predictions: pd.DataFrame, seed: int):
        self.seed = seed
        self.firms: dict[int, pd.Index] = {}
        self.labels: dict[int, np.ndarray] = {}
        for split, rows in predictions.groupby("split", sort=True):
            labels = rows.groupby("firm_id", sort=True)["y"].agg(["min", "max"])
            conflict = labels.index[labels["min"] != labels["max"]]
            if len(conflict):
                raise ValueError(f"split {split}: firms {list(conflict[:5])} carry different labels y in different runs")
            self.firms[split] = labels.index
            self.labels[split] = labels["min"].to_numpy()
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def weights(self, split: int, draws: int) -> np.ndarray:
        """(draws, firms) counts of a class-stratified resample with replacement: each class keeps its size."""
        if (split, draws) not in self._cache:
            position = list(self.firms).index(split)
            rng = np.random.default_rng([self.seed, position, draws])
            y = self.labels[split]
            counts = np.zeros((draws, len(y)))
            for c in np.unique(y):
                members = np.flatnonzero(y == c)
                counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=draws)
            self._cache[(split, draws)] = counts
        return self._cache[(split, draws)]


def _bootstrap_means(model_runs: pd.DataFrame, rows_of: dict, predictions: pd.DataFrame, tests: _TestSets,
                     n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, 4) bootstrap replicates of the mean metric over `model_runs`.

    Level 1: draw as many splits as there are, with replacement. Level 2: within each drawn split,
    resample its test firms stratified by class (an independent resample per drawn slot) and
    recompute every selected run of that split on them. A replicate is the pooled mean over the
    runs of the drawn splits, the same statistic as the point estimate. Selection is held fixed.
    """
    splits = sorted(model_runs["split"].unique())
    n_splits = len(splits)
    drawn = np.random.default_rng(seed).integers(n_splits, size=(n_boot, n_splits)).ravel()
    sums = np.zeros((n_boot * n_splits, len(METRICS)))
    counts = np.zeros(n_boot * n_splits)
    for s_index, split in enumerate(splits):
        slots = np.flatnonzero(drawn == s_index)
        if not len(slots):
            continue
        all_weights = tests.weights(split, n_boot * n_splits)[slots]
        split_runs = model_runs[model_runs["split"] == split]
        for _, run in split_runs.iterrows():
            rows = predictions.iloc[rows_of[(run["model"], run["split"], run["seed"])]]
            columns = tests.firms[split].get_indexer(rows["firm_id"])
            sums[slots] += _weighted_metrics(rows["y"].to_numpy(), _proba(rows), all_weights[:, columns])
        counts[slots] += len(split_runs)
    totals = sums.reshape(n_boot, n_splits, -1).sum(axis=1)
    return totals / counts.reshape(n_boot, n_splits).sum(axis=1)[:, None]


def _centred_percentiles(replicates: np.ndarray, estimate: float, tail: float) -> tuple[float, float]:
    """Percentile interval after removing the bootstrap's own bias, mean(replicates) - estimate.

    A resample duplicates firms, and a duplicated positive ties with its copy, which lifts average
    precision: with 8 minority firms by about one bootstrap sd, enough to push the percentile interval
    off the estimate. Recall, F1 and AUC show no such shift, so for them this changes next to nothing.
    """
    shift = np.nanmean(replicates) - estimate
    lo, hi = np.nanpercentile(replicates - shift, [tail, 100 - tail])
    return float(lo), float(hi)


def table6(predictions: pd.DataFrame, runs: pd.DataFrame, n_boot: int = 200, seed: int = 0,
           rule: str = "paper", n: int = 10, level: float = 0.95) -> pd.DataFrame:
    """Paper Table 6: per model, mean and sd of each macro metric over the runs `rule` selects from
    `runs` (the output of `run_metrics`; already selected runs select to themselves), with a
    bootstrap `level` interval of the mean.

    The interval holds both sources of spread (`_bootstrap_means`): which splits, and which test
    firms. With one split it is a stratified test-firm bootstrap; with several, a two-level one.
    n_boot = 200 keeps a full table to seconds (metrics are vectorised over replicates); the 2.5%
    and 97.5% percentiles of 200 replicates move by about 0.01 between seeds, enough for a table.
    n_boot = 0 skips the interval (NaN). The percentiles are bias-centred (`_centred_percentiles`).

    Columns: model, kind, then <metric>_mean, <metric>_sd, <metric>_lo, <metric>_hi for recall, f1,
    average_precision and auc; splits, runs (selected), valid_runs, invalid_runs (invalid runs drawn,
    as in `select_runs`). A model without a selected run keeps its row, with NaN metrics.
    """
    _check_predictions(predictions)
    selection = select_runs(runs, rule, n)
    chosen = selection.runs
    tests = _TestSets(predictions, seed)
    rows_of = predictions.groupby(["model", "split", "seed"]).indices
    tail = (1 - level) / 2 * 100
    rows = []
    for report in selection.report.itertuples(index=False):
        model_runs = chosen[(chosen["model"] == report.model) & (chosen["kind"] == report.kind)]
        row: dict = {"model": report.model, "kind": report.kind}
        boot = (_bootstrap_means(model_runs, rows_of, predictions, tests, n_boot, seed)
                if n_boot > 0 and len(model_runs) else None)
        for i, m in enumerate(METRICS):
            values = model_runs[m].to_numpy(dtype=float)
            row[f"{m}_mean"] = values.mean() if len(values) else np.nan
            row[f"{m}_sd"] = values.std(ddof=1) if len(values) > 1 else np.nan
            lo, hi = (_centred_percentiles(boot[:, i], row[f"{m}_mean"], tail) if boot is not None
                      else (np.nan, np.nan))
            row[f"{m}_lo"], row[f"{m}_hi"] = float(lo), float(hi)
        row.update(splits=report.splits, runs=report.runs, valid_runs=report.valid_runs,
                   invalid_runs=report.invalid_drawn)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# 4. Ranks, ablations, shortcut check, paired differences


def table7(table6: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 7: rank of each model's mean on each metric (1 = best, ties share the average rank)
    among non-shortcut models with results, and the average rank; sorted by average rank.
    Shortcut rows and models without a valid run follow, unranked (NaN).

    Columns: model, kind, rank_recall, rank_f1, rank_average_precision, rank_auc, avg_rank.
    """
    ranked = (table6["kind"] != "shortcut") & table6[[f"{m}_mean" for m in METRICS]].notna().all(axis=1)
    out = table6[["model", "kind"]].copy()
    for m in METRICS:
        out[f"rank_{m}"] = table6[f"{m}_mean"].where(ranked).rank(ascending=False, method="average")
    out["avg_rank"] = out[[f"rank_{m}" for m in METRICS]].mean(axis=1, skipna=False)
    out["_ranked"] = ranked
    out = out.sort_values(["_ranked", "avg_rank"], ascending=[False, True], kind="stable")
    return out.drop(columns="_ranked").reset_index(drop=True)


def table8(table6: pd.DataFrame, full: str = "EMDLOT", ablations: Iterable[str] = ("ABL1", "ABL2", "ABL3")) -> pd.DataFrame:
    """Paper Table 8: each ablation's mean (and sd) per metric and its change against the full model,
    100 * (ablation - full) / full, so a drop is negative. The full model comes last, change NaN.
    Ablations absent from `table6` are left out.

    Columns: model, then <metric>_mean, <metric>_sd, <metric>_change_pct per metric.
    """
    by_model = table6.set_index("model")
    if full not in by_model.index:
        raise ValueError(f"table8: full model {full!r} is not in table 6 (models: {list(by_model.index)})")
    reference = by_model.loc[full]
    rows = []
    for name in [a for a in ablations if a in by_model.index] + [full]:
        row = {"model": name}
        for m in METRICS:
            mean = by_model.at[name, f"{m}_mean"]
            row[f"{m}_mean"], row[f"{m}_sd"] = mean, by_model.at[name, f"{m}_sd"]
            row[f"{m}_change_pct"] = np.nan if name == full else 100 * (mean - reference[f"{m}_mean"]) / reference[f"{m}_mean"]
        rows.append(row)
    return pd.DataFrame(rows)


def shortcut_check(table6: pd.DataFrame) -> list[str]:
    """One sentence per shortcut row: does a model that sees only when a sequence ends, or how long it
    is, score like the real models? If so the labels leak through the sequence shape.

    Rule: a shortcut leaks when its macro AUC is clearly above chance, i.e. the lower bound of its
    bootstrap interval exceeds 0.55, or when its mean AUC exceeds 0.55 and comes within 0.05 of the
    best non-shortcut model's mean AUC. Otherwise it is near chance: no leak seen. (0.55 leaves room
    for the sampling noise of a chance AUC of 0.5 on a handful of minority firms.)
    """
    real = table6[table6["kind"] != "shortcut"].dropna(subset=["auc_mean"])
    best = real.loc[real["auc_mean"].idxmax()] if len(real) else None
    sentences = []
    for row in table6[table6["kind"] == "shortcut"].itertuples(index=False):
        if not np.isfinite(row.auc_mean):
            sentences.append(f"{row.model}: no selected run, so the leak check could not be made.")
            continue
        interval = f" [{row.auc_lo:.3f}, {row.auc_hi:.3f}]" if np.isfinite(row.auc_lo) else ""
        against = f", against {best.auc_mean:.3f} for {best.model}" if best is not None else ""
        clearly_above = np.isfinite(row.auc_lo) and row.auc_lo > LEAK_AUC_FLOOR
        near_best = best is not None and row.auc_mean > LEAK_AUC_FLOOR and row.auc_mean >= best.auc_mean - LEAK_NEAR_BEST
        if clearly_above or near_best:
            sentences.append(f"The protocol leaks: {row.model} reaches macro AUC {row.auc_mean:.3f}{interval}{against}; "
                             f"the classes can be told apart from the sequence shape alone.")
        else:
            sentences.append(f"{row.model} is near chance (macro AUC {row.auc_mean:.3f}{interval}{against}): no leak seen.")
    return sentences


def paired_differences(predictions: pd.DataFrame, runs: pd.DataFrame, models: Iterable[str], against: Iterable[str],
                       n_boot: int = 200, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Each of `models` against each of `against` on the same test firms: the difference of their mean metrics over
    `runs` (rows of `run_metrics`, already selected), model minus comparator, with a paired bootstrap interval.

    Two Table 6 intervals that overlap say little about which model is better: both move with the handful of
    minority firms a test set happens to hold. `_bootstrap_means` draws the same splits and the same resampled test
    firms for every model (common random numbers), so the replicates' differences keep what the models share out of
    the interval. Only the splits both models have runs on count (`splits`). An interval above 0 is evidence that the
    model beats the comparator on these firms; one that straddles 0 is not, whatever the means say.

    Columns: model, against, splits, then <metric>_diff, <metric>_lo, <metric>_hi per metric (NaN bounds with
    n_boot = 0).
    """
    _check_predictions(predictions)
    tests = _TestSets(predictions, seed)
    rows_of = predictions.groupby(["model", "split", "seed"]).indices
    tail = (1 - level) / 2 * 100
    replicates: dict[tuple[str, tuple], np.ndarray] = {}

    def boot(model_runs: pd.DataFrame, key: tuple[str, tuple]) -> np.ndarray:
        if key not in replicates:
            replicates[key] = _bootstrap_means(model_runs, rows_of, predictions, tests, n_boot, seed)
        return replicates[key]

    rows = []
    for model in models:
        mine = runs[runs["model"] == model]
        for other in against:
            theirs = runs[runs["model"] == other]
            shared = tuple(sorted(set(mine["split"]) & set(theirs["split"])))
            if not shared:
                continue
            a, b = mine[mine["split"].isin(shared)], theirs[theirs["split"].isin(shared)]
            row: dict = {"model": model, "against": other, "splits": len(shared)}
            diff = boot(a, (model, shared)) - boot(b, (other, shared)) if n_boot > 0 else None
            for i, m in enumerate(METRICS):
                row[f"{m}_diff"] = float(a[m].mean() - b[m].mean())
                lo, hi = _centred_percentiles(diff[:, i], row[f"{m}_diff"], tail) if diff is not None else (np.nan, np.nan)
                row[f"{m}_lo"], row[f"{m}_hi"] = lo, hi
            rows.append(row)
    return pd.DataFrame(rows, columns=["model", "against", "splits",
                                       *[f"{m}_{part}" for m in METRICS for part in ("diff", "lo", "hi")]])


def paired_verdicts(paired: pd.DataFrame) -> list[str]:
    """One sentence per row of `paired_differences`: the metrics whose interval lies above or below 0."""
    sentences = []
    for row in paired.itertuples(index=False):
        if not all(np.isfinite(getattr(row, f"{m}_{part}")) for m in METRICS for part in ("lo", "hi")):
            sentences.append(f"{row.model} against {row.against}: no interval (n_boot 0), so no verdict.")
            continue
        better = [METRIC_LABELS[m] for m in METRICS if getattr(row, f"{m}_lo") > 0]
        worse = [METRIC_LABELS[m] for m in METRICS if getattr(row, f"{m}_hi") < 0]
        if not better and not worse:
            sentences.append(f"{row.model} against {row.against}: no difference these test firms can tell apart.")
            continue
        said = ([f"better on {', '.join(better)}"] if better else []) + ([f"worse on {', '.join(worse)}"] if worse else [])
        sentences.append(f"{row.model} against {row.against}: {' and '.join(said)} (interval clear of 0).")
    return sentences


# ---------------------------------------------------------------------------------------------
# 5. Where the errors fall


def _restrict(predictions: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    if runs is None:
        return predictions
    keys = runs[["model", "split", "seed"]].drop_duplicates()
    return predictions.merge(keys, on=["model", "split", "seed"], how="inner")


def confusion(predictions: pd.DataFrame, runs: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Per model, the 3x3 confusion matrix (rows true, columns predicted at argmax) summed over runs:
    those in `runs` (e.g. `select_runs(...).runs`), or every run in `predictions` when None."""
    _check_predictions(predictions)
    chosen = _restrict(predictions, runs)
    k = len(CLASSES)
    out = {}
    for model, rows in chosen.groupby("model", sort=False):
        cells = rows["y"].to_numpy() * k + _proba(rows).argmax(axis=1)
        counts = np.bincount(cells, minlength=k * k).reshape(k, k)
        out[model] = pd.DataFrame(counts, index=pd.Index(CLASSES, name="true"),
                                  columns=pd.Index(CLASSES, name="predicted"))
    return out


def per_class_recall(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean recall of each class per model over `runs` (rows of `run_metrics`, usually selected):
    macro recall hides which class a model misses. Columns: model, kind, runs,
    recall_Performing, recall_Extended, recall_Defaulted."""
    columns = [f"recall_{c}" for c in CLASSES]
    grouped = runs.groupby(["model", "kind"], sort=False)
    out = grouped[columns].mean()
    out.insert(0, "runs", grouped.size())
    return out.reset_index()


# ---------------------------------------------------------------------------------------------
# 6. Writers


def _is_table6(df: pd.DataFrame) -> bool:
    return {"kind", "auc_mean", "auc_lo", "auc_hi"} <= set(df.columns)


def _number(column: str, value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "–"
        if column.endswith("_pct"):
            return f"{value:+.2f}%"
        if column.startswith("rank_"):
            return f"{value:g}"
        if column == "avg_rank":
            return f"{value:.1f}"
        return f"{value:.4f}"
    return str(value)


def _label(column: str) -> str:
    for m, label in METRIC_LABELS.items():
        if column == m:
            return label
        if column == f"rank_{m}":
            return f"{label} rank"
        if column == f"{m}_change_pct":
            return f"{label} change"
    if column.startswith("recall_") and column[7:] in CLASSES:
        return f"Recall {column[7:]}"
    return {"avg_rank": "Avg. rank", "valid_runs": "valid runs", "invalid_runs": "invalid runs",
            "invalid_drawn": "invalid runs drawn"}.get(column, column)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Strings for display: each <metric>_mean (or signed <metric>_diff) with its _sd, _lo, _hi becomes one cell,
    "mean ± sd [lo, hi]" (parts that are absent or NaN are left out); other numbers 4 decimals."""
    out = {}
    done: set[str] = set()
    for column in df.columns:
        if column in done:
            continue
        if column.endswith(("_mean", "_diff")):
            stem, signed = column[:-5], column.endswith("_diff")
            parts = [p for p in ("_sd", "_lo", "_hi") if f"{stem}{p}" in df.columns]
            done.update(f"{stem}{p}" for p in parts)
            cells = []
            for _, row in df.iterrows():
                mean = row[column]
                text = f"{mean:+.4f}" if signed and np.isfinite(mean) else _number(column, mean)
                if np.isfinite(mean):
                    sd = row.get(f"{stem}_sd", np.nan)
                    lo, hi = row.get(f"{stem}_lo", np.nan), row.get(f"{stem}_hi", np.nan)
                    text += f" ± {sd:.4f}" if np.isfinite(sd) else ""
                    text += f" [{lo:.4f}, {hi:.4f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
                cells.append(text)
            out[_label(stem) + (" difference" if signed else "")] = cells
        else:
            out[_label(column)] = [_number(column, v) for v in df[column].tolist()]
    return pd.DataFrame(out)


def _markdown(shown: pd.DataFrame, title: str, notes: list[str]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [f"## {title}", "", line(shown.columns), line(["---"] * len(shown.columns))]
    lines += [line(row) for row in shown.itertuples(index=False)]
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _png(shown: pd.DataFrame, title: str, notes: list[str], path: Path) -> None:
    """The formatted table drawn as a matplotlib table, title above, notes below (inches fixed per row)."""
    widths = [max([len(str(c)), *(len(str(v)) for v in shown[c])]) for c in shown.columns]
    width_in = max(6.0, 0.075 * sum(widths) + 0.6)
    wrapped = [textwrap.fill(note, width=int(width_in * 15)) for note in notes]
    note_in = 0.16 * sum(w.count("\n") + 1 for w in wrapped) + (0.15 if wrapped else 0.0)
    table_in = 0.25 * (len(shown) + 1)
    title_in = 0.4
    height_in = title_in + table_in + note_in
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.axis("off")
    fig.text(0.01, 1 - 0.1 / height_in, title, fontsize=11, va="top", ha="left")
    cells = shown.to_numpy().tolist() or [[""] * len(shown.columns)]
    table = ax.table(cellText=cells, colLabels=list(shown.columns), colWidths=[w / sum(widths) for w in widths],
                     bbox=(0.01, note_in / height_in, 0.98, table_in / height_in))
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    if wrapped:
        fig.text(0.01, (note_in - 0.1) / height_in, "\n".join(wrapped), fontsize=7, va="top", ha="left")
    fig.savefig(path, dpi=150, bbox_inches="tight")


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str, title: str, notes: Iterable[str] = ()) -> dict[str, Path]:
    """Write `name`.csv (raw numbers), `name`.md (title, Markdown table, notes) and `name`.png (the same
    table drawn with matplotlib's Agg canvas, no pyplot state to leak) into `out_dir`.

    A Table 6 (it has kind and auc_mean/lo/hi) always carries the `shortcut_check` sentences and a line
    for every model without a selected run, so a leaking protocol cannot be published silently.
    Returns {"csv": path, "md": path, "png": path}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(notes)
    if _is_table6(df):
        notes += shortcut_check(df)
        notes += [f"{row.model}: no valid run among those drawn; not compared." for row in df.itertuples(index=False)
                  if "runs" in df.columns and row.runs == 0]
    shown = format_table(df)
    paths = {"csv": out_dir / f"{name}.csv", "md": out_dir / f"{name}.md", "png": out_dir / f"{name}.png"}
    df.to_csv(paths["csv"], index=False)
    paths["md"].write_text(_markdown(shown, title, notes), encoding="utf-8")
    _png(shown, title, notes, paths["png"])
    return paths


def _write_paired(predictions: pd.DataFrame, runs: pd.DataFrame, name: str, label: str, frames: dict, out_dir: Path,
                  n_boot: int, seed: int) -> None:
    """The EMDLOT models' paired differences against every baseline, written when both are present."""
    models = runs.loc[runs["kind"] == "emdlot", "model"].drop_duplicates()
    against = runs.loc[runs["kind"] == "baseline", "model"].drop_duplicates()
    paired = paired_differences(predictions, runs, models, against, n_boot=n_boot, seed=seed)
    if len(paired):
        frames[name] = paired
        write_table(paired, out_dir, name, f"EMDLOT minus each baseline on the same test firms, {label}",
                    notes=["Paired bootstrap 95% interval (the same resampled splits and test firms for both models)."]
                    + paired_verdicts(paired))


def write_results(predictions: pd.DataFrame, out_dir: str | Path, n: int = 10, n_boot: int = 200, seed: int = 0,
                  ensembles: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Every table and figure of the protocol from one prediction table: Table 6 under the paper's rule and
    unselected over the first `n` seeds, Table 7 (ranks) and Table 8 (ablations) of both, Table 6 of the
    EMDLOT models' seed averages (`seed_average`, with `ensembles`: further seed ensembles' rows in its format,
    such as a decision layer's, emdlot.runs.ensemble), the EMDLOT rows of each of the three against every baseline
    (`paired_differences`: paired_paper, paired_unselected, paired_seed_average), per-class recall,
    confusion matrices. Files in `out_dir`; the frames returned by name."""
    from emdlot.evaluation.figures import confusion_figure, per_class_recall_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = run_metrics(predictions)
    runs.to_csv(out_dir / "runs.csv", index=False)
    frames: dict[str, pd.DataFrame] = {}
    for rule, label in (("paper", f"the paper's rule: the first {n} valid runs per model and split"),
                        ("unselected", f"unselected: the first {n} seeds, valid or not")):
        t6 = table6(predictions, runs, n_boot=n_boot, seed=seed, rule=rule, n=n)
        frames[f"table6_{rule}"] = t6
        write_table(t6, out_dir, f"table6_{rule}", f"Table 6: test metrics, {label}")
        frames[f"table7_{rule}"] = t7 = table7(t6)
        write_table(t7, out_dir, f"table7_{rule}", f"Table 7: ranks (1 = best), {label}")
        if (t6["model"] == "EMDLOT").any() and t6["kind"].eq("ablation").any():
            frames[f"table8_{rule}"] = t8 = table8(t6, ablations=tuple(t6.loc[t6["kind"] == "ablation", "model"]))
            write_table(t8, out_dir, f"table8_{rule}", f"Table 8: ablations against the full model, {label}")
        _write_paired(predictions, select_runs(runs, rule, n).runs, f"paired_{rule}", label, frames, out_dir, n_boot, seed)
    averaged = seed_average(predictions, n)
    if ensembles is not None and len(ensembles):
        _check_predictions(ensembles)
        averaged = pd.concat([averaged, ensembles[REQUIRED]], ignore_index=True)
    if len(averaged):
        averaged_runs = run_metrics(averaged)
        frames["table6_seed_average"] = t6 = table6(averaged, averaged_runs, n_boot=n_boot, seed=seed, rule="unselected", n=1)
        write_table(t6, out_dir, "table6_seed_average", f"Table 6 for seed ensembles: the mean probability of the first {n} seeds per split")
        baselines = predictions[predictions["kind"] == "baseline"]
        _write_paired(pd.concat([averaged, baselines], ignore_index=True),
                      pd.concat([averaged_runs, select_runs(runs[runs["kind"] == "baseline"], "unselected", n).runs],
                                ignore_index=True),
                      "paired_seed_average", f"seed ensembles against the baselines' first {n} seeds", frames, out_dir, n_boot, seed)
    selected = select_runs(runs, "paper", n).runs
    frames["per_class_recall"] = recall = per_class_recall(selected)
    recall.to_csv(out_dir / "per_class_recall.csv", index=False)
    per_class_recall_figure(recall, out_dir / "per_class_recall.png")
    matrices = confusion(predictions, selected)
    confusion_figure(matrices, out_dir / "confusion.png")
    pd.concat({m: c for m, c in matrices.items()}, names=["model"]).to_csv(out_dir / "confusion.csv")
    return frames
