"""`emdlot demo`: the whole chain on synthetic data in single-node local mode.

Each stage that exists runs for real; the demo says what it did and where the outputs are.
"""
from __future__ import annotations

import time
from pathlib import Path

from importlib.resources import files

import ray
import torch

from emdlot import tracking
from emdlot.config import PrepareConfig, SynthConfig
from emdlot.data.assemble import assemble, read_meta
from emdlot.data.contract import check_inputs
from emdlot.data.prepare import prepare
from emdlot.evaluation import explain
from emdlot.runs import train_and_score
from emdlot.runs.log import dataset_lineage, log_result
from emdlot.synth import generate, write_dataset
from emdlot.text.config import load_embed_config
from emdlot.text.io import find_prospectus, read_prospectus, read_split
from emdlot.text.outputs import FEATURES_FILE, describe, embed_folder
from emdlot.training.config import load_emdlot_config

DEMO_MODEL_CONFIG = files("emdlot") / "configs" / "demo_model.yaml"


def _step(name: str):
    print(f"[demo] {name} ...", flush=True)
    return time.perf_counter()


def run_demo(out: Path, firms: int = 1994, seed: int = 86) -> int:
    data_dir, dataset_dir, text_dir = out / "data", out / "dataset", out / "text"
    t = _step(f"synth: {firms} paper-shaped issuers -> {data_dir}")
    write_dataset(generate(SynthConfig(firms=firms, seed=seed)), data_dir)
    print(f"[demo]   done in {time.perf_counter() - t:.1f}s")

    t = _step("validate: data contract")
    _, violations = check_inputs(data_dir)
    if violations:
        for v in violations[:20]:
            print(f"  {v}")
        return 2
    print(f"[demo]   valid in {time.perf_counter() - t:.1f}s")

    t = _step(f"prepare: exclusion window, split, imputation, SMOTE -> {dataset_dir}")
    meta = prepare(data_dir, dataset_dir, PrepareConfig(seed=seed))
    print(f"[demo]   done in {time.perf_counter() - t:.1f}s; firms per split: {meta.counts}")

    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    t = _step(f"embed: prospectus extraction and embedding on Ray Data (local), PCA on training firms -> {text_dir}")
    text_features = embed_text(data_dir, dataset_dir / "manifest.csv", text_dir, uri)
    print(f"[demo]   done in {time.perf_counter() - t:.1f}s")

    t = _step(f"train: one EMDLOT run (seed {seed}, {DEMO_MODEL_CONFIG.name}) tracked in {uri}")
    train_and_log(dataset_dir, text_features=text_features, seed=seed, uri=uri, out=out)
    print(f"[demo]   done in {time.perf_counter() - t:.1f}s")
    print(f"[demo] outputs: {out.resolve()} (manifest: {dataset_dir / 'manifest.csv'})")
    print(f"[demo] review: mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    return 0


def embed_text(data_dir: Path, manifest: Path, text_dir: Path, uri: str) -> Path:
    """The embed flow's chain with its default settings (extractive extraction; Chinese-BERT-wwm when it
    is in the Hugging Face cache, else the announced TF-IDF fallback) on a local Ray."""
    cfg = load_embed_config(None)
    source = find_prospectus(data_dir)
    ray.init(address="local", include_dashboard=False, ignore_reinit_error=True)
    try:
        result = embed_folder(read_prospectus(source), read_split(manifest), cfg, text_dir, source, uri=uri)
    finally:
        ray.shutdown()
    print(f"[demo]   {describe(result, text_dir)}")
    return text_dir / FEATURES_FILE


def train_and_log(dataset_dir: Path, text_features: Path | None, seed: int, uri: str, out: Path) -> dict[str, float]:
    """One EMDLOT run through the run layer: fit, score once on the test firms, log to MLflow."""
    torch.set_num_threads(1)  # batch-size-32 steps on small tensors: more threads only contend
    config = load_emdlot_config(DEMO_MODEL_CONFIG)
    parts = assemble(dataset_dir, text_features)
    meta = read_meta(dataset_dir)
    with tracking.mlflow_run("emdlot-demo", run_name=f"emdlot-seed{seed}", uri=uri):
        result = train_and_score(parts, config, seed, score_test=True)
        log_result(result, dataset_lineage(dataset_dir, text_features, parts), meta.feature_names, parts["test"])
    summary = result.summary()
    importance = explain.feature_importance(result.test_interpretation, parts["test"].mask, meta.feature_names)
    shown = {k: round(v, 3) for k, v in summary.items() if k.startswith("test_") and isinstance(v, float)}
    print(f"[demo]   test: {shown}; best epoch {result.history.best_epoch}; top features: {', '.join(importance['feature'].head(5))}")
    return summary
