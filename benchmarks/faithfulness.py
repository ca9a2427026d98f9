"""Is EMDLOT's attention faithful? Measured on synthetic issuers whose distress drivers are planted and known.

The synthetic generator (emdlot/synth/generate.py) writes a `drivers` table: for each distressed firm the
mechanisms it carries (liquidity squeeze, leverage build-up, profit collapse), the indicators each moves
and the quarters over which it ramps up. Two tests:

(a) Driver recovery. For each distressed test firm with a numeric mechanism inside its kept history, rank the
    features over its driver window (the quarters its mechanisms span) and ask whether the top 5 include a
    planted driver. Methods: EMDLOT's attention (feature attention x temporal weight, as `emdlot explain`
    ranks them; and feature attention alone), permutation on EMDLOT (the window's cells of one feature
    replaced by draws from that feature's values in other test firms; mean change of the probabilities),
    SHAP on the XGBoost baseline (|TreeSHAP| summed over classes and over a feature's seven sequence
    summaries; summaries span the whole sequence, so not restricted to the window) and permutation on
    XGBoost (as for EMDLOT). Chance: 5 features drawn at random. Also precision@5 (drivers among the 5).
(b) Deletion. For every test firm, set its k most-attended (quarter, feature) cells to 0 (the training mean
    after standardisation) and compare the change of the predicted class's probability with setting k random
    valid cells to 0, and with random features in the same quarters as the attended cells (so that attention
    is not credited for merely pointing at recent quarters). At k beyond a firm's valid cells every mask is
    everything: all three must agree.

Fitting goes through the project's run layer (emdlot.runs.train_and_score, model emdlot/configs/
faithfulness_model.yaml) and baseline layer (TREE_BASELINES["XGBoost"] on summary_with_text). The default set
has more distressed firms than the paper's 1.9% so that a split has enough of them to count hits.
Writes benchmarks/results/faithfulness.json, faithfulness_top5.png and faithfulness_deletion.png.

Run: .venv/bin/python benchmarks/faithfulness.py [--firms 1000] [--distressed-rate 0.15] [--seeds 86 127 71] [--small]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import tempfile
import time
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
TOP = 5
SAME = 1e-6  # probability changes closer than this are equal
DEFAULT = dict(firms=1000, distressed_rate=0.15, seeds=(86, 127, 71), split_seed=86, deletion_k=(1, 2, 5, 10, 20, 50, 10_000),
               random_draws=10, permutation_draws=5, bootstrap=1000, model={})
# What tests/test_explain.py runs: a few hundred firms, one seed, a short fit (about half a minute on 2 cores).
SMALL = dict(firms=240, distressed_rate=0.2, seeds=(86,), split_seed=86, deletion_k=(1, 5, 20, 10_000),
             random_draws=4, permutation_draws=2, bootstrap=200, model={"max_epochs": 6})


@dataclasses.dataclass
class DistressedFirm:
    row: int  # index in the test arrays
    firm_id: str
    label: str
    drivers: list[int]  # feature columns the firm's mechanisms move
    window: np.ndarray  # (T,) bool: valid steps inside the mechanisms' quarters


def step_quarters(last_kept: pd.Timestamp, delta_t: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Quarter ordinal of each valid step (-1 on padding), walking back from the last kept report by the
    months between reports (pre-padded: step T-1 is the last kept quarter)."""
    out = np.full(len(mask), -1, dtype=np.int64)
    quarter = pd.Period(last_kept, freq="Q").ordinal
    for t in range(len(mask) - 1, -1, -1):
        if mask[t]:
            out[t] = quarter
            quarter -= int(round(float(delta_t[t]) / 3.0))
    return out


def distressed_firms(test, manifest: pd.DataFrame, drivers: pd.DataFrame, feature_names: list[str]) -> list[DistressedFirm]:
    """Extended / Defaulted test firms with a numeric mechanism that overlaps their kept quarters."""
    from emdlot.schema import CLASSES

    last_kept = pd.to_datetime(manifest.set_index("firm_id")["last_kept"])
    numeric = drivers[drivers["start_date"].notna() & drivers["label"].isin(CLASSES[1:])]
    out = []
    for row, firm in enumerate(test.firm_id.astype(str)):
        mine = numeric[numeric["firm_id"] == firm]
        if test.y[row] == 0 or mine.empty:
            continue
        quarters = step_quarters(last_kept[firm], test.delta_t[row], test.mask[row])
        window = np.zeros(len(quarters), dtype=bool)
        for m in mine.itertuples(index=False):
            lo, hi = pd.Period(m.start_date, freq="Q").ordinal, pd.Period(m.end_date, freq="Q").ordinal
            window |= (quarters >= lo) & (quarters <= hi) & test.mask[row]
        features = sorted({feature_names.index(f) for m in mine.itertuples(index=False) for f in m.features.split(";") if f in feature_names})
        if window.any() and features:
            out.append(DistressedFirm(row, firm, CLASSES[int(test.y[row])], features, window))
    return out


def _with_x(arrays, rows: np.ndarray, X: np.ndarray):
    """The firms `rows` (repeats allowed) of `arrays` with their X replaced."""
    part = arrays.subset(rows)
    return dataclasses.replace(part, X=X.astype(np.float32))


def permutation_scores(predict, test, firms: list[DistressedFirm], draws: int, rng: np.random.Generator) -> np.ndarray:
    """(firms, F): mean total-variation change of a firm's probabilities when the window cells of one feature
    are replaced by values of that feature drawn from all test firms' valid quarters."""
    rows = np.repeat([f.row for f in firms], draws)
    window = np.repeat(np.stack([f.window for f in firms]), draws, axis=0)  # (R, T)
    base = predict(test.subset(rows))
    n_features = test.X.shape[2]
    out = np.zeros((len(firms), n_features))
    for j in range(n_features):
        pool = test.X[:, :, j][test.mask]
        X = test.X[rows].copy()
        X[:, :, j] = np.where(window, rng.choice(pool, size=window.shape), X[:, :, j])
        change = 0.5 * np.abs(predict(_with_x(test, rows, X)) - base).sum(axis=1)
        out[:, j] = change.reshape(len(firms), draws).mean(axis=1)
    return out


def tree_shap(model, X: np.ndarray) -> tuple[np.ndarray, str]:
    """(N, P, C) TreeSHAP values of an XGBoost classifier: the `shap` package if installed, else XGBoost's own
    pred_contribs (the same TreeSHAP algorithm; identical numbers, checked on this project's data)."""
    try:
        with warnings.catch_warnings():  # shap's colour maps use matplotlib calls that are being deprecated
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            import shap

        values = np.asarray(shap.TreeExplainer(model).shap_values(X))
        return (values if values.ndim == 3 else values[:, :, None]), f"shap {shap.__version__} TreeExplainer"
    except ImportError:
        import xgboost

        contribs = model.get_booster().predict(xgboost.DMatrix(X), pred_contribs=True)
        return np.moveaxis(contribs[..., :-1], 1, 2) if contribs.ndim == 3 else contribs[:, :-1, None], "xgboost pred_contribs (TreeSHAP)"


def deletion(predict, test, cells: np.ndarray, ks: tuple[int, ...], draws: int, rng: np.random.Generator) -> list[dict]:
    """Per k: change of each firm's predicted-class probability when its k most-attended valid cells are set
    to 0, against two controls (mean over `draws`): k random valid cells, and as many random features in the
    same quarters as the attended cells (which separates "the right features" from "the right quarters")."""
    n, steps, features = test.X.shape
    valid = np.repeat(test.mask[:, :, None], features, axis=2).reshape(n, -1)
    base = predict(test)
    predicted = base.argmax(axis=1)
    order_attention = np.argsort(np.where(valid, -cells.reshape(n, -1), np.inf), axis=1, kind="stable")
    rows = np.repeat(np.arange(n), draws)
    order_random = np.argsort(np.where(valid[rows], rng.random((len(rows), steps * features)), np.inf), axis=1)
    rank_in_quarter = rng.random((len(rows), steps, features)).argsort(axis=2).argsort(axis=2)

    def first(order: np.ndarray, which: np.ndarray, k: int) -> np.ndarray:
        chosen = np.zeros(order.shape, dtype=bool)
        np.put_along_axis(chosen, order[:, :k], True, axis=1)
        return chosen & valid[which]

    def change(chosen: np.ndarray, which: np.ndarray) -> np.ndarray:
        X = np.where(chosen.reshape(-1, steps, features), 0.0, test.X[which])
        proba = predict(_with_x(test, which, X))
        return np.abs(proba[np.arange(len(which)), predicted[which]] - base[which, predicted[which]])

    out = []
    for k in ks:
        top = first(order_attention, np.arange(n), k)
        per_quarter = top.reshape(n, steps, features).sum(axis=2)[rows]  # attended cells in each quarter
        same_quarters = (rank_in_quarter < per_quarter[:, :, None]).reshape(len(rows), -1)
        row = {"k": int(k), "attention": change(top, np.arange(n))}
        row["random"] = change(first(order_random, rows, k), rows).reshape(n, draws).mean(axis=1)
        row["same_quarters"] = change(same_quarters, rows).reshape(n, draws).mean(axis=1)
        out.append(_compare(row, n))
    return out


def _compare(row: dict, n: int) -> dict:
    """Means and standard errors of the per-firm changes; how often attention beats each control, with a
    one-sided Wilcoxon signed-rank p-value over the firms where they differ."""
    from scipy.stats import wilcoxon

    attended = row["attention"]
    out = {"k": row["k"]}
    for key in ("attention", "random", "same_quarters"):
        out[key], out[f"{key}_se"] = float(row[key].mean()), float(row[key].std(ddof=1) / math.sqrt(n))
    for key in ("random", "same_quarters"):
        diff = attended - row[key]
        differs = np.abs(diff) > SAME  # batches of other sizes differ in the last float digits
        out[f"share_attention_larger_than_{key}"] = float((diff > SAME).mean())
        out[f"wilcoxon_p_attention_greater_than_{key}"] = (
            float(wilcoxon(attended[differs], row[key][differs], alternative="greater").pvalue) if differs.sum() >= 2 else 1.0)
    return out


def chance_hit(n_features: int, n_drivers: int, top: int = TOP) -> float:
    """P(a random `top` of `n_features` features includes one of `n_drivers`)."""
    return 1.0 - math.comb(n_features - n_drivers, top) / math.comb(n_features, top)


def _summarise(hits: np.ndarray, precision: np.ndarray, rng: np.random.Generator, bootstrap: int) -> dict:
    """Share of firms (hits averaged over seeds per firm first) with a bootstrap 95% interval over firms."""
    per_firm = hits.mean(axis=0)
    draws = rng.integers(0, len(per_firm), (bootstrap, len(per_firm)))
    boot = per_firm[draws].mean(axis=1)
    return {"share": float(per_firm.mean()), "ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "precision_at_5": float(precision.mean()), "firms": int(len(per_firm))}


def _top(scores: np.ndarray, top: int = TOP) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :top]


def run(work: str | Path, firms: int = 1000, distressed_rate: float = 0.15, seeds: tuple[int, ...] = (86, 127, 71),
        split_seed: int = 86, deletion_k: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 10_000), random_draws: int = 10,
        permutation_draws: int = 5, bootstrap: int = 1000, model: dict | None = None,
        out_dir: str | Path = RESULTS) -> dict:
    """The whole benchmark in `work` (synthetic inputs and prepared dataset); results and figures in `out_dir`."""
    import torch

    from emdlot.config import PrepareConfig, SynthConfig
    from emdlot.data.assemble import assemble, read_meta
    from emdlot.evaluation.explain import cell_attention
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.model.batch import to_batch
    from emdlot.runs import train_and_score
    from emdlot.synth.prepared import prepared_dataset
    from emdlot.training.baselines import TREE_BASELINES
    from emdlot.training.config import load_emdlot_config
    from emdlot.training.loop import predict_proba

    started = time.perf_counter()
    torch.set_num_threads(1)
    work, out_dir = Path(work), Path(out_dir)
    dataset = prepared_dataset(work, SynthConfig(firms=firms, seed=split_seed, distressed_rate=distressed_rate), PrepareConfig(seed=split_seed))
    parts, meta = assemble(dataset), read_meta(dataset)
    test, names = parts["test"], meta.feature_names
    manifest = pd.read_csv(dataset / "manifest.csv", dtype={"firm_id": str})
    drivers = pd.read_parquet(work / "in" / "drivers.parquet")
    targets = distressed_firms(test, manifest, drivers, names)
    if not targets:
        raise RuntimeError("no distressed test firm with a numeric driver in its kept quarters: use more firms or a higher --distressed-rate")
    config = load_emdlot_config(files("emdlot") / "configs" / "faithfulness_model.yaml").with_params(dict(model or {}))
    factory, view = TREE_BASELINES["XGBoost"]
    n_features = len(names)
    rng = np.random.default_rng(split_seed)
    methods = ("EMDLOT attention", "EMDLOT feature attention", "EMDLOT permutation", "XGBoost SHAP", "XGBoost permutation")
    hits = {m: np.zeros((len(seeds), len(targets))) for m in methods}
    chosen = {m: [] for m in methods}  # every firm's top 5, over seeds: what each method points at instead
    precision = {m: np.zeros((len(seeds), len(targets))) for m in methods}
    quality: dict[str, list] = {"EMDLOT": [], "XGBoost": []}
    deletions, shap_backend = [], ""
    rows = np.array([t.row for t in targets])
    windows = np.stack([t.window for t in targets])  # (D, T)

    for s, seed in enumerate(seeds):
        result = train_and_score(parts, config, seed, score_test=True)
        interp = result.test_interpretation
        emdlot_predict = lambda arrays: predict_proba(result.model, to_batch(arrays), 512)  # noqa: E731
        quality["EMDLOT"].append({"seed": seed, **result.test_metrics.as_dict(), "epochs": len(result.history.epochs)})
        cells = cell_attention(interp, test.mask)
        alpha = np.where(test.mask[:, :, None], interp.feature_attention, 0.0)
        xgb = factory(seed).fit(view(parts["train"]), parts["train"].y)
        xgb_predict = lambda arrays: xgb.predict_proba(view(arrays))  # noqa: E731
        quality["XGBoost"].append({"seed": seed, **classification_metrics(test.y, xgb_predict(test)).as_dict()})
        shap_values, shap_backend = tree_shap(xgb, view(test.subset(rows)))
        summary_width = 7 * n_features  # trend_summary: 7 statistics per feature, feature-major within each
        per_feature_shap = np.abs(shap_values[:, :summary_width, :]).sum(axis=2).reshape(len(rows), 7, n_features).sum(axis=1)
        scores = {
            "EMDLOT attention": (cells[rows] * windows[:, :, None]).sum(axis=1),
            "EMDLOT feature attention": (alpha[rows] * windows[:, :, None]).sum(axis=1),
            "EMDLOT permutation": permutation_scores(emdlot_predict, test, targets, permutation_draws, rng),
            "XGBoost SHAP": per_feature_shap,
            "XGBoost permutation": permutation_scores(xgb_predict, test, targets, permutation_draws, rng),
        }
        for method, score in scores.items():
            top = _top(score)
            chosen[method] += [names[j] for j in top.ravel()]
            found = np.array([len(set(t.drivers) & set(top[i])) for i, t in enumerate(targets)])
            hits[method][s] = found > 0
            precision[method][s] = found / TOP
        deletions.append(deletion(emdlot_predict, test, cells, tuple(deletion_k), random_draws, rng))

    macro = set(meta.macro_features)
    top5 = {m: _summarise(hits[m], precision[m], rng, bootstrap) | {
        "most_chosen": pd.Series(chosen[m]).value_counts().head(8).to_dict(),
        "macro_share_of_top5": float(np.mean([f in macro for f in chosen[m]]))} for m in methods}
    top5["chance"] = {"share": float(np.mean([chance_hit(n_features, len(t.drivers)) for t in targets])),
                      "precision_at_5": float(np.mean([len(t.drivers) / n_features for t in targets])), "firms": len(targets)}
    by_k = [{key: float(np.mean([d[i][key] for d in deletions])) if key != "k" else deletions[0][i]["k"] for key in deletions[0][i]}
            for i in range(len(deletion_k))]
    result_body = {
        "setup": {"firms": firms, "distressed_rate": distressed_rate, "split_seed": split_seed, "seeds": list(seeds),
                  "features": n_features, "test_firms": int(len(test)), "distressed_test_firms_evaluated": len(targets),
                  "top": TOP, "random_draws": random_draws, "permutation_draws": permutation_draws, "bootstrap": bootstrap,
                  "emdlot_config": "emdlot/configs/faithfulness_model.yaml" + (f" with {model}" if model else ""),
                  "shap": shap_backend, "machine": f"{platform.machine()}, {platform.python_version()}"},
        "quality": quality,
        "top5": top5,
        "per_firm": [{"firm_id": t.firm_id, "label": t.label, "drivers": [names[j] for j in t.drivers],
                      "window_quarters": int(t.window.sum()), **{m: float(hits[m][:, i].mean()) for m in methods}}
                     for i, t in enumerate(targets)],
        "deletion": {"firms": int(len(test)), "draws": random_draws, "by_k": by_k,
                     "note": "mean |change| of the predicted class's probability after setting cells to 0; controls: k random "
                             "valid cells, and random features in the attended cells' quarters; k >= a firm's valid cells masks all"},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    result_body["figures"] = [str(top5_figure(top5, methods, out_dir / "faithfulness_top5.png").name),
                              str(deletion_figure(by_k, out_dir / "faithfulness_deletion.png").name)]
    result_body["wall_time_s"] = round(time.perf_counter() - started, 1)
    (out_dir / "faithfulness.json").write_text(json.dumps(result_body, indent=2), encoding="utf-8")
    return result_body


def top5_figure(top5: dict, methods: tuple[str, ...], path: Path) -> Path:
    """Share of distressed firms whose top 5 includes a planted driver, and precision@5, per method, with chance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    x = np.arange(len(methods))
    share = np.array([top5[m]["share"] for m in methods])
    lo, hi = np.array([top5[m]["ci"][0] for m in methods]), np.array([top5[m]["ci"][1] for m in methods])
    colours = ["#c0392b" if m.startswith("EMDLOT") else "#2e86c1" for m in methods]
    left.bar(x, share, color=colours, yerr=[share - lo, hi - share], capsize=3)
    left.axhline(top5["chance"]["share"], color="k", ls="--", lw=1, label="chance (5 random features)")
    left.set_ylim(0, 1.05)
    left.set_ylabel("share of distressed test firms")
    left.set_title(f"top 5 include a planted driver ({top5['chance']['firms']} firms, 95% CI)", fontsize=9)
    right.bar(x, [top5[m]["precision_at_5"] for m in methods], color=colours)
    right.axhline(top5["chance"]["precision_at_5"], color="k", ls="--", lw=1, label="chance")
    right.set_ylim(0, 1.05)
    right.set_title("planted drivers among the top 5 (precision@5)", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(x, [m.replace(" ", "\n", 1) for m in methods], fontsize=7)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def deletion_figure(by_k: list[dict], path: Path) -> Path:
    """Change of the predicted class's probability after masking k cells: most attended vs random."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(by_k))
    for key, colour, label in (("attention", "#c0392b", "most-attended cells"), ("same_quarters", "#e67e22", "random features, same quarters"),
                               ("random", "#7f8c8d", "random valid cells")):
        mean = np.array([row[key] for row in by_k])
        se = np.array([row[f"{key}_se"] for row in by_k])
        ax.plot(x, mean, marker="o", color=colour, label=label)
        ax.fill_between(x, mean - 1.96 * se, mean + 1.96 * se, color=colour, alpha=0.15)
    ax.set_yscale("symlog", linthresh=1e-4)  # masking everything dwarfs masking a few cells
    ax.set_xticks(x, [str(row["k"]) if row["k"] < 10_000 else "all" for row in by_k])
    ax.set_xlabel("cells (quarter x feature) set to 0")
    ax.set_ylabel("|change| of predicted-class probability")
    ax.set_title("Deletion test: EMDLOT, all test firms (95% CI)", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--firms", type=int, default=DEFAULT["firms"])
    p.add_argument("--distressed-rate", type=float, default=DEFAULT["distressed_rate"])
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT["seeds"]))
    p.add_argument("--small", action="store_true", help="the test's small run (overrides the size options)")
    p.add_argument("--work", type=Path, help="keep the synthetic data here (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    settings = dict(SMALL) if args.small else DEFAULT | {"firms": args.firms, "distressed_rate": args.distressed_rate, "seeds": tuple(args.seeds)}
    with tempfile.TemporaryDirectory() as tmp:
        body = run(args.work or Path(tmp), out_dir=args.out, **settings)
    print(json.dumps({"setup": body["setup"], "quality": body["quality"], "top5": body["top5"], "deletion": body["deletion"]["by_k"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
