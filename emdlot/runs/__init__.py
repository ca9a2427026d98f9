"""One training run, in one place: fit (`fit_run`, resumable), score (`score_run`), both (`train_and_score`),
and log the result to MLflow (`log_result`). The demo, the quality benchmark and the tune, train and predict
flows all call these."""
from emdlot.runs.single import RunResult, RunState, fit_run, score_run, train_and_score

__all__ = ["RunResult", "RunState", "fit_run", "score_run", "train_and_score"]
