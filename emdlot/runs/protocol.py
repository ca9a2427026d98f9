"""The paper's evaluation protocol (section 5.2, DESIGN.md section 5) on one split: every model, every seed,
the same SMOTE'd training firms, scored once on the same test firms.

Seeds: the paper's ten, then further seeds (1010, 1011, ...) for a model whose runs are not all valid, until
`n_valid` valid runs exist or `max_seeds` were drawn: the paper's rule, which selects on the test set, so the
tables also show the ten paper seeds unselected. EMDLOT and its ablations fit on Ray Train
(emdlot.runs.ray_train); the baselines and the shortcut models fit as Ray tasks. Each run becomes an `Outcome`,
and the outcomes become the long prediction table that emdlot.evaluation.tables reads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import ray

from emdlot.data.arrays import SequenceArrays
from emdlot.runs.ray_train import TrainSettings, fit_many
from emdlot.runs.single import RunResult, score_run
from emdlot.schema import CLASSES, PROBABILITY_COLUMNS
from emdlot.training.baselines import BASELINES, fit_predict, shortcut_baselines
from emdlot.training.config import EMDLOTConfig

PAPER_SEEDS = (86, 127, 71, 61, 84, 140, 88, 46, 131, 53)
ABLATIONS = ("ABL1", "ABL2", "ABL3")  # no text, no soft clustering, no attention (Table 8)


def seed_of(rank: int) -> int:
    """The seed drawn in place `rank`: the paper's ten first, then 1010, 1011, ..."""
    return PAPER_SEEDS[rank] if rank < len(PAPER_SEEDS) else 1000 + rank


@dataclass
class Outcome:
    """One run of one model on one split: its test probabilities, or the error that stopped it."""

    model: str
    kind: str  # emdlot | ablation | baseline | shortcut
    split: int
    seed_rank: int
    proba: np.ndarray | None = None
    error: str | None = None
    seconds: float = 0.0
    result: RunResult | None = None  # EMDLOT-family runs: the fitted model, history and interpretation

    @property
    def seed(self) -> int:
        return seed_of(self.seed_rank)

    @property
    def valid(self) -> bool:
        """The paper's rule: the run predicts all three classes (argmax) on the test firms."""
        return self.proba is not None and np.unique(self.proba.argmax(axis=1)).size == len(CLASSES)


@dataclass(frozen=True)
class ProtocolSettings:
    n_valid: int = 10  # valid runs per model the selected table needs
    max_seeds: int = 20  # at most this many seeds per model and split (the paper's ten included)
    seeds: int = 10  # the unselected table's seeds (the first `seeds` of PAPER_SEEDS)
    baselines: tuple[str, ...] = tuple(BASELINES)
    ablations: tuple[str, ...] = ABLATIONS
    shortcuts: bool = True


def ranks_to_draw(outcomes: list[Outcome], settings: ProtocolSettings) -> list[int]:
    """The next seed ranks of one model: enough to replace its invalid runs, within `max_seeds`."""
    drawn = max((o.seed_rank for o in outcomes), default=-1) + 1
    if drawn == 0:
        return list(range(min(settings.seeds, settings.max_seeds)))
    missing = settings.n_valid - sum(o.valid for o in outcomes)
    return list(range(drawn, min(drawn + max(missing, 0), settings.max_seeds)))


def draw_until_valid(models: list[str], run: Callable[[list[tuple[str, int]]], Iterator[Outcome]],
                     settings: ProtocolSettings) -> Iterator[Outcome]:
    """Run every model's first seeds, then further seeds for models short of valid runs, round by round."""
    done: dict[str, list[Outcome]] = {m: [] for m in models}
    while jobs := [(m, r) for m in models for r in ranks_to_draw(done[m], settings)]:
        for outcome in run(jobs):
            done[outcome.model].append(outcome)
            yield outcome


def emdlot_runs(configs: dict[str, EMDLOTConfig], parts: dict[str, SequenceArrays], split: int,
                train: TrainSettings, settings: ProtocolSettings, run_name: Callable[[str, int], str]) -> Iterator[Outcome]:
    """EMDLOT and its ablations (`configs`: model name -> configuration) on Ray Train, scored on test."""
    def run(jobs: list[tuple[str, int]]) -> Iterator[Outcome]:
        named = {run_name(m, seed_of(r)): (m, r) for m, r in jobs}
        specs = [(name, configs[m], seed_of(r)) for name, (m, r) in named.items()]
        for name, seed, fitted in fit_many(specs, parts, train):
            model, rank = named[name]
            outcome = Outcome(model, "emdlot" if model == "EMDLOT" else "ablation", split, rank)
            if isinstance(fitted, Exception):
                outcome.error = _one_line(fitted)
            else:
                outcome.result = score_run(fitted, parts, configs[model], seed, score_test=True)
                outcome.proba = outcome.result.test_proba
                outcome.seconds = fitted.history.wall_time_s
            yield outcome

    return draw_until_valid(list(configs), run, settings)


@ray.remote(num_cpus=1)
def _fit_baseline(name: str, seed: int, parts: dict, macro_columns: list[int]) -> tuple[np.ndarray, float]:
    """One baseline or shortcut run in a Ray task: test probabilities and seconds."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    factory, view = (BASELINES | shortcut_baselines(macro_columns))[name]
    with threadpool_limits(limits=1):
        proba = fit_predict(factory, view, parts["train"], parts["test"], seed, parts["folds"])
    return proba, time.perf_counter() - started


def baseline_runs(parts: dict[str, SequenceArrays], split: int, macro_columns: list[int],
                  settings: ProtocolSettings, shift_folds: int = 0) -> Iterator[Outcome]:
    """The comparison models and the two shortcut models, as Ray tasks on the same arrays. They learn from
    the firms EMDLOT's final model learns from: parts["train_val"] where the configuration refits on the
    training + validation firms (none of them stops early, so none needs the validation firms held out),
    else parts["train"]. Same firms, same SMOTE: a refit recipe gains no firms its comparison lacks. With
    `shift_folds` (EMDLOT's prior shift is on), each also gets a prior shift fitted on the same
    cross-validation folds (parts["cv1_train"], ...) that EMDLOT's shift is fitted on."""
    kinds = {name: "baseline" for name in settings.baselines}
    if settings.shortcuts:
        kinds |= {name: "shortcut" for name in shortcut_baselines(macro_columns)}
    folds = [(parts[f"cv{i}_train"], parts[f"cv{i}_val"]) for i in range(1, shift_folds + 1)]
    parts_ref = ray.put({"train": parts.get("train_val", parts["train"]), "test": parts["test"], "folds": folds})

    def run(jobs: list[tuple[str, int]]) -> Iterator[Outcome]:
        pending = {_fit_baseline.remote(m, seed_of(r), parts_ref, macro_columns): (m, r) for m, r in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            model, rank = pending.pop(ready[0])
            outcome = Outcome(model, kinds[model], split, rank)
            try:
                outcome.proba, outcome.seconds = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001  (a failing model is recorded; the others go on)
                outcome.error = _one_line(err)
            yield outcome

    return draw_until_valid(list(kinds), run, settings)


def prediction_rows(outcome: Outcome, test: SequenceArrays) -> pd.DataFrame:
    """The long-format rows of one finished run (emdlot.evaluation.tables' input)."""
    frame = pd.DataFrame(outcome.proba, columns=PROBABILITY_COLUMNS)
    frame.insert(0, "model", outcome.model)
    frame.insert(1, "kind", outcome.kind)
    frame.insert(2, "split", outcome.split)
    frame.insert(3, "seed", outcome.seed)
    frame.insert(4, "seed_rank", outcome.seed_rank)
    frame.insert(5, "firm_id", test.firm_id.astype(str))
    frame.insert(6, "y", test.y.astype(np.int64))
    return frame


def _one_line(err: BaseException) -> str:
    """The error's last line (Ray wraps worker errors in long tracebacks)."""
    lines = [line.strip() for line in (str(err) or type(err).__name__).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:500]
