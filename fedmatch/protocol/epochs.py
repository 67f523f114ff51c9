"""Key epochs: what was registered, by which member state, until when, and what is retired.

Both the node (which keeps the validated evaluation keys) and the coordinator (which keeps
only key ids, to refuse unknown ones before any fan-out) use :class:`EpochTable`. A key id is
live from its registration for ``epoch_seconds``; after that it is retired for good, so a
requester must make a new key pair for a new epoch. Registering a live id again is
idempotent.

Every key id belongs to the member state that registered it, and each state has its own
bounded set of live ids (``per_state``, e.g. 2: the current epoch and the next). A state
that registers one more pushes out its *own* least recently used id, never another
state's: one state registering keys as fast as it may can never make another state's live
keys unknown (issue 21: nine registrations by one state evicted another's key from a
shared table of eight). Memory is bounded by ``per_state`` times the number of states,
which ``states`` (the federation's members) bounds when given. The bookkeeping of evicted
and retired ids is bounded per state too, so a flood cannot push another state's retired
ids out of memory and make them registrable again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fedmatch.errors import PermissionDenied, PreconditionFailed

__all__ = ["EpochTable"]

V = TypeVar("V")

# Retired and evicted ids remembered per state: far more than an honest state registers in
# an epoch at any registration rate the node or coordinator lets through.
_RETIRED_BOUND = 1024


@dataclass
class _StateEpochs(Generic[V]):
    """One member state's key ids: live (least recently used first), evicted for space
    (with the end of the epoch they started) and retired."""

    live: OrderedDict[str, tuple[float, V]] = field(default_factory=OrderedDict)
    evicted: OrderedDict[str, float] = field(default_factory=OrderedDict)
    retired: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def retire_expired(self, now: float) -> None:
        for key_id in [k for k, (expires, _) in self.live.items() if expires <= now]:
            del self.live[key_id]
            self.retire(key_id)
        for key_id in [k for k, expires in self.evicted.items() if expires <= now]:
            del self.evicted[key_id]
            self.retire(key_id)

    def retire(self, key_id: str) -> None:
        self.retired[key_id] = None
        while len(self.retired) > _RETIRED_BOUND:
            self.retired.popitem(last=False)

    def knows(self, key_id: str) -> bool:
        return key_id in self.live or key_id in self.evicted or key_id in self.retired


class EpochTable(Generic[V]):
    def __init__(
        self,
        epoch_seconds: float,
        per_state: int,
        clock: Callable[[], float] = time.time,
        states: Collection[str] | None = None,
    ) -> None:
        """``per_state`` live ids per member state; ``states``, if given, the only states
        that may register (the federation's members)."""
        if per_state < 1:
            raise ValueError("per_state must be at least 1")
        self._epoch = epoch_seconds
        self._per_state = per_state
        self._clock = clock
        self._states = frozenset(states) if states is not None else None
        self._lock = threading.Lock()
        self._by_state: dict[str, _StateEpochs[V]] = {}

    def _sweep(self) -> float:
        now = self._clock()
        for epochs in self._by_state.values():
            epochs.retire_expired(now)
        return now

    def _owner(self, key_id: str) -> tuple[str, _StateEpochs[V]] | None:
        for state, epochs in self._by_state.items():
            if epochs.knows(key_id):
                return state, epochs
        return None

    def _check(self, key_id: str, state: str) -> _StateEpochs[V] | None:
        """The state's epochs if ``key_id`` is its own or new; raises for a retired id
        or one another state registered."""
        found = self._owner(key_id)
        if found is None:
            return None
        owner, epochs = found
        if key_id in epochs.retired:
            raise PreconditionFailed("key id is retired: make a new key pair for the new key epoch")
        if owner != state:
            raise PermissionDenied("key id was registered by another member state")
        return epochs

    def check_registrable(self, key_id: str, state: str) -> float | None:
        """The expiry of ``state``'s live registration of ``key_id`` (None if not live);
        raises if the id is retired or another state's. Lets callers skip costly
        validation on a repeat."""
        with self._lock:
            self._sweep()
            epochs = self._check(key_id, state)
            entry = epochs.live.get(key_id) if epochs is not None else None
            return entry[0] if entry else None

    def register(self, key_id: str, value: V, state: str) -> float:
        """Register ``key_id`` for ``state`` (idempotent while live); returns its expiry.
        Beyond ``per_state`` live ids, the state's least recently used one is evicted."""
        with self._lock:
            now = self._sweep()
            if self._states is not None and state not in self._states:
                raise PermissionDenied(f"{state} is not a member of this federation")
            epochs = self._check(key_id, state)
            if epochs is None:
                epochs = self._by_state.setdefault(state, _StateEpochs())
            if key_id in epochs.live:
                epochs.live.move_to_end(key_id)
                return epochs.live[key_id][0]
            expires = epochs.evicted.pop(key_id, now + self._epoch)
            epochs.live[key_id] = (expires, value)
            while len(epochs.live) > self._per_state:
                # Evicted for space, not retired: the state may register it again within
                # the same epoch (never a fresh one: an id cannot outlive its epoch).
                old_id, (old_expiry, _) = epochs.live.popitem(last=False)
                epochs.evicted[old_id] = old_expiry
                while len(epochs.evicted) > _RETIRED_BOUND:
                    epochs.evicted.popitem(last=False)
            return expires

    def live_count(self) -> int:
        """Live key ids (what the metrics report as registered key epochs)."""
        with self._lock:
            self._sweep()
            return sum(len(e.live) for e in self._by_state.values())

    def get(self, key_id: str) -> tuple[V, str]:
        """The value of a live key id and the state that registered it; raises
        PreconditionFailed (before any work) for an unknown or retired one."""
        with self._lock:
            self._sweep()
            found = self._owner(key_id)
            if found is not None and key_id in found[1].retired:
                raise PreconditionFailed("key id is retired; register new keys")
            entry = found[1].live.get(key_id) if found is not None else None
            if found is None or entry is None:
                raise PreconditionFailed("unknown key id; register keys for this epoch first")
            found[1].live.move_to_end(key_id)
            return entry[1], found[0]
