"""Node configuration: TOML file, then FEDMATCH_NODE_* environment, then CLI overrides."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmatch.config import load_section, read_toml
from fedmatch.domain import check_member_state
from fedmatch.errors import ConfigError, FedmatchError
from fedmatch.he.params import DEFAULT_PARAM_SET, check_param_set_name

__all__ = ["NodeConfig", "StorageConfig", "load_node_config", "load_storage_config"]


@dataclass(frozen=True)
class NodeConfig:
    member_state: str
    database: Path
    dimension: int = 128
    model_id: str = "sface-2021dec-int8bq"
    # The homomorphic-encryption parameter set the federation announces (fedmatch.he.params):
    # the node encodes its register for it and refuses probes of any other. The kernel set
    # (ckks-n8192-q29.29.29.25.60-k) runs the native product kernel; its narrow variant
    # (...-k-narrow) sends fewer bytes for a larger magnitude leak (fedmatch.he.params).
    he_param_set: str = DEFAULT_PARAM_SET.name
    listen: str = "127.0.0.1:0"
    max_workers: int = 8
    handle_ttl_seconds: float = 3600.0
    # The federation's threshold, versioned; the coordinator names the version it applies
    # and a node refuses any other (one global threshold, DOMAIN.md section 7).
    threshold: float = 0.45
    threshold_version: str = "2026-11-v1"
    # How long a requester's registered keys stay usable, and how many each member state
    # may have live at once (~36 MB each for the default parameter set): its current and
    # next epoch. A state's new keys push out only its own least recently used.
    key_epoch_seconds: float = 86400.0
    max_key_epochs: int = 2
    # New key bundles a state may have validated (seconds of a core each): a burst, then
    # this many per hour.
    key_registrations_per_hour: float = 120.0
    key_registration_burst: int = 10
    # Search worker processes; 0 means one per available core.
    search_workers: int = 0
    # Where the search runs: "local" (this machine's processes) or "ray" (Ray actors; see
    # fedmatch/he/ray_engine.py). ray_address: empty starts a private local Ray runtime,
    # "auto" or "ray://host:port" joins a cluster; ray_workers: actors, 0 = one per CPU of
    # the Ray runtime.
    engine: str = "local"
    ray_address: str = ""
    ray_workers: int = 0
    # An ArcFace-style ONNX recognizer for photo enrolment; empty means the shipped SFace.
    face_model: Path | None = None
    # Seen request nonces and per-state quotas (SQLite); unset means beside the database,
    # ``<database stem>.replay.sqlite``.
    replay_db: Path | None = None
    # The coordinator's address (host:port) through which this node sends notices of marks,
    # erasures and routed rights requests (node/lifecycle.py); empty: notices wait in the
    # outbox. Inbox and outbox live in ``<database stem>.notices.sqlite``.
    coordinator: str = ""
    # Distinct verifiers' confirmations this node itself requires of a hit before revealing
    # its details (it re-checks the signed verdicts); one only under a waiver naming its
    # legal reference. A different-sex hit always needs two.
    hit_verifiers_required: int = 2
    verification_waiver: str = ""

    @property
    def confirmations_required(self) -> int:
        return 1 if self.verification_waiver else self.hit_verifiers_required

    @property
    def notices_path(self) -> Path:
        return self.database.with_name(self.database.stem + ".notices.sqlite")

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
        check_param_set_name(self.he_param_set, "node.he_param_set")
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
        if self.key_registrations_per_hour <= 0 or self.key_registration_burst < 1:
            raise ConfigError(
                "node.key_registrations_per_hour must be positive and "
                "node.key_registration_burst at least 1"
            )
        if not 0 <= self.search_workers <= 256:
            raise ConfigError("node.search_workers must be between 0 (one per core) and 256")
        _check_engine(self.engine, self.ray_address, self.ray_workers)
        if not 2 <= self.hit_verifiers_required <= 5:
            raise ConfigError(
                "node.hit_verifiers_required must be between 2 and 5 (one person only under "
                "node.verification_waiver, with its legal reference)"
            )
        waiver = self.verification_waiver
        if waiver and (len(waiver) > 256 or not waiver.isprintable() or not waiver.strip()):
            raise ConfigError(
                "node.verification_waiver must be a legal reference of at most 256 printable "
                "characters"
            )


# "auto", "ray://host:port" (Ray client) or "host:port" (a cluster's GCS, from inside it).
_RAY_ADDRESS = re.compile(r"auto|(ray://)?([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(?P<port>[0-9]{1,5})")


def _check_engine(engine: str, ray_address: str, ray_workers: int) -> None:
    if engine not in ("local", "ray"):
        raise ConfigError('node.engine must be "local" or "ray"')
    if engine == "local" and (ray_address or ray_workers):
        raise ConfigError('node.ray_address and node.ray_workers need node.engine = "ray"')
    address = _RAY_ADDRESS.fullmatch(ray_address)
    if ray_address and (address is None or not 0 < int(address["port"] or 1) < 65536):
        raise ConfigError(
            'node.ray_address must be empty (a local Ray runtime), "auto" or "ray://host:port"'
        )
    if not 0 <= ray_workers <= 1024:
        raise ConfigError("node.ray_workers must be between 0 (one per Ray CPU) and 1024")


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


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: the key that encrypts templates at rest (node/sealing.py)."""

    # New registers are created with encrypted templates; false only acknowledges clear ones.
    encrypt_templates: bool = True
    # The key-encryption key: a file readable by its owner only, or an environment variable.
    key_file: Path | None = None
    key_env: str = ""

    def __post_init__(self) -> None:
        if self.key_file is not None and self.key_env:
            raise ConfigError("storage: give key_file or key_env, not both")
        if not self.encrypt_templates and (self.key_file is not None or self.key_env):
            raise ConfigError("storage.encrypt_templates = false contradicts a configured key")

    @property
    def has_key(self) -> bool:
        return self.key_file is not None or bool(self.key_env)


def load_storage_config(path: Path | None) -> tuple[StorageConfig, bool]:
    """The ``[storage]`` table and whether the file has one (a relative key_file written in
    the file is relative to the file, as the database path is)."""
    present = path is not None and "storage" in read_toml(path)
    values = load_section(path, "storage", "FEDMATCH_STORAGE_", StorageConfig, {})
    key_file = values.get("key_file")
    from_file = os.environ.get("FEDMATCH_STORAGE_KEY_FILE") is None
    if path is not None and key_file and from_file and not Path(key_file).is_absolute():
        values["key_file"] = path.parent / Path(key_file)
    return StorageConfig(**values), present
