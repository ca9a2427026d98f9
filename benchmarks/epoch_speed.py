"""Time of one Table 5 training epoch at paper size on this CPU, per T-LSTM decay and thread count.

One epoch exactly as `fit` runs it (batches of 8 SMOTE'd training firms: forward, three-part loss,
backward, fused AdamW; then the validation score), after the CAMELOT initialisation with its warm-up cut
to nothing (warm-up epochs cost the same as these). The epoch's mean training loss is recorded too, so
two code versions can be checked for the same numbers: run this file with PYTHONPATH pointing at another
checkout (and --label) to time that one; EMDLOT_NATIVE_TLSTM=off times the T-LSTM's Python step loops.
Writes benchmarks/results/epoch_speed.json (or --out).
Run: .venv/bin/python benchmarks/epoch_speed.py [--dataset DIR] [--label NAME]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "epoch_speed.json"


def time_epoch(parts, decay: str | None, threads: int) -> dict:
    from emdlot.training import fit

    try:
        from emdlot.training.config import EMDLOTConfig
    except ImportError:  # checkouts before the config moved to the training package
        from emdlot.model.config import EMDLOTConfig
    params = {"max_epochs": 1, "warmup_epochs": 0, "identifier_epochs": 0, "kmeans_n_init": 1, "progress": False}
    config = EMDLOTConfig().with_params(params | ({} if decay is None else {"decay": decay}))
    torch.set_num_threads(threads)
    started = time.perf_counter()
    history = fit(parts["train"], parts["val"], config, seed=86).history
    epoch = history.epochs[0]
    return {"decay": decay or "baytas (the only decay before it was a setting)", "threads": threads, "step_loops": step_loops(),
            "epoch_s": round(epoch.seconds, 1), "steps": -(-len(parts["train"]) // config.train.batch_size),
            "ms_per_step": round(1000 * epoch.seconds / -(-len(parts["train"]) // config.train.batch_size), 1),
            "train_loss": epoch.train_loss, "val_score": epoch.val_score, "fit_s": round(time.perf_counter() - started, 1)}


def step_loops() -> str:
    """Which T-LSTM step loops ran: C++ (emdlot.model.native, EMDLOT_NATIVE_TLSTM) or Python (older checkouts too)."""
    try:
        from emdlot.model import native
    except ImportError:
        return "Python"
    return "C++" if native.tlstm_steps() is not None else "Python"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", help="a prepared paper-size dataset (default: synth + prepare one)")
    parser.add_argument("--label", default="current")
    parser.add_argument("--decays", nargs="+", default=["baytas", "learned"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    from emdlot.data.assemble import assemble

    with tempfile.TemporaryDirectory() as work:
        dataset = args.dataset
        if dataset is None:
            from emdlot.synth.prepared import prepared_dataset

            dataset = str(prepared_dataset(work))
        parts = assemble(dataset)
    decays = [None if d == "none" else d for d in args.decays]
    rows = []
    for d in decays:
        for t in args.threads:
            rows.append(time_epoch(parts, d, t))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    body = json.loads(out.read_text()) if out.exists() else {}
    body[args.label] = rows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=1))


if __name__ == "__main__":
    main()
