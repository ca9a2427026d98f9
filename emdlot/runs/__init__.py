"""One training run, in one place: fit (`fit_run`, resumable), score (`score_run`), both (`train_and_score`),
and log the result to MLflow (`log_result`); `assemble_for` reads the parts a configuration needs. The demo, the quality benchmark and the tune, train and predict
flows all call these."""
from emdlot.runs.single import RunResult, RunState, assemble_for, fit_run, score_run, train_and_score

__all__ = ["RunResult", "RunState", "assemble_for", "fit_run", "score_run", "train_and_score"]
