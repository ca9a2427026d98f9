"""Typed configuration: every stage's settings as a pydantic model, loadable from YAML."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T", bound=BaseModel)

PAPER_SEED = 86  # the first of the paper's ten seeds (Appendix C)


class StrictModel(BaseModel):
    """Unknown keys in a YAML file are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ConfigError(ValueError):
    """A settings file that cannot be used; the message names the file."""


def check_at_least(options: list[tuple[str, int | None, int]]) -> None:
    """(option, value, least) of command-line numbers: a ConfigError for the first value below its least
    (None: the option was not given)."""
    for option, value, least in options:
        if value is not None and value < least:
            raise ConfigError(f"{option} must be at least {least} (got {value})")


def describe_yaml_error(path: str | Path, err: yaml.YAMLError) -> str:
    """One line: file, line and column of a YAML syntax error, and what the parser expected."""
    mark = getattr(err, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{path}{where}: not valid YAML ({problem})"


def describe_validation(err: ValidationError) -> str:
    """One line per settings error joined by '; ': `firms: Input should be ... (got 0)`."""
    parts = []
    for e in err.errors():
        name = ".".join(str(part) for part in e["loc"]) or "settings"
        got = f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e.get("input"), dict) else ""
        parts.append(f"{name}: {e['msg']}{got}")
    return "; ".join(parts)


class SynthConfig(StrictModel):
    """Shape of the paper-like synthetic dataset (paper section 4, Tables A.1-A.4)."""

    firms: int = Field(1994, ge=20)
    seed: int = PAPER_SEED
    distressed_rate: float = 38 / 1994  # 1.91% of issuers defaulted or were extended
    extended_share: float = 24 / 38  # 24 Extended : 14 Defaulted
    first_quarter: str = "2015Q1"
    last_quarter: str = "2024Q3"  # 39 quarters
    skip_probability: float = 0.08  # a firm misses a quarter's report
    missing_probability: float = 0.04  # one indicator missing in a reported quarter
    performing_partial_signal: float = 0.08  # share of Performing firms carrying a weakened mechanism
    long_text_share: float = 0.3  # sections longer than BERT's 512 tokens


class PrepareConfig(StrictModel):
    """DESIGN.md section 2: exclusion window, split, imputation, balancing."""

    seed: int = PAPER_SEED
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)  # carved from the training firms for tuning/early stopping
    exclusion_months: int = Field(6, ge=0)  # two quarters before event_date are dropped (look-ahead)
    # "matched": Performing firms get a seeded pseudo-event and the same window, so when a sequence ends
    # does not give the class away; "paper": they keep their full history (the paper's choice; it leaks).
    performing_cutoff: Literal["matched", "paper"] = "matched"
    max_len: int = Field(39, ge=1)  # paper: up to 39 quarters
    imputer_max_iter: int = Field(10, ge=1)
    imputer_nearest_features: int | None = 10  # caps IterativeImputer cost on wide panels; None = all
    # The transforms are fitted on at most this many training firm-quarters (a seeded sample): 68 small
    # regressions are well estimated from 50k rows, and the fit then stops growing with the panel.
    transform_fit_rows: int | None = Field(50_000, ge=1000)
    smote_k_neighbors: int = Field(5, ge=1)
    # "standard": z-scores (the paper); "quantile": each feature through its training quantiles to N(0, 1)
    scaling: Literal["standard", "quantile"] = "standard"
    quantiles: int = Field(1000, ge=10)  # quantile scaling: reference points per feature


def load_config(cls: type[T], path: str | Path | None = None, **overrides) -> T:
    """Build `cls` from a YAML file (optional, yaml.safe_load) with keyword overrides on top; None
    overrides are ignored. Every problem is a ConfigError that names the file."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as err:
            raise ConfigError(describe_yaml_error(path, err)) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path or 'settings'}: invalid {cls.__name__}: {describe_validation(err)}") from None
