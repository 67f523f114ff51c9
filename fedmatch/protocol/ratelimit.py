"""Per-member-state token buckets: how often a state may do something costly.

Used for key registrations: each one makes a node open and validate tens of megabytes of
key material, so a state registering keys as fast as it can would take the node's cores
from everyone else (issue 21). Each state has its own bucket of ``burst`` tokens, refilled
at ``per_hour``; a call without a token is refused with :class:`ResourceLimit`
(RESOURCE_EXHAUSTED) and costs nothing more. In memory: a restart refills every bucket,
which gives a flooder one burst more, never another state's share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fedmatch.errors import ResourceLimit

__all__ = ["StateBuckets"]


class StateBuckets:
    def __init__(
        self, per_hour: float, burst: int, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_hour <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self._rate = per_hour / 3600.0
        self._burst = float(burst)
        self._what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # state -> (tokens, at)

    def take(self, state: str) -> None:
        """Use one of ``state``'s tokens, or raise ResourceLimit."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(state, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            if tokens < 1.0:
                self._buckets[state] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
                raise ResourceLimit(
                    f"{state} has used its {self._what} quota; try again in {wait:.0f} s"
                )
            self._buckets[state] = (tokens - 1.0, now)
