"""The whole evaluation in one call (paper section 5.2): for each split, prepare, text features, every model and
seed of the protocol (emdlot.runs.protocol), each run logged as a nested MLflow run; then the tables, the
explanations and the report, and EMDLOT packaged and registered: the seed ensemble of the split whose best run
has the best validation score, or that run alone (EvaluationSpec.package).

flows/train.py and `emdlot demo` both call `evaluate` inside an open MLflow run, on a Ray they started.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Callable, Literal

import mlflow
import numpy as np
import pandas as pd

from emdlot import tracking
from emdlot.config import PrepareConfig
from emdlot.data.arrays import SequenceArrays
from emdlot.data.assemble import META_FILE, read_meta
from emdlot.data.contract import load_inputs
from emdlot.data.prepare import prepare
from emdlot.data.scoring import contract_rows
from emdlot.evaluation.explain import InterpretedRun
from emdlot.evaluation.explain_figures import build_explanations
from emdlot.evaluation.metrics import classification_metrics
from emdlot.evaluation.report import load_interpretations, write_report
from emdlot.evaluation.tables import write_results
from emdlot.runs.ensemble import Ensemble, unshifted_test_proba
from emdlot.runs.log import dataset_lineage, log_outcome
from emdlot.runs.package import log_package, write_package
from emdlot.runs.protocol import PAPER_SEEDS, Outcome, ProtocolSettings, baseline_runs, emdlot_runs, prediction_rows
from emdlot.runs.ray_train import TrainSettings
from emdlot.runs.single import assemble_for
from emdlot.text.config import load_embed_config
from emdlot.text.io import find_prospectus, read_prospectus, read_split
from emdlot.text.outputs import FEATURES_FILE, save_outputs
from emdlot.text.pipeline import run_text_pipeline
from emdlot.text.reduce import TEXT_MODEL_FILE
from emdlot.training.config import EMDLOTConfig


@dataclass
class EvaluationSpec:
    input_dir: Path  # the contract folder every split is prepared from
    out: Path
    config: EMDLOTConfig
    protocol: ProtocolSettings
    train: TrainSettings
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    splits: int = 1
    data: Path | None = None  # a prepared dataset of input_dir as the only split
    embed: bool = False  # text features per split (PCA on that split's training firms)
    embed_config: Path | None = None
    text_features: Path | None = None  # a finished text feature table (one split only)
    n_boot: int = 200
    register_as: str | None = "emdlot"  # None: log the package without registering it
    # What is packaged, from the split whose best EMDLOT run has the best validation score, among its first
    # protocol.seeds seeds: "seed_average" all of them (scores with their mean probability; the quality
    # benchmark's seed average beat its single runs in every round), "best" that one run.
    package: Literal["seed_average", "best"] = "seed_average"
    run_prefix: str = ""  # makes Ray Train run names unique per evaluation


@dataclass
class Chosen:
    """The EMDLOT runs to package (the best on validation first) and the split they trained on."""

    runs: list[Outcome]
    dataset: Path
    text: Path | None
    test_y: np.ndarray
    ensemble: Ensemble | None = None  # the runs' decision layer (train.ensemble "shift" or "hybrid")
    ensemble_proba: np.ndarray | None = None  # its test probabilities


@dataclass
class Evaluation:
    tables: dict[str, pd.DataFrame]
    report: Path | None
    model_uri: str | None


def evaluate(spec: EvaluationSpec, say: Callable[[str], None] = print) -> Evaluation:
    """Run the protocol on every split, in the active MLflow run; outputs in spec.out."""
    tables = load_inputs(spec.input_dir)
    predictions, ensembles, chosen, dataset = [], [], None, None
    for number, split in enumerate(PAPER_SEEDS[:spec.splits], start=1):
        say(f"split {number}/{spec.splits} (seed {split})")
        dataset = spec.data.resolve() if spec.data else prepare_split(spec, split, say)
        text = embed_split(spec, dataset, say) if spec.embed else spec.text_features.resolve() if spec.text_features else None
        parts = assemble_for(spec.config, dataset, text, balance=True)  # the baselines always read SMOTE'd firms
        lineage = dataset_lineage(dataset, text, parts)
        meta = read_meta(dataset)
        macro_columns = [meta.feature_names.index(c) for c in meta.macro_features]
        configs = {"EMDLOT": spec.config} | {name: spec.config.ablation(name) for name in spec.protocol.ablations}
        test = parts["test"]
        own = assemble_for(spec.config, dataset, text) if spec.config.train.weighs_classes else parts  # firms the loss weighs
        runs = chain(emdlot_runs(configs, own, split, spec.train, spec.protocol,
                                 run_name=lambda m, s: f"{spec.run_prefix}{m}-split{split}-seed{s}"),
                     baseline_runs(parts, split, macro_columns, spec.protocol,
                                   spec.config.train.epoch_folds if spec.config.model.prior_shift else 0))
        finished = []  # this split's EMDLOT runs among its first protocol.seeds seeds
        for outcome in runs:
            log_outcome(outcome, lineage, meta.feature_names, test)
            say(progress(outcome, test))
            if outcome.proba is not None:
                predictions.append(prediction_rows(outcome, test))
            if outcome.model == "EMDLOT" and outcome.result is not None:
                (spec.out / "interpretations").mkdir(parents=True, exist_ok=True)
                InterpretedRun(outcome.result.test_interpretation, test.firm_id, test.y, test.mask, test.text_mask,
                               meta.feature_names, outcome.model, split, outcome.seed).save(
                    spec.out / "interpretations" / f"{outcome.model}-split{split}-seed{outcome.seed}.npz")
                if outcome.seed_rank < spec.protocol.seeds:
                    finished.append(outcome)
                    continue
            outcome.result = None  # no other fitted model is kept in memory
        split_runs = Chosen(finished, dataset, text, test.y)
        if spec.config.train.ensemble != "average" and finished:
            split_runs.ensemble, split_runs.ensemble_proba, rows = fit_ensemble(finished, own, parts, spec.config, split)
            ensembles.append(rows)
            m = classification_metrics(test.y, split_runs.ensemble_proba)
            say(f"  {rows['model'].iloc[0]} of {len(finished)} seeds ({split_runs.ensemble.describe()}): recall {m.recall:.3f} "
                f"F1 {m.f1:.3f} mAP {m.average_precision:.3f} AUC {m.auc:.3f}")
        chosen = _choose(chosen, split_runs, spec.package)
    if not predictions:
        raise RuntimeError("no run finished; each run's error is in its nested MLflow run")
    frame = pd.concat(predictions, ignore_index=True)
    frame.to_parquet(spec.out / "predictions.parquet", index=False)
    ensemble_frame = pd.concat(ensembles, ignore_index=True) if ensembles else None
    frames = write_results(frame, spec.out / "tables", n=spec.protocol.seeds, n_boot=spec.n_boot, ensembles=ensemble_frame)
    tracking.log_files(*sorted((spec.out / "tables").iterdir()), artifact_path="tables")
    tracking.log_files(spec.out / "predictions.parquet", artifact_path="predictions")
    if ensemble_frame is not None:
        ensemble_frame.to_parquet(spec.out / "ensembles.parquet", index=False)
        tracking.log_files(spec.out / "ensembles.parquet", artifact_path="predictions")
    report = explain(spec.out, dataset, say)
    model_uri = register(chosen, tables, spec, say) if chosen is not None else None
    return Evaluation(frames, report, model_uri)


ENSEMBLE_NAMES = {"shift": "EMDLOT (seed average, then shift)", "hybrid": "EMDLOT + XGBoost hybrid (seed average)"}


def fit_ensemble(finished: list[Outcome], parts: dict[str, SequenceArrays], smoted: dict[str, SequenceArrays],
                 config: EMDLOTConfig, split: int) -> tuple[Ensemble, np.ndarray, pd.DataFrame]:
    """A split's seed ensemble with its decision layer (emdlot.runs.ensemble), fitted on the runs' held-out folds of
    `parts` (the firms they trained on) with a hybrid's tree on `smoted` (the same firms SMOTE'd 1:1:1): the layer,
    its test probabilities, and their rows in the seed-average table's format."""
    test = parts["test"]
    ensemble = Ensemble.fit([o.result for o in finished], parts, config, split, tree_parts=smoted)
    proba = ensemble.predict(np.mean([unshifted_test_proba(o.result) for o in finished], axis=0), test)
    rows = prediction_rows(Outcome(ENSEMBLE_NAMES[ensemble.rule], "emdlot", split, 0, proba), test).assign(seed=-1)
    return ensemble, proba, rows


def _choose(chosen: Chosen | None, split: Chosen, package: str) -> Chosen | None:
    """Whichever split's best EMDLOT run has the better validation score (never a test score; a tie keeps
    the earlier split), with that run first: all its runs for a seed average (and their decision layer), that
    run alone for "best" (as fitted, its own shift included). The other split's fitted models are let go."""
    ordered = sorted(split.runs, key=lambda o: -o.result.val_score)  # stable: a tie keeps the seed order
    if not ordered or (chosen is not None and ordered[0].result.val_score <= chosen.runs[0].result.val_score):
        for outcome in ordered:
            outcome.result = None
        return chosen
    for outcome in (chosen.runs if chosen is not None else []) + (ordered[1:] if package == "best" else []):
        outcome.result = None
    if package == "best":
        return Chosen(ordered[:1], split.dataset, split.text, split.test_y)
    return Chosen(ordered, split.dataset, split.text, split.test_y, split.ensemble, split.ensemble_proba)


def prepare_split(spec: EvaluationSpec, seed: int, say: Callable[[str], None]) -> Path:
    """One split: `prepare` with the split's seed (reused when its folder already holds exactly that)."""
    dataset = spec.out / "splits" / f"seed-{seed}"
    cfg = spec.prepare.model_copy(update={"seed": seed})
    if (dataset / META_FILE).exists() and read_meta(dataset).config == cfg:
        say(f"  reusing {dataset}")
        return dataset
    meta = prepare(spec.input_dir, dataset, cfg)
    say(f"  prepared {dataset}: {meta.counts}")
    return dataset


def embed_split(spec: EvaluationSpec, dataset: Path, say: Callable[[str], None]) -> Path:
    """Text features of one split: the embed chain, PCA fitted on this split's training firms; the cache
    shared by the splits means each text is extracted and embedded once."""
    text_dir = spec.out / "text" / dataset.name
    cfg = load_embed_config(spec.embed_config)
    source = find_prospectus(spec.input_dir)
    result = run_text_pipeline(read_prospectus(source), read_split(dataset / "manifest.csv"), cfg, spec.out / "text" / "cache")
    save_outputs(result, cfg, text_dir, source)
    say(f"  text features ({result.embedder.kind}) -> {text_dir}")
    return text_dir / FEATURES_FILE


def progress(outcome: Outcome, test) -> str:
    if outcome.error:
        line = f"FAILED: {outcome.error}"
    else:
        m = classification_metrics(test.y, outcome.proba)
        line = f"recall {m.recall:.3f} F1 {m.f1:.3f} mAP {m.average_precision:.3f} AUC {m.auc:.3f}{'' if outcome.valid else ' (invalid)'}"
    return f"  {outcome.model:<42} seed {outcome.seed:<5} {line} [{outcome.seconds:.0f}s]"


def explain(out: Path, dataset: Path, say: Callable[[str], None]) -> Path | None:
    """Figures 7-9 and Table D.1 from the final EMDLOT runs' own interpretations, and the HTML report."""
    runs = load_interpretations(out / "interpretations")
    if not runs:
        say("no finished EMDLOT run to explain")
        return None
    meta = read_meta(dataset)
    paths = build_explanations(runs, out / "explanations", meta.financial_features, meta.macro_features)
    tracking.log_files(*paths.values(), artifact_path="explanations")
    report = write_report(out, dataset=dataset)
    tracking.log_files(report, artifact_path="report")
    say(f"report {report}")
    return report


def register(chosen: Chosen, tables, spec: EvaluationSpec, say: Callable[[str], None]) -> str:
    """Package the chosen EMDLOT run, or its split's seed ensemble, with its preprocessing; log it as a pyfunc,
    register it. Its test numbers on its own split go on record beside it (no decision reads them)."""
    lead, dataset, text = chosen.runs[0], chosen.dataset, chosen.text
    folds = len(lead.result.fold_models)  # train.predict_with "folds": each run's fold models are its members
    text_model = Path(text).parent / TEXT_MODEL_FILE if text else None
    package = write_package(spec.out / "package", [m for o in chosen.runs for m in o.result.members], lead.result.config, dataset,
                            text_model=text_model if text_model and text_model.exists() else None, ensemble=chosen.ensemble)
    manifest = pd.read_csv(dataset / "manifest.csv", dtype={"firm_id": str}, parse_dates=["cutoff"])
    test = manifest[manifest["split"] == "test"]
    rows = contract_rows(tables, test.set_index("firm_id")["cutoff"])
    rows = rows[rows["firm_id"].isin(sorted(test["firm_id"])[:2])]
    if text:
        rows = rows.merge(pd.read_parquet(text), on="firm_id", how="left")
    seeds = ",".join(str(o.seed) for o in chosen.runs)
    proba = chosen.ensemble_proba if chosen.ensemble else np.mean([o.result.test_proba for o in chosen.runs], axis=0)
    metrics = classification_metrics(chosen.test_y, proba)
    mlflow.set_tags({"best.split": str(lead.split), "best.seed": str(lead.seed),
                     "best.val_composite": f"{lead.result.val_score:.4f}", "package.kind": spec.package,
                     "package.seeds": seeds, "package.ensemble": chosen.ensemble.describe() if chosen.ensemble
                     else "average" if len(chosen.runs) > 1 else "one run, as fitted",
                     "package.fold_models": str(folds)})
    mlflow.log_metrics({f"package_test_{k}": v for k, v in metrics.as_dict().items()})
    info = log_package(package, rows.reset_index(drop=True), registered_name=spec.register_as)
    uri = (f"models:/{spec.register_as}/{info.registered_model_version}" if spec.register_as
           else f"runs:/{mlflow.active_run().info.run_id}/emdlot")
    what = f"the mean of seeds {seeds}" if len(chosen.runs) > 1 else f"seed {lead.seed}"
    what += f" ({folds} fold models each, no refit)" if folds else ""
    what += f", {chosen.ensemble.describe()}" if chosen.ensemble else ""
    say(f"packaged EMDLOT: {what} of split {lead.split} (best validation {lead.result.val_score:.3f}, seed {lead.seed}; "
        f"its test mAP {metrics.average_precision:.3f}, AUC {metrics.auc:.3f}) -> {uri}")
    return uri
