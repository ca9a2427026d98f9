"""The `emdlot` command: synth, validate, prepare, import, demo, ui, explain, report.

User errors (bad data, bad settings) print a clear message and exit 2; no traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from emdlot.config import ConfigError, PrepareConfig, SynthConfig, describe_validation, load_config
from emdlot.data.assemble import AssemblyError
from emdlot.data.contract import ContractError, Violation, check_inputs
from emdlot.data.io import TableError, check_table_path, write_table
from emdlot.data.split import SplitError

USER_ERRORS = (ConfigError, ContractError, TableError, SplitError, AssemblyError, FileNotFoundError)
EXIT_INVALID = 2


def _print_violations(violations: list[Violation], shown: int, report: str | None) -> None:
    for v in violations[:shown]:
        print(f"  {v}", file=sys.stderr)
    if len(violations) > shown:
        print(f"  ... and {len(violations) - shown} more (write them all with --report FILE)", file=sys.stderr)
    if report:
        import pandas as pd

        write_table(pd.DataFrame([v.__dict__ for v in violations], columns=["file", "row", "column", "message"]), report)


def cmd_synth(args: argparse.Namespace) -> int:
    from emdlot.synth import generate, write_dataset

    cfg = load_config(SynthConfig, args.config, firms=args.firms, seed=args.seed)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a file; name a folder for the tables")
    data = generate(cfg)
    paths = write_dataset(data, args.out, args.format)
    counts = data.labels["label"].value_counts().to_dict()
    print(f"wrote {len(data.labels)} firms ({counts}), {len(data.panel)} firm-quarters, "
          f"{len(data.drivers)} planted drivers to {Path(args.out)} ({', '.join(p.name for p in paths.values())})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    if args.report:
        check_table_path(args.report, "--report")
    tables, violations = check_inputs(args.dir)
    if violations:
        print(f"{args.dir}: {len(violations)} data contract violation(s)", file=sys.stderr)
        _print_violations(violations, args.max_shown, args.report)
        return EXIT_INVALID
    print(f"{args.dir}: valid ({len(tables.labels)} firms, {len(tables.panel)} panel rows, "
          f"{len(tables.financial_features)} financial + {len(tables.macro_features)} macro indicators, "
          f"prospectus: {'yes' if tables.prospectus is not None else 'no'})")
    for note in tables.notes:
        print(f"  note: {note}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from emdlot.data.prepare import prepare

    cfg = load_config(PrepareConfig, args.config, seed=args.seed, val_fraction=args.val_fraction,
                      performing_cutoff=args.performing_cutoff)
    started = time.perf_counter()
    meta = prepare(args.dir, args.out, cfg, text_features=args.text_features)
    print(f"prepared {args.out} in {time.perf_counter() - started:.1f}s: {len(meta.feature_names)} features; firms per split {meta.counts}")
    rejected = sum(meta.counts.get("rejected", {}).values())
    if rejected:
        print(f"  note: {rejected} firm(s) rejected (no history before their window); reasons in {Path(args.out) / 'manifest.csv'}")
    if meta.text is not None:
        print(f"  text features: {meta.text['firms_matched']} of the dataset's firms matched a row of {meta.text['path']} "
              f"({meta.text['firms_in_file']} firms in the file); the others have no text")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from emdlot import importers

    check_table_path(args.out, "--out")
    sheets = args.sheet or None
    if args.kind != "wind-macro" and sheets and len(sheets) > 1:
        raise ConfigError(f"import {args.kind}: give one --sheet (the report's sheet), not {len(sheets)}")
    if args.kind == "wind-macro":
        frame = importers.read_wind_macro(args.file, importers.MacroImportConfig(aggregation=args.aggregation, sheets=sheets))
    elif args.kind == "wind-defaults":
        keywords = ["展期", "延期"] if args.count_yanqi else ["展期"]
        frame = importers.read_wind_defaults(args.file, importers.WindDefaultsConfig(
            extension=importers.ExtensionRule(keywords=keywords), sheet=sheets[0] if sheets else None))
    else:
        frame = importers.read_ifind_first_defaults(args.file, importers.IfindFirstDefaultsConfig(sheet=sheets[0] if sheets else None))
    write_table(frame, args.out)
    detail = frame["label"].value_counts().to_dict() if "label" in frame else f"{frame.shape[1] - 1} series, {frame['date'].min():%Y-%m} to {frame['date'].max():%Y-%m}"
    print(f"wrote {len(frame)} rows to {args.out} ({detail})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from emdlot.demo import run_demo

    return run_demo(Path(args.out), firms=args.firms, seed=args.seed, quick=args.quick)


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on a demo's (or any folder's) sqlite store, on this machine's 127.0.0.1 only."""
    import subprocess

    db = Path(args.out).resolve() / "mlflow.db"
    if not db.exists():
        raise FileNotFoundError(f"{db}: no MLflow store here; run `emdlot demo --out {args.out}` first or give --out")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}",
               "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {db}); Ctrl-C stops it. Runs, metrics and artifacts "
          "are under the 'Model training' view.", flush=True)
    try:
        return subprocess.run(command).returncode
    except KeyboardInterrupt:
        return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from emdlot.explain_cli import run_explain

    return run_explain(args.interpretation, args.firm, args.extractions, args.top, args.json, data=args.data,
                       tracking_uri=args.tracking_uri)


def cmd_report(args: argparse.Namespace) -> int:
    from emdlot.explain_cli import run_report

    return run_report(args.train_out, args.out, args.data, args.extractions, args.max_flagged)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emdlot", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a paper-shaped synthetic input folder")
    p.add_argument("--out", required=True)
    p.add_argument("--firms", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    p.add_argument("--config", help="YAML with SynthConfig settings")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("validate", help="check an input folder against the data contract")
    p.add_argument("dir")
    p.add_argument("--report", help="write every violation to this .csv or .parquet")
    p.add_argument("--max-shown", type=int, default=100)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("prepare", help="build sequences, split, transforms and training arrays")
    p.add_argument("dir")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float, help="share of training firms held out for validation (0: none)")
    p.add_argument("--text-features", help="text_features.parquet from flows/embed.py")
    p.add_argument("--performing-cutoff", choices=["matched", "paper"],
                   help="matched (default): Performing firms end at a seeded pseudo-event with the same window; "
                        "paper: full history (leaks the class through when a sequence ends)")
    p.add_argument("--config", help="YAML with PrepareConfig settings")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("import", help="convert a vendor export into a contract table")
    p.add_argument("kind", choices=("wind-macro", "wind-defaults", "ifind-defaults"))
    p.add_argument("file")
    p.add_argument("--out", required=True, help="output .parquet or .csv")
    p.add_argument("--aggregation", choices=("last", "mean"), default="last", help="monthly -> quarterly (wind-macro)")
    p.add_argument("--count-yanqi", action="store_true", help="also treat 延期 as an extension (wind-defaults)")
    p.add_argument("--sheet", action="append", help="the workbook's sheet to read (default: wind-macro reads every "
                                                    "sheet, the default reports the first with the expected header); "
                                                    "wind-macro: repeat for several")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("demo", help="run the whole chain on synthetic data, locally")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--firms", type=int, help="issuers to generate (default 1994; --quick: 600)")
    p.add_argument("--seed", type=int, default=86)
    p.add_argument("--quick", action="store_true", help="small data, few trials and seeds: under 5 minutes")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ui", help="open the MLflow UI on a demo's store (127.0.0.1 only)")
    p.add_argument("--out", default="demo_out", help="the folder holding mlflow.db (the demo's --out)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("explain", help="one issuer's prediction and why, from a saved interpretation")
    p.add_argument("interpretation", help="RUN.npz written by flows/train.py (OUT/interpretations/), or a MODEL "
                                          "(models:/emdlot/N, runs:/ID/emdlot, a package folder) with DATA")
    p.add_argument("data", nargs="?", help="with a MODEL: the contract folder holding the firm")
    p.add_argument("--tracking-uri", help="MLflow URI for a models:/ or runs:/ MODEL")
    p.add_argument("--firm", required=True, help="the issuer's firm_id")
    p.add_argument("--extractions", help="extractions.parquet of flows/embed.py: the prospectus key sentences")
    p.add_argument("--top", type=int, default=10, help="features and cells to list")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("report", help="one self-contained HTML report from a flows/train.py output folder")
    p.add_argument("train_out", help="the train flow's output folder (tables/, interpretations/)")
    p.add_argument("--out", help="report file (default TRAIN_OUT/report.html)")
    p.add_argument("--data", help="prepared dataset (or its meta.json) naming financial and macro features")
    p.add_argument("--extractions", help="extractions.parquet (default: TRAIN_OUT/text/*/extractions.parquet)")
    p.add_argument("--max-flagged", type=int, default=10, help="issuers with a page of their own")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from emdlot.importers import ImportFormatError

    try:
        return args.func(args)
    except (*USER_ERRORS, ImportFormatError) as err:
        print(f"emdlot {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except ValidationError as err:
        print(f"emdlot {args.command}: error: {describe_validation(err)}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
