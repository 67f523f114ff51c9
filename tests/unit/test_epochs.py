"""Tests of fedmatch.protocol.epochs.EpochTable: live key ids, idempotent registration,
retirement, and each member state's own bounded set of live ids."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedmatch.errors import PermissionDenied, PreconditionFailed
from fedmatch.protocol.epochs import EpochTable

EPOCH = 100.0
START = 1000.0
A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
DE, FR = "DE", "FR"


class Clock:
    """A settable clock: the table reads ``now`` each time it asks for the time."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def table(clock: Callable[[], float], capacity: int = 8) -> EpochTable[str]:
    return EpochTable(epoch_seconds=EPOCH, per_state=capacity, clock=clock)


def test_register_returns_now_plus_epoch_and_get_returns_the_value() -> None:
    clock = Clock()
    keys = table(clock)
    assert keys.register(A, "value-a", DE) == START + EPOCH
    assert keys.get(A) == ("value-a", DE)
    clock.advance(40.0)
    assert keys.register(B, "value-b", DE) == START + 40.0 + EPOCH
    assert keys.get(B) == ("value-b", DE)


def test_repeated_register_of_a_live_id_is_idempotent() -> None:
    clock = Clock()
    keys = table(clock)
    expires = keys.register(A, "first", DE)
    clock.advance(EPOCH / 2)
    assert keys.register(A, "second", DE) == expires  # no extension of the epoch
    assert keys.get(A) == ("first", DE)  # and the validated value is kept
    clock.advance(EPOCH / 2 - 0.001)
    assert keys.register(A, "third", DE) == expires
    assert keys.get(A) == ("first", DE)


def test_get_of_an_unknown_id_is_precondition_failed() -> None:
    keys = table(Clock())
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)
    keys.register(B, "b", DE)
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)


def test_id_is_live_until_its_expiry_and_retired_from_it() -> None:
    clock = Clock()
    keys = table(clock)
    keys.register(A, "a", DE)
    clock.advance(EPOCH - 0.001)
    assert keys.get(A) == ("a", DE)
    clock.advance(0.001)  # exactly at expiry: retired
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.get(A)


def test_retired_id_cannot_be_registered_again() -> None:
    clock = Clock()
    keys = table(clock)
    keys.register(A, "a", DE)
    clock.advance(EPOCH)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(A, "a", DE)
    # Retired for good: much later, still refused, and still not usable.
    clock.advance(100 * EPOCH)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(A, "a again", DE)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.get(A)
    # Other ids are unaffected.
    assert keys.register(B, "b", DE) == clock.now + EPOCH


def test_retirement_is_noticed_by_register_of_another_id() -> None:
    clock = Clock()
    keys = table(clock)
    keys.register(A, "a", DE)
    clock.advance(EPOCH + 1)
    keys.register(B, "b", DE)  # sweeps A into the retired set
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.check_registrable(A, DE)


def test_check_registrable_says_none_expiry_or_raises() -> None:
    clock = Clock()
    keys = table(clock)
    assert keys.check_registrable(A, DE) is None  # unknown: validate and register
    expires = keys.register(A, "a", DE)
    clock.advance(10.0)
    assert keys.check_registrable(A, DE) == expires  # live: skip validation
    clock.advance(EPOCH)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.check_registrable(A, DE)


def test_check_registrable_does_not_register() -> None:
    keys = table(Clock())
    assert keys.check_registrable(A, DE) is None
    assert keys.check_registrable(A, DE) is None
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)


def test_capacity_evicts_the_oldest_which_becomes_unknown_not_retired() -> None:
    clock = Clock()
    keys = table(clock, capacity=3)
    for key_id in (A, B, C):
        keys.register(key_id, key_id[0], DE)
        clock.advance(1.0)
    keys.register(D, "d", DE)
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(A)
    assert keys.check_registrable(A, DE) is None
    assert [keys.get(k)[0] for k in (B, C, D)] == ["b", "c", "d"]
    # Evicted for space, not retired: the requester may register it again, within the
    # epoch it started (never a fresh one: an id cannot outlive its epoch by eviction).
    assert keys.register(A, "a2", DE) == 1000.0 + EPOCH
    assert keys.get(A) == ("a2", DE)
    # ...which in turn evicts the now oldest, B.
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(B)


def test_capacity_eviction_follows_recent_use() -> None:
    clock = Clock()
    keys = table(clock, capacity=3)
    for key_id in (A, B, C):
        keys.register(key_id, key_id[0], DE)
    keys.get(A)  # A is now the most recently used
    keys.register(D, "d", DE)
    assert keys.get(A) == ("a", DE)
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(B)


def test_expired_entries_free_room_before_eviction() -> None:
    clock = Clock()
    keys = table(clock, capacity=2)
    keys.register(A, "a", DE)
    clock.advance(EPOCH / 2)
    keys.register(B, "b", DE)
    clock.advance(EPOCH / 2)  # A retires; B is live
    keys.register(C, "c", DE)
    assert keys.get(B) == ("b", DE)
    assert keys.get(C) == ("c", DE)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.get(A)


def test_evicted_id_is_still_retired_once_its_epoch_has_passed() -> None:
    clock = Clock()
    keys = table(clock, capacity=1)
    keys.register(A, "a", DE)
    keys.register(B, "b", DE)  # evicts A
    clock.advance(EPOCH + 1)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(A, "a", DE)


def test_one_state_registering_many_keys_never_evicts_another_states_key() -> None:
    """Issue 21, attack 2: nine registrations by one state pushed another state's live
    key out of a shared table of eight. Each state now evicts only its own."""
    clock = Clock()
    keys = table(clock, capacity=2)
    keys.register(A, "fr-current", FR)
    for i in range(9):
        keys.register(f"{i:064x}", "flood", DE)
        clock.advance(1.0)
    assert keys.get(A) == ("fr-current", FR)
    assert keys.live_count() == 3  # FR's one and DE's last two
    # DE's own oldest went, for space (unknown, not retired).
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        keys.get(f"{0:064x}")


def test_a_key_id_belongs_to_the_state_that_registered_it() -> None:
    keys = table(Clock())
    keys.register(A, "a", FR)
    with pytest.raises(PermissionDenied, match="another member state"):
        keys.register(A, "a", DE)
    with pytest.raises(PermissionDenied, match="another member state"):
        keys.check_registrable(A, DE)
    assert keys.get(A) == ("a", FR)


def test_an_evicted_or_retired_id_stays_its_states() -> None:
    clock = Clock()
    keys = table(clock, capacity=1)
    keys.register(A, "a", FR)
    keys.register(B, "b", FR)  # A evicted, still FR's
    with pytest.raises(PermissionDenied, match="another member state"):
        keys.register(A, "a", DE)
    clock.advance(EPOCH)
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(B, "b", DE)


def test_only_the_federations_states_may_register() -> None:
    keys: EpochTable[str] = EpochTable(EPOCH, per_state=2, clock=Clock(), states={"DE", "FR"})
    keys.register(A, "a", DE)
    with pytest.raises(PermissionDenied, match="not a member"):
        keys.register(B, "b", "IT")


def test_retired_ids_are_remembered_per_state_so_a_flood_cannot_revive_others() -> None:
    """A state's flood of short-lived registrations fills only its own memory of retired
    ids: another state's retired id stays retired."""
    clock = Clock()
    keys = table(clock, capacity=1)
    keys.register(A, "a", FR)
    clock.advance(EPOCH)  # A retires
    for i in range(3000):
        keys.register(f"{i:064x}", "x", DE)
    clock.advance(EPOCH)
    keys.register(C, "c", DE)  # sweeps DE's flood into its own retired set
    with pytest.raises(PreconditionFailed, match="retired"):
        keys.register(A, "a", FR)
