"""A party's audit kit: configuration, signing key, log, auditors, periodic checkpoints.

Nodes and the coordinator both keep one (``[audit]`` in their TOML file). The log lives in
``<directory>/log``; nodes keep their witness state and evidence beside it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmatch.audit.access import AuditorRegistry
from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import AuditLog
from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.config import load_section
from fedmatch.errors import ConfigError, InvalidInput

__all__ = [
    "COORDINATOR_ORIGIN",
    "AuditConfig",
    "PartyAudit",
    "create_party_key",
    "load_audit_config",
    "node_origin",
]

COORDINATOR_ORIGIN = "fedmatch/coordinator"


def node_origin(member_state: str) -> str:
    return f"fedmatch/node/{member_state}"


def create_party_key(path: Path, name: str) -> str:
    """Generate and save a party's signing key (mode 0600); its verifier key."""
    signer = NoteSigner.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    signer.save(path)
    return signer.vkey()


@dataclass(frozen=True)
class AuditConfig:
    # Log, checkpoint, witness state and evidence.
    directory: Path
    # This party's Ed25519 note key (`fedmatch audit keygen`), a file only its owner reads.
    signing_key: Path
    # Verifier keys of the auditors allowed to read this log.
    auditors: tuple[str, ...] = ()
    # How often a new checkpoint is published when the log grew (also on every request).
    checkpoint_interval_seconds: float = 10.0
    # Nodes: the coordinator's verifier key, whose checkpoints this node witnesses.
    coordinator_key: str = ""

    def __post_init__(self) -> None:
        auditors: Any = self.auditors
        if isinstance(auditors, str):  # from the environment: comma-separated
            auditors = [a for a in auditors.split(",") if a.strip()]
        if not isinstance(auditors, list | tuple) or not all(isinstance(a, str) for a in auditors):
            raise ConfigError("audit.auditors must be a list of verifier keys")
        object.__setattr__(self, "auditors", tuple(a.strip() for a in auditors))
        if self.checkpoint_interval_seconds <= 0:
            raise ConfigError("audit.checkpoint_interval_seconds must be positive")
        for name, key in [("coordinator_key", self.coordinator_key)] + [
            ("auditors", a) for a in self.auditors
        ]:
            if key:
                try:
                    NoteVerifier.from_vkey(key)
                except (AuditVerificationError, InvalidInput):
                    raise ConfigError(f"audit.{name}: not a verifier key") from None


def load_audit_config(path: Path | None, overrides: dict[str, Any] | None = None) -> AuditConfig:
    values = load_section(path, "audit", "FEDMATCH_AUDIT_", AuditConfig, overrides or {})
    if path is not None:
        # Relative paths in a config file are relative to that file.
        for key in ("directory", "signing_key"):
            p = Path(values[key])
            values[key] = p if p.is_absolute() else path.parent / p
    return AuditConfig(**values)


class PartyAudit:
    """One party's signer, log and auditor registry, and the thread that publishes."""

    def __init__(
        self, config: AuditConfig, origin: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.origin = origin
        self.signer = NoteSigner.load(config.signing_key)
        if self.signer.name != origin:
            raise ConfigError(
                f"audit.signing_key is named {self.signer.name!r}; this party logs as {origin!r}"
            )
        self.log = AuditLog(config.directory / "log", self.signer, origin, clock)
        self.auditors = AuditorRegistry(config.auditors, clock=clock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, event: AuditEvent) -> int:
        """Append durably; the entry's index."""
        return self.log.append(event).seq

    def started(self, counts: Mapping[str, int], policy: Mapping[str, str]) -> None:
        """Log the start of the party, and its policy when it differs from the last logged."""
        self.record(AuditEvent(EventKind.PARTY_STARTED, counts=dict(counts)))
        path = self.config.directory / "policy.json"
        try:
            previous = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            previous = None
        if previous != dict(policy):
            self.record(AuditEvent(EventKind.POLICY_CHANGED, labels=dict(policy)))
            tmp = path.with_name("policy.json.tmp")
            tmp.write_text(json.dumps(dict(policy), sort_keys=True))
            os.replace(tmp, path)
        self.log.checkpoint()

    def start_publishing(
        self, publish: Callable[[], object] | None = None, interval: float | None = None
    ) -> None:
        """Publish a checkpoint (or run ``publish``) every ``interval`` seconds (default:
        the configured checkpoint interval) until :meth:`close`."""
        action = publish or self.log.checkpoint
        every = interval or self.config.checkpoint_interval_seconds

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    action()
                except Exception as exc:  # noqa: BLE001 - keep publishing on the next tick
                    logging.getLogger("fedmatch.audit").warning(
                        "checkpoint publication failed: %s", type(exc).__name__
                    )

        self._thread = threading.Thread(target=loop, name="audit-publisher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.log.close()
