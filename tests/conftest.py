"""Shared fixtures: small synthetic input folders and one paper-size prepared dataset per session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emdlot.config import PrepareConfig, SynthConfig
from emdlot.synth import generate, write_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_synth():
    """An in-memory synthetic dataset of 300 firms (4 Extended, 2 Defaulted at the paper's rates)."""
    return generate(SynthConfig(firms=300, seed=7))


@pytest.fixture(scope="session")
def _small_csv_master(tmp_path_factory, small_synth) -> Path:
    folder = tmp_path_factory.mktemp("small_csv")
    write_dataset(small_synth, folder, fmt="csv")
    (folder / "drivers.csv").unlink()
    return folder


@pytest.fixture
def small_csv(tmp_path, _small_csv_master) -> Path:
    """A fresh, writable copy of the small CSV input folder for tests that break it."""
    folder = tmp_path / "input"
    shutil.copytree(_small_csv_master, folder)
    return folder


@pytest.fixture(scope="session")
def paper_inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("paper_inputs")
    write_dataset(generate(SynthConfig()), folder)
    return folder


@pytest.fixture(scope="session")
def paper_dataset_noval(tmp_path_factory, paper_inputs) -> Path:
    """Paper size with no validation split, as in the paper's Table 4."""
    from emdlot.data.prepare import prepare

    out = tmp_path_factory.mktemp("paper_dataset")
    prepare(paper_inputs, out, PrepareConfig(val_fraction=0.0))
    return out


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs torch on one thread: bit-identical results, and no thread contention on 2 cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
