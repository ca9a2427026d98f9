"""Scores and explanations for the firms of an input folder, one output row per firm.

Every firm named anywhere in the folder (panel, prospectus, labels) gets exactly one row: `scored`, with the
three class probabilities, the predicted class, the main cluster and the top drivers, or `rejected` with the
reason (no row in the panel, no row on or before the as-of date, no value in any financial indicator in the
quarters the model reads). The numbers are those of `Scorer.score` (emdlot.runs.package) on the same rows:
the saved transforms are deterministic, so a firm gets the same numbers alone or in any batch of firms.

Top drivers come from the model's own attention (`EMDLOT.interpret`): the share of quarter t and feature f is
the temporal attention on t times the feature attention on f at t (the feature attention sums to 1 over
the features of a quarter, the temporal attention to 1 over the valid quarters, so the shares of a firm sum
to 1). Quarters are counted back from the firm's latest scored quarter, Q-1.

A batch in which no firm is predicted classes that the labelled firms' shares say it should hold several of gets a
warning (`class_warnings`): a decision rule gone wrong (a prior shift dropped by its check, a population unlike the
training one) can name every issuer Performing, and the table alone would not say so.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

import mlflow

from emdlot import tracking
from emdlot.data.assemble import DatasetMeta
from emdlot.data.contract import InputTables, check_inputs
from emdlot.data.scoring import check_rows, contract_rows
from emdlot.data.sequences import keep_last
from emdlot.model.emdlot import Interpretation
from emdlot.runs.package import Scorer, score_frame
from emdlot.schema import CLASSES, PROBABILITY_COLUMNS
from emdlot.scoring.model import ModelLoadError, ResolvedModel, resolve_model
from emdlot.scoring.text import plan_text, text_features_for
from emdlot.text.io import find_prospectus, read_prospectus

SCORED, REJECTED = "scored", "rejected"
NO_PANEL, NONE_AS_OF, NO_VALUE = "no row in the panel", "no row on or before the as-of date", "no usable value"
REASON_CODES = (NO_PANEL, NONE_AS_OF, NO_VALUE)
TOP_DRIVERS = 3
DEFAULT_BATCH_FIRMS = 5000
MIN_EXPECTED = 5.0  # classes no scored firm is predicted are flagged once the labelled firms' shares expect this many
OUTPUT_COLUMNS = ["firm_id", *PROBABILITY_COLUMNS, "predicted_class", "cluster", "has_text", "top_drivers",
                  "quarters", "last_date", "status", "reason"]


@dataclass
class ScoringPlan:
    """Which firms of a folder are scored (and their contract rows) and which are rejected, and why."""

    firms: list[str]  # every firm of the folder, sorted
    rows: pd.DataFrame  # contract rows of the firms to score (as of the date, when given)
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)  # firm -> (reason code, reason)
    as_of: pd.Timestamp | None = None

    @property
    def scorable(self) -> list[str]:
        return [f for f in self.firms if f not in self.rejected]


def input_firms(tables: InputTables) -> list[str]:
    """Every firm the folder names: panel, prospectus and labels (labels are read only for this)."""
    firms = set(tables.panel["firm_id"].dropna())
    for table in (tables.prospectus, tables.labels):
        if table is not None:
            firms |= set(table["firm_id"].dropna())
    return sorted(str(f) for f in firms)


def plan_scoring(tables: InputTables, meta: DatasetMeta, as_of: pd.Timestamp | None = None) -> ScoringPlan:
    """Contract rows of the folder (rows after `as_of` dropped) and the firms that cannot be scored.
    ScoringInputError when the folder lacks an indicator the model was trained on."""
    rows = contract_rows(tables, as_of=as_of)
    check_rows(rows, meta)
    firms = input_firms(tables)
    rejected: dict[str, tuple[str, str]] = {}
    span = tables.panel.groupby("firm_id")["date"].agg(["size", "min", "max"])
    kept = keep_last(rows, meta.config.max_len)
    value_columns = meta.financial_features or meta.feature_names
    has_value = kept[value_columns].notna().any(axis=1).groupby(kept["firm_id"]).any()
    quarters = kept.groupby("firm_id")["date"].agg(["size", "max"])
    for firm in firms:
        if firm not in span.index:
            rejected[firm] = NO_PANEL, NO_PANEL
        elif firm not in quarters.index:
            n, first, last = span.loc[firm]
            rejected[firm] = NONE_AS_OF, (f"no panel row on or before the as-of date {as_of:%Y-%m-%d} "
                                          f"(its {n} rows run from {first:%Y-%m-%d} to {last:%Y-%m-%d})")
        elif not has_value.get(firm, False):
            n, last = quarters.loc[firm]
            rejected[firm] = NO_VALUE, (f"no value in any of the {len(value_columns)} financial indicators "
                                        f"in the {n} quarters the model reads (up to {last:%Y-%m-%d})")
    rows = rows[~rows["firm_id"].isin(set(rejected))].sort_values(["firm_id", "date"], kind="stable")
    return ScoringPlan(firms, rows.reset_index(drop=True), rejected, as_of)


def top_drivers(interp: Interpretation, mask: np.ndarray, feature_names: list[str], k: int = TOP_DRIVERS) -> list[str]:
    """Per firm, the k (feature, quarter) cells with the largest share of the model's attention, as
    'feature@Q-n (12.3%); ...' (Q-1: the latest scored quarter)."""
    n, steps, features = interp.feature_attention.shape
    weight = interp.temporal_weights[:, :, None] * interp.feature_attention * mask[:, :, None]
    total = weight.sum(axis=(1, 2), keepdims=True)
    share = (weight / np.where(total > 0, total, 1.0)).reshape(n, -1)
    order = np.argsort(-share, axis=1, kind="stable")[:, :k]
    out = []
    for i in range(n):
        cells = [c for c in order[i] if share[i, c] > 0]
        out.append("; ".join(f"{feature_names[c % features]}@Q-{steps - c // features} ({100 * share[i, c]:.1f}%)"
                             for c in cells))
    return out


def score_with_drivers(scorer: Scorer, rows: pd.DataFrame, text_features: pd.DataFrame | None = None,
                       k: int = TOP_DRIVERS) -> pd.DataFrame:
    """`Scorer.score` of `rows`, plus each firm's top drivers and the number of quarters the model read."""
    arrays, out = scorer.interpret(rows, text_features)
    frame = score_frame(arrays, out)
    frame["top_drivers"] = top_drivers(out, arrays.mask, scorer.meta.feature_names, k)
    frame["quarters"] = arrays.mask.sum(axis=1).astype(np.int64)
    return frame


def _batches(rows: pd.DataFrame, firms: list[str], size: int):
    """Row slices of consecutive groups of `size` firms (rows sorted by firm_id, date; firms sorted)."""
    ids = rows["firm_id"].to_numpy()
    for start in range(0, len(firms), size):
        chunk = firms[start:start + size]
        lo, hi = np.searchsorted(ids, chunk[0], side="left"), np.searchsorted(ids, chunk[-1], side="right")
        yield rows.iloc[lo:hi]


def score_plan(scorer: Scorer, plan: ScoringPlan, text_features: pd.DataFrame | None = None,
               batch_firms: int = DEFAULT_BATCH_FIRMS, k: int = TOP_DRIVERS) -> pd.DataFrame:
    """The output table: one row per firm of the plan, scored in batches of `batch_firms` firms."""
    if batch_firms < 1:
        raise ValueError("batch_firms must be at least 1")
    scorable = plan.scorable
    parts = [score_with_drivers(scorer, part, text_features, k) for part in _batches(plan.rows, scorable, batch_firms)]
    scored = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=OUTPUT_COLUMNS[:-3])
    scored["last_date"] = scored["firm_id"].map(plan.rows.groupby("firm_id")["date"].max())
    out = pd.DataFrame({"firm_id": plan.firms}).merge(scored, on="firm_id", how="left")
    out["status"] = np.where(out["firm_id"].isin(set(plan.rejected)), REJECTED, SCORED)
    out["reason"] = [plan.rejected[f][1] if f in plan.rejected else "" for f in out["firm_id"]]
    out["cluster"] = out["cluster"].astype("Int64")
    out["quarters"] = out["quarters"].astype("Int64")
    out["has_text"] = out["has_text"].astype("boolean")
    out["predicted_class"] = out["predicted_class"].fillna("")
    out["top_drivers"] = out["top_drivers"].fillna("")
    out["last_date"] = pd.to_datetime(out["last_date"])
    for column in PROBABILITY_COLUMNS:
        out[column] = out[column].astype(np.float64)
    return out[OUTPUT_COLUMNS]


def class_warnings(frame: pd.DataFrame, meta: DatasetMeta, min_expected: float = MIN_EXPECTED) -> list[str]:
    """A line when no scored firm of `frame` is predicted some classes although the model's labelled firms (its
    training, validation and test firms, `meta.counts`) make at least `min_expected` firms of those classes together
    expected here; else none. Together, because a rare class alone is often expected only a few times in a batch."""
    labelled = {c: sum(meta.counts.get(part, {}).get(c, 0) for part in ("train", "val", "test")) for c in CLASSES}
    total = sum(labelled.values())
    predicted = frame.loc[frame["status"] == SCORED, "predicted_class"].value_counts()
    scored = int(predicted.sum())
    missing = [c for c in CLASSES if predicted.get(c, 0) == 0]
    expected = scored * sum(labelled[c] for c in missing) / total if total else 0.0
    if not missing or expected < min_expected:
        return []
    return [f"no scored firm is predicted {' or '.join(missing)}, where the model's labelled firms "
            f"({sum(labelled[c] for c in missing)} of {total}) make about {expected:.0f} of these {scored} expected: check "
            "the model's decision rule before acting on the classes (the probabilities still rank)"]


def outcome_counts(plan: ScoringPlan) -> dict[str, int]:
    """firms, scored, rejected, and rejected per reason code."""
    codes = [code for code, _ in plan.rejected.values()]
    return {"firms": len(plan.firms), "scored": len(plan.firms) - len(codes), "rejected": len(codes),
            **{code: codes.count(code) for code in REASON_CODES if code in codes}}


def describe_counts(counts: dict[str, int]) -> str:
    """'240 firms: 238 scored, 2 rejected (no row in the panel: 1; no usable value: 1)'."""
    reasons = "; ".join(f"{code}: {counts[code]}" for code in REASON_CODES if counts.get(code))
    return (f"{counts['firms']} firms: {counts['scored']} scored, {counts['rejected']} rejected"
            + (f" ({reasons})" if reasons else ""))


class InputError(ValueError):
    """Bad input; each line of the message is printed as one error line."""


@contextmanager
def _scorer(model_uri: str, uri: str) -> Iterator[tuple[ResolvedModel, Scorer]]:
    """The model and its Scorer (a one-line ModelLoadError when its package cannot be loaded); a downloaded
    copy is removed after the block."""
    model = resolve_model(model_uri, uri)
    try:
        try:
            scorer = Scorer(model.folder)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise ModelLoadError(f"model {model_uri}: its package cannot be loaded: {type(err).__name__}: "
                                 f"{(str(err).splitlines() or [''])[0][:300]}") from None
        yield model, scorer
    finally:
        model.cleanup()


def _plan(input_dir: Path, scorer: Scorer, as_of: pd.Timestamp | None) -> tuple[InputTables, ScoringPlan]:
    """The folder's tables checked against the contract (labels not needed; every violation one line of an
    InputError) and planned for this model."""
    tables, violations = check_inputs(input_dir, require_labels=False)
    if violations or tables is None:
        raise InputError("\n".join([f"{len(violations)} data contract violation(s) in {input_dir}:",
                                    *(str(v) for v in violations)]))
    return tables, plan_scoring(tables, scorer.meta, as_of)


def predict_folder(model_uri: str, input_dir: Path, as_of: pd.Timestamp | None, uri: str,
                   batch_firms: int = DEFAULT_BATCH_FIRMS, start_ray=None) -> tuple[pd.DataFrame, dict]:
    """Score every firm of a contract folder (labels not needed) with a registered or packaged model, in the
    active MLflow run: the output table (one row per firm) and the counts (with "class_warnings": each also
    printed and logged as warnings.txt). `start_ray()` is called only when text features must be made."""
    with _scorer(model_uri, uri) as (model, scorer):
        mlflow.set_tags({f"model.{k}": v for k, v in model.details.items()})
        tables, plan = _plan(input_dir, scorer, as_of)
        text = None
        if scorer.text_model is not None and scorer.config.model.use_text and tables.prospectus is not None and plan.scorable:
            text_plan = plan_text(scorer.text_model)  # before any work: a missing BERT is a one-line error
            print(f"predict: text features with the packaged text model ({text_plan.describe()})", flush=True)
            tracking.log_params({"text_extraction": text_plan.config.extract.backend, "text_embedder": text_plan.embedder.kind})
            if start_ray is not None:
                start_ray()
            text = text_features_for(read_prospectus(find_prospectus(input_dir)), plan.scorable, text_plan)
            tracking.log_table(text.firms, "text", "text_status.csv")
        frame = score_plan(scorer, plan, None if text is None else text.features, batch_firms)
        warnings = class_warnings(frame, scorer.meta)
    for line in warnings:
        print(f"predict: warning: {line}", flush=True)
    if warnings:
        mlflow.log_text("\n".join(warnings) + "\n", "warnings.txt")
    return frame, outcome_counts(plan) | {"with_text": int(frame["has_text"].fillna(False).sum()),
                                          "class_warnings": len(warnings)}


def interpret_firm(model_uri: str, input_dir: Path, firm_id: str, uri: str, as_of: pd.Timestamp | None = None,
                   start_ray=None):
    """The model's own explanation of one firm of a contract folder, as an InterpretedRun of that firm (true class
    unknown), for emdlot.evaluation.explain.explain_firm. InputError when the firm cannot be scored."""
    from emdlot.evaluation.explain import InterpretedRun

    with _scorer(model_uri, uri) as (_, scorer):
        tables, plan = _plan(input_dir, scorer, as_of)
        if firm_id not in plan.firms:
            raise InputError(f"firm {firm_id!r} is not in {input_dir}")
        if firm_id in plan.rejected:
            raise InputError(f"firm {firm_id!r} cannot be scored: {plan.rejected[firm_id][1]}")
        text = None
        if scorer.text_model is not None and scorer.config.model.use_text and tables.prospectus is not None:
            if start_ray is not None:
                start_ray()
            text = text_features_for(read_prospectus(find_prospectus(input_dir)), [firm_id], plan_text(scorer.text_model)).features
        arrays, interp = scorer.interpret(plan.rows[plan.rows["firm_id"] == firm_id], text)
    return InterpretedRun(interp, arrays.firm_id, arrays.y, arrays.mask, arrays.text_mask, scorer.meta.feature_names,
                          model="EMDLOT", split=0, seed=0)
