"""PCA to TEXT_DIMS components per section, fitted on training firms only.

Paper section 4: the two 768-d section embeddings are reduced to 40 dims each and
concatenated (80 features; cumulative explained variance 0.7678 in the paper). Fitting
on training firms only keeps the test firms out of every learned quantity. A firm that
lacks one section gets NaN there, so the model masks that section (no chapter weight)
instead of reading a made-up vector; the firm's status says the section was missing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from emdlot.schema import SECTIONS, TEXT_DIMS, text_feature_column


@dataclass
class SectionPCA:
    """One fitted PCA per prospectus section."""

    pcas: dict[str, PCA]

    @property
    def explained_variance(self) -> dict[str, float]:
        """Per section: share of that section's variance kept; 'total': share of both together."""
        shares = {s: float(p.explained_variance_ratio_.sum()) for s, p in self.pcas.items()}
        kept = sum(float(p.explained_variance_.sum()) for p in self.pcas.values())
        total = sum(float(p.explained_variance_.sum() / p.explained_variance_ratio_.sum()) for p in self.pcas.values())
        return {**shares, "total": kept / total}


def fit_section_pca(embeddings: pd.DataFrame, train_firms: set[str], seed: int) -> SectionPCA:
    """Fit PCA(TEXT_DIMS) per section on the rows of training firms.

    `embeddings`: columns firm_id, section, embedding (one vector per usable document).
    """
    pcas = {}
    for section in SECTIONS:
        rows = embeddings[(embeddings["section"] == section) & embeddings["firm_id"].isin(train_firms)]
        if len(rows) <= TEXT_DIMS:
            raise ValueError(
                f"PCA for section {section!r} needs more than {TEXT_DIMS} training firms with that "
                f"section, found {len(rows)}"
            )
        matrix = np.stack(rows["embedding"].to_numpy()).astype(np.float64)
        if matrix.shape[1] < TEXT_DIMS:
            raise ValueError(f"embeddings have {matrix.shape[1]} dims, fewer than the {TEXT_DIMS} PCA components")
        pcas[section] = PCA(n_components=TEXT_DIMS, svd_solver="full", random_state=seed).fit(matrix)
    return SectionPCA(pcas)


def text_features(embeddings: pd.DataFrame, model: SectionPCA) -> pd.DataFrame:
    """One row per firm with any usable section: firm_id + TEXT_DIMS scores per section (NaN if absent)."""
    firms = sorted(embeddings["firm_id"].unique())
    index = {f: i for i, f in enumerate(firms)}
    columns: dict[str, np.ndarray] = {"firm_id": np.asarray(firms, dtype=object)}
    for section in SECTIONS:
        scores = np.full((len(firms), TEXT_DIMS), np.nan, dtype=np.float32)
        rows = embeddings[embeddings["section"] == section]
        if len(rows):
            matrix = np.stack(rows["embedding"].to_numpy()).astype(np.float64)
            scores[[index[f] for f in rows["firm_id"]]] = model.pcas[section].transform(matrix)
        for i in range(TEXT_DIMS):
            columns[text_feature_column(section, i)] = scores[:, i]
    return pd.DataFrame(columns)
