"""Configuration loading shared by every service.

One TOML file per service, one table per service (``[node]``, ``[coordinator]``), then
``FEDMATCH_<SERVICE>_<KEY>`` environment variables, then explicit overrides (CLI flags).
Values are coerced to the dataclass field's type; a bad value fails at start with the key's
name. Only the CLI turns a :class:`ConfigError` into an exit code.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

from fedmatch.errors import ConfigError

__all__ = ["file_values", "load_section", "read_toml"]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _coerce(key: str, raw: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        kinds = [k for k in typing.get_args(kind) if k is not type(None)]
        kind = kinds[0]
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind in (int, float, str, Path):
            # bool is an int subclass: `dimension = true` is a mistake, not 1.
            if isinstance(raw, bool) or (kind is int and isinstance(raw, float)):
                raise ValueError(raw)
            return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {getattr(kind, '__name__', kind)}") from None
    return raw


def file_values(path: Path | None, section: str) -> dict[str, Any]:
    """The keys of ``[section]`` as written in the file (before environment and overrides)."""
    if path is None:
        return {}
    table = read_toml(path).get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    return table


def load_section(
    path: Path | None,
    section: str,
    env_prefix: str,
    cls: type[Any],
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Merge file, environment and overrides for the dataclass ``cls``; returns field values."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in file_values(path, section).items():
        if key not in fields:
            raise ConfigError(f"{section}.{key}: unknown key")
        values[key] = raw
    for key in fields:
        env = os.environ.get(env_prefix + key.upper())
        if env is not None:
            values[key] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if missing:
        raise ConfigError(f"{section}.{missing[0]} is required")
    return {
        k: (_coerce(f"{section}.{k}", v, hints[k]) if hints.get(k) in _SCALARS else v)
        for k, v in values.items()
    }


_SCALARS: tuple[Any, ...] = (int, float, str, bool, Path, Path | None, str | None)
