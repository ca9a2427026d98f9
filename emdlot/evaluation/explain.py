"""Population summaries of the model's own explanations (`EMDLOT.interpret`), as tables.

These are the numbers behind the paper's Figure 7 (modality and chapter attention) and the
feature rankings of Figures 8 and 9, averaged over firms' valid quarters; below `InterpretedRun`,
the same from the final runs' saved interpretations: Figure 7 over runs (`attention_summary`),
Figure 8 (`cluster_heatmaps`), Figure 9 (`macro_attention`), Table D.1 (`cluster_table`) and one
issuer's explanation (`explain_firm`). Drawing is in emdlot.evaluation.explain_figures.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emdlot.model.emdlot import MODALITIES, Interpretation
from emdlot.schema import CLASSES, SECTIONS


def modality_weights(interp: Interpretation, y: np.ndarray) -> pd.DataFrame:
    """Mean modality weights per true class (Figure 7, left)."""
    frame = pd.DataFrame(interp.modality_weights, columns=list(MODALITIES))
    frame["label"] = np.asarray(CLASSES)[y]
    return frame.groupby("label").mean().reindex(list(CLASSES)).reset_index()


def chapter_weights(interp: Interpretation, y: np.ndarray, text_mask: np.ndarray) -> pd.DataFrame:
    """Mean chapter weights per true class over firms with any text (Figure 7, right)."""
    has_text = text_mask.any(axis=1) if text_mask.ndim == 2 else text_mask
    frame = pd.DataFrame(interp.chapter_weights[has_text], columns=list(SECTIONS))
    frame["label"] = np.asarray(CLASSES)[y[has_text]]
    return frame.groupby("label").mean().reindex(list(CLASSES)).reset_index()


def feature_importance(interp: Interpretation, mask: np.ndarray, feature_names: list[str]) -> pd.DataFrame:
    """Each feature's attention averaged over valid quarters and firms, in percent, highest first."""
    valid = mask[:, :, None]
    mean = (interp.feature_attention * valid).sum(axis=(0, 1)) / max(int(mask.sum()), 1)
    frame = pd.DataFrame({"feature": feature_names, "attention_pct": 100 * mean / mean.sum()})
    return frame.sort_values("attention_pct", ascending=False, ignore_index=True)


@dataclass
class InterpretedRun:
    """One final run's explanations of its test firms, with what is needed to read them (issue-level
    figures and reports are built from a list of these): which firms, their labels and masks, the features."""

    interpretation: Interpretation
    firm_id: np.ndarray  # (N,) str
    y: np.ndarray  # (N,) true class index
    mask: np.ndarray  # (N, T) valid quarters
    text_mask: np.ndarray  # (N, S) sections present
    feature_names: list[str]
    model: str = "EMDLOT"
    split: int = 0
    seed: int = 0

    def save(self, path: str | Path) -> None:
        """One compressed npz (no pickle: strings as unicode arrays)."""
        fields = {f"interp_{k}": v for k, v in self.interpretation.__dict__.items()}
        np.savez_compressed(path, **fields, firm_id=self.firm_id.astype(str), y=self.y, mask=self.mask,
                            text_mask=self.text_mask, feature_names=np.asarray(self.feature_names, dtype=str),
                            run=np.asarray([self.model, str(self.split), str(self.seed)], dtype=str))

    @classmethod
    def load(cls, path: str | Path) -> "InterpretedRun":
        with np.load(path, allow_pickle=False) as z:
            interp = Interpretation(**{k.removeprefix("interp_"): z[k] for k in z.files if k.startswith("interp_")})
            model, split, seed = z["run"].tolist()
            return cls(interp, z["firm_id"], z["y"], z["mask"], z["text_mask"], z["feature_names"].tolist(),
                       model, int(split), int(seed))


# ---------------------------------------------------------------------------------------------
# Issue-level explanations (paper 5.3.3 and Appendix D): the numbers behind Figures 7-9, Table D.1
# and one issuer's explanation, all read from `InterpretedRun`s (the model's own interpret, no
# post-hoc method). Sequences are pre-padded, so step T-1 is the latest quarter used and step
# T-k is Q-k; a padded step (mask False) never contributes to any mean or ranking below.

QUARTERS = 8  # the paper's window before the prediction point: Q-8 .. Q-1


def quarter_labels(quarters: int = QUARTERS) -> list[str]:
    """Oldest first, as the figures read left to right: ["Q-8", ..., "Q-1"]."""
    return [f"Q-{k}" for k in range(quarters, 0, -1)]


def feature_groups(dataset: str | Path) -> tuple[list[str], list[str]]:
    """(financial, macro) feature names of a prepared dataset, from its meta.json."""
    path = Path(dataset)
    body = json.loads((path if path.suffix == ".json" else path / "meta.json").read_text(encoding="utf-8"))
    return list(body["financial_features"]), list(body["macro_features"])


def resolve_groups(feature_names: list[str], financial: list[str] | None = None,
                   macro: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Both groups in the run's feature order; missing ones default to "everything else" (no macro if
    neither is given). A name the run does not have is an error, not a silent blank row."""
    macro = list(macro or [])
    financial = list(financial) if financial is not None else [f for f in feature_names if f not in set(macro)]
    unknown = [f for f in financial + macro if f not in feature_names]
    if unknown:
        raise ValueError(f"features not in the interpretation's feature_names: {unknown[:5]}")
    return ([f for f in feature_names if f in set(financial)], [f for f in feature_names if f in set(macro)])


def valid_attention(interp: Interpretation, mask: np.ndarray) -> np.ndarray:
    """Feature attention (N, T, F) with every padded step set to 0, whatever the array held there."""
    return np.where(np.asarray(mask, dtype=bool)[:, :, None], interp.feature_attention, 0.0)


def cell_attention(interp: Interpretation, mask: np.ndarray) -> np.ndarray:
    """How much of each firm's numeric attention each (quarter, feature) cell got: feature attention
    times the temporal weight of its quarter, 0 on padded steps, summing to 1 over a firm's valid cells.
    Feature attention alone says what a quarter's input was made of; the temporal weight says how much
    that quarter counted, so their product ranks cells by what the prediction leaned on."""
    mask = np.asarray(mask, dtype=bool)
    temporal = np.where(mask, interp.temporal_weights, 0.0)
    joint = valid_attention(interp, mask) * temporal[:, :, None]
    total = joint.sum(axis=(1, 2), keepdims=True)
    # Without usable temporal weights (never from EMDLOT.interpret), fall back to quarters weighted alike.
    plain = valid_attention(interp, mask) / np.maximum(mask.sum(axis=1), 1)[:, None, None]
    return np.where(total > 0, joint / np.where(total > 0, total, 1.0), plain)


def _window(values: np.ndarray, mask: np.ndarray, quarters: int) -> tuple[np.ndarray, np.ndarray]:
    """The last `quarters` steps of (N, T, F) values and (N, T) mask; left-padded (masked) if T is shorter."""
    t = values.shape[1]
    if t >= quarters:
        return values[:, t - quarters:], mask[:, t - quarters:]
    pad = quarters - t
    return (np.pad(values, ((0, 0), (pad, 0), (0, 0))), np.pad(mask, ((0, 0), (pad, 0))))


def _window_sums(run: InterpretedRun, rows: np.ndarray, quarters: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature attention summed over the firms `rows` whose step is a valid quarter, at each of the last
    `quarters` steps, and how many firms that is: ((quarters, F), (quarters,))."""
    mask = np.asarray(run.mask, dtype=bool)[rows]
    values, valid = _window(valid_attention(run.interpretation, run.mask)[rows], mask, quarters)
    return values.sum(axis=0), valid.sum(axis=0)


def attention_window(run: InterpretedRun, rows: np.ndarray | None = None, quarters: int = QUARTERS) -> tuple[np.ndarray, np.ndarray]:
    """Mean feature attention over the firms `rows` at each of the last `quarters` steps, counting only
    firms whose step is a valid quarter: ((quarters, F) with NaN where no firm is valid, (quarters,) counts)."""
    sums, counts = _window_sums(run, np.arange(len(run.firm_id)) if rows is None else rows, quarters)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]
    return np.where(counts[:, None] > 0, mean, np.nan), counts


def _window_importance(run: InterpretedRun, rows: np.ndarray, quarters: int) -> np.ndarray:
    """Each feature's mean attention over the valid (firm, quarter) pairs of the window: (F,)."""
    sums, counts = _window_sums(run, rows, quarters)
    return sums.sum(axis=0) / max(int(counts.sum()), 1)


def hard_clusters(run: InterpretedRun) -> np.ndarray:
    """Each firm's cluster: the largest membership (Table D.1's hard assignment)."""
    return np.asarray(run.interpretation.cluster_membership).argmax(axis=1)


def cluster_heatmaps(run: InterpretedRun, features: list[str] | None = None, top: int = 10,
                     quarters: int = QUARTERS) -> pd.DataFrame:
    """Figure 8's data: per cluster (hard assignment), its `top` features among `features` (default: all)
    by mean attention over the window, and their mean attention (percent of the quarter's feature
    attention) at each quarter Q-8..Q-1. Long format: cluster, firms, rank, feature, quarter, firms_valid,
    attention_pct. Empty clusters have no rows."""
    names = list(run.feature_names)
    columns = [names.index(f) for f in (features if features is not None else names)]
    clusters = hard_clusters(run)
    labels = quarter_labels(quarters)
    rows = []
    for k in range(run.interpretation.cluster_membership.shape[1]):
        members = np.flatnonzero(clusters == k)
        if members.size == 0:
            continue
        mean, counts = attention_window(run, members, quarters)
        importance = _window_importance(run, members, quarters)[columns]
        for rank, c in enumerate(np.argsort(-importance, kind="stable")[:top], start=1):
            column = columns[c]
            for q, label in enumerate(labels):
                rows.append({"cluster": k, "firms": int(members.size), "rank": rank, "feature": names[column],
                             "quarter": label, "firms_valid": int(counts[q]), "attention_pct": 100 * float(mean[q, column])})
    return pd.DataFrame(rows, columns=["cluster", "firms", "rank", "feature", "quarter", "firms_valid", "attention_pct"])


def macro_attention(runs: list[InterpretedRun], macro: list[str], quarters: int = QUARTERS) -> pd.DataFrame:
    """Figure 9's data: each macro feature's mean attention (percent) at Q-8..Q-1 over all firms, averaged
    over runs, its window mean and sd over runs, and its rank (1 = most attended). One row per feature."""
    labels = quarter_labels(quarters)
    per_run, window = [], []
    for run in runs:
        columns = [list(run.feature_names).index(f) for f in macro]
        mean, _ = attention_window(run, None, quarters)
        per_run.append(100 * mean[:, columns].T)  # (M, quarters)
        window.append(100 * _window_importance(run, np.arange(len(run.firm_id)), quarters)[columns])
    with warnings.catch_warnings():  # a quarter no firm reaches in any run stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        grid = np.nanmean(np.stack(per_run), axis=0)
    window = np.stack(window)
    frame = pd.DataFrame(grid, columns=labels)
    frame.insert(0, "feature", list(macro))
    frame["mean_pct"] = window.mean(axis=0)
    frame["sd_pct"] = window.std(axis=0, ddof=1) if len(runs) > 1 else np.nan
    frame["runs"] = len(runs)
    frame["rank"] = frame["mean_pct"].rank(ascending=False, method="min").astype(int)
    return frame.sort_values("rank", kind="stable", ignore_index=True)


def _class_groups(y: np.ndarray) -> dict[str, np.ndarray]:
    """"All" firms, then each class's firms (an unknown label, y < 0, counts only in "All")."""
    y = np.asarray(y)
    return {"All": np.ones(len(y), dtype=bool)} | {c: y == i for i, c in enumerate(CLASSES)}


def attention_summary(runs: list[InterpretedRun]) -> pd.DataFrame:
    """Figure 7's data: modality attention (the modalities some run uses) and chapter attention (over firms
    with any prospectus section, in runs with a text modality), averaged per run over all firms and per
    class, then mean and sd over runs. Columns: level, item, group, mean, sd, runs, firms."""
    used = [m for i, m in enumerate(MODALITIES) if any(np.any(r.interpretation.modality_weights[:, i] > 0) for r in runs)]
    values: dict[tuple[str, str, str], list[float]] = {}
    firms: dict[tuple[str, str, str], int] = {}
    for run in runs:
        interp = run.interpretation
        text = np.asarray(run.text_mask, dtype=bool)
        has_text = (text.any(axis=1) if text.ndim == 2 else text) & (interp.chapter_weights.sum(axis=1) > 0)
        for group, rows in _class_groups(run.y).items():
            for item in used:
                if rows.any():
                    key = ("modality", item, group)
                    values.setdefault(key, []).append(float(interp.modality_weights[rows, MODALITIES.index(item)].mean()))
                    firms[key] = firms.get(key, 0) + int(rows.sum())
            chapter_rows = rows & has_text
            for s, section in enumerate(SECTIONS):
                if chapter_rows.any():
                    key = ("chapter", section, group)
                    values.setdefault(key, []).append(float(interp.chapter_weights[chapter_rows, s].mean()))
                    firms[key] = firms.get(key, 0) + int(chapter_rows.sum())
    rows = [{"level": level, "item": item, "group": group, "mean": float(np.mean(v)),
             "sd": float(np.std(v, ddof=1)) if len(v) > 1 else np.nan, "runs": len(v), "firms": firms[(level, item, group)]}
            for (level, item, group), v in values.items()]
    return pd.DataFrame(rows, columns=["level", "item", "group", "mean", "sd", "runs", "firms"])


def representative_run(runs: list[InterpretedRun]) -> int:
    """Index of the run whose feature ranking agrees best (Spearman) with the ranking averaged over runs:
    the paper's "representative trial" for Figure 8 and Table D.1, chosen without looking at labels."""
    if len(runs) < 2:
        return 0
    names = list(runs[0].feature_names)
    importance = np.stack([feature_importance(r.interpretation, r.mask, names).set_index("feature").reindex(names)["attention_pct"].to_numpy()
                           for r in runs])
    ranks = importance.argsort(axis=1).argsort(axis=1)
    centre = importance.mean(axis=0).argsort().argsort()
    return int(np.argmax([np.corrcoef(r, centre)[0, 1] for r in ranks]))


def cluster_table(run: InterpretedRun, features: list[str] | None = None, top: int = 5, distinctive: int = 3,
                  quarters: int = QUARTERS) -> pd.DataFrame:
    """Table D.1: Performing, Extended and Defaulted firms per cluster (hard assignment), and the cluster's
    phenotype: its top features by mean attention over the window, and the features it attends to most
    relative to all firms (lift = cluster mean / all firms' mean). Every cluster of the model has a row."""
    names = list(run.feature_names)
    columns = [names.index(f) for f in (features if features is not None else names)]
    clusters = hard_clusters(run)
    y = np.asarray(run.y)
    everyone = _window_importance(run, np.arange(len(y)), quarters)[columns]
    probabilities = np.asarray(run.interpretation.probabilities)
    rows = []
    for k in range(run.interpretation.cluster_membership.shape[1]):
        members = np.flatnonzero(clusters == k)
        row = {"cluster": k, **{c: int((y[members] == i).sum()) for i, c in enumerate(CLASSES)}, "firms": int(members.size)}
        if members.size:
            importance = _window_importance(run, members, quarters)[columns]
            lift = np.divide(importance, everyone, out=np.zeros_like(importance), where=everyone > 0)
            order = np.argsort(-importance, kind="stable")[:top]
            row["top_features"] = ", ".join(f"{names[columns[c]]} {100 * importance[c]:.1f}%" for c in order)
            row["distinctive_features"] = ", ".join(f"{names[columns[c]]} x{lift[c]:.2f}" for c in np.argsort(-lift, kind="stable")[:distinctive])
            row["mean_p_distress"] = float(1.0 - probabilities[members, 0].mean())
        else:
            row |= {"top_features": "", "distinctive_features": "", "mean_p_distress": np.nan}
        rows.append(row)
    return pd.DataFrame(rows, columns=["cluster", *CLASSES, "firms", "mean_p_distress", "top_features", "distinctive_features"])


# ---------------------------------------------------------------------------------------------
# One issuer


def load_extractions(extractions: str | Path | pd.DataFrame | None) -> pd.DataFrame | None:
    """The embed flow's extractions (firm_id, section, text) from a DataFrame, .parquet or .csv."""
    if extractions is None:
        return None
    if isinstance(extractions, pd.DataFrame):
        frame = extractions
    else:
        path = Path(extractions)
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"firm_id": str})
    missing = [c for c in ("firm_id", "section", "text") if c not in frame.columns]
    if missing:
        raise ValueError(f"extractions lack columns {missing} (expected the embed flow's extractions.parquet)")
    return frame


def key_sentences(extractions: str | Path | pd.DataFrame | None, firm_id: str) -> list[dict[str, str]]:
    """The prospectus key sentences extracted for one firm, Important Notice first."""
    frame = load_extractions(extractions)
    if frame is None or frame.empty:
        return []
    rows = frame[frame["firm_id"].astype(str) == str(firm_id)].drop_duplicates(["section"])
    order = {s: i for i, s in enumerate(SECTIONS)}
    rows = rows.assign(_order=rows["section"].map(order).fillna(len(order))).sort_values("_order")
    return [{"section": str(r.section), "text": str(r.text)} for r in rows.itertuples(index=False)]


def firm_index(run: InterpretedRun, firm_id: str) -> int:
    """Row of `firm_id` in the run; a KeyError naming a few firms it does have otherwise."""
    hits = np.flatnonzero(np.asarray(run.firm_id).astype(str) == str(firm_id))
    if hits.size == 0:
        sample = ", ".join(np.asarray(run.firm_id).astype(str)[:5])
        raise KeyError(f"firm {firm_id!r} is not among the {len(run.firm_id)} firms of this interpretation (e.g. {sample})")
    return int(hits[0])


def firm_cells(run: InterpretedRun, firm_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    """One firm's row, its valid-step mask (T,) and its `cell_attention` (T, F)."""
    i = firm_index(run, firm_id)
    mask = np.asarray(run.mask, dtype=bool)[i]
    one = Interpretation(**{k: v[i:i + 1] for k, v in run.interpretation.__dict__.items()})
    return i, mask, cell_attention(one, mask[None])[0]


def explain_firm(run: InterpretedRun, firm_id: str, extractions: str | Path | pd.DataFrame | None = None,
                 top: int = 10) -> dict:
    """One issuer's prediction and why, as plain JSON-ready values: class probabilities, cluster
    memberships, the features and (feature, quarter) cells that carried most of its numeric attention
    (`cell_attention`), its quarters' temporal weights, modality and chapter weights, and the prospectus
    key sentences the text modality read. A scorer can call it on new firms: wrap their Interpretation
    in an InterpretedRun with y = -1 (unknown), and the true class is reported as None."""
    i, mask, cells = firm_cells(run, firm_id)
    interp = run.interpretation
    steps = mask.shape[0]
    names = list(run.feature_names)
    by_feature = cells.sum(axis=0)
    order = np.argsort(-by_feature, kind="stable")[:top]
    valid_steps = np.flatnonzero(mask)
    label = lambda t: f"Q-{steps - int(t)}"  # noqa: E731 - step index -> quarter before the prediction point
    top_features = []
    for j in order:
        peak = valid_steps[np.argmax(cells[valid_steps, j])]
        top_features.append({"feature": names[j], "share_pct": 100 * float(by_feature[j]),
                             "peak_quarter": label(peak), "peak_share_pct": 100 * float(cells[peak, j])})
    flat = np.argsort(-cells, axis=None, kind="stable")[:top]
    top_cells = [{"feature": names[j], "quarter": label(t), "share_pct": 100 * float(cells[t, j])}
                 for t, j in zip(*np.unravel_index(flat, cells.shape)) if mask[t]]
    text_mask = np.asarray(run.text_mask, dtype=bool)[i]
    chapters = interp.chapter_weights[i]
    has_text = bool(np.any(text_mask)) and float(chapters.sum()) > 0
    y = int(np.asarray(run.y)[i])
    return {
        "firm_id": str(firm_id),
        "run": {"model": run.model, "split": int(run.split), "seed": int(run.seed)},
        "true_class": CLASSES[y] if 0 <= y < len(CLASSES) else None,
        "predicted_class": CLASSES[int(np.argmax(interp.probabilities[i]))],
        "probabilities": {c: float(p) for c, p in zip(CLASSES, interp.probabilities[i])},
        "cluster": int(np.argmax(interp.cluster_membership[i])),
        "cluster_membership": [float(p) for p in interp.cluster_membership[i]],
        "modality_weights": {m: float(w) for m, w in zip(MODALITIES, interp.modality_weights[i])},
        "chapter_weights": {s: float(w) for s, w in zip(SECTIONS, chapters)} if has_text else None,
        "quarters": int(mask.sum()),
        "temporal_weights": {label(t): float(interp.temporal_weights[i, t]) for t in valid_steps},
        "top_features": top_features,
        "top_cells": top_cells,
        "key_sentences": key_sentences(extractions, firm_id),
    }
