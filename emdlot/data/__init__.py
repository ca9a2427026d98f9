"""Data contract, synthetic data, sequence preparation and training-array assembly."""
