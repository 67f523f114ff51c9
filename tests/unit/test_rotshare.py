"""The shared rotation stack of a sharded kernel engine's workers (fedmatch.he.rotshare):
shares that cover every rotation once, a wait that ends when every peer has written, and
never hangs on a peer that failed, a stopped query or a lost peer. The engine contract
(tests/unit/test_engine_contract.py, kernel-sharded-2) runs real searches through it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fedmatch.errors import DeadlineExceeded, HEError, Unavailable
from fedmatch.he.params import KERNEL_PARAM_SET
from fedmatch.he.rotshare import RotationShare, SharedStack, stack_bytes


@pytest.fixture
def stack() -> Iterator[SharedStack]:
    shared = SharedStack(KERNEL_PARAM_SET, 128, 3)
    try:
        yield shared
    finally:
        shared.close()


def _share(stack: SharedStack, seq: int, peers: list[int], me: int) -> RotationShare:
    return RotationShare(stack.words, stack.marks, seq, peers, me, 3, 128)


def test_the_stack_holds_dp_rotations_of_a_query() -> None:
    # 128 rotations x 2 parts x 4 data primes x 8,192 words x 4 bytes.
    assert stack_bytes(KERNEL_PARAM_SET, 128) == 128 * 2 * 4 * 8192 * 4


def test_the_parts_cover_every_rotation_once(stack: SharedStack) -> None:
    for peers in ([0, 1], [0, 2], [0, 1, 2]):
        parts = [_share(stack, 1, peers, me).part(128) for me in peers]
        assert sorted(k for part in parts for k in part) == list(range(128))
        assert parts[0].start == 0  # the query itself: no key switch


def test_a_peer_with_another_split_is_refused(stack: SharedStack) -> None:
    with pytest.raises(HEError, match="another number of rotations"):
        _share(stack, 1, [0, 1], 0).part(32)


def test_the_wait_ends_when_every_peer_has_written(stack: SharedStack) -> None:
    first, second = _share(stack, 7, [0, 2], 0), _share(stack, 7, [0, 2], 2)
    words = first.stack((4, 32, 128, 2, 256))
    words[:, :, 5] = 9  # a share's words are every peer's
    assert (second.stack((4, 32, 128, 2, 256))[:, :, 5] == 9).all()
    first.publish()
    with pytest.raises(Unavailable, match="in time"):
        first.wait(lambda: False, limit=0.05)  # worker 2 has not written yet
    second.publish()
    first.wait(lambda: False, limit=0.05)
    second.wait(lambda: False, limit=0.05)
    # Worker 1 is not in this query: its mark is not waited for.
    assert np.ndarray((3,), np.int64, buffer=stack.marks.buf)[1] == 0


def test_a_failed_peer_or_a_stopped_query_ends_the_wait(stack: SharedStack) -> None:
    first, second = _share(stack, 8, [0, 1], 0), _share(stack, 8, [0, 1], 1)
    first.publish()
    second.fail()
    with pytest.raises(Unavailable, match="failed"):
        first.wait(lambda: False)
    third = _share(stack, 9, [0, 1], 0)
    third.publish()
    with pytest.raises(DeadlineExceeded):
        third.wait(lambda: True)


def test_an_earlier_query_s_marks_do_not_count(stack: SharedStack) -> None:
    _share(stack, 10, [0, 1], 1).publish()
    later = _share(stack, 11, [0, 1], 0)
    later.publish()
    with pytest.raises(Unavailable, match="in time"):
        later.wait(lambda: False, limit=0.05)


def test_a_share_needs_its_worker_among_distinct_peers(stack: SharedStack) -> None:
    with pytest.raises(HEError):
        _share(stack, 1, [1, 2], 0)
    with pytest.raises(HEError):
        _share(stack, 1, [0, 0], 0)
    with pytest.raises(HEError, match="do not fit"):
        _share(stack, 1, [0, 1], 0).stack((4, 32, 512, 2, 256))
