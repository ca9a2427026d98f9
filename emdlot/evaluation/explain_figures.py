"""The paper's interpretability figures (5.3.3, Figures 7-9) and Table D.1 from the final runs' saved
interpretations, each as PNG and CSV: `build_explanations` is the one entry point (the train flow calls
it with every EMDLOT run's `InterpretedRun`); `firm_figure` draws one issuer's map for the report.

Figure 7 averages over all runs. Figure 8 and Table D.1 come from one representative run (cluster
numbers mean nothing across runs; `explain.representative_run`), as in the paper. Figure 9 averages
over all runs (macro features do not vary between firms, so the paper shows them for the population).
Drawn on matplotlib's Agg canvas with `Figure` objects (no pyplot), as in emdlot.evaluation.figures.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emdlot.evaluation import explain
from emdlot.evaluation.explain import QUARTERS, InterpretedRun, quarter_labels
from emdlot.evaluation.figures import _save
from emdlot.evaluation.tables import write_table
from emdlot.schema import CLASSES, SECTION_LABELS

ITEM_LABELS = {"numeric": "Numeric", "text": "Text", "summary": "Summary", **SECTION_LABELS}
GROUPS = ("All", *CLASSES)


def _figure(width: float, height: float, layout: str | None = None) -> Figure:
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure7(summary: pd.DataFrame, path: str | Path) -> Path:
    """Grouped bars: modality attention (left) and chapter attention (right), for all firms and per true
    class, mean over runs with sd over runs as error bars (no bar when there is one run)."""
    fig = _figure(11.0, 3.8)
    axes = fig.subplots(1, 2)
    for ax, level, title in zip(axes, ("modality", "chapter"), ("Modality attention", "Chapter attention (firms with a prospectus)")):
        part = summary[summary["level"] == level]
        ax.set_title(title, fontsize=10)
        if part.empty:
            ax.text(0.5, 0.5, "no text modality in these runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        items = list(dict.fromkeys(part["item"]))
        groups = [g for g in GROUPS if g in set(part["group"])]
        width = 0.8 / len(items)
        x = np.arange(len(groups))
        for k, item in enumerate(items):
            rows = part[part["item"] == item].set_index("group").reindex(groups)
            mean, sd = rows["mean"].to_numpy(dtype=float), rows["sd"].to_numpy(dtype=float)
            bars = ax.bar(x + (k - (len(items) - 1) / 2) * width, 100 * mean, width, label=ITEM_LABELS.get(item, item),
                          yerr=np.where(np.isfinite(sd), 100 * sd, 0.0), capsize=3)
            ax.bar_label(bars, labels=[f"{100 * m:.1f}" for m in mean], fontsize=7, padding=2)
        ax.set_xticks(x, groups, fontsize=8)
        ax.set_ylabel("attention (%)")
        ax.set_ylim(0, 118)
        ax.legend(fontsize=8, loc="upper center", ncols=len(items), frameon=False)
    runs = int(summary["runs"].max()) if not summary.empty else 0
    fig.suptitle(f"Figure 7: attention by modality and by prospectus chapter, mean over {runs} run(s); "
                 f"error bars: sd over runs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def figure8(heatmaps: pd.DataFrame, clusters: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """One heatmap per non-empty cluster: its top features (rows, most attended first) by quarter
    Q-8..Q-1 (columns), one colour scale for all clusters; blank where no firm of the cluster has that quarter."""
    ids = list(dict.fromkeys(heatmaps["cluster"]))
    cols = min(4, max(1, len(ids)))
    rows = max(1, math.ceil(len(ids) / cols))
    fig = _figure(3.6 * cols + 1.0, 3.2 * rows + 0.6, layout="constrained")  # room for long feature names
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    vmax = float(np.nanmax(heatmaps["attention_pct"])) if len(heatmaps) and np.isfinite(heatmaps["attention_pct"]).any() else 1.0
    image = None
    counts = clusters.set_index("cluster")
    for ax, k in zip(axes, ids):
        part = heatmaps[heatmaps["cluster"] == k]
        grid = part.pivot(index="feature", columns="quarter", values="attention_pct")
        order = part.drop_duplicates("feature").sort_values("rank")["feature"].tolist()
        quarters = [q for q in quarter_labels(QUARTERS) if q in grid.columns] or list(grid.columns)
        grid = grid.reindex(index=order, columns=quarters)
        image = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), cmap="YlOrRd", vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(quarters)), quarters, fontsize=7)
        ax.set_yticks(range(len(order)), order, fontsize=7)
        mix = "/".join(str(int(counts.loc[k, c])) for c in CLASSES) if k in counts.index else ""
        ax.set_title(f"Cluster {k}: {int(part['firms'].iloc[0])} firms (P/E/D {mix})", fontsize=8)
    for ax in axes[len(ids):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(ids)]), shrink=0.8, label="feature attention (% of the quarter's)")
    fig.suptitle(title or "Figure 8: top financial features by quarter, per cluster", fontsize=10)
    return _save(fig, path)


def figure9(macro: pd.DataFrame, path: str | Path) -> Path:
    """Macro features: attention by quarter Q-8..Q-1 (left, most attended on top) and their ranking by
    mean attention over the window with sd over runs (right)."""
    quarters = [q for q in quarter_labels(QUARTERS) if q in macro.columns]
    height = max(3.5, 0.22 * len(macro) + 1.2)
    fig = _figure(11.0, height)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1.0]})
    grid = macro[quarters].to_numpy(dtype=float)
    image = left.imshow(np.ma.masked_invalid(grid), cmap="YlGnBu", aspect="auto")
    left.set_xticks(range(len(quarters)), quarters, fontsize=7)
    left.set_yticks(range(len(macro)), macro["feature"].tolist(), fontsize=7)
    left.set_title("attention by quarter (%)", fontsize=9)
    fig.colorbar(image, ax=left, shrink=0.7)
    y = np.arange(len(macro))
    sd = macro["sd_pct"].to_numpy(dtype=float)
    right.barh(y, macro["mean_pct"].to_numpy(dtype=float), xerr=np.where(np.isfinite(sd), sd, 0.0), color="#4a7fb0", capsize=2)
    right.set_yticks(y, [f"{r}. {f}" for r, f in zip(macro["rank"], macro["feature"])], fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("mean attention over Q-8..Q-1 (%)", fontsize=8)
    right.set_title("ranking", fontsize=9)
    runs = int(macro["runs"].iloc[0]) if len(macro) else 0
    fig.suptitle(f"Figure 9: macro features' attention, all firms, mean over {runs} run(s)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def firm_figure(run: InterpretedRun, firm_id: str, path: str | Path, top: int = 10, quarters: int = QUARTERS) -> Path:
    """One issuer: how much each quarter counted (temporal weights, top) and the share of the numeric
    attention each of its top features got in each quarter (bottom); padded quarters are blank."""
    i, mask, cells = explain.firm_cells(run, firm_id)
    steps = min(quarters, cells.shape[0])
    window, valid = cells[-steps:], mask[-steps:]
    order = np.argsort(-cells.sum(axis=0), kind="stable")[:top]
    grid = np.where(valid[:, None], 100 * window[:, order], np.nan).T
    labels = quarter_labels(steps)
    fig = _figure(6.0, 1.2 + 0.28 * len(order) + 1.0)
    ax_t, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, max(2.0, 0.28 * len(order))]})
    temporal = np.where(valid, run.interpretation.temporal_weights[i, -steps:], 0.0)
    ax_t.bar(range(steps), 100 * temporal, color="#4a7fb0")
    ax_t.set_ylabel("quarter\nweight %", fontsize=7)
    ax_t.tick_params(labelsize=7)
    ax.imshow(np.ma.masked_invalid(grid), cmap="YlOrRd", aspect="auto", vmin=0.0)
    ax.set_xticks(range(steps), labels, fontsize=7)
    ax.set_yticks(range(len(order)), [run.feature_names[j] for j in order], fontsize=7)
    ax.set_xlabel("quarter before the prediction point (share of the firm's numeric attention, %)", fontsize=7)
    fig.suptitle(f"{firm_id}: top features by quarter", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


SUMMARY_FILE = "explanations.json"


def build_explanations(interpretations: list[InterpretedRun], out_dir: str | Path,
                       financial_features: list[str] | None = None, macro_features: list[str] | None = None,
                       top: int = 10, quarters: int = QUARTERS) -> dict[str, Path]:
    """Figures 7, 8, 9 and Table D.1 (PNG and CSV each; Table D.1 also Markdown) and explanations.json
    (which runs, which one is representative) in `out_dir`. Feature groups: the dataset's meta.json lists
    (explain.feature_groups); without macro features Figure 9 is left out. Returns name -> path, names
    figure7_png, figure7_csv, figure8_png, figure8_csv, figure9_png, figure9_csv, tableD1_png,
    tableD1_csv, tableD1_md, summary_json."""
    if not interpretations:
        raise ValueError("build_explanations: no interpretations (the train flow saves one per final EMDLOT run)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    financial, macro = explain.resolve_groups(list(interpretations[0].feature_names), financial_features, macro_features)
    paths: dict[str, Path] = {}

    summary = explain.attention_summary(interpretations)
    summary.to_csv(paths.setdefault("figure7_csv", out / "figure7_modality_chapter.csv"), index=False)
    paths["figure7_png"] = figure7(summary, out / "figure7_modality_chapter.png")

    chosen = explain.representative_run(interpretations)
    run = interpretations[chosen]
    which = f"{run.model} split {run.split} seed {run.seed}"
    clusters = explain.cluster_table(run, financial or None, quarters=quarters)
    heatmaps = explain.cluster_heatmaps(run, financial or None, top=top, quarters=quarters)
    heatmaps.to_csv(paths.setdefault("figure8_csv", out / "figure8_cluster_features.csv"), index=False)
    paths["figure8_png"] = figure8(heatmaps, clusters, out / "figure8_cluster_features.png",
                                   f"Figure 8: top {top} financial features by quarter per cluster ({which})")

    if macro:
        table = explain.macro_attention(interpretations, macro, quarters)
        table.to_csv(paths.setdefault("figure9_csv", out / "figure9_macro_features.csv"), index=False)
        paths["figure9_png"] = figure9(table, out / "figure9_macro_features.png")

    notes = [f"Hard assignment: each test firm in the cluster of its largest membership; run {which} "
             f"(the run whose feature ranking is closest to the mean over {len(interpretations)} run(s)).",
             f"top_features: mean feature attention over the valid quarters Q-{quarters}..Q-1 of the cluster's firms; "
             "distinctive_features: that mean over the mean of all firms (x lift).",
             "mean_p_distress: mean predicted probability of Extended or Defaulted."]
    written = write_table(clusters, out, "tableD1_clusters", f"Table D.1: firms per cluster and their phenotype ({which})", notes)
    paths |= {"tableD1_csv": written["csv"], "tableD1_md": written["md"], "tableD1_png": written["png"]}

    paths["summary_json"] = out / SUMMARY_FILE
    body = {"runs": run_keys(interpretations),
            "representative": {"model": run.model, "split": int(run.split), "seed": int(run.seed), "index": chosen},
            "financial_features": len(financial), "macro_features": len(macro), "quarters": quarters, "top": top,
            "files": {name: path.name for name, path in paths.items()}}
    paths["summary_json"].write_text(json.dumps(body, indent=2), encoding="utf-8")
    return paths


def run_keys(interpretations: list[InterpretedRun]) -> list[dict]:
    """Which runs a set of explanations was built from (explanations.json "runs")."""
    return [{"model": r.model, "split": int(r.split), "seed": int(r.seed), "firms": int(len(r.firm_id))} for r in interpretations]


def saved_explanations(interpretations: list[InterpretedRun], out_dir: str | Path) -> dict[str, Path] | None:
    """The paths `build_explanations` returned, if it already wrote them in `out_dir` from these very runs
    (explanations.json names the runs and the files); None otherwise."""
    summary = Path(out_dir) / SUMMARY_FILE
    if not summary.exists():
        return None
    body = json.loads(summary.read_text(encoding="utf-8"))
    if body.get("runs") != run_keys(interpretations):
        return None
    paths = {name: Path(out_dir) / file for name, file in body.get("files", {}).items()}
    return paths if paths and all(path.exists() for path in paths.values()) else None
