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
from emdlot.model.batch import to_batch
from emdlot.model.config import load_emdlot_config
from emdlot.synth import generate, write_dataset
from emdlot.text.config import load_embed_config
from emdlot.text.io import find_prospectus, read_prospectus, read_split
from emdlot.text.outputs import FEATURES_FILE, describe, log_run, save_outputs
from emdlot.text.pipeline import run_text_pipeline
from emdlot.training import evaluate, fit, interpret

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
        result = run_text_pipeline(read_prospectus(source), read_split(manifest), cfg, text_dir / "cache")
    finally:
        ray.shutdown()
    save_outputs(result, cfg, text_dir, source)
    log_run(result, cfg, text_dir, source, uri=uri)
    print(f"[demo]   {describe(result, text_dir)}")
    return text_dir / FEATURES_FILE


def train_and_log(dataset_dir: Path, text_features: Path | None, seed: int, uri: str, out: Path) -> dict[str, float]:
    """Fit one EMDLOT model, score it once on the test firms, log settings, curves, metrics,
    explanations and weights to MLflow."""
    torch.set_num_threads(1)  # batch-size-32 steps on small tensors: more threads only contend
    config = load_emdlot_config(DEMO_MODEL_CONFIG)
    parts = assemble(dataset_dir, text_features)
    meta = read_meta(dataset_dir)
    with tracking.mlflow_run("emdlot-demo", run_name=f"emdlot-seed{seed}", uri=uri):
        tracking.log_params(config.model_dump() | {"seed": seed, "text_features": str(text_features)})
        result = fit(parts["train"], parts["val"], config, seed)
        for record in result.history.epochs:
            tracking.mlflow.log_metrics({"val_score": record.val_score, "train_loss": record.train_loss}, step=record.epoch)
        test = parts["test"]
        metrics, score = evaluate(result.model, to_batch(test), config.train.eval_batch_size, config.train.score_weights)
        summary = {f"test_{k}": v for k, v in metrics.as_dict().items()} | {
            "test_composite": score, "best_epoch": result.history.best_epoch, "epochs": len(result.history.epochs)}
        tracking.log_metrics(summary)
        interp = interpret(result.model, test)
        tracking.log_table(explain.modality_weights(interp, test.y), "explanations", "modality_weights.csv")
        tracking.log_table(explain.chapter_weights(interp, test.y, test.text_mask), "explanations", "chapter_weights.csv")
        importance = explain.feature_importance(interp, test.mask, meta.feature_names)
        tracking.log_table(importance, "explanations", "feature_importance.csv")
        weights = out / "emdlot_demo.pt"
        torch.save(result.model.state_dict(), weights)
        tracking.log_files(weights, artifact_path="model")
    shown = {k: round(v, 3) for k, v in summary.items() if isinstance(v, float)}
    print(f"[demo]   test: {shown}; top features: {', '.join(importance['feature'].head(5))}")
    return summary
