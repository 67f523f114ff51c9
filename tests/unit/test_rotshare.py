"""The shared rotation stack of a sharded kernel engine's workers (fedmatch.he.rotshare):
shares that cover every rotation once, a wait that ends when every peer has written, and
never hangs on a peer that failed, a stopped query or a lost peer; the probe's terms
computed once and read by every peer word for word. The engine contract
(tests/unit/test_engine_contract.py, kernel-sharded-2: honest, packed, complex, long and
scaled probes) runs real searches through both."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.errors import DeadlineExceeded, HEError, Unavailable
from fedmatch.he import sealmem
from fedmatch.he.kernel_engine import KernelEngine
from fedmatch.he.keys import open_key_bundle
from fedmatch.he.params import KERNEL_PARAM_SET
from fedmatch.he.rotshare import TERM_SLOTS, RotationShare, SharedStack, stack_bytes, terms_bytes
from tests.he_keys import keys_for


@pytest.fixture
def stack() -> Iterator[SharedStack]:
    shared = SharedStack(KERNEL_PARAM_SET, 128, 3)
    try:
        yield shared
    finally:
        shared.close()


def _share(stack: SharedStack, seq: int, peers: list[int], me: int) -> RotationShare:
    return RotationShare(stack.words, stack.marks, stack.terms, seq, peers, me, 3, 128)


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
    assert (np.ndarray((2, 3), np.int64, buffer=stack.marks.buf)[:, 1] == 0).all()


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


def test_the_probe_s_terms_are_computed_once_and_read_by_every_peer(stack: SharedStack) -> None:
    shape = (2, 4, 8192)
    assert terms_bytes(KERNEL_PARAM_SET) == 8 * (TERM_SLOTS * 2 + TERM_SLOTS * 2 * 4 * 8192)
    for peers in ([0, 1], [0, 2], [0, 1, 2]):
        shares = [_share(stack, 1, peers, me) for me in peers]
        # The malformation terms by one peer, the norm excess by another.
        assert [sum(s.computes(part) for s in shares) for part in (0, 1)] == [1, 1]
        assert shares[0].computes(0) and shares[1].computes(1)
    first, second = _share(stack, 12, [0, 2], 0), _share(stack, 12, [0, 2], 2)
    header, words = first.terms(shape)
    header[4] = (1.0, 2.0**40)
    words[4, 1, 3] = 77
    theirs, their_words = second.terms(shape)
    assert tuple(theirs[4]) == (1.0, 2.0**40) and (their_words[4, 1, 3] == 77).all()
    # The terms' round has its own marks: the rotations' do not end its wait.
    first.publish()
    second.publish()
    first.publish(1)
    with pytest.raises(Unavailable, match="probe's terms in time"):
        first.wait(lambda: False, limit=0.05, round_=1)
    second.publish(1)
    first.wait(lambda: False, limit=0.05, round_=1)
    with pytest.raises(HEError, match="do not fit"):
        first.terms((2, 5, 8192))


def test_a_peer_that_fails_in_either_round_ends_both_waits(stack: SharedStack) -> None:
    first, second = _share(stack, 13, [0, 1], 0), _share(stack, 13, [0, 1], 1)
    first.publish()
    second.publish()
    first.wait(lambda: False, limit=0.05)
    second.fail()  # while computing its terms
    with pytest.raises(Unavailable, match="failed while computing the query's probe's terms"):
        first.wait(lambda: False, round_=1)


def _words(ct: Any) -> npt.NDArray[np.uint64]:
    out = np.empty((ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree()), np.uint64)
    sealmem.read_ciphertext(ct, out)
    return out


@pytest.mark.parametrize("count", [128, 16], ids=["conjugate sums", "giant steps"])
def test_every_peer_gets_the_terms_its_peers_computed_word_for_word(
    stack: SharedStack, count: int
) -> None:
    """Two workers' engines (threads here) share one query's probe terms: each gets the
    malformation terms the first computed (their rotations' offsets are random: one draw
    for the query), their conjugates when the blocks take conjugate sums, and the norm
    excess the second computed, word for word and at their scales; the excess and the
    conjugates equal what a worker computes alone (deterministic functions of the probe)."""
    ps = KERNEL_PARAM_SET
    keys = keys_for(ps)
    evaluation = open_key_bundle(keys.public_bundle())
    # An honest probe: its terms are encryptions of noise, not SEAL's transparent zero.
    probe_bytes = keys.encrypt_probe(unit_vectors(np.random.default_rng(5), 1, 128)[0])
    engines = [KernelEngine(ps, 128, threads=1) for _ in range(2)]
    probes = [engine.open_probe(probe_bytes) for engine in engines]
    shares = [_share(stack, 20 + count, [0, 1], me) for me in (0, 1)]
    for share in shares:
        share.count = count
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(e._shared_terms, p, evaluation, lambda: False, s)
            for e, p, s in zip(engines, probes, shares, strict=True)
        ]
        got = [f.result(timeout=120) for f in futures]
    (terms0, conj0, excess0), (terms1, conj1, excess1) = got
    assert [low for _, low in terms0] == [low for _, low in terms1] == [2.0, 4.0]
    for (a, _), (b, _) in zip(terms0, terms1, strict=True):
        assert a.scale == b.scale and np.array_equal(_words(a), _words(b))
    assert excess0 is not None and excess1 is not None
    assert excess0.scale == excess1.scale and np.array_equal(_words(excess0), _words(excess1))
    alone = engines[0]._norm_excess(probes[0], evaluation)
    assert alone is not None and np.array_equal(_words(alone), _words(excess1))
    if count == engines[0]._dp:
        assert conj0 is not None and conj1 is not None
        for (a, _), (b, _), (term, _) in zip(conj0, conj1, terms1, strict=True):
            assert np.array_equal(_words(a), _words(b))
            mine = engines[1]._conjugated_terms([(term, 0.0)], evaluation)[0][0]
            assert np.array_equal(_words(mine), _words(b))
    else:
        assert conj0 is None and conj1 is None
