"""A paper-shaped synthetic dataset with planted, documented default drivers (`emdlot synth`)."""
from emdlot.synth.generate import generate, write_dataset

__all__ = ["generate", "write_dataset"]
