"""Node configuration: TOML file, then FEDMATCH_NODE_* environment, then CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmatch.config import load_section
from fedmatch.domain import check_member_state
from fedmatch.errors import ConfigError, FedmatchError

__all__ = ["NodeConfig", "load_node_config"]


@dataclass(frozen=True)
class NodeConfig:
    member_state: str
    database: Path
    dimension: int = 128
    model_id: str = "sface-2021dec-int8bq"
    listen: str = "127.0.0.1:0"
    max_workers: int = 8
    handle_ttl_seconds: float = 3600.0

    def __post_init__(self) -> None:
        try:
            check_member_state(self.member_state)
        except FedmatchError as exc:
            raise ConfigError(f"node.member_state: {exc}") from None
        if not 1 <= self.dimension <= 4096:
            raise ConfigError("node.dimension must be between 1 and 4096")
        if self.max_workers < 1:
            raise ConfigError("node.max_workers must be at least 1")


def load_node_config(path: Path | None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    values = load_section(path, "node", "FEDMATCH_NODE_", NodeConfig, overrides or {})
    if "database" in values and path is not None:
        # Relative paths in a config file are relative to that file, not to the cwd.
        db = Path(values["database"])
        values["database"] = db if db.is_absolute() else (path.parent / db)
    return NodeConfig(**values)
