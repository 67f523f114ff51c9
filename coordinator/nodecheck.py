"""What the coordinator knows of each node it fans out to: reachable, and holding the key the
coordinator's config names for it (``[[nodes]] key``).

The proof of the key is the node's cosignature of the coordinator's own checkpoint (a
witness round, :mod:`coordinator.witnessing`): the node signs with its note key and the
coordinator verifies with the configured verifier key, so a wrong ``key`` shows as an
invalid cosignature, not at the first lookup. The coordinator checks at start and with every
periodic witness round, logs each change of a node's state (a warning naming the node and
the state), and writes the latest checks to a JSON file beside its audit directory, which
``fedmatch coordinator status`` reads (read-only) to report the federation unhealthy while a
node is down or its key does not match.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coordinator.fanout import NodeOutcome
from fedmatch.errors import InvalidInput

__all__ = [
    "KEY_MISMATCH",
    "NOT_CHECKED",
    "OK",
    "REFUSED",
    "UNREACHABLE",
    "NodeCheck",
    "NodeChecks",
    "classify",
    "node_checks_path",
    "read_node_checks",
]

log = logging.getLogger("fedmatch.coordinator")

# A node's state as the checks name it (in logs, the status JSON and the file).
OK = "ok"
UNREACHABLE = "unreachable"
KEY_MISMATCH = "key_mismatch"
REFUSED = "refused"
NOT_CHECKED = "not_checked"

_INVALID_COSIGNATURE = "witness: invalid cosignature"


@dataclass(frozen=True)
class NodeCheck:
    """One node's last check: its ``state`` (``ok``, ``unreachable``, ``key_mismatch``,
    ``refused`` or ``not_checked``), why, and when (UTC, ISO 8601)."""

    member_state: str
    state: str
    detail: str
    checked_at: str

    @property
    def ok(self) -> bool:
        return self.state == OK

    def problem(self) -> str:
        """The sentence an operator reads for a node that is not ``ok``."""
        if self.state == KEY_MISMATCH:
            return (
                f"node {self.member_state}: key_mismatch: its cosignature does not verify "
                "with the verifier key of [[nodes]] key in the coordinator's config"
            )
        if self.state == UNREACHABLE:
            return f"node {self.member_state}: unreachable ({self.detail})"
        return f"node {self.member_state}: {self.state} ({self.detail})"


def classify(outcome: NodeOutcome, detail: str) -> str:
    """The state of a node that did not cosign, from the witness round's outcome."""
    if detail.startswith(_INVALID_COSIGNATURE):
        return KEY_MISMATCH
    if outcome in (NodeOutcome.UNREACHABLE, NodeOutcome.DEADLINE_EXCEEDED):
        return UNREACHABLE
    return REFUSED


def node_checks_path(audit_directory: Path) -> Path:
    """Where the coordinator keeps its latest node checks: beside its audit directory."""
    return audit_directory.with_name(audit_directory.name + ".nodes.json")


class NodeChecks:
    """The latest check of every node; each change is logged, every update written."""

    def __init__(self, states: Iterable[str], path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._checks = {s: NodeCheck(s, NOT_CHECKED, "", "") for s in sorted(states)}

    def current(self) -> dict[str, NodeCheck]:
        with self._lock:
            return dict(self._checks)

    def unhealthy(self) -> int:
        """Nodes checked and found down or holding another key (a metric)."""
        with self._lock:
            return sum(1 for c in self._checks.values() if c.state not in (OK, NOT_CHECKED))

    def update(self, failures: Mapping[str, tuple[NodeOutcome, str]], at: dt.datetime) -> None:
        """Record a witness round: the nodes in ``failures`` did not cosign (with why), every
        other node cosigned with the configured key."""
        stamp = at.astimezone(dt.UTC).isoformat(timespec="seconds")
        with self._lock:
            for state, old in self._checks.items():
                if state in failures:
                    outcome, detail = failures[state]
                    new = NodeCheck(state, classify(outcome, detail), detail[:300], stamp)
                else:
                    new = NodeCheck(state, OK, "cosigned with the configured key", stamp)
                if new.state != old.state:
                    if new.ok:
                        log.info("node %s: ok (reachable, key verified)", state)
                    else:
                        log.warning("%s", new.problem())
                self._checks[state] = new
            snapshot = dict(self._checks)
        self._write(snapshot, stamp)

    def _write(self, checks: Mapping[str, NodeCheck], stamp: str) -> None:
        if self._path is None:
            return
        body = {"checked_at": stamp, "nodes": {s: asdict(c) for s, c in checks.items()}}
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(body, indent=1) + "\n")
            os.replace(tmp, self._path)
        except OSError as exc:
            log.error("node checks not written to %s: %s", self._path.name, exc.strerror)


def read_node_checks(path: Path) -> tuple[dt.datetime, dict[str, NodeCheck]]:
    """The checks a coordinator wrote (raises :class:`InvalidInput` if absent or unreadable)."""
    try:
        raw: Any = json.loads(path.read_text())
        at = dt.datetime.fromisoformat(raw["checked_at"])
        checks = {
            str(s): NodeCheck(
                str(c["member_state"]), str(c["state"]), str(c["detail"]), str(c["checked_at"])
            )
            for s, c in raw["nodes"].items()
        }
    except FileNotFoundError:
        raise InvalidInput(f"no node checks at {path} (has the coordinator started?)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidInput(f"node checks at {path} are unreadable") from None
    return at, checks
