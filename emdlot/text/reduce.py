"""PCA to TEXT_DIMS components per section, fitted on training firms only.

Paper section 4: the two 768-d section embeddings are reduced to 40 dims each and
concatenated (80 features; cumulative explained variance 0.7678 in the paper). Fitting
on training firms only keeps the test firms out of every learned quantity. A firm that
lacks one section gets NaN there, so the model masks that section (no chapter weight)
instead of reading a made-up vector; the firm's status says the section was missing.

The fitted text model (the PCAs, the TF-IDF + SVD fallback embedder when a run used it, and the run's
settings) is saved with skops as `text_pca.skops`, never as a pickle: `load_text_model` refuses a file
with any type skops does not trust and then checks that every object is what it should be, and
`apply_text_model` turns new embeddings into the same 80 features.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline

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


# ---------------------------------------------------------------- the saved text model
TEXT_MODEL_FILE = "text_pca.skops"
TEXT_MODEL_FORMAT = "emdlot-text-model/1"
# Types beyond skops' default-trusted ones that a text model file may hold. PCA, the fallback's Pipeline,
# TfidfVectorizer and TruncatedSVD (and their numpy/builtin contents) are trusted by skops already, so
# the list is empty: any other type in a file is refused before anything is constructed.
TEXT_MODEL_TRUSTED_TYPES: list[str] = []


@dataclass
class TextModel:
    """What a scorer needs to turn new section embeddings into the 80 text features.

    `settings`: format, embedder_kind, embedder_source, config (EmbedConfig as JSON data), sections,
    text_dims, explained_variance. `fallback_model`: the fitted TF-IDF + SVD pipeline of a fallback run
    (embed new texts with `fallback_embedder()`), None when the run used BERT (then embed with the BERT
    named in settings['embedder_source'] and the pooling in settings['config']['embedder']).
    """

    pca: SectionPCA
    fallback_model: Pipeline | None
    settings: dict

    def features(self, embeddings: pd.DataFrame) -> pd.DataFrame:
        return apply_text_model(self, embeddings)

    def fallback_embedder(self):
        """The fitted fallback as an embedder (`.embed(texts) -> (n, dims)`), or None for a BERT run."""
        if self.fallback_model is None:
            return None
        from emdlot.text.embed import SklearnEmbedder

        return SklearnEmbedder(self.fallback_model, int(self.settings["config"]["embedder"]["tfidf"]["dims"]))


def save_text_model(path: str | Path, pca: SectionPCA, fallback_model: Pipeline | None, settings: dict) -> dict:
    """Write the fitted objects with skops and the plain settings as JSON text inside the same file.

    `settings` (embedder_kind, embedder_source, config, ...) must be JSON data; format, sections, text_dims
    and explained_variance are added. Returns the settings as written."""
    settings = {**settings, "format": TEXT_MODEL_FORMAT, "sections": list(SECTIONS), "text_dims": TEXT_DIMS,
                "explained_variance": pca.explained_variance}
    sio.dump({"pcas": dict(pca.pcas), "fallback_model": fallback_model,
              "settings_json": json.dumps(settings, ensure_ascii=False)}, path)
    return settings


def load_text_model(path: str | Path) -> TextModel:
    """Read a text_pca.skops file; ValueError naming the file for unexpected types or contents."""
    untrusted = set(sio.get_untrusted_types(file=path)) - set(TEXT_MODEL_TRUSTED_TYPES)
    if untrusted:
        raise ValueError(f"{path}: refusing to load unexpected types {sorted(untrusted)}")
    raw = sio.load(path, trusted=TEXT_MODEL_TRUSTED_TYPES)

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: not an EMDLOT text model ({what})")

    if not isinstance(raw, dict) or set(raw) != {"pcas", "fallback_model", "settings_json"}:
        raise bad(f"expected keys pcas, fallback_model, settings_json; found "
                  f"{sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    try:
        settings = json.loads(raw["settings_json"])
    except (TypeError, ValueError) as err:
        raise bad(f"settings are not JSON: {err}") from None
    found = settings.get("format") if isinstance(settings, dict) else None
    if found != TEXT_MODEL_FORMAT:
        raise bad(f"format {found!r}, expected {TEXT_MODEL_FORMAT!r}")
    pcas = raw["pcas"]
    if not isinstance(pcas, dict) or set(pcas) != set(SECTIONS) or settings.get("sections") != list(SECTIONS):
        raise bad(f"sections {sorted(pcas) if isinstance(pcas, dict) else pcas!r}, expected {list(SECTIONS)}")
    for section, pca in pcas.items():
        if not isinstance(pca, PCA) or getattr(pca, "n_components_", None) != TEXT_DIMS:
            raise bad(f"{section!r} is not a fitted PCA with {TEXT_DIMS} components")
    fallback = raw["fallback_model"]
    if fallback is not None and not isinstance(fallback, Pipeline):
        raise bad(f"fallback_model is a {type(fallback).__name__}, not a Pipeline")
    return TextModel(SectionPCA({s: pcas[s] for s in SECTIONS}), fallback, settings)


def apply_text_model(model: TextModel | SectionPCA, embeddings: pd.DataFrame) -> pd.DataFrame:
    """New embeddings (columns firm_id, section, embedding) -> firm_id + the 80 text features, exactly as
    the embed run computed them for its firms; a clear error for an embedding of the wrong width."""
    pca = model.pca if isinstance(model, TextModel) else model
    for section, p in pca.pcas.items():
        rows = embeddings.loc[embeddings["section"] == section, "embedding"]
        widths = {int(np.asarray(v).shape[-1]) for v in rows}
        if widths - {p.n_features_in_}:
            raise ValueError(f"{section!r} embeddings have {sorted(widths)} dims; the text model was fitted "
                             f"on {p.n_features_in_}-d embeddings")
    unknown = set(embeddings["section"]) - set(pca.pcas)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; the text model has {sorted(pca.pcas)}")
    return text_features(embeddings, pca)
