"""One training run, in one place: train and score (`train_and_score`), and log the result to MLflow
(`log_result`). The demo, the quality benchmark and the tune and train flows all call these."""
from emdlot.runs.single import RunResult, train_and_score

__all__ = ["RunResult", "train_and_score"]
