"""The T-LSTM's step loops in C++ (tlstm_steps.cpp), built once per machine by torch's extension loader.

Why: at batch 8 each recurrent step works on a few rows, so the Python loop's own cost (interpreter and op
dispatch) is a large share of the T-LSTM's time; in C++ a Table 5 training epoch runs about 1.1x faster
(benchmarks/results/epoch_speed.json). The C++ loops call the same ATen kernels on the same operands in
the same order, so on one thread the numbers are the Python loops' bit for bit (tests/test_tlstm.py); on several,
each step's recurrent products run one column block per thread, which changes them by float rounding only.

The build needs a C++ compiler (Debian: apt install g++) and ninja (a dependency); it takes about a minute the
first time and is cached under torch's extensions directory (TORCH_EXTENSIONS_DIR, default
~/.cache/torch_extensions), where every later process on the machine, Ray workers included, imports it directly.
EMDLOT_NATIVE_TLSTM chooses:
    auto     (default) build or load it; where that fails, warn once and run the Python loops
    off      always the Python loops
    require  fail where it cannot be built (CI sets this, so the equality tests cannot skip)
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("tlstm_steps.cpp")
NAME = "emdlot_tlstm_steps"
STALE_LOCK_S = 600  # a build takes about a minute: a lock this old was left by a process that died
MODES = ("auto", "off", "require")
# -fopenmp (Linux, where torch's wheels use GNU OpenMP): ATen's parallel_for runs the recurrent products' column blocks
# on torch's OpenMP threads. The module links libgomp.so.1, which resolves to the copy torch has already loaded, so
# there is one thread pool. Elsewhere (Apple's clang has no -fopenmp) the loops keep the library's own threading.
OPENMP = ("-fopenmp",) if sys.platform.startswith("linux") else ()
FLAGS = ("-O2", *OPENMP)
log = logging.getLogger(__name__)


def mode() -> str:
    value = os.environ.get("EMDLOT_NATIVE_TLSTM", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"EMDLOT_NATIVE_TLSTM={value!r}: choose one of {', '.join(MODES)}")
    return value


def build_directory(root: str | Path, torch_version: str) -> Path:
    """One folder per source and flags, torch build and Python version: a build in it is never stale, so a process that
    finds one imports it directly (milliseconds; torch's loader re-checks the build with ninja, about 2 s a process)."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:12]
    return Path(root) / f"{NAME}-{digest}-torch{torch_version}-py{sys.version_info.major}{sys.version_info.minor}"


def _import_built(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _build() -> tuple[ModuleType | None, Exception | None]:
    """Build or load the module once per process; a failure is kept too, so it is not retried every step."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root, load

    cache = build_directory(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root(), torch.__version__)
    built = cache / f"{NAME}.so"
    if built.exists():
        try:
            return _import_built(built), None
        except ImportError:  # being written by a build right now: torch's loader below waits for it
            pass
    cache.mkdir(parents=True, exist_ok=True)
    if not built.exists():  # the first build: long enough to say so
        log.warning("building the T-LSTM's C++ step loops, once for this machine (about a minute; cached in %s)", cache)
    lock = cache / "lock"  # torch's loader waits for this file to go; a process killed while holding it leaves it
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        log.warning("removing a stale build lock %s", lock)
        lock.unlink(missing_ok=True)
    try:
        return load(name=NAME, sources=[str(SOURCE)], extra_cflags=list(FLAGS), extra_ldflags=list(OPENMP),
                    build_directory=str(cache), verbose=False), None
    except Exception as error:  # a missing compiler or ninja, a failed build: all mean the same here
        return None, error


def tlstm_steps() -> ModuleType | None:
    """The built module (forward_steps, backward_steps), or None where the Python loops run instead."""
    chosen = mode()
    if chosen == "off":
        return None
    module, error = _build()
    if error is not None:
        if chosen == "require":
            raise RuntimeError(f"EMDLOT_NATIVE_TLSTM=require, but the T-LSTM's C++ step loops could not be built: {error}") from error
        _warn_once(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return module


@functools.cache
def _warn_once(reason: str) -> None:
    warnings.warn(f"the T-LSTM's C++ step loops could not be built ({reason}); running the Python loops, same numbers, "
                  "slower. Install a C++ compiler (apt install g++) or set EMDLOT_NATIVE_TLSTM=off to silence this.",
                  RuntimeWarning, stacklevel=3)
