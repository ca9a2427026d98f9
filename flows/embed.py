"""Prospectus text features: key-information extraction, BERT embedding, PCA per section.

    python flows/embed.py --data DIR --out OUT [--manifest PATH | --train-firms FILE]
        [--config YAML] [--backend extractive|transformers|vllm] [--embedder PATH]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python flows/embed.py --data /abs/DIR --out /abs/OUT ...

Writes OUT/text_features.parquet (firm_id + 80 PCA features), extractions.parquet,
text_status.parquet (every firm, with the reason when it has no features),
text_pca.skops (the fitted text model for prediction: skops, no pickle; read it with
emdlot.text.reduce.load_text_model) and embed_summary.json; logs the run to MLflow.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


from emdlot.ray_init import init_ray
from emdlot.text.config import load_embed_config
from emdlot.data.io import TableError
from emdlot.text.io import check_coverage, find_prospectus, read_firm_list, read_prospectus, read_split
from emdlot.text.outputs import describe, embed_folder

log = logging.getLogger("emdlot.embed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="folder with prospectus.parquet or prospectus.csv")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--manifest", type=Path, help="manifest.csv of `emdlot prepare` (default: DATA/manifest.csv)")
    split.add_argument("--train-firms", type=Path, help="file with one training firm_id per line")
    p.add_argument("--config", type=Path, help="YAML settings (default: emdlot/configs/embed.yaml)")
    p.add_argument("--backend", choices=["extractive", "transformers", "vllm"], help="extraction backend")
    p.add_argument("--llm", help="causal LM (hub id or local path) for the transformers/vllm backends")
    p.add_argument("--embedder", help="BERT folder or cached hub id (default: hfl/chinese-bert-wwm-ext)")
    p.add_argument("--pooling", choices=["cls", "mean"])
    p.add_argument("--cache-dir", type=Path, help="content-hash cache (default: OUT/cache)")
    p.add_argument("--ray-address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (local mode only)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else EMDLOT_HOME/mlflow.db, EMDLOT_HOME=~/emdlot)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    cfg = load_embed_config(args.config)
    updates = {"extract": {}, "embedder": {}}
    if args.backend:
        updates["extract"]["backend"] = args.backend
    if args.llm:
        updates["extract"]["llm"] = {**cfg.extract.llm.model_dump(), "model": args.llm}
    if args.embedder:
        updates["embedder"]["model"] = args.embedder
    if args.pooling:
        updates["embedder"]["pooling"] = args.pooling
    raw = cfg.model_dump()
    for section, values in updates.items():
        raw[section] |= values
    return type(cfg).model_validate(raw)


def read_split_table(args: argparse.Namespace):
    """The split and the file it came from."""
    if args.train_firms:
        return read_firm_list(args.train_firms), args.train_firms
    manifest = args.manifest or args.data / "manifest.csv"
    if not manifest.exists():
        raise TableError(f"no split: {manifest} does not exist; give --manifest PATH or --train-firms FILE")
    return read_split(manifest), manifest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        source = find_prospectus(args.data)
        prospectus = read_prospectus(source)
        split, split_source = read_split_table(args)
        unlisted = check_coverage(prospectus, split, source, split_source)
    except (TableError, ValueError, FileNotFoundError) as err:
        print(f"embed: error: {err}", file=sys.stderr)
        return 2
    if unlisted:
        print(f"embed: note: {unlisted} prospectus firm(s) are not in the split; they are embedded and marked "
              "'unlisted' in text_status.parquet", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    init_ray(args.ray_address, args.num_cpus)
    try:
        result = embed_folder(prospectus, split, cfg, args.out, source, cache_dir=args.cache_dir, uri=args.tracking_uri)
    except (ValueError, FileNotFoundError) as err:
        print(f"embed: error: {err}", file=sys.stderr)
        return 2
    print(f"embed: {describe(result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
