"""The search space file: Table 5 as YAML, turned into Ray Tune domains, and the paper's optimum as a point."""
from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from emdlot.config import ConfigError, describe_yaml_error
from emdlot.training.config import EMDLOTConfig

DEFAULT_SPACE = files("emdlot") / "configs" / "tune_space.yaml"
def grid_top(low: float, high: float, step: float) -> float:
    """The last point of the grid low, low + step, ... that is <= high: a `high` off the grid (Table 5's 0.99
    with step 0.05) becomes 0.95, as Optuna itself does; Ray refuses an off-grid bound."""
    return round(low + step * math.floor((high - low) / step + 1e-9), 10)


def _grid(low: float, high: float, step: float):
    return tune.quniform(low, grid_top(low, high, step), step)


KINDS = {
    "choice": lambda args: tune.choice(list(args)),
    "quniform": lambda args: _grid(*args),
    "loguniform": lambda args: tune.loguniform(*args),
    "qrandint": lambda args: tune.qrandint(*args),
}


def read_space(path: str | Path | None = None) -> dict[str, dict[str, list]]:
    """The space file as {name: {kind: args}}; unknown names, kinds or malformed entries are a ConfigError
    naming the file and the entry."""
    path = path or DEFAULT_SPACE
    try:
        raw = yaml.safe_load((Path(path) if isinstance(path, str) else path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"search space file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(describe_yaml_error(path, err)) from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of hyperparameter -> {{kind: arguments}}")
    known = set(EMDLOTConfig().model.model_dump()) | set(EMDLOTConfig().train.model_dump())
    for name, entry in raw.items():
        if name not in known:
            raise ConfigError(f"{path}: unknown hyperparameter {name!r} (not an EMDLOT model or train setting)")
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in KINDS:
            raise ConfigError(f"{path}: {name}: expected one of {sorted(KINDS)} with its arguments, got {entry!r}")
    return raw


def tune_space(space: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Ray Tune domains for every entry of a space read by `read_space`."""
    return {name: KINDS[kind](args) for name, entry in space.items() for kind, args in entry.items()}


def paper_optimum(space: dict[str, dict[str, list]], base: EMDLOTConfig | None = None) -> dict[str, Any]:
    """The base configuration's values (the paper's Table 5 optimum by default) of the searched names."""
    base = base or EMDLOTConfig()
    flat = base.model.model_dump() | base.train.model_dump()
    point = {name: flat[name] for name in space}
    for name, value in point.items():
        (kind, args), = space[name].items()
        inside = value in args if kind == "choice" else args[0] <= value <= args[1]
        if not inside:
            raise ConfigError(f"the base configuration's {name}={value} lies outside the search space "
                              f"({kind} {args}); the first trial evaluates the base, so widen the space or change the base")
    return point
