"""Hyperparameter search over the paper's Table 5 space with Ray Tune and Optuna (DESIGN.md section 4)."""
