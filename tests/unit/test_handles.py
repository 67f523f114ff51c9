"""Tests of QueryLayout.row() and node.handles.HandleRegistry: per-query position handles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.errors import AlreadyExists, InvalidInput, NotFound
from fedmatch.he.engine import QueryLayout
from fedmatch.protocol.limits import HANDLE_BYTES
from fedmatch.protocol.wire import decode_handle, encode_handle
from node.handles import HandleRegistry

SLOTS = 4096
ROWS = 10_000  # register block 0 is full (rows 0..8,191), block 1 holds rows 8,192..9,999
# Response block 0 is register block 1 rotated left by 5; response block 1 is register
# block 0 rotated left by 4,090 (so from position 6 on it wraps around to slot 0).
LAYOUT = QueryLayout(order=(1, 0), shifts=(5, 4090), rows=ROWS, slots=SLOTS)
# The same register in another query: blocks in register order, other shifts.
OTHER_LAYOUT = QueryLayout(order=(0, 1), shifts=(17, 0), rows=ROWS, slots=SLOTS)

Q1 = "1" * 32
Q2 = "2" * 32
Q3 = "3" * 32
STATE = "DE"


def row_ids(rows: int = ROWS) -> npt.NDArray[np.int64]:
    """Row ids that differ from row numbers, so a test can tell the two apart."""
    return (np.arange(rows) + 1000).astype(np.int64)


IDS = row_ids()


def fake_clock(start: float = 1000.0) -> tuple[Callable[[], float], Callable[[float], None]]:
    """A clock reading a mutable float, and a function that moves it forward."""
    now = start

    def clock() -> float:
        return now

    def advance(seconds: float) -> None:
        nonlocal now
        now += seconds

    return clock, advance


def h(block: int, position: int) -> bytes:
    return encode_handle(block, position)


# --- QueryLayout.row ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "position", "row"),
    [
        # Response block 0 = register block 1 (rows from 8,192), shift 5: slot = position + 5.
        pytest.param(0, 0, 8192 + 5, id="b0-real-first"),
        pytest.param(0, 1, 8192 + 6, id="b0-real-second"),
        pytest.param(0, 1802, 9999, id="b0-real-last-register-row"),
        pytest.param(0, 4091, 8192, id="b0-real-wraps-to-slot-0"),
        pytest.param(0, 4095, 8192 + 4, id="b0-real-last"),
        # Response block 1 = register block 0 (rows 0..8,191), shift 4,090.
        pytest.param(1, 0, 4090, id="b1-real-first"),
        pytest.param(1, 5, 4095, id="b1-real-before-wrap"),
        pytest.param(1, 6, 0, id="b1-real-wraps-to-row-0"),
        pytest.param(1, 4095, 4089, id="b1-real-last"),
        # Imaginary half: positions 4,096.. hold rows slots + slot of the register block.
        pytest.param(1, 4096, 4096 + 4090, id="b1-imag-first"),
        pytest.param(1, 4096 + 5, 8191, id="b1-imag-before-wrap"),
        pytest.param(1, 4096 + 6, 4096, id="b1-imag-wraps"),
        pytest.param(1, 8191, 4096 + 4089, id="b1-imag-last"),
    ],
)
def test_row_maps_block_and_position(block: int, position: int, row: int) -> None:
    assert LAYOUT.row(block, position) == row


@pytest.mark.parametrize(
    ("block", "position"),
    [
        # Register block 1 ends at row 9,999 = slot 1,807 of its real half.
        pytest.param(0, 1803, id="b0-real-first-padding"),
        pytest.param(0, 4090, id="b0-real-last-padding-before-wrap"),
        pytest.param(0, 4096, id="b0-imag-first"),
        pytest.param(0, 4096 + 4091, id="b0-imag-wrapped-slot-0"),
        pytest.param(0, 8191, id="b0-imag-last"),
    ],
)
def test_row_past_the_register_end_is_none(block: int, position: int) -> None:
    assert LAYOUT.row(block, position) is None


@pytest.mark.parametrize(
    ("block", "position"),
    [
        pytest.param(2, 0, id="block-past-end"),
        pytest.param(-1, 0, id="negative-block"),
        pytest.param(2**32 - 1, 0, id="max-uint32-block"),
        pytest.param(1, 8192, id="position-past-end"),
        pytest.param(1, -1, id="negative-position"),
        pytest.param(1, 2**32 - 1, id="max-uint32-position"),
    ],
)
def test_row_out_of_range_is_none(block: int, position: int) -> None:
    assert LAYOUT.row(block, position) is None


def test_row_with_register_ending_in_the_imaginary_half() -> None:
    layout = QueryLayout(order=(0,), shifts=(100,), rows=5000, slots=SLOTS)
    assert layout.row(0, 0) == 100
    assert layout.row(0, 3996) == 0  # (3,996 + 100) mod 4,096
    assert layout.row(0, 4096) == 4096 + 100
    assert layout.row(0, 4096 + 803) == 4999  # slot 903: the last row
    assert layout.row(0, 4096 + 804) is None  # slot 904: padding
    assert layout.row(0, 4096 + 3996) == 4096  # wraps to slot 0 of the imaginary half


def test_row_is_a_bijection_from_non_padding_positions_onto_the_register() -> None:
    rows = [
        LAYOUT.row(block, position)
        for block in range(len(LAYOUT.order))
        for position in range(2 * SLOTS)
    ]
    real = [r for r in rows if r is not None]
    assert len(real) == ROWS
    assert sorted(real) == list(range(ROWS))


# --- HandleRegistry -----------------------------------------------------------------------


def test_handle_round_trips_through_the_wire_encoding() -> None:
    assert len(h(1, 4102)) == HANDLE_BYTES == 8
    assert decode_handle(h(1, 4102)) == (1, 4102)
    assert h(1, 4102) == bytes([0, 0, 0, 1, 0, 0, 0x10, 0x06])  # big-endian uint32 pair


@pytest.mark.parametrize(
    ("block", "position", "row"),
    [
        pytest.param(0, 0, 8197, id="b0-real"),
        pytest.param(0, 4095, 8196, id="b0-real-wrapped"),
        pytest.param(1, 6, 0, id="b1-row-0"),
        pytest.param(1, 4096 + 6, 4096, id="b1-imag-wrapped"),
        pytest.param(1, 8191, 8185, id="b1-imag-last"),
    ],
)
def test_resolve_gives_the_row_id_of_the_layout_row(block: int, position: int, row: int) -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    assert reg.resolve(Q1, STATE, h(block, position)) == int(IDS[row]) == 1000 + row
    # Resolving does not consume anything.
    assert reg.resolve(Q1, STATE, h(block, position)) == 1000 + row


def test_resolve_returns_a_python_int() -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    assert type(reg.resolve(Q1, STATE, h(1, 6))) is int


@pytest.mark.parametrize(
    ("block", "position"),
    [
        pytest.param(0, 1803, id="padding"),
        pytest.param(0, 8191, id="padding-imag"),
        pytest.param(2, 0, id="block-past-end"),
        pytest.param(1, 8192, id="position-past-end"),
        pytest.param(2**32 - 1, 2**32 - 1, id="max-values"),
    ],
)
def test_handle_outside_the_register_is_not_found(block: int, position: int) -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    with pytest.raises(NotFound):
        reg.resolve(Q1, STATE, h(block, position))


def test_handle_under_another_query_id_is_not_found() -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    with pytest.raises(NotFound):
        reg.resolve(Q2, STATE, h(1, 6))


@pytest.mark.parametrize("other", ["FR", "IT", "de", ""], ids=["FR", "IT", "lowercase", "empty"])
def test_handle_from_another_requesting_state_is_not_found(other: str) -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    with pytest.raises(NotFound):
        reg.resolve(Q1, other, h(1, 6))
    assert reg.resolve(Q1, STATE, h(1, 6)) == 1000


def test_unknown_query_is_not_found() -> None:
    reg = HandleRegistry()
    with pytest.raises(NotFound):
        reg.resolve(Q3, STATE, h(0, 0))
    reg.record(Q1, STATE, LAYOUT, IDS)
    with pytest.raises(NotFound):
        reg.resolve(Q3, STATE, h(0, 0))


@pytest.mark.parametrize(
    "handle",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\0" * (HANDLE_BYTES - 1), id="short"),
        pytest.param(b"\0" * (HANDLE_BYTES + 1), id="long"),
        pytest.param(b"\0" * 16, id="old-16-byte-handle"),
    ],
)
def test_handle_of_the_wrong_length_is_invalid_input(handle: bytes) -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    with pytest.raises(InvalidInput, match="8 bytes"):
        reg.resolve(Q1, STATE, handle)


def test_reserve_holds_the_query_id_until_recorded_or_released() -> None:
    reg = HandleRegistry()
    reg.reserve(Q1, STATE)
    with pytest.raises(AlreadyExists):  # a concurrent duplicate finds the hold
        reg.reserve(Q1, STATE)
    with pytest.raises(NotFound):  # nothing resolves while the search runs
        reg.resolve(Q1, STATE, h(0, 0))
    with pytest.raises(AlreadyExists):  # another state cannot take over the hold
        reg.record(Q1, "FR", LAYOUT, IDS)
    reg.record(Q1, STATE, LAYOUT, IDS)
    assert reg.resolve(Q1, STATE, h(0, 0)) == 1000 + 8197
    reg.release(Q1)  # a finished query is not released
    assert reg.resolve(Q1, STATE, h(0, 0)) == 1000 + 8197


def test_release_frees_a_failed_search_hold() -> None:
    reg = HandleRegistry()
    reg.reserve(Q1, STATE)
    reg.release(Q1)
    reg.reserve(Q1, STATE)  # may be used again


@pytest.mark.parametrize("state", [STATE, "FR"], ids=["same-state", "other-state"])
def test_reserve_of_a_pending_query_id_is_already_exists(state: str) -> None:
    reg = HandleRegistry()
    reg.record(Q1, state, LAYOUT, IDS)
    with pytest.raises(AlreadyExists):
        reg.reserve(Q1, STATE)
    reg.reserve(Q2, STATE)


@pytest.mark.parametrize("state", [STATE, "FR"], ids=["same-state", "other-state"])
def test_record_twice_is_already_exists_and_keeps_the_first(state: str) -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    with pytest.raises(AlreadyExists):
        reg.record(Q1, state, OTHER_LAYOUT, row_ids(5) + 10**6)
    # The first query's mapping is untouched, and still bound to its requesting state.
    assert reg.resolve(Q1, STATE, h(1, 6)) == 1000
    if state != STATE:
        with pytest.raises(NotFound):
            reg.resolve(Q1, state, h(1, 6))


def test_query_expires_after_the_ttl() -> None:
    clock, advance = fake_clock()
    reg = HandleRegistry(ttl_seconds=60.0, clock=clock)
    reg.record(Q1, STATE, LAYOUT, IDS)
    advance(30.0)
    reg.record(Q2, STATE, OTHER_LAYOUT, IDS)

    advance(29.999)  # Q1 is 59.999 s old
    assert reg.resolve(Q1, STATE, h(1, 6)) == 1000
    with pytest.raises(AlreadyExists):
        reg.reserve(Q1, STATE)

    advance(0.001)  # Q1 is exactly 60 s old: gone; Q2 is 30 s old
    with pytest.raises(NotFound):
        reg.resolve(Q1, STATE, h(1, 6))
    assert reg.resolve(Q2, STATE, h(0, 0)) == 1000 + 17

    advance(3600.0)
    with pytest.raises(NotFound):
        reg.resolve(Q2, STATE, h(0, 0))


def test_expired_query_id_may_be_reserved_and_recorded_again() -> None:
    clock, advance = fake_clock()
    reg = HandleRegistry(ttl_seconds=10.0, clock=clock)
    reg.record(Q1, STATE, LAYOUT, IDS)
    with pytest.raises(AlreadyExists):
        reg.reserve(Q1, STATE)
    advance(10.0)
    reg.reserve(Q1, "FR")
    reg.record(Q1, "FR", OTHER_LAYOUT, IDS)
    # The new query has its own layout and state; nothing of the old one survives.
    assert reg.resolve(Q1, "FR", h(1, 6)) == 1000 + 8192 + 6
    with pytest.raises(NotFound):
        reg.resolve(Q1, STATE, h(1, 6))


def test_expiry_happens_on_record_too() -> None:
    clock, advance = fake_clock()
    reg = HandleRegistry(ttl_seconds=10.0, max_queries=2, clock=clock)
    reg.record(Q1, STATE, LAYOUT, IDS)
    advance(11.0)
    reg.record(Q2, STATE, LAYOUT, IDS)
    reg.record(Q3, STATE, LAYOUT, IDS)  # Q1 expired, so Q2 is not evicted for space
    with pytest.raises(NotFound):
        reg.resolve(Q1, STATE, h(1, 6))
    assert reg.resolve(Q2, STATE, h(1, 6)) == 1000
    assert reg.resolve(Q3, STATE, h(1, 6)) == 1000


def test_max_queries_evicts_the_oldest() -> None:
    reg = HandleRegistry(max_queries=3)
    query_ids = [f"{n:032x}" for n in range(5)]
    for q in query_ids:
        reg.record(q, STATE, LAYOUT, IDS)
    for q in query_ids[:2]:
        with pytest.raises(NotFound):
            reg.resolve(q, STATE, h(1, 6))
        reg.reserve(q, STATE)  # evicted ids are no longer pending
        reg.release(q)
    for q in query_ids[2:]:
        assert reg.resolve(q, STATE, h(1, 6)) == 1000
        with pytest.raises(AlreadyExists):
            reg.reserve(q, STATE)


def test_same_position_names_different_rows_in_two_queries() -> None:
    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    reg.record(Q2, STATE, OTHER_LAYOUT, IDS)
    handles = [h(0, 0), h(0, 4095), h(1, 6), h(0, 1000), h(1, 1000)]
    first = [reg.resolve(Q1, STATE, x) for x in handles]
    second = [reg.resolve(Q2, STATE, x) for x in handles]
    assert first == [1000 + 8197, 1000 + 8196, 1000, 1000 + 9197, 1000 + 994]
    assert second == [1000 + 17, 1000 + 16, 1000 + 8198, 1000 + 1017, 1000 + 9192]
    assert all(a != b for a, b in zip(first, second, strict=True))
    # A record in one query may be padding in the other.
    assert reg.resolve(Q1, STATE, h(1, 4096)) == 1000 + 8186
    with pytest.raises(NotFound):
        reg.resolve(Q2, STATE, h(1, 4096))


def test_same_record_sits_at_different_positions_in_two_queries() -> None:
    def position_of(layout: QueryLayout, row: int) -> tuple[int, int]:
        for block in range(len(layout.order)):
            for position in range(2 * SLOTS):
                if layout.row(block, position) == row:
                    return block, position
        raise AssertionError(f"row {row} not in layout")

    reg = HandleRegistry()
    reg.record(Q1, STATE, LAYOUT, IDS)
    reg.record(Q2, STATE, OTHER_LAYOUT, IDS)
    first, second = position_of(LAYOUT, 0), position_of(OTHER_LAYOUT, 0)
    assert first == (1, 6)
    assert second == (0, 4096 - 17)
    assert reg.resolve(Q1, STATE, h(*first)) == reg.resolve(Q2, STATE, h(*second)) == 1000
    assert reg.resolve(Q2, STATE, h(*first)) == 1000 + 8198  # another record entirely
