"""Node configuration: TOML file, then FEDMATCH_NODE_* environment, then CLI overrides."""

from __future__ import annotations

import os
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
    # The federation's threshold, versioned; the coordinator names the version it applies
    # and a node refuses any other (one global threshold, DOMAIN.md section 7).
    threshold: float = 0.45
    threshold_version: str = "2026-11-v1"
    # How long a requester's registered keys stay usable, and how many are kept at once
    # (~36 MB each for the default parameter set).
    key_epoch_seconds: float = 86400.0
    max_key_epochs: int = 8
    # Search worker processes; 0 means one per available core.
    search_workers: int = 0
    # An ArcFace-style ONNX recognizer for photo enrolment; empty means the shipped SFace.
    face_model: Path | None = None
    # Seen request nonces and per-state quotas (SQLite); unset means beside the database,
    # ``<database stem>.replay.sqlite``.
    replay_db: Path | None = None

    @property
    def replay_path(self) -> Path:
        return self.replay_db or self.database.with_name(self.database.stem + ".replay.sqlite")

    def __post_init__(self) -> None:
        try:
            check_member_state(self.member_state)
        except FedmatchError as exc:
            raise ConfigError(f"node.member_state: {exc}") from None
        if not 1 <= self.dimension <= 4096:
            raise ConfigError("node.dimension must be between 1 and 4096")
        if self.max_workers < 1:
            raise ConfigError("node.max_workers must be at least 1")
        if self.handle_ttl_seconds <= 0:
            raise ConfigError("node.handle_ttl_seconds must be positive")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("node.threshold must be a cosine in (0, 1)")
        if self.key_epoch_seconds <= 0:
            raise ConfigError("node.key_epoch_seconds must be positive")
        if self.max_key_epochs < 1:
            raise ConfigError("node.max_key_epochs must be at least 1")
        if not 0 <= self.search_workers <= 256:
            raise ConfigError("node.search_workers must be between 0 (one per core) and 256")


def load_node_config(path: Path | None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    overrides = overrides or {}
    values = load_section(path, "node", "FEDMATCH_NODE_", NodeConfig, overrides)
    db = Path(values["database"])
    from_file = (
        overrides.get("database") is None and os.environ.get("FEDMATCH_NODE_DATABASE") is None
    )
    if path is not None and from_file:
        # A relative path written in a config file is relative to that file (so a config
        # directory can move as a whole); one from the environment or a flag is relative to
        # the working directory, as a shell user expects.
        values["database"] = db if db.is_absolute() else (path.parent / db)
    replay = values.get("replay_db")
    replay_from_file = (
        overrides.get("replay_db") is None and os.environ.get("FEDMATCH_NODE_REPLAY_DB") is None
    )
    if path is not None and replay and replay_from_file and not Path(replay).is_absolute():
        values["replay_db"] = path.parent / Path(replay)
    return NodeConfig(**values)
