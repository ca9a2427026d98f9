"""`emdlot demo`: the whole chain on synthetic data in single-node local mode, through the same library calls
the flows make: synth, validate, prepare, embed (flows/embed.py), a short search (flows/tune.py), the evaluation
with baselines, explanations and report (flows/train.py), and scoring of a held-out folder (flows/predict.py),
all tracked in one local sqlite MLflow store. `--quick` runs it small (under 5 minutes on 2 cores).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import ray
import torch

from emdlot import tracking
from emdlot.config import ConfigError, PrepareConfig, SynthConfig
from emdlot.data.contract import check_inputs
from emdlot.data.io import write_table
from emdlot.data.prepare import prepare
from emdlot.ray_init import init_ray
from emdlot.runs.evaluate import EvaluationSpec, evaluate
from emdlot.runs.protocol import ProtocolSettings
from emdlot.runs.ray_train import TrainSettings
from emdlot.scoring.predict import describe_counts, predict_folder
from emdlot.synth import generate, write_dataset
from emdlot.text.config import load_embed_config
from emdlot.text.io import find_prospectus, read_prospectus, read_split
from emdlot.text.outputs import FEATURES_FILE, describe, embed_folder
from emdlot.training.config import EMDLOTConfig, load_emdlot_config
from emdlot.tuning.search import SearchSettings, build_tuner, record_best, trials_frame
from emdlot.tuning.trial import TrialContext

DEMO_MODEL_CONFIG = files("emdlot") / "configs" / "demo_model.yaml"
DEMO_SPACE = {"hidden_size": {"choice": [32, 64]}, "learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}}


@dataclass(frozen=True)
class DemoSize:
    firms: int
    distressed_rate: float  # the paper's 1.91%, or more so that a small set has enough minority firms
    holdout_firms: int
    trials: int
    trial_epochs: int
    seeds: int
    max_seeds: int
    final_epochs: int | None = None  # an epoch cap for the final runs (None: demo_model.yaml's)


FULL = DemoSize(firms=1994, distressed_rate=38 / 1994, holdout_firms=300, trials=4, trial_epochs=5, seeds=3, max_seeds=5)
# Fewer distressed issuers than this and a stratified split with SMOTE cannot be made on every seed.
MIN_DISTRESSED = 20
QUICK = DemoSize(firms=600, distressed_rate=0.06, holdout_firms=120, trials=2, trial_epochs=2, seeds=1, max_seeds=1, final_epochs=6)


def _step(name: str) -> float:
    print(f"[demo] {name} ...", flush=True)
    return time.perf_counter()


def _done(started: float) -> None:
    print(f"[demo]   done in {time.perf_counter() - started:.1f}s", flush=True)


def run_demo(out: Path, firms: int | None = None, seed: int = 86, quick: bool = False) -> int:
    size = QUICK if quick else FULL
    size = size if firms is None else DemoSize(**{**size.__dict__, "firms": firms})
    if size.firms * size.distressed_rate < MIN_DISTRESSED:
        least = math.ceil(MIN_DISTRESSED / size.distressed_rate)
        raise ConfigError(f"--firms {size.firms}: about {size.firms * size.distressed_rate:.0f} distressed issuers at this "
                          f"size's rate ({size.distressed_rate:.1%}); the demo needs at least {least} firms")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; name a folder for the demo")
    out = out.resolve()
    data_dir, holdout_dir, dataset_dir, text_dir = out / "data", out / "holdout", out / "dataset", out / "text"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    out.mkdir(parents=True, exist_ok=True)
    begun = time.perf_counter()
    torch.set_num_threads(1)  # small steps: more threads only contend

    t = _step(f"synth: {size.firms} paper-shaped issuers -> {data_dir}; {size.holdout_firms} new ones to score -> {holdout_dir}")
    write_dataset(generate(SynthConfig(firms=size.firms, seed=seed, distressed_rate=size.distressed_rate)), data_dir)
    holdout = generate(SynthConfig(firms=size.holdout_firms, seed=seed + 1, distressed_rate=size.distressed_rate))
    write_dataset(holdout, holdout_dir)
    (holdout_dir / "labels.parquet").unlink()  # new issuers: nobody knows their outcome yet
    _done(t)

    t = _step("validate: data contract")
    _, violations = check_inputs(data_dir)
    if violations:
        for v in violations[:20]:
            print(f"  {v}")
        return 2
    _done(t)

    t = _step(f"prepare: exclusion window, split, imputation, SMOTE -> {dataset_dir}")
    meta = prepare(data_dir, dataset_dir, PrepareConfig(seed=seed))
    print(f"[demo]   firms per split: {meta.counts}", flush=True)
    _done(t)

    init_ray("local", log_to_driver=False)  # a local Ray even with RAY_ADDRESS set; Ctrl-C / SIGTERM end runs KILLED
    try:
        t = _step(f"embed: prospectus extraction and embedding on Ray Data, PCA on training firms -> {text_dir}")
        text_features = embed_text(data_dir, dataset_dir / "manifest.csv", text_dir, uri)
        _done(t)

        t = _step(f"tune: {size.trials} trials of a small search (Ray Tune + Optuna) on the validation firms")
        config = tune(dataset_dir, text_features, size, seed, uri, out / "tune")
        if size.final_epochs:
            config = config.with_params({"max_epochs": size.final_epochs})
        _done(t)

        t = _step(f"train: EMDLOT and its ablations on Ray Train, nine baselines, shortcut rows; {size.seeds} seeds")
        with tracking.mlflow_run("emdlot-train", run_name="demo", uri=uri, tags={"flow": "train", "demo": "true"}) as run:
            spec = EvaluationSpec(
                input_dir=data_dir, out=out / "train", config=config, data=dataset_dir, text_features=text_features,
                protocol=ProtocolSettings(n_valid=size.seeds, seeds=size.seeds, max_seeds=size.max_seeds),
                train=TrainSettings(storage=out / "train" / "ray_train", max_concurrent=2), n_boot=100,
                run_prefix=f"{run.info.run_id[:8]}-")
            result = evaluate(spec, say=lambda line: print(f"[demo]   {line}", flush=True))
        _done(t)

        t = _step(f"predict: score the {size.holdout_firms} new issuers with {result.model_uri}")
        with tracking.mlflow_run("emdlot-predict", run_name="demo-holdout", uri=uri, tags={"flow": "predict", "demo": "true"}):
            frame, counts = predict_folder(result.model_uri, holdout_dir, None, uri)
            write_table(frame, out / "holdout_scores.csv")
            tracking.log_files(out / "holdout_scores.csv", artifact_path="predictions")
        print(f"[demo]   {describe_counts(counts)} -> {out / 'holdout_scores.csv'}", flush=True)
        _done(t)
    finally:
        ray.shutdown()
    print((out / "train" / "tables" / "table6_paper.md").read_text(encoding="utf-8"))
    print(f"[demo] finished in {time.perf_counter() - begun:.0f}s; outputs in {out}")
    print(f"[demo] report: {result.report}")
    print(f"[demo] review: emdlot ui --out {out}   (or: mlflow ui --backend-store-uri {uri} --host 127.0.0.1)")
    return 0


def embed_text(data_dir: Path, manifest: Path, text_dir: Path, uri: str) -> Path:
    """The embed flow's chain with its default settings (extractive extraction; Chinese-BERT-wwm when it
    is in the Hugging Face cache, else the announced TF-IDF fallback) on the running Ray."""
    cfg = load_embed_config(None)
    source = find_prospectus(data_dir)
    result = embed_folder(read_prospectus(source), read_split(manifest), cfg, text_dir, source, uri=uri)
    print(f"[demo]   {describe(result, text_dir)}", flush=True)
    return text_dir / FEATURES_FILE


def tune(dataset: Path, text_features: Path, size: DemoSize, seed: int, uri: str, out: Path) -> EMDLOTConfig:
    """The tune flow's search at demo size (DEMO_SPACE around demo_model.yaml); returns the best configuration."""
    base = load_emdlot_config(DEMO_MODEL_CONFIG).with_params({"progress": False})
    short = base.with_params({"max_epochs": size.trial_epochs})  # trials are short; the final runs are not
    settings = SearchSettings(trials=size.trials, seed=seed, max_epochs=size.trial_epochs)
    with tracking.mlflow_run("emdlot-tune", run_name="demo", uri=uri, tags={"flow": "tune", "demo": "true"}) as parent:
        ctx = TrialContext(dataset=str(dataset), text_features=str(text_features), base=short.model_dump(), seed=seed,
                           tracking_uri=uri, experiment_id=parent.info.experiment_id, parent_run_id=parent.info.run_id)
        frame = trials_frame(build_tuner(DEMO_SPACE, short, ctx, settings, out, "demo").fit(), DEMO_SPACE)
        best, row = record_best(frame, base, out)
    print(f"[demo]   best of {len(frame)} trials: {row['params']} -> {out / 'best_config.yaml'}", flush=True)
    return best
