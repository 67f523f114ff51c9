"""Key epochs: what was registered, until when, and what is retired.

Both the node (which keeps the validated evaluation keys) and the coordinator (which keeps
only key ids, to refuse unknown ones before any fan-out) use :class:`EpochTable`. A key id is
live from its registration for ``epoch_seconds``; after that it is retired for good, so a
requester must make a new key pair for a new epoch. Registering a live id again is
idempotent. Both the live table and the retired set are bounded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from fedmatch.errors import PreconditionFailed

__all__ = ["EpochTable"]

V = TypeVar("V")

_RETIRED_BOUND = 4096


class EpochTable(Generic[V]):
    def __init__(
        self,
        epoch_seconds: float,
        capacity: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._epoch = epoch_seconds
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._live: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._retired: OrderedDict[str, None] = OrderedDict()
        # Ids evicted for space keep their epoch's end: registering one again resumes that
        # epoch (or is refused once it has passed), it never starts a fresh one.
        self._evicted: OrderedDict[str, float] = OrderedDict()

    def _retire_expired(self, now: float) -> None:
        for key_id in [k for k, (expires, _) in self._live.items() if expires <= now]:
            del self._live[key_id]
            self._retire(key_id)
        for key_id in [k for k, expires in self._evicted.items() if expires <= now]:
            del self._evicted[key_id]
            self._retire(key_id)

    def _retire(self, key_id: str) -> None:
        self._retired[key_id] = None
        while len(self._retired) > _RETIRED_BOUND:
            self._retired.popitem(last=False)

    def check_registrable(self, key_id: str) -> float | None:
        """The expiry of a live registration of ``key_id`` (None if not registered); raises
        if the id is retired. Lets callers skip costly validation on a repeat."""
        with self._lock:
            now = self._clock()
            self._retire_expired(now)
            if key_id in self._retired:
                raise PreconditionFailed(
                    "key id is retired: make a new key pair for the new key epoch"
                )
            entry = self._live.get(key_id)
            return entry[0] if entry else None

    def register(self, key_id: str, value: V) -> float:
        """Register ``key_id`` (idempotent while live); returns its expiry time."""
        with self._lock:
            now = self._clock()
            self._retire_expired(now)
            if key_id in self._retired:
                raise PreconditionFailed(
                    "key id is retired: make a new key pair for the new key epoch"
                )
            if key_id in self._live:
                self._live.move_to_end(key_id)
                return self._live[key_id][0]
            expires = self._evicted.pop(key_id, now + self._epoch)
            self._live[key_id] = (expires, value)
            while len(self._live) > self._capacity:
                # Evicted for space, not retired: the requester may register it again
                # within the same epoch.
                old_id, (old_expiry, _) = self._live.popitem(last=False)
                self._evicted[old_id] = old_expiry
                while len(self._evicted) > _RETIRED_BOUND:
                    self._evicted.popitem(last=False)
            return expires

    def live_count(self) -> int:
        """Live key ids (what the metrics report as registered key epochs)."""
        with self._lock:
            self._retire_expired(self._clock())
            return len(self._live)

    def get(self, key_id: str) -> V:
        """The value of a live key id; raises PreconditionFailed (before any work) for an
        unknown or retired one."""
        with self._lock:
            self._retire_expired(self._clock())
            if key_id in self._retired:
                raise PreconditionFailed("key id is retired; register new keys")
            entry = self._live.get(key_id)
            if entry is None:
                raise PreconditionFailed("unknown key id; register keys for this epoch first")
            self._live.move_to_end(key_id)
            return entry[1]
