"""Tests of fedmatch.protocol.epochs.EpochTable: live key ids, idempotent registration,
retirement."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedmatch.errors import PreconditionFailed
from fedmatch.protocol.epochs import EpochTable

EPOCH = 100.0
START = 1000.0
A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


class Clock:
    """A settable clock: the table reads ``now`` each time it asks for the time."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def table(clock: Callable[[], float], capacity: int = 8) -> EpochTable[str]:
    return EpochTable(epoch_seconds=EPOCH, capacity=capacity, clock=clock)


def test_register_returns_now_plus_epoch_and_get_returns_the_value() -> None:
    clock = Clock()
    keys = table(clock)
    assert keys.register(A, "value-a") == START + EPOCH
    assert keys.get(A) == "value-a"
    clock.advance(40.0)
    assert keys.register(B, "value-b") == START + 40.0 + EPOCH
    assert keys.get(B) == "value-b"


def test_repeated_register_of_a_live_id_is_idempotent() -> None:
    clock = Clock()
    keys = table(clock)
    expires = keys.register(A, "first")
    clock.advance(EPOCH / 2)
    assert keys.register(A, "second") == expires  # no extension of the epoch
    assert keys.get(A) == "first"  # and the validated value is kept
    clock.advance(EPOCH / 2 - 0.001)
    assert keys.register(A, "third") == expires
    assert keys.get(A) == "first"


def test_get_of_an_unknown_id_is_precondition_failed() -> None:
    keys = table(Clock())
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)
    keys.register(B, "b")
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)


def test_id_is_live_until_its_expiry_and_retired_from_it() -> None:
    clock = Clock()
    keys = table(clock)
    keys.register(A, "a")
    clock.advance(EPOCH - 0.001)
    assert keys.get(A) == "a"
    clock.advance(0.001)  # exactly at expiry: retired
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.get(A)


def test_retired_id_cannot_be_registered_again() -> None:
    clock = Clock()
    keys = table(clock)
    keys.register(A, "a")
    clock.advance(EPOCH)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(A, "a")
    # Retired for good: much later, still refused, and still not usable.
    clock.advance(100 * EPOCH)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(A, "a again")
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.get(A)
    # Other ids are unaffected.
    assert keys.register(B, "b") == clock.now + EPOCH


def test_retirement_is_noticed_by_register_of_another_id() -> None:
    clock = Clock()
    keys = table(clock)
    keys.register(A, "a")
    clock.advance(EPOCH + 1)
    keys.register(B, "b")  # sweeps A into the retired set
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.check_registrable(A)


def test_check_registrable_says_none_expiry_or_raises() -> None:
    clock = Clock()
    keys = table(clock)
    assert keys.check_registrable(A) is None  # unknown: validate and register
    expires = keys.register(A, "a")
    clock.advance(10.0)
    assert keys.check_registrable(A) == expires  # live: skip validation
    clock.advance(EPOCH)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.check_registrable(A)


def test_check_registrable_does_not_register() -> None:
    keys = table(Clock())
    assert keys.check_registrable(A) is None
    assert keys.check_registrable(A) is None
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)


def test_capacity_evicts_the_oldest_which_becomes_unknown_not_retired() -> None:
    clock = Clock()
    keys = table(clock, capacity=3)
    for key_id in (A, B, C):
        keys.register(key_id, key_id[0])
        clock.advance(1.0)
    keys.register(D, "d")
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)
    assert keys.check_registrable(A) is None
    assert [keys.get(k) for k in (B, C, D)] == ["b", "c", "d"]
    # Evicted for space, not retired: the requester may register it again, within the
    # epoch it started (never a fresh one: an id cannot outlive its epoch by eviction).
    assert keys.register(A, "a2") == 1000.0 + EPOCH
    assert keys.get(A) == "a2"
    # ...which in turn evicts the now oldest, B.
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(B)


def test_capacity_eviction_follows_recent_use() -> None:
    clock = Clock()
    keys = table(clock, capacity=3)
    for key_id in (A, B, C):
        keys.register(key_id, key_id[0])
    keys.get(A)  # A is now the most recently used
    keys.register(D, "d")
    assert keys.get(A) == "a"
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(B)


def test_expired_entries_free_room_before_eviction() -> None:
    clock = Clock()
    keys = table(clock, capacity=2)
    keys.register(A, "a")
    clock.advance(EPOCH / 2)
    keys.register(B, "b")
    clock.advance(EPOCH / 2)  # A retires; B is live
    keys.register(C, "c")
    assert keys.get(B) == "b"
    assert keys.get(C) == "c"
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.get(A)


def test_evicted_id_is_still_retired_once_its_epoch_has_passed() -> None:
    clock = Clock()
    keys = table(clock, capacity=1)
    keys.register(A, "a")
    keys.register(B, "b")  # evicts A
    clock.advance(EPOCH + 1)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(A, "a")
