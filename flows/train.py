"""The paper's evaluation (section 5.2): EMDLOT's final seeds on Ray Train, its ablations, nine baselines and
two shortcut models, on repeated stratified splits; Tables 6 to 8 with intervals; the best EMDLOT registered.

    python flows/train.py --input DIR [--splits K] [--config best_config.yaml] [--embed | --text-features FILE]
        [--data DATASET] [--seeds 10] [--max-seeds 20] [--baselines all|none|NAME,...]
        [--ablations all|none|ABL1,...] [--max-concurrent K] [--package seed_average|best] [--gpu] [--out OUT] [--tracking-uri URI]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python flows/train.py --input /abs/DIR ...

Each split is `emdlot prepare` of the same input folder with its own seed (86, 127, 71, ... from the paper's
seeds); with --embed the text features are made per split (PCA on that split's training firms; the cache
makes the texts themselves be read once). One MLflow parent run (experiment emdlot-train) with a nested run
per model, split and seed; tables, figures and the prediction table as artifacts; the split whose best EMDLOT
run has the best validation score (never the test score) gives the model registered as `emdlot`: the mean of
its first --seeds seeds (default), or that run alone (--package best).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")


from emdlot import tracking  # noqa: E402
from emdlot.config import ConfigError, PrepareConfig, check_at_least, load_config  # noqa: E402
from emdlot.data.assemble import META_FILE, AssemblyError  # noqa: E402
from emdlot.data.contract import ContractError, load_inputs  # noqa: E402
from emdlot.data.io import TableError  # noqa: E402
from emdlot.data.split import SplitError  # noqa: E402
from emdlot.ray_init import init_ray  # noqa: E402
from emdlot.runs.evaluate import EvaluationSpec, evaluate  # noqa: E402
from emdlot.runs.protocol import ABLATIONS, PAPER_SEEDS, ProtocolSettings  # noqa: E402
from emdlot.runs.ray_train import TrainSettings  # noqa: E402
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
    p.add_argument("--ablations", default="all", help="all, none, or comma-separated names of: " + ", ".join(ABLATIONS))
    p.add_argument("--no-ablations", dest="ablations", action="store_const", const="none", help="the same as --ablations none")
    p.add_argument("--no-register", action="store_true", help="log the EMDLOT package without registering it")
    p.add_argument("--package", choices=["seed_average", "best"], default="seed_average",
                   help="package the best-on-validation split's first --seeds seeds as one ensemble, or its best run alone")
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
    check_at_least([("--max-concurrent", args.max_concurrent, 1), ("--max-failures", args.max_failures, 0),
                    ("--n-boot", args.n_boot, 10)])
    settings = ProtocolSettings(n_valid=args.seeds, max_seeds=args.max_seeds, seeds=args.seeds,
                                baselines=_chosen("--baselines", args.baselines, BASELINES),
                                ablations=_chosen("--ablations", args.ablations, ABLATIONS))
    return settings, with_variant(load_emdlot_config(args.config), args.variant), load_config(PrepareConfig, args.prepare_config)


def _chosen(option: str, value: str, known) -> tuple[str, ...]:
    """`all`, `none` or comma-separated names of `known`, in the order given."""
    names = [] if value == "none" else list(known) if value == "all" else [n.strip() for n in value.split(",")]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{option}: unknown {unknown}; choose from {list(known)}")
    return tuple(names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        protocol, config, prepare_config = check_args(args)
        uri = tracking.tracking_uri(args.tracking_uri)
        tracking.check_tracking(uri)
    except (ConfigError, tracking.TrackingError, ValueError) as err:
        print(f"train: error: {'; '.join(line.strip() for line in str(err).splitlines() if line.strip())}", file=sys.stderr)
        return 2
    try:
        return run(args, protocol, config, prepare_config, uri)
    except (ContractError, SplitError, AssemblyError, TableError, ConfigError) as err:
        # bad input found once the work started: the MLflow run is already FAILED with this error
        for line in str(err).splitlines():
            if line.strip():
                print(f"train: error: {line.strip()}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, protocol: ProtocolSettings, config, prepare_config: PrepareConfig, uri: str) -> int:
    """The flow's work inside its MLflow run."""
    out = (args.out or tracking.emdlot_home() / "train" / args.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"train: outputs in {out}; MLflow {uri} (experiment {EXPERIMENT})", flush=True)
    started = time.perf_counter()
    with tracking.mlflow_run(EXPERIMENT, run_name=args.name, uri=uri, tags={"flow": "train"}) as parent:
        tracking.log_params({k: str(v.resolve()) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"out": str(out)})
        tracking.log_params(config.model_dump(), prefix="emdlot.")
        load_inputs(args.input)  # the contract, before Ray starts: a bad folder is a FAILED run with its violations
        init_ray(args.ray_address, args.num_cpus)
        spec = EvaluationSpec(
            input_dir=args.input.resolve(), out=out, config=config, protocol=protocol, prepare=prepare_config,
            train=TrainSettings(storage=out / "ray_train", use_gpu=args.gpu, max_failures=args.max_failures,
                                max_concurrent=args.max_concurrent),
            splits=args.splits, data=args.data, embed=args.embed, embed_config=args.embed_config,
            text_features=args.text_features, n_boot=args.n_boot, register_as=None if args.no_register else "emdlot", package=args.package,
            run_prefix=f"{parent.info.run_id[:8]}-")
        result = evaluate(spec, say=lambda line: print(f"train: {line}", flush=True))
        seconds = time.perf_counter() - started
        tracking.log_metrics({"wall_time_s": seconds})
    for name in ("table6_paper", "table6_unselected", "table7_paper", "table8_paper", "paired_seed_average"):
        if name in result.tables:
            print((out / "tables" / f"{name}.md").read_text(encoding="utf-8"))
    print(f"train: done in {seconds:.0f}s; outputs in {out}; report {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
