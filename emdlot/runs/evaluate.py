"""The whole evaluation in one call (paper section 5.2): for each split, prepare, text features, every model and
seed of the protocol (emdlot.runs.protocol), each run logged as a nested MLflow run; then the tables, the
explanations and the report, and the best-on-validation EMDLOT packaged and registered.

flows/train.py and `emdlot demo` both call `evaluate` inside an open MLflow run, on a Ray they started.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Callable

import mlflow
import pandas as pd

from emdlot import tracking
from emdlot.config import PrepareConfig
from emdlot.data.assemble import META_FILE, read_meta
from emdlot.data.contract import load_inputs
from emdlot.data.prepare import prepare
from emdlot.data.scoring import contract_rows
from emdlot.evaluation.explain import InterpretedRun
from emdlot.evaluation.explain_figures import build_explanations
from emdlot.evaluation.metrics import classification_metrics
from emdlot.evaluation.report import load_interpretations, write_report
from emdlot.evaluation.tables import write_results
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
    run_prefix: str = ""  # makes Ray Train run names unique per evaluation


@dataclass
class Evaluation:
    tables: dict[str, pd.DataFrame]
    report: Path | None
    model_uri: str | None


def evaluate(spec: EvaluationSpec, say: Callable[[str], None] = print) -> Evaluation:
    """Run the protocol on every split, in the active MLflow run; outputs in spec.out."""
    tables = load_inputs(spec.input_dir)
    predictions, best, dataset = [], None, None
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
        own = parts if spec.config.train.balance == "smote" else assemble_for(spec.config, dataset, text)  # real firms, weighted
        runs = chain(emdlot_runs(configs, own, split, spec.train, spec.protocol,
                                 run_name=lambda m, s: f"{spec.run_prefix}{m}-split{split}-seed{s}"),
                     baseline_runs(parts, split, macro_columns, spec.protocol))
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
                if best is None or outcome.result.val_score > best[0].result.val_score:
                    best = (outcome, dataset, text)
            if best is None or outcome is not best[0]:
                outcome.result = None  # one fitted model in memory at a time
    if not predictions:
        raise RuntimeError("no run finished; each run's error is in its nested MLflow run")
    frame = pd.concat(predictions, ignore_index=True)
    frame.to_parquet(spec.out / "predictions.parquet", index=False)
    frames = write_results(frame, spec.out / "tables", n=spec.protocol.seeds, n_boot=spec.n_boot)
    tracking.log_files(*sorted((spec.out / "tables").iterdir()), artifact_path="tables")
    tracking.log_files(spec.out / "predictions.parquet", artifact_path="predictions")
    report = explain(spec.out, dataset, say)
    model_uri = register(best, tables, spec, say) if best is not None else None
    return Evaluation(frames, report, model_uri)


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


def register(best: tuple, tables, spec: EvaluationSpec, say: Callable[[str], None]) -> str:
    """Package the best-on-validation EMDLOT with its preprocessing, log it as a pyfunc, register it."""
    outcome, dataset, text = best
    text_model = Path(text).parent / TEXT_MODEL_FILE if text else None
    package = write_package(spec.out / "package", outcome.result.model, outcome.result.config, dataset,
                            text_model=text_model if text_model and text_model.exists() else None)
    manifest = pd.read_csv(dataset / "manifest.csv", dtype={"firm_id": str}, parse_dates=["cutoff"])
    test = manifest[manifest["split"] == "test"]
    rows = contract_rows(tables, test.set_index("firm_id")["cutoff"])
    rows = rows[rows["firm_id"].isin(sorted(test["firm_id"])[:2])]
    if text:
        rows = rows.merge(pd.read_parquet(text), on="firm_id", how="left")
    mlflow.set_tags({"best.split": str(outcome.split), "best.seed": str(outcome.seed),
                     "best.val_composite": f"{outcome.result.val_score:.4f}"})
    info = log_package(package, rows.reset_index(drop=True), registered_name=spec.register_as)
    uri = (f"models:/{spec.register_as}/{info.registered_model_version}" if spec.register_as
           else f"runs:/{mlflow.active_run().info.run_id}/emdlot")
    say(f"best EMDLOT (validation {outcome.result.val_score:.3f}: split {outcome.split}, seed {outcome.seed}) -> {uri}")
    return uri
