"""`emdlot demo`: the whole chain on synthetic data in single-node local mode.

Each stage that exists runs for real; the demo says what it did and where the outputs are.
"""
from __future__ import annotations

import time
from pathlib import Path

from emdlot.config import PrepareConfig, SynthConfig
from emdlot.data.contract import check_inputs
from emdlot.data.prepare import prepare
from emdlot.synth import generate, write_dataset


def _step(name: str):
    print(f"[demo] {name} ...", flush=True)
    return time.perf_counter()


def run_demo(out: Path, firms: int = 1994, seed: int = 86) -> int:
    data_dir, dataset_dir = out / "data", out / "dataset"
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
    print(f"[demo] outputs: {out.resolve()} (manifest: {dataset_dir / 'manifest.csv'})")
    return 0
