"""Fitting EMDLOT: CAMELOT-style initialisation and the early-stopped training loop (no Ray here)."""
from emdlot.training.config import EMDLOTConfig, TrainConfig, load_emdlot_config
from emdlot.training.init import InitReport, initialise_clusters
from emdlot.training.loop import FitResult, evaluate, fit, interpret, predict_proba
from emdlot.training.state import EpochRecord, FitState, History

__all__ = ["EMDLOTConfig", "TrainConfig", "load_emdlot_config", "InitReport", "initialise_clusters", "EpochRecord", "FitResult", "FitState", "History", "evaluate", "fit", "interpret", "predict_proba"]
