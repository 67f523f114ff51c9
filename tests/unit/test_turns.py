"""Fair turns by member state (fedmatch.protocol.turns), with real threads: the order in
which waiting calls get the resource, the per-state share, and a waiter that gives up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from fedmatch.errors import DeadlineExceeded
from fedmatch.protocol.turns import FairTurns, TurnsExceeded


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def _inside_is(turns: FairTurns, count: int) -> Callable[[], bool]:
    return lambda: sum(turns.inside().values()) == count


class _Caller(threading.Thread):
    """One call of ``state``: takes its turn, records it in ``order``, holds it until
    ``release`` is set."""

    def __init__(
        self, turns: FairTurns, state: str, name: str, order: list[str], release: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self.turns, self.state, self.label = turns, state, name
        self.order, self.release = order, release

    def run(self) -> None:
        with self.turns.turn(self.state):
            self.order.append(self.label)
            self.release.wait(10)


def test_another_state_goes_before_the_rest_of_a_flooding_states_queue() -> None:
    """DE holds the turn with four more searches waiting; FR's one search comes last, yet
    it runs next, before DE's waiting ones (a plain lock served them first: issue 21)."""
    turns = FairTurns(per_state=8)
    order: list[str] = []
    gates = {name: threading.Event() for name in ("de1", "de2", "de3", "de4", "de5", "fr1")}
    first = _Caller(turns, "DE", "de1", order, gates["de1"])
    first.start()
    _wait_for(lambda: order == ["de1"])
    callers = [first]
    for name in ("de2", "de3", "de4", "de5", "fr1"):
        callers.append(_Caller(turns, name[:2].upper(), name, order, gates[name]))
        callers[-1].start()
        _wait_for(_inside_is(turns, len(callers)))
    for name in ("de1", "fr1", "de2", "de3", "de4", "de5"):
        gates[name].set()
    for caller in callers:
        caller.join(10)
    assert order == ["de1", "fr1", "de2", "de3", "de4", "de5"]
    assert turns.inside() == {}


def _holding(turns: FairTurns, state: str, order: list[str]) -> tuple[_Caller, threading.Event]:
    """A call of ``state`` that has the turn, and the event that makes it give it back."""
    release = threading.Event()
    caller = _Caller(turns, state, state.lower(), order, release)
    caller.start()
    _wait_for(lambda: order == [state.lower()])
    return caller, release


def test_states_alternate_while_both_wait() -> None:
    turns = FairTurns(per_state=8)
    order: list[str] = []
    first, hold = _holding(turns, "IT", order)
    release = threading.Event()
    release.set()  # every later caller gives its turn back at once
    callers = []
    for name in ("de1", "de2", "de3", "fr1", "fr2", "fr3"):
        callers.append(_Caller(turns, name[:2].upper(), name, order, release))
        callers[-1].start()
        _wait_for(_inside_is(turns, len(callers) + 1))
    hold.set()
    for caller in [first, *callers]:
        caller.join(10)
    assert order == ["it", "de1", "fr1", "de2", "fr2", "de3", "fr3"]


def test_a_state_beyond_its_share_is_refused_at_once_while_another_is_not() -> None:
    turns = FairTurns(per_state=2)
    order: list[str] = []
    release = threading.Event()
    callers = [_Caller(turns, "DE", f"de{i}", order, release) for i in range(2)]
    for caller in callers:
        caller.start()
    _wait_for(lambda: turns.inside() == {"DE": 2})
    with pytest.raises(TurnsExceeded, match="DE already has 2 searches"):
        with turns.turn("DE"):
            pass
    other = _Caller(turns, "FR", "fr", order, release)
    other.start()
    _wait_for(lambda: turns.inside() == {"DE": 2, "FR": 1})
    release.set()
    for caller in [*callers, other]:
        caller.join(10)
    assert sorted(order) == ["de0", "de1", "fr"]
    with turns.turn("DE"):  # its share is back
        assert turns.inside() == {"DE": 1}


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    turns = FairTurns(per_state=4)
    holder, release = _holding(turns, "DE", [])
    gave_up = threading.Event()
    with pytest.raises(DeadlineExceeded):
        threading.Timer(0.3, gave_up.set).start()
        with turns.turn("FR", should_stop=gave_up.is_set):
            pass
    assert turns.inside() == {"DE": 1}
    release.set()
    holder.join(10)
    with turns.turn("FR"):
        assert turns.inside() == {"FR": 1}
