"""EMDLOT."""
