"""Scoring new firms with a fitted EMDLOT package (flows/predict.py): which model (`model`), the text features
made with the packaged text model (`text`), and one output row per input firm (`predict`)."""
from emdlot.scoring.model import ModelLoadError, ResolvedModel, resolve_model
from emdlot.scoring.predict import (OUTPUT_COLUMNS, ScoringPlan, describe_counts, outcome_counts, plan_scoring,
                                    score_plan, score_with_drivers, top_drivers)

__all__ = ["ModelLoadError", "OUTPUT_COLUMNS", "ResolvedModel", "ScoringPlan", "describe_counts", "outcome_counts",
           "plan_scoring", "resolve_model", "score_plan", "score_with_drivers", "top_drivers"]
