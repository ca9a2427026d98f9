"""How should a network read the summary statistics? Chosen by cross-validation, never on test firms.

For each split (the quality benchmark's matched-cutoff splits), the training + validation firms are cut into
stratified folds (emdlot.data.assemble.cv_folds: each fold's training part SMOTE'd on its own); each fold's
training part fits, its held-out part scores. The test firms of every split are never loaded. Compared on
EMDLOT's own summary view (trend_summary, 7F columns):

- mlp_quantile: QuantileTransformer to N(0, 1), then an MLP (today's `summary_scaling: quantile`).
- mlp_ple_K: piecewise-linear encoding (Gorishniy et al. 2022, "On embeddings for numerical features in
  tabular deep learning"): degree-1 B-splines on K quantile knots per column (SplineTransformer), then the MLP.
- mlp_quantile_alpha_A, _narrow, _bagged_5: more L2, one layer of 16, five bagged MLPs; mlp_ple_8_alpha_1: the
  encoding with more L2; logistic_quantile: a
  linear model on the same scores (does the network's capacity matter at all?); logistic_ple_8_C_c: a linear
  model on the encoding, i.e. an additive model with a piecewise-linear shape per statistic; logistic_pairs_C_c:
  a linear model on the scores and all their pairwise products (explicit interactions).
- forest_lr_L: differentiable oblivious trees (emdlot.model.trees, 128 trees of depth 4, the summary encoder of
  `summary_encoder: forest`) trained alone at learning rate L for 15 epochs of batch 32 (EMDLOT's loop);
  forest_TxD: T trees of depth D at rate 0.01 (how large a forest should be; forest_lr_0.01 is forest_128x4).
- xgboost: the tree baseline on the same columns, for reference; xgboost_depth_1 / _2: the same with stumps (a sum
  of one-column steps, no interactions) or depth-2 trees: where does the tree's lead come from?

Writes benchmarks/results/summary_encoding.json (per-fold macro mAP and AUC, means, sd over splits).
Run: .venv/bin/python benchmarks/summary_encoding.py [--splits 5] [--folds 4] [--seeds 2] [--models NAME ...]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, QuantileTransformer, SplineTransformer, StandardScaler

RESULTS = Path(__file__).resolve().parent / "results" / "summary_encoding.json"
SPLIT_SEEDS = [86, 127, 71, 61, 84]


class ForestClassifier(ClassifierMixin, BaseEstimator):
    """emdlot.model.trees.ObliviousForest alone as a scikit-learn classifier: leaves hold class logits,
    thresholds start at the training rows' values, AdamW on cross-entropy for a fixed number of epochs."""

    def __init__(self, num_trees=128, depth=4, epochs=15, lr=1e-2, weight_decay=1e-2, batch_size=32, random_state=0):
        self.num_trees, self.depth, self.epochs, self.lr = num_trees, depth, epochs, lr
        self.weight_decay, self.batch_size, self.random_state = weight_decay, batch_size, random_state

    def fit(self, X, y):
        import torch

        from emdlot.model.trees import ObliviousForest

        torch.manual_seed(self.random_state)
        generator = torch.Generator().manual_seed(self.random_state)
        self.classes_ = np.unique(y)
        x, target = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(np.searchsorted(self.classes_, y))
        self.forest_ = ObliviousForest(x.shape[1], len(self.classes_), self.num_trees, self.depth)
        self.forest_.init_from(x, generator)
        optimizer = torch.optim.AdamW(self.forest_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            for rows in torch.randperm(len(x), generator=generator).split(self.batch_size):
                loss = torch.nn.functional.cross_entropy(self.forest_(x[rows]), target[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return self

    def predict_proba(self, X):
        import torch

        with torch.no_grad():
            return torch.softmax(self.forest_(torch.as_tensor(X, dtype=torch.float32)), dim=-1).numpy()


def encoders(seed: int) -> dict:
    """name -> unfitted classifier on the 7F summary columns."""
    from sklearn.ensemble import BaggingClassifier
    from sklearn.linear_model import LogisticRegression

    from emdlot.training.baselines import TREE_BASELINES

    def mlp(alpha: float = 1e-3, hidden: tuple = (64, 64), random_state: int = seed):
        return MLPClassifier(hidden_layer_sizes=hidden, alpha=alpha, max_iter=300, random_state=random_state)

    def quantile(model):
        return make_pipeline(QuantileTransformer(n_quantiles=1000, output_distribution="normal"), model)

    out = {"mlp_quantile": quantile(mlp())}
    for knots in (8, 16):
        out[f"mlp_ple_{knots}"] = make_pipeline(StandardScaler(), SplineTransformer(n_knots=knots, degree=1, knots="quantile"), mlp())
    for alpha in (0.03, 1.0, 3.0):
        out[f"mlp_quantile_alpha_{alpha:g}"] = quantile(mlp(alpha))
    out["mlp_ple_8_alpha_1"] = make_pipeline(StandardScaler(), SplineTransformer(n_knots=8, degree=1, knots="quantile"), mlp(1.0))
    out["mlp_quantile_narrow"] = quantile(mlp(hidden=(16,)))
    out["mlp_quantile_bagged_5"] = quantile(BaggingClassifier(mlp(), n_estimators=5, random_state=seed))
    out["logistic_quantile"] = quantile(LogisticRegression(C=0.1, max_iter=2000))
    for c in (0.01, 0.001):  # every pairwise product of the scores, linearly: explicit interactions
        out[f"logistic_pairs_C_{c:g}"] = make_pipeline(
            QuantileTransformer(n_quantiles=1000, output_distribution="normal"),
            PolynomialFeatures(degree=2, interaction_only=False, include_bias=False), StandardScaler(),
            LogisticRegression(C=c, max_iter=3000))
    for c in (0.1, 0.01):  # an additive model of piecewise-linear shapes, one per statistic
        out[f"logistic_ple_8_C_{c:g}"] = make_pipeline(StandardScaler(), SplineTransformer(n_knots=8, degree=1, knots="quantile"),
                                                       LogisticRegression(C=c, max_iter=3000))
    for lr in (0.01, 0.0006):  # EMDLOT's loop: 15 epochs of batch 32; 0.0006 is the T-LSTM's rate (Table 5)
        out[f"forest_lr_{lr:g}"] = quantile(ForestClassifier(lr=lr, random_state=seed))
    for trees, depth in ((128, 6), (256, 4), (64, 6)):  # size and depth at the summary rate 0.01
        out[f"forest_{trees}x{depth}"] = quantile(ForestClassifier(num_trees=trees, depth=depth, random_state=seed))
    out["xgboost"] = TREE_BASELINES["XGBoost"][0](seed)
    for depth in (1, 2):  # depth 1 adds up one-column steps: no interaction between statistics
        out[f"xgboost_depth_{depth}"] = TREE_BASELINES["XGBoost"][0](seed).set_params(max_depth=depth)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--models", nargs="+", default=None, help="names from encoders() (default: all); results merge into --out")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    from emdlot.config import PrepareConfig, SynthConfig
    from emdlot.data.arrays import SequenceArrays
    from emdlot.data.assemble import assemble, cv_folds
    from emdlot.data.prepare import prepare
    from emdlot.data.summary import trend_summary
    from emdlot.evaluation.metrics import classification_metrics
    from emdlot.synth import generate, write_dataset

    def view(a: SequenceArrays) -> np.ndarray:
        return trend_summary(a.X, a.mask, a.delta_t)

    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as work:
        write_dataset(generate(SynthConfig()), Path(work) / "in")
        for split in SPLIT_SEEDS[: args.splits]:
            cfg = PrepareConfig(seed=split, performing_cutoff="matched")
            prepare(Path(work) / "in", Path(work) / f"ds{split}", cfg)
            parts = assemble(Path(work) / f"ds{split}", balance=False)
            union = SequenceArrays.concat(parts["train"], parts["val"])  # parts["test"] is never read
            folds = cv_folds(union, args.folds, cfg.smote_k_neighbors, split)
            for i in range(1, args.folds + 1):
                train, held = folds[f"cv{i}_train"], folds[f"cv{i}_val"]
                for seed in range(args.seeds):
                    for name, model in encoders(seed).items():
                        if args.models and name not in args.models:
                            continue
                        proba = np.zeros((len(held), 3))
                        model.fit(view(train), train.y)
                        proba[:, model.classes_] = model.predict_proba(view(held))
                        m = classification_metrics(held.y, proba)
                        rows.append({"split": split, "fold": i, "seed": seed, "model": name,
                                     "average_precision": m.average_precision, "auc": m.auc})
            print(f"[summary_encoding] split {split} done ({time.perf_counter() - started:.0f}s)", flush=True)
    summary = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        per_split = {s: [r for r in rows if r["model"] == name and r["split"] == s] for s in SPLIT_SEEDS[: args.splits]}
        entry = {}
        for metric in ("average_precision", "auc"):
            means = [np.mean([r[metric] for r in rs]) for rs in per_split.values()]
            entry[metric] = {"mean": float(np.mean(means)), "sd_over_splits": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
                             "per_split": [round(float(x), 4) for x in means]}
        summary[name] = entry | {"splits": args.splits, "folds": args.folds, "seeds": args.seeds}
        print(f"| {name} | mAP {entry['average_precision']['mean']:.3f} ± {entry['average_precision']['sd_over_splits']:.3f} "
              f"| AUC {entry['auc']['mean']:.3f} ± {entry['auc']['sd_over_splits']:.3f} |")
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {"summary": {}, "folds": []}
    body = {"setup": {"firms": "training + validation firms of each split only (test firms never loaded)",
                      "view": "trend_summary (7F)", "note": "splits, folds and seeds per model are in each summary entry "
                                                            "(several invocations merged)"},
            "summary": old["summary"] | summary,
            "folds": [r for r in old["folds"] if r["model"] not in summary] + rows}
    out.write_text(json.dumps(body, indent=1))


if __name__ == "__main__":
    main()
