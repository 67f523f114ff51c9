"""Each peer's share of a server: how many calls and open streams one party may hold at once.

A member state is a legitimate participant that may act in bad faith, and it issues its own
certificates: so a share belongs to a *scope*, the member state a certificate names (every
operator, verifier and node certificate of one state counts against that state's share), or
for EU-wide parties their role (the coordinator, an auditor). A call beyond its scope's share
is refused at once with RESOURCE_EXHAUSTED (:class:`PeerShareExceeded`), logged (once a
minute per scope, with the count) and counted in ``fedmatch_rpc_refusals`` under that reason,
while every other scope is served: one state can never take all of a server's worker threads
or its concurrent-RPC budget (issue 21: sixteen idle health streams froze a server).

The calls of roles in ``unbounded`` (the coordinator at a node: every search of every state
comes through it) are bounded only by the server's own limits; their streams are not.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from fedmatch.errors import ResourceLimit

__all__ = ["PeerShareExceeded", "PeerShares", "Shares"]

log = logging.getLogger("fedmatch.grpc.shares")

_LOG_EVERY_SECONDS = 60.0


class PeerShareExceeded(ResourceLimit):
    """A peer's scope already holds its share of calls or streams."""


@dataclass(frozen=True)
class Shares:
    calls: int  # concurrent unary calls per scope
    streams: int  # open streams per scope
    # Roles whose calls are bounded only by the server's limits (never their streams).
    unbounded: frozenset[str] = frozenset()


def scope_of(identity: Any) -> str:
    """The scope a verified identity counts against: its member state, else its role."""
    return str(identity.member_state or identity.role)


class PeerShares:
    def __init__(self, shares: Shares) -> None:
        if shares.calls < 1 or shares.streams < 0:
            raise ValueError("a share is at least one call (and zero or more streams)")
        self._shares = shares
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], int] = {}
        self._refused: dict[str, tuple[float, int]] = {}  # scope -> (last log, refused since)

    def acquire(self, identity: Any, kind: str) -> tuple[str, str] | None:
        """Take one ``kind`` ("call" or "stream") of the identity's scope; the slot to
        :meth:`release`, None when the role is unbounded. Raises PeerShareExceeded."""
        if kind == "call" and identity.role in self._shares.unbounded:
            return None
        scope = scope_of(identity)
        limit = self._shares.calls if kind == "call" else self._shares.streams
        slot = (scope, kind)
        with self._lock:
            held = self._held.get(slot, 0)
            if held >= limit:
                self._note_refusal(scope, kind, limit)
                raise PeerShareExceeded(
                    f"{scope} already holds {limit} concurrent {kind}s on this server "
                    "(its share); try again when one has finished"
                )
            self._held[slot] = held + 1
        return slot

    def release(self, slot: tuple[str, str] | None) -> None:
        if slot is None:
            return
        with self._lock:
            left = self._held.get(slot, 0) - 1
            if left > 0:
                self._held[slot] = left
            else:
                self._held.pop(slot, None)

    def held(self, scope: str, kind: str) -> int:
        with self._lock:
            return self._held.get((scope, kind), 0)

    def _note_refusal(self, scope: str, kind: str, limit: int) -> None:
        # Under a flood, one line a minute per scope (with how many were refused), not one
        # per call: the log must not become the next thing to exhaust.
        now = time.monotonic()
        last, count = self._refused.get(scope, (0.0, 0))
        count += 1
        if now - last >= _LOG_EVERY_SECONDS:
            log.warning(
                "%s exceeded its share (%d concurrent %ss): %d call(s) refused since the "
                "last report",
                scope,
                limit,
                kind,
                count,
            )
            self._refused[scope] = (now, 0)
        else:
            self._refused[scope] = (last, count)
