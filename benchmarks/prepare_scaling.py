"""Time and peak memory of `emdlot prepare` at 1x and 10x the paper's firm count.

Each size runs in its own process (so peak RSS is that run's own); the ratio of the two wall times is
the result. Target: 10x the firms costs at most 11x the time. Writes benchmarks/results/prepare_scaling.json.
Run: .venv/bin/python benchmarks/prepare_scaling.py [--scales 1 10]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

PAPER_FIRMS = 1994
RESULTS = Path(__file__).resolve().parent / "results" / "prepare_scaling.json"

CHILD = r"""
import json, resource, sys, time
from emdlot.synth import generate, write_dataset
from emdlot.config import SynthConfig
from emdlot.data.prepare import prepare
firms, work = int(sys.argv[1]), sys.argv[2]
write_dataset(generate(SynthConfig(firms=firms)), work + "/in")
started = time.perf_counter()
prepare(work + "/in", work + "/ds")
seconds = time.perf_counter() - started
print(json.dumps({"firms": firms, "prepare_seconds": round(seconds, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def run(firms: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run([sys.executable, "-c", CHILD, str(firms), work], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    runs = {f"{s}x": run(PAPER_FIRMS * s) for s in args.scales}
    for name, r in runs.items():
        print(f"{name}: {r}")
    base, top = runs[f"{args.scales[0]}x"], runs[f"{args.scales[-1]}x"]
    scale = args.scales[-1] / args.scales[0]
    result = {
        "runs": runs,
        "time_ratio": round(top["prepare_seconds"] / base["prepare_seconds"], 2),
        "firm_ratio": scale,
        "target_time_ratio_max": 1.1 * scale,
        "meets_target": top["prepare_seconds"] / base["prepare_seconds"] <= 1.1 * scale,
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
