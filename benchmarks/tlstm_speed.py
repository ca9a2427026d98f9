"""Forward + backward time of the T-LSTM layer against torch.nn.LSTM of the same size, on the CPU.

Both run in this process, interleaved, after warm-up; the JSON records every repetition, the
medians and their ratio (target: at most 1.5). For context it also times the T-LSTM written as a
plain autograd loop (the straightforward implementation), and with --compile that loop under
torch.compile (whose compile time is recorded too).

    python benchmarks/tlstm_speed.py [--threads 2] [--repeats 15] [--compile]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from emdlot.model.tlstm import TLSTM

RESULT = Path(__file__).parent / "results" / "tlstm_speed.json"
TARGET_RATIO = 1.5


def plain_autograd_loop(layer: TLSTM, x: torch.Tensor, delta_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same T-LSTM with input projections precomputed and autograd recording every step."""
    size = layer.hidden_size
    gates_x = torch.nn.functional.linear(x, layer.weight_ih, layer.bias)
    decay = 1.0 / torch.log(math.e + delta_t)
    h = x.new_zeros(x.shape[0], size)
    c = x.new_zeros(x.shape[0], size)
    outputs = []
    for t in range(x.shape[1]):
        short = torch.tanh(c @ layer.weight_short.T + layer.bias_short)
        c_adj = c - short + decay[:, t:t + 1] * short
        i, f, g, o = (gates_x[:, t] + h @ layer.weight_hh.T).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c_adj + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        keep = mask[:, t:t + 1]
        c = torch.where(keep, c_new, c)
        h = torch.where(keep, h_new, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def time_interleaved(cases: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each case; cases alternate so machine load hits them alike."""
    for _ in range(warmup):
        for run in cases.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=39)
    parser.add_argument("--inputs", type=int, default=68)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time the plain loop under torch.compile")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.steps, args.inputs)
    delta_t = torch.randint(1, 4, (args.batch, args.steps)).float() * 3.0  # 3, 6 or 9 months
    mask = torch.ones(args.batch, args.steps, dtype=torch.bool)  # nn.LSTM cannot mask: compare on full sequences
    lstm = torch.nn.LSTM(args.inputs, args.hidden, batch_first=True)
    tlstm = TLSTM(args.inputs, args.hidden, decay="baytas")  # the reference loop below writes out this decay

    def run_lstm() -> None:
        lstm.zero_grad()
        lstm(x)[0].sum().backward()

    def run_tlstm() -> None:
        tlstm.zero_grad()
        tlstm(x, delta_t, mask)[0].sum().backward()

    def run_plain_loop() -> None:
        tlstm.zero_grad()
        plain_autograd_loop(tlstm, x, delta_t, mask).sum().backward()

    cases = {"torch_lstm": run_lstm, "tlstm": run_tlstm, "tlstm_plain_autograd_loop": run_plain_loop}
    compile_seconds = None
    if args.compile:
        compiled = torch.compile(plain_autograd_loop)
        start = time.perf_counter()
        compiled(tlstm, x, delta_t, mask).sum().backward()
        compile_seconds = time.perf_counter() - start

        def run_compiled() -> None:
            tlstm.zero_grad()
            compiled(tlstm, x, delta_t, mask).sum().backward()

        cases["tlstm_plain_loop_torch_compile"] = run_compiled

    load_before = os.getloadavg()
    times = time_interleaved(cases, args.repeats, args.warmup)
    load_after = os.getloadavg()
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["tlstm"] / medians["torch_lstm"]
    result = {
        "what": "forward + backward (sum of outputs) per call, seconds; medians over interleaved repetitions",
        "shape": {"batch": args.batch, "steps": args.steps, "inputs": args.inputs, "hidden": args.hidden},
        "threads": args.threads,
        "repeats": args.repeats,
        "median_s": medians,
        "min_s": {name: min(values) for name, values in times.items()},
        "all_s": times,
        "ratio_tlstm_to_torch_lstm": ratio,
        "ratio_plain_loop_to_torch_lstm": medians["tlstm_plain_autograd_loop"] / medians["torch_lstm"],
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "torch_compile_first_call_s": compile_seconds,
        "load_average_before_after": [load_before, load_after],
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if args.compile:
        result["ratio_compiled_loop_to_torch_lstm"] = medians["tlstm_plain_loop_torch_compile"] / medians["torch_lstm"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for name, value in medians.items():
        print(f"{name:32s} {value * 1000:8.1f} ms")
    print(f"ratio tlstm / torch_lstm: {ratio:.3f} (target <= {TARGET_RATIO}) -> {args.out}")


if __name__ == "__main__":
    main()
