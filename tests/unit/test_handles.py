"""Tests of node.handles.HandleRegistry: per-query, unlinkable, expiring handles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.errors import AlreadyExists, NotFound
from fedmatch.limits import HANDLE_BYTES
from node.handles import HandleRegistry

Q1 = "1" * 32
Q2 = "2" * 32
Q3 = "3" * 32
STATE = "DE"


def row_ids(*values: int) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)


IDS = row_ids(1, 2, 3, 7, 42, 1000, 2**40)


def split(raw: bytes) -> list[bytes]:
    assert len(raw) % HANDLE_BYTES == 0
    return [raw[i : i + HANDLE_BYTES] for i in range(0, len(raw), HANDLE_BYTES)]


def fake_clock(start: float = 1000.0) -> tuple[Callable[[], float], Callable[[float], None]]:
    """A clock reading a mutable float, and a function that moves it forward."""
    now = start

    def clock() -> float:
        return now

    def advance(seconds: float) -> None:
        nonlocal now
        now += seconds

    return clock, advance


def test_handles_are_16_bytes_each_and_distinct() -> None:
    many = np.arange(1, 501, dtype=np.int64)
    raw = HandleRegistry().issue(Q1, STATE, many)
    assert HANDLE_BYTES == 16
    assert len(raw) == 16 * len(many)
    handles = split(raw)
    assert len(set(handles)) == len(many)


def test_same_records_get_unrelated_handles_in_two_queries() -> None:
    reg = HandleRegistry()
    first = split(reg.issue(Q1, STATE, IDS))
    second = split(reg.issue(Q2, STATE, IDS))
    assert len(first) == len(second) == len(IDS)
    assert not set(first) & set(second)


def test_handles_are_not_row_id_bytes() -> None:
    handles = set(split(HandleRegistry().issue(Q1, STATE, IDS)))
    encodings = set()
    for r in IDS.tolist():
        encodings |= {
            r.to_bytes(HANDLE_BYTES, "big"),
            r.to_bytes(HANDLE_BYTES, "little"),
            np.int64(r).tobytes().ljust(HANDLE_BYTES, b"\0"),
            np.int64(r).tobytes().rjust(HANDLE_BYTES, b"\0"),
            str(r).encode().ljust(HANDLE_BYTES, b"\0"),
        }
    assert not handles & encodings


def test_resolve_returns_each_handles_row_id() -> None:
    reg = HandleRegistry()
    handles = split(reg.issue(Q1, STATE, IDS))
    assert [reg.resolve(Q1, STATE, h) for h in handles] == IDS.tolist()
    # Resolving does not consume the handle.
    assert reg.resolve(Q1, STATE, handles[0]) == int(IDS[0])


def test_empty_result_issues_no_handles() -> None:
    reg = HandleRegistry()
    assert reg.issue(Q1, STATE, row_ids()) == b""
    with pytest.raises(NotFound):
        reg.resolve(Q1, STATE, b"\0" * HANDLE_BYTES)


def test_handle_from_one_query_is_not_found_under_another() -> None:
    reg = HandleRegistry()
    h1 = split(reg.issue(Q1, STATE, IDS))
    reg.issue(Q2, STATE, IDS)
    for h in h1:
        with pytest.raises(NotFound):
            reg.resolve(Q2, STATE, h)


@pytest.mark.parametrize("other", ["FR", "IT", "de", ""], ids=["FR", "IT", "lowercase", "empty"])
def test_other_requesting_state_is_not_found(other: str) -> None:
    reg = HandleRegistry()
    handles = split(reg.issue(Q1, STATE, IDS))
    with pytest.raises(NotFound):
        reg.resolve(Q1, other, handles[0])
    assert reg.resolve(Q1, STATE, handles[0]) == int(IDS[0])


@pytest.mark.parametrize(
    ("query_id", "handle"),
    [
        pytest.param(Q3, None, id="unknown-query"),
        pytest.param(Q1, b"\0" * HANDLE_BYTES, id="unknown-handle"),
        pytest.param(Q1, b"", id="empty-handle"),
        pytest.param(Q1, "truncated", id="truncated-handle"),
        pytest.param(Q1, "extended", id="extended-handle"),
    ],
)
def test_unknown_query_or_handle_is_not_found(query_id: str, handle: bytes | str | None) -> None:
    reg = HandleRegistry()
    real = split(reg.issue(Q1, STATE, IDS))[0]
    if handle is None:
        handle = real
    elif handle == "truncated":
        handle = real[:-1]
    elif handle == "extended":
        handle = real + b"\0"
    assert isinstance(handle, bytes)
    with pytest.raises(NotFound):
        reg.resolve(query_id, STATE, handle)


@pytest.mark.parametrize("state", [STATE, "FR"], ids=["same-state", "other-state"])
def test_reusing_a_query_id_is_already_exists(state: str) -> None:
    reg = HandleRegistry()
    handles = split(reg.issue(Q1, STATE, IDS))
    with pytest.raises(AlreadyExists):
        reg.issue(Q1, state, row_ids(99))
    # The first query's mapping is untouched.
    assert [reg.resolve(Q1, STATE, h) for h in handles] == IDS.tolist()
    with pytest.raises(NotFound):
        reg.resolve(Q1, "FR", handles[0])


def test_queries_expire_after_the_ttl() -> None:
    clock, advance = fake_clock()
    reg = HandleRegistry(ttl_seconds=60.0, clock=clock)
    old = split(reg.issue(Q1, STATE, IDS))
    advance(30.0)
    new = split(reg.issue(Q2, STATE, IDS))

    advance(29.999)  # Q1 is 59.999 s old
    assert reg.resolve(Q1, STATE, old[0]) == int(IDS[0])

    advance(0.001)  # Q1 is exactly 60 s old: gone; Q2 is 30 s old
    with pytest.raises(NotFound):
        reg.resolve(Q1, STATE, old[0])
    assert reg.resolve(Q2, STATE, new[-1]) == int(IDS[-1])

    advance(3600.0)
    with pytest.raises(NotFound):
        reg.resolve(Q2, STATE, new[-1])


def test_expiry_happens_on_issue_too() -> None:
    clock, advance = fake_clock()
    reg = HandleRegistry(ttl_seconds=10.0, max_queries=2, clock=clock)
    old = split(reg.issue(Q1, STATE, IDS))
    advance(11.0)
    fresh = split(reg.issue(Q2, STATE, IDS))
    with pytest.raises(NotFound):
        reg.resolve(Q1, STATE, old[0])
    assert reg.resolve(Q2, STATE, fresh[0]) == int(IDS[0])


def test_max_queries_evicts_the_oldest() -> None:
    reg = HandleRegistry(max_queries=3)
    query_ids = [f"{n:032x}" for n in range(5)]
    issued = {q: split(reg.issue(q, STATE, IDS)) for q in query_ids}
    for q in query_ids[:2]:
        with pytest.raises(NotFound):
            reg.resolve(q, STATE, issued[q][0])
    for q in query_ids[2:]:
        assert reg.resolve(q, STATE, issued[q][0]) == int(IDS[0])
