"""What SMOTE on padded sequences produces, next to the real minority firms it is drawn from.

SMOTE interpolates the flattened (sequence, mask, delta_t, text) of two minority neighbours; masks are
re-thresholded, so a synthetic firm is as long as the longer or the shorter parent, and its values at
steps only one parent observed are interpolated with that parent's zero padding. This script measures,
per minority class of one prepared paper-size dataset: how many real and synthetic training firms, their
length distribution, the spread of their values, how far each synthetic firm lies from its nearest real
firm compared with the real firms' own nearest-neighbour distances, and how many synthetic firms carry
values shrunk towards 0 at steps one parent did not observe. Writes benchmarks/results/smote_diagnosis.json.
Run: .venv/bin/python benchmarks/smote_diagnosis.py [--dataset DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from emdlot.schema import CLASSES

RESULTS = Path(__file__).resolve().parent / "results" / "smote_diagnosis.json"


def flat(arrays, rows):
    return np.concatenate([arrays.X[rows].reshape(len(rows), -1), arrays.mask[rows].astype(float)], axis=1)


def nearest(a: np.ndarray, b: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset")
    args = parser.parse_args()
    from emdlot.data.assemble import assemble

    with tempfile.TemporaryDirectory() as work:
        dataset = args.dataset
        if dataset is None:
            from emdlot.synth.prepared import prepared_dataset

            dataset = str(prepared_dataset(work))
        train = assemble(dataset)["train"]
    synthetic = np.char.startswith(train.firm_id.astype(str), "smote-")
    out = {"dataset": "paper-size synthetic, default prepare (matched cutoffs, seed 86)"}
    for c in (1, 2):
        real = np.flatnonzero((train.y == c) & ~synthetic)
        fake = np.flatnonzero((train.y == c) & synthetic)
        lengths_real, lengths_fake = train.mask[real].sum(1), train.mask[fake].sum(1)
        values = lambda rows: train.X[rows][train.mask[rows]]  # noqa: E731
        real_flat, fake_flat = flat(train, real), flat(train, fake[:2000])
        nn_real = nearest(real_flat, real_flat, exclude_self=True)
        nn_fake = nearest(fake_flat, real_flat)
        # a synthetic step observed although its nearest real firm did not observe it (or vice versa)
        closest = np.argmin(((fake_flat[:, None, :] - real_flat[None, :, :]) ** 2).sum(-1), axis=1)
        mask_changed = (train.mask[fake[:2000]] != train.mask[real[closest]]).any(axis=1)
        out[CLASSES[c]] = {
            "real_firms": int(len(real)), "synthetic_firms": int(len(fake)),
            "synthetic_per_real": round(len(fake) / max(len(real), 1), 1),
            "length_real_mean_min_max": [round(float(lengths_real.mean()), 1), int(lengths_real.min()), int(lengths_real.max())],
            "length_synthetic_mean_min_max": [round(float(lengths_fake.mean()), 1), int(lengths_fake.min()), int(lengths_fake.max())],
            "value_sd_real": round(float(values(real).std()), 3), "value_sd_synthetic": round(float(values(fake).std()), 3),
            "nearest_real_distance_of_real_median": round(float(np.median(nn_real)), 2),
            "nearest_real_distance_of_synthetic_median": round(float(np.median(nn_fake)), 2),
            "synthetic_with_a_mask_unlike_their_nearest_real_firm": round(float(mask_changed.mean()), 3),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
