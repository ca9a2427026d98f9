"""A measured Table 5 search at paper size on this machine: flows/tune.py as a user runs it.

Settings (this machine's time, named here): the Table 5 space with hidden_size limited to {256, 512}
(benchmarks/tune/space_hidden_256_512.yaml), the paper's optimum as base with a 1-epoch CAMELOT warm-up
(benchmarks/tune/base_short_warmup.yaml), ASHA (grace 2 epochs), at most 6 epochs a trial, 2 trials at a
time on 1 CPU each. Copies the flow's search_summary.json (wall time, trials per hour, trials ASHA
stopped, best configuration and validation score, rank of the paper's optimum) to
benchmarks/results/tune.json. Run: .venv/bin/python benchmarks/tune_search.py [--dataset DIR] [--trials 20]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", help="a prepared paper-size dataset (default: synth + prepare, matched cutoffs)")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dataset = args.dataset
        if dataset is None:
            from emdlot.synth.prepared import prepared_dataset

            dataset = str(prepared_dataset(work))
        command = [sys.executable, str(HERE.parent / "flows" / "tune.py"), "--data", dataset, "--trials", str(args.trials),
                   "--space", str(HERE / "tune" / "space_hidden_256_512.yaml"), "--config", str(HERE / "tune" / "base_short_warmup.yaml"),
                   "--asha", "--grace-epochs", "2", "--max-epochs", "6", "--max-concurrent", "2", "--cpus-per-trial", "1",
                   "--num-cpus", "2", "--name", "paper_size", "--out", str(Path(work) / "search")]
        subprocess.run(command, check=True, env={**os.environ, "EMDLOT_HOME": work})
        summary = json.loads((Path(work) / "search" / "search_summary.json").read_text())
    summary["settings"] = {"space": "Table 5 with hidden_size in {256, 512}", "warmup_epochs": 1, "asha_grace_epochs": 2,
                           "max_epochs": 6, "max_concurrent": 2, "cpus_per_trial": 1, "dataset": "paper-size synthetic, matched cutoffs"}
    out = HERE / "results" / "tune.json"
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
