"""The paper's evaluation (section 5.2): EMDLOT's final seeds on Ray Train, its ablations, nine baselines and
two shortcut models, on repeated stratified splits; Tables 6 to 8 with intervals; the best EMDLOT registered.

    python flows/train.py --input DIR [--splits K] [--config best_config.yaml] [--embed | --text-features FILE]
        [--data DATASET] [--seeds 10] [--max-seeds 20] [--baselines all|none|NAME,...] [--no-ablations]
        [--max-concurrent K] [--gpu] [--out OUT] [--tracking-uri URI]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python flows/train.py --input /abs/DIR ...

Each split is `emdlot prepare` of the same input folder with its own seed (86, 127, 71, ... from the paper's
seeds); with --embed the text features are made per split (PCA on that split's training firms; the cache
makes the texts themselves be read once). One MLflow parent run (experiment emdlot-train) with a nested run
per model, split and seed; tables, figures and the prediction table as artifacts; the EMDLOT run with the best
validation score (never the test score) is packaged and registered as model `emdlot`.
"""
from __future__ import annotations

import argparse
import sys
import time
from itertools import chain
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402

from emdlot import tracking  # noqa: E402
from emdlot.ray_init import init_ray  # noqa: E402
from emdlot.config import ConfigError, PrepareConfig, load_config  # noqa: E402
from emdlot.data.assemble import META_FILE, assemble, read_meta  # noqa: E402
from emdlot.data.contract import ContractError, load_inputs  # noqa: E402
from emdlot.data.prepare import prepare  # noqa: E402
from emdlot.data.scoring import contract_rows  # noqa: E402
from emdlot.evaluation.explain import InterpretedRun  # noqa: E402
from emdlot.evaluation.explain_figures import build_explanations  # noqa: E402
from emdlot.evaluation.report import load_interpretations, write_report  # noqa: E402
from emdlot.evaluation.metrics import classification_metrics  # noqa: E402
from emdlot.evaluation.tables import write_results  # noqa: E402
from emdlot.runs.log import dataset_lineage, log_outcome  # noqa: E402
from emdlot.runs.package import log_package, write_package  # noqa: E402
from emdlot.runs.protocol import PAPER_SEEDS, Outcome, ProtocolSettings, baseline_runs, emdlot_runs, prediction_rows  # noqa: E402
from emdlot.runs.ray_train import TrainSettings  # noqa: E402
from emdlot.text.config import load_embed_config  # noqa: E402
from emdlot.text.io import find_prospectus, read_prospectus, read_split  # noqa: E402
from emdlot.text.outputs import FEATURES_FILE, save_outputs  # noqa: E402
from emdlot.text.pipeline import run_text_pipeline  # noqa: E402
from emdlot.text.reduce import TEXT_MODEL_FILE  # noqa: E402
from emdlot.training.baselines import BASELINES  # noqa: E402
from emdlot.training.config import load_emdlot_config, with_variant  # noqa: E402

EXPERIMENT = "emdlot-train"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, type=Path, help="input folder in the data contract (`emdlot validate` passes)")
    p.add_argument("--splits", type=int, default=1, help="repeated stratified splits, each prepared with its own seed")
    p.add_argument("--data", type=Path, help="use this prepared dataset (of --input) as the only split")
    p.add_argument("--prepare-config", type=Path, help="PrepareConfig YAML for the splits (seed set per split)")
    p.add_argument("--config", type=Path, help="EMDLOT YAML, e.g. flows/tune.py's best_config.yaml (default: the paper's optimum)")
    p.add_argument("--variant", default="paper", help="training recipe from emdlot/configs/variants.yaml on top of --config")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--embed", action="store_true", help="make text features per split (the embed flow's chain)")
    text.add_argument("--text-features", type=Path, help="text_features.parquet to join as given (single split)")
    p.add_argument("--embed-config", type=Path, help="embed YAML for --embed (default: emdlot/configs/embed.yaml)")
    p.add_argument("--seeds", type=int, default=10, help="seeds per model of the unselected table (the paper's first N)")
    p.add_argument("--max-seeds", type=int, default=20, help="most seeds a model may draw to reach --seeds valid runs")
    p.add_argument("--baselines", default="all", help="all, none, or comma-separated names of: " + ", ".join(BASELINES))
    p.add_argument("--no-ablations", action="store_true", help="skip ABL1-ABL3")
    p.add_argument("--no-register", action="store_true", help="log the best EMDLOT's package without registering it")
    p.add_argument("--max-concurrent", type=int, default=2, help="EMDLOT runs at once (one Ray Train trainer each)")
    p.add_argument("--max-failures", type=int, default=2, help="restarts of a Train worker from its last checkpoint")
    p.add_argument("--gpu", action="store_true", help="one GPU per Train worker")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates per interval")
    p.add_argument("--name", default="table6", help="MLflow run name and output folder name")
    p.add_argument("--out", type=Path, help="output folder (default: EMDLOT_HOME/train/NAME)")
    p.add_argument("--tracking-uri", help="MLflow URI (default: MLFLOW_TRACKING_URI, else EMDLOT_HOME/mlflow.db)")
    p.add_argument("--ray-address", help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace):
    """Everything that can be wrong before any work, as one ConfigError line."""
    if not args.input.is_dir():
        raise ConfigError(f"--input {args.input}: no such folder")
    if args.data and not (args.data / META_FILE).exists():
        raise ConfigError(f"--data {args.data}: not a prepared dataset (no {META_FILE})")
    if args.data and args.splits != 1:
        raise ConfigError("--data is one prepared split; leave --splits at 1 or drop --data")
    if args.text_features and args.splits != 1:
        raise ConfigError("--text-features fit their PCA on one split's training firms; with --splits > 1 use --embed")
    if args.text_features and not args.text_features.exists():
        raise ConfigError(f"--text-features {args.text_features}: file not found")
    if not 1 <= args.splits <= len(PAPER_SEEDS):
        raise ConfigError(f"--splits must be 1..{len(PAPER_SEEDS)}")
    if not 1 <= args.seeds <= args.max_seeds:
        raise ConfigError("--seeds must be at least 1 and at most --max-seeds")
    names = [] if args.baselines == "none" else list(BASELINES) if args.baselines == "all" else [n.strip() for n in args.baselines.split(",")]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"--baselines: unknown {unknown}; choose from {list(BASELINES)}")
    settings = ProtocolSettings(n_valid=args.seeds, max_seeds=args.max_seeds, seeds=args.seeds, baselines=tuple(names),
                                ablations=() if args.no_ablations else ("ABL1", "ABL2", "ABL3"))
    return settings, with_variant(load_emdlot_config(args.config), args.variant), load_config(PrepareConfig, args.prepare_config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings, config, prepare_config = check_args(args)
        uri = tracking.tracking_uri(args.tracking_uri)
        tracking.check_tracking(uri)
    except (ConfigError, tracking.TrackingError, ValueError) as err:
        print(f"train: error: {'; '.join(line.strip() for line in str(err).splitlines() if line.strip())}", file=sys.stderr)
        return 2
    out = (args.out or tracking.emdlot_home() / "train" / args.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"train: outputs in {out}; MLflow {uri} (experiment {EXPERIMENT})", flush=True)
    started = time.perf_counter()
    with tracking.mlflow_run(EXPERIMENT, run_name=args.name, uri=uri, tags={"flow": "train"}) as parent:
        tracking.log_params({k: str(v.resolve()) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"out": str(out)})
        tracking.log_params(config.model_dump(), prefix="emdlot.")
        init_ray(args.ray_address, args.num_cpus)
        train = TrainSettings(storage=out / "ray_train", use_gpu=args.gpu, max_failures=args.max_failures,
                              max_concurrent=args.max_concurrent)
        tables = load_inputs(args.input)
        predictions, best = [], None
        for number, split in enumerate(PAPER_SEEDS[:args.splits], start=1):
            print(f"train: split {number}/{args.splits} (seed {split})", flush=True)
            dataset = args.data.resolve() if args.data else prepare_split(args.input, out / "splits" / f"seed-{split}", prepare_config, split)
            text = (embed_split(args, dataset, out / "text" / f"seed-{split}") if args.embed else
                    args.text_features.resolve() if args.text_features else None)
            parts = assemble(dataset, text, with_train_val=config.train.refit_on_val)
            lineage = dataset_lineage(dataset, text, parts)
            feature_names = read_meta(dataset).feature_names
            macro_columns = [feature_names.index(c) for c in read_meta(dataset).macro_features]
            configs = {"EMDLOT": config} | {name: config.ablation(name) for name in settings.ablations}
            runs = chain(emdlot_runs(configs, parts, split, train, settings, run_name=lambda m, s: f"{parent.info.run_id[:8]}-{m}-split{split}-seed{s}"),
                         baseline_runs(parts, split, macro_columns, settings))
            for outcome in runs:
                log_outcome(outcome, lineage, feature_names, parts["test"])
                progress(outcome, parts["test"])
                if outcome.proba is not None:
                    predictions.append(prediction_rows(outcome, parts["test"]))
                if outcome.model == "EMDLOT" and outcome.result is not None:  # the explanations of the final runs
                    test = parts["test"]
                    (out / "interpretations").mkdir(exist_ok=True)
                    InterpretedRun(outcome.result.test_interpretation, test.firm_id, test.y, test.mask, test.text_mask,
                                   feature_names, outcome.model, split, outcome.seed).save(
                        out / "interpretations" / f"{outcome.model}-split{split}-seed{outcome.seed}.npz")
                if outcome.model == "EMDLOT" and outcome.result is not None and (best is None or outcome.result.val_score > best[0].result.val_score):
                    best = (outcome, dataset, text)
                outcome.result = None if best is None or outcome is not best[0] else outcome.result  # keep one model in memory
        all_predictions = pd.concat(predictions, ignore_index=True)
        all_predictions.to_parquet(out / "predictions.parquet", index=False)
        frames = write_results(all_predictions, out / "tables", n=args.seeds, n_boot=args.n_boot)
        tracking.log_files(*sorted((out / "tables").iterdir()), artifact_path="tables")
        tracking.log_files(out / "predictions.parquet", artifact_path="predictions")
        explain(out, dataset)
        if best is not None:
            register(best, tables, out, args)
        seconds = time.perf_counter() - started
        tracking.log_metrics({"wall_time_s": seconds})
        print_tables(frames, out, seconds)
    return 0


def explain(out: Path, dataset: Path) -> None:
    """Figures 7-9 and Table D.1 from the final EMDLOT runs' own interpretations, and the HTML report."""
    meta = read_meta(dataset)
    runs = load_interpretations(out / "interpretations")
    if not runs:
        print("train: no finished EMDLOT run to explain", flush=True)
        return
    paths = build_explanations(runs, out / "explanations", meta.financial_features, meta.macro_features)
    tracking.log_files(*paths.values(), artifact_path="explanations")
    report = write_report(out, dataset=dataset)
    tracking.log_files(report, artifact_path="report")
    print(f"train: report {report}", flush=True)


def prepare_split(input_dir: Path, dataset: Path, cfg: PrepareConfig, seed: int) -> Path:
    """One split: `prepare` with the split's seed (reused when the folder already holds it)."""
    cfg = cfg.model_copy(update={"seed": seed})
    if (dataset / META_FILE).exists() and read_meta(dataset).config == cfg:
        print(f"train:   reusing {dataset}", flush=True)
        return dataset
    meta = prepare(input_dir, dataset, cfg)
    print(f"train:   prepared {dataset}: {meta.counts}", flush=True)
    return dataset


def embed_split(args: argparse.Namespace, dataset: Path, text_dir: Path) -> Path:
    """Text features of one split: the embed chain, PCA fitted on this split's training firms."""
    cfg = load_embed_config(args.embed_config)
    source = find_prospectus(args.input)
    result = run_text_pipeline(read_prospectus(source), read_split(dataset / "manifest.csv"), cfg, text_dir.parent / "cache")
    save_outputs(result, cfg, text_dir, source)
    print(f"train:   text features ({result.embedder.kind}) -> {text_dir}", flush=True)
    return text_dir / FEATURES_FILE


def progress(outcome: Outcome, test) -> None:
    if outcome.error:
        line = f"FAILED: {outcome.error}"
    else:
        m = classification_metrics(test.y, outcome.proba)
        line = f"recall {m.recall:.3f} F1 {m.f1:.3f} mAP {m.average_precision:.3f} AUC {m.auc:.3f}{'' if outcome.valid else ' (invalid)'}"
    print(f"train:   {outcome.model:<42} seed {outcome.seed:<5} {line} [{outcome.seconds:.0f}s]", flush=True)


def register(best: tuple, tables, out: Path, args: argparse.Namespace) -> None:
    """Package the best-on-validation EMDLOT with its preprocessing, log it as a pyfunc and register it."""
    outcome, dataset, text = best
    package = write_package(out / "package", outcome.result.model, outcome.result.config, dataset,
                            text_model=Path(text).parent / TEXT_MODEL_FILE if text and (Path(text).parent / TEXT_MODEL_FILE).exists() else None)
    manifest = pd.read_csv(dataset / "manifest.csv", dtype={"firm_id": str}, parse_dates=["cutoff"])
    test = manifest[manifest["split"] == "test"]
    rows = contract_rows(tables, test.set_index("firm_id")["cutoff"])
    rows = rows[rows["firm_id"].isin(test["firm_id"])]
    if text:
        features = pd.read_parquet(text)
        rows = rows.merge(features, on="firm_id", how="left")
    example = rows[rows["firm_id"].isin(sorted(test["firm_id"])[:2])].reset_index(drop=True)
    mlflow.set_tags({"best.split": str(outcome.split), "best.seed": str(outcome.seed),
                     "best.val_composite": f"{outcome.result.val_score:.4f}"})
    info = log_package(package, example, registered_name=None if args.no_register else "emdlot")
    print(f"train: best EMDLOT (validation {outcome.result.val_score:.3f}: split {outcome.split}, seed {outcome.seed}) "
          f"-> {info.model_uri}{'' if args.no_register else ' registered as emdlot'}", flush=True)


def print_tables(frames: dict, out: Path, seconds: float) -> None:
    for name in ("table6_paper", "table6_unselected", "table7_paper", "table8_paper"):
        if name in frames:
            print(f"train: {(out / 'tables' / (name + '.md'))}")
            print((out / "tables" / f"{name}.md").read_text(encoding="utf-8"))
    print(f"train: done in {seconds:.0f}s; outputs in {out}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ContractError as err:
        print(f"train: error: {err}", file=sys.stderr)
        sys.exit(2)
