"""Coordinator configuration: the federation settings and the node registry (TOML)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.note import NoteVerifier
from fedmatch.config import load_section, read_toml
from fedmatch.domain import check_member_state
from fedmatch.errors import ConfigError, FedmatchError, InvalidInput
from fedmatch.he.params import DEFAULT_PARAM_SET, check_param_set_name

__all__ = ["CoordinatorConfig", "NodeEntry", "load_coordinator_config"]


@dataclass(frozen=True)
class NodeEntry:
    member_state: str
    address: str
    # The node's note verifier key (`fedmatch audit keygen`): the node witnesses this
    # coordinator's log, and its cosignatures are checked against this key.
    key: str = ""

    def __post_init__(self) -> None:
        try:
            check_member_state(self.member_state)
        except FedmatchError as exc:
            raise ConfigError(f"nodes.member_state: {exc}") from None
        if ":" not in self.address:
            raise ConfigError(f"nodes.address for {self.member_state} must be host:port")
        try:
            NoteVerifier.from_vkey(self.key)
        except (AuditVerificationError, InvalidInput):
            raise ConfigError(f"nodes.key for {self.member_state} is not a verifier key") from None


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: str = "127.0.0.1:0"
    # Cosine similarity at or above which a slot is a match, set for the sum of all galleries
    # (DOMAIN.md section 7); one global value, versioned.
    threshold: float = 0.45
    threshold_version: str = "2026-11-v1"
    model_id: str = "sface-2021dec-int8bq"
    dimension: int = 128
    # The homomorphic-encryption parameter set the federation uses (fedmatch.he.params),
    # announced to requesters; every node must run the same (a node refuses other probes).
    he_param_set: str = DEFAULT_PARAM_SET.name
    node_deadline_seconds: float = 20.0
    lookup_ttl_seconds: float = 3600.0
    # Threads serving calls: a lookup holds one while it waits for the nodes' answers.
    max_workers: int = 32
    # Key epochs: how long registered key ids are accepted (nodes have the same setting).
    key_epoch_seconds: float = 86400.0
    # New key bundles a state may fan out to every node (each costs every node seconds of a
    # core to validate): a burst, then this many per hour (the nodes' default quota, so a
    # flood is refused here, before the fan-out).
    key_registrations_per_hour: float = 120.0
    key_registration_burst: int = 10
    # Distinct people who must have verified a candidate hit before its details are asked
    # for (DOMAIN.md section 2: two by default, AI Act Art. 14(5)).
    hit_verifiers_required: int = 2
    # The waiver of the second person: the legal reference that allows one confirmation per
    # hit. Empty (the default) means no waiver; set, it is logged with the policy at start.
    # A different-sex hit still needs two people (the nodes hold it back otherwise).
    verification_waiver: str = ""
    # Days the case file keeps a proposal (and its confirmation) after the resolve: record
    # metadata of verified hits, so not forever. 548 days (18 months) outlasts the longest
    # transfer time limit (Dublin III Art. 29(2), AMMR Art. 46(2): 18 months when the person
    # absconds); the decision itself stays in the signed log, by digest.
    case_retention_days: int = 548
    # How often the nodes are asked to cosign the current checkpoint without traffic.
    witness_interval_seconds: float = 30.0
    # Seen request nonces (SQLite); unset means ``coordinator.replay.sqlite`` beside the
    # audit directory (the CLI decides; see fedmatch/cli/coordinator.py).
    replay_db: Path | None = None
    nodes: tuple[NodeEntry, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("coordinator.threshold must be a cosine in (0, 1)")
        if self.node_deadline_seconds <= 0:
            raise ConfigError("coordinator.node_deadline_seconds must be positive")
        if self.lookup_ttl_seconds <= 0:
            raise ConfigError("coordinator.lookup_ttl_seconds must be positive")
        if not 1 <= self.dimension <= 4096:
            raise ConfigError("coordinator.dimension must be between 1 and 4096")
        check_param_set_name(self.he_param_set, "coordinator.he_param_set")
        if self.max_workers < 1:
            raise ConfigError("coordinator.max_workers must be at least 1")
        if self.key_epoch_seconds <= 0:
            raise ConfigError("coordinator.key_epoch_seconds must be positive")
        if self.key_registrations_per_hour <= 0 or self.key_registration_burst < 1:
            raise ConfigError(
                "coordinator.key_registrations_per_hour must be positive and "
                "coordinator.key_registration_burst at least 1"
            )
        if not 2 <= self.hit_verifiers_required <= 5:
            raise ConfigError(
                "coordinator.hit_verifiers_required must be between 2 and 5 (one person only "
                "under coordinator.verification_waiver, with its legal reference)"
            )
        waiver = self.verification_waiver
        if waiver and (len(waiver) > 256 or not waiver.isprintable() or not waiver.strip()):
            raise ConfigError(
                "coordinator.verification_waiver must be a legal reference of at most 256 "
                "printable characters"
            )
        if not 1 <= self.case_retention_days <= 3650:
            raise ConfigError("coordinator.case_retention_days must be between 1 and 3650")
        if self.witness_interval_seconds <= 0:
            raise ConfigError("coordinator.witness_interval_seconds must be positive")
        states = [n.member_state for n in self.nodes]
        if len(set(states)) != len(states):
            raise ConfigError("nodes: a member state is listed twice")

    @property
    def confirmations_required(self) -> int:
        """Distinct confirmations a hit needs: one only under the waiver."""
        return 1 if self.verification_waiver else self.hit_verifiers_required

    def node(self, member_state: str) -> NodeEntry | None:
        return next((n for n in self.nodes if n.member_state == member_state), None)


def _nodes_from(raw: Any) -> tuple[NodeEntry, ...]:
    if not isinstance(raw, list):
        raise ConfigError("nodes must be an array of tables ([[nodes]])")
    out = []
    needed = ("member_state", "address", "key")
    for item in raw:
        if not isinstance(item, dict) or set(item) != set(needed):
            missing = [k for k in needed if isinstance(item, dict) and k not in item]
            raise ConfigError(
                "each [[nodes]] entry needs exactly member_state, address and key"
                + (f" (nodes.{missing[0]} is missing)" if missing else "")
            )
        out.append(NodeEntry(str(item["member_state"]), str(item["address"]), str(item["key"])))
    return tuple(out)


def load_coordinator_config(
    path: Path | None, overrides: dict[str, Any] | None = None
) -> CoordinatorConfig:
    fields = dict(overrides or {})
    nodes = fields.pop("nodes", None)
    values = load_section(path, "coordinator", "FEDMATCH_COORDINATOR_", _Scalars, fields)
    replay = values.get("replay_db")
    from_file = (
        fields.get("replay_db") is None and os.environ.get("FEDMATCH_COORDINATOR_REPLAY_DB") is None
    )
    if path is not None and replay and from_file and not Path(replay).is_absolute():
        # Relative to the config file, as every path written in it.
        values["replay_db"] = path.parent / Path(replay)
    if nodes is None and path is not None:
        nodes = read_toml(path).get("nodes", [])
    return CoordinatorConfig(**values, nodes=_nodes_from(nodes or []))


@dataclass(frozen=True)
class _Scalars:
    """The scalar keys of [coordinator], for the shared loader."""

    listen: str = CoordinatorConfig.listen
    threshold: float = CoordinatorConfig.threshold
    threshold_version: str = CoordinatorConfig.threshold_version
    model_id: str = CoordinatorConfig.model_id
    dimension: int = CoordinatorConfig.dimension
    he_param_set: str = CoordinatorConfig.he_param_set
    node_deadline_seconds: float = CoordinatorConfig.node_deadline_seconds
    lookup_ttl_seconds: float = CoordinatorConfig.lookup_ttl_seconds
    max_workers: int = CoordinatorConfig.max_workers
    key_epoch_seconds: float = CoordinatorConfig.key_epoch_seconds
    key_registrations_per_hour: float = CoordinatorConfig.key_registrations_per_hour
    key_registration_burst: int = CoordinatorConfig.key_registration_burst
    hit_verifiers_required: int = CoordinatorConfig.hit_verifiers_required
    verification_waiver: str = CoordinatorConfig.verification_waiver
    case_retention_days: int = CoordinatorConfig.case_retention_days
    witness_interval_seconds: float = CoordinatorConfig.witness_interval_seconds
    replay_db: Path | None = None
