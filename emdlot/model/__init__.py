"""The EMDLOT network: T-LSTM, three attention levels, soft clustering, loss and its typed architecture."""
from emdlot.model.batch import Batch, to_batch
from emdlot.model.config import ModelConfig
from emdlot.model.emdlot import EMDLOT, MODALITIES, EMDLOTOutput, Interpretation
from emdlot.model.losses import LossTerms, emdlot_loss
from emdlot.model.tlstm import TLSTM

__all__ = [
    "Batch", "to_batch", "ModelConfig", "EMDLOT", "MODALITIES",
    "EMDLOTOutput", "Interpretation", "LossTerms", "emdlot_loss", "TLSTM",
]
