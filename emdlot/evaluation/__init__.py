"""Metrics and the composite tuning objective."""
from emdlot.evaluation.metrics import (
    ClassificationMetrics,
    CompositeWeights,
    classification_metrics,
    composite_score,
    three_class_penalty,
)

__all__ = ["ClassificationMetrics", "CompositeWeights", "classification_metrics", "composite_score", "three_class_penalty"]
