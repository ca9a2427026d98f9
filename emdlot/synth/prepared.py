"""A prepared synthetic dataset in one call, for benchmarks and examples that need paper-shaped arrays."""
from __future__ import annotations

from pathlib import Path

from emdlot.config import PrepareConfig, SynthConfig
from emdlot.data.prepare import prepare
from emdlot.synth.generate import generate, write_dataset


def prepared_dataset(work: str | Path, synth: SynthConfig | None = None, settings: PrepareConfig | None = None) -> Path:
    """Write synthetic inputs to WORK/in (paper size by default), prepare them into WORK/ds, return WORK/ds."""
    work = Path(work)
    write_dataset(generate(synth or SynthConfig()), work / "in")
    prepare(work / "in", work / "ds", settings or PrepareConfig())
    return work / "ds"
