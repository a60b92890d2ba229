"""Parameter files: YAML mapped onto frozen dataclasses, validated.

Keys carry their units (``max_accel_mps2``); an unknown or missing key, a non-number
or a NaN is a ``ConfigError`` naming the file and the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None


def from_mapping(cls: type[T], data: Any, source: str) -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and numeric values."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of parameters")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(name for name, f in fields.items() if name not in data
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}")
    values = {}
    for name, value in data.items():
        if fields[name].type in ("float", float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{source}: {name}={value!r} must be a finite number")
            value = float(value)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_params(cls: type[T], path: str | Path) -> T:
    return from_mapping(cls, read_yaml(path), str(path))
