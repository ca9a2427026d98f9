"""The EMDLOT network: T-LSTM, three attention levels, soft clustering, loss and typed config."""
from emdlot.model.batch import Batch, to_batch
from emdlot.model.config import EMDLOTConfig, ModelConfig, TrainConfig, load_emdlot_config
from emdlot.model.emdlot import EMDLOT, MODALITIES, EMDLOTOutput, Interpretation
from emdlot.model.losses import LossTerms, emdlot_loss
from emdlot.model.tlstm import TLSTM

__all__ = [
    "Batch", "to_batch", "EMDLOTConfig", "ModelConfig", "TrainConfig", "load_emdlot_config", "EMDLOT", "MODALITIES",
    "EMDLOTOutput", "Interpretation", "LossTerms", "emdlot_loss", "TLSTM",
]
