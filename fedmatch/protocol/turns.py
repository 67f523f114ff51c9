"""Fair turns at a resource one call uses at a time: waiters are served round-robin by member
state, not in the order they came, and each state holds a bounded share of the waiters.

A node searches one request at a time (its search engine holds the register), and every
call waiting for that holds one of the node's worker threads. With a plain lock, a state
that keeps eight lookups in flight (its share of the coordinator) kept eight searches
queued at every node, holding all eight threads: another state's search, and the witness
calls its lookup needs first, waited behind all of them (issue 21: honest lookups took 7x
longer under a hostile state's flood). With :class:`FairTurns`, the order of turns is by
state (a state that just had one goes to the back), so a state's search waits for at most
one search of each other state that is waiting; and a state with ``per_state`` calls
already inside (waiting or searching) is refused at once with RESOURCE_EXHAUSTED, so it
never holds more than that many threads.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fedmatch.errors import DeadlineExceeded, ResourceLimit

__all__ = ["FairTurns", "TurnsExceeded"]

# How often a waiter checks whether its caller gave up (its deadline passed, it cancelled).
_POLL_S = 0.25


class TurnsExceeded(ResourceLimit):
    """A member state already has its share of calls waiting for (or holding) a turn."""


class FairTurns:
    def __init__(self, per_state: int, what: str = "searches") -> None:
        if per_state < 1:
            raise ValueError("per_state must be at least 1")
        self._per_state = per_state
        self._what = what
        self._cond = threading.Condition()
        self._busy = False
        self._last = ""  # the state that had the last turn
        self._inside: Counter[str] = Counter()  # per state: waiting or holding the turn
        # Each waiting state's tickets in arrival order; the states in the order of turns.
        self._waiting: OrderedDict[str, deque[object]] = OrderedDict()

    @contextmanager
    def turn(self, state: str, should_stop: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Hold the resource for a call of ``state``. Raises TurnsExceeded at once beyond
        the state's share, DeadlineExceeded (leaving the queue) if ``should_stop()`` turns
        true while it waits."""
        ticket = object()
        with self._cond:
            if self._inside[state] >= self._per_state:
                raise TurnsExceeded(
                    f"{state} already has {self._per_state} {self._what} waiting or running "
                    "here (its share); try again when one has finished"
                )
            self._inside[state] += 1
            self._waiting.setdefault(state, deque()).append(ticket)
            while self._busy or self._first() is not ticket:
                if should_stop():
                    self._leave(state, ticket)
                    self._out(state)
                    raise DeadlineExceeded("gave up waiting for a turn")
                self._cond.wait(_POLL_S)
            self._busy, self._last = True, state
            self._leave(state, ticket)
            if state in self._waiting:
                self._waiting.move_to_end(state)  # had its turn: the others go first
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._out(state)
                self._cond.notify_all()

    def inside(self) -> dict[str, int]:
        """Calls waiting for or holding a turn, by state."""
        with self._cond:
            return dict(self._inside)

    def _first(self) -> object | None:
        """The next ticket: of the first state in the order of turns, passing over the one
        that had the last turn while any other waits (a state whose next call arrives
        while its previous one runs must not take the turn from a state that waited)."""
        for state, queue in self._waiting.items():
            if state != self._last or len(self._waiting) == 1:
                return queue[0]
        return None

    def _leave(self, state: str, ticket: object) -> None:
        queue = self._waiting[state]
        queue.remove(ticket)
        if not queue:
            del self._waiting[state]
        self._cond.notify_all()

    def _out(self, state: str) -> None:
        self._inside[state] -= 1
        if self._inside[state] <= 0:
            del self._inside[state]
