"""The engine's CSPRNG stream (fedmatch.he.rng): distribution, freshness across refills,
threads and forks."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from fedmatch.errors import HEError
from fedmatch.he import engine, rng


def test_uniform_doubles_have_53_bits_and_the_right_moments() -> None:
    u = rng.uniform(200_000)
    assert u.dtype == np.float64 and u.shape == (200_000,)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    # Every value is a multiple of 2^-53 and the low bits are used.
    scaled = u * float(1 << 53)
    assert np.array_equal(scaled, np.floor(scaled))
    assert (scaled.astype(np.uint64) & np.uint64(1)).mean() == pytest.approx(0.5, abs=0.01)
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = u.size / 20
    assert ((counts - expected) ** 2 / expected).sum() < 60  # chi^2, 19 dof: p ~ 1e-6


def test_normal_and_below() -> None:
    z = rng.normal(200_000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    draws = [rng.random_below(7) for _ in range(7000)]
    assert set(draws) == set(range(7))
    assert max(np.bincount(draws)) < 1200
    with pytest.raises(HEError):
        rng.random_below(0)


def test_refills_are_fresh_and_large_requests_work() -> None:
    stream = rng.SecureStream(refill_bytes=4096)
    first, second = stream.bytes_array(4096).copy(), stream.bytes_array(4096).copy()
    assert not np.array_equal(first, second)
    big = stream.bytes_array(10_000)
    assert big.size == 10_000 and len(set(big.tolist())) > 200
    assert stream.bytes_array(0).size == 0
    # Two streams never agree (each key comes from the OS).
    assert not np.array_equal(rng.SecureStream().words(4), rng.SecureStream().words(4))


def test_threads_never_get_the_same_values() -> None:
    stream = rng.SecureStream(refill_bytes=1 << 14)
    seen: list[np.ndarray] = []
    lock = threading.Lock()

    def draw() -> None:
        for _ in range(200):
            words = stream.words(16).copy()
            with lock:
                seen.append(words)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = np.concatenate(seen)
    assert flat.size == 4 * 200 * 16 and np.unique(flat).size == flat.size


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_replay_its_parents_buffer() -> None:
    stream = rng.stream()
    stream.words(1)  # the parent has a buffer with bytes left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, stream.words(8).tobytes())
        os._exit(0)
    os.close(write)
    child = np.frombuffer(os.read(read, 64), dtype=np.uint64)
    os.close(read)
    os.waitpid(pid, 0)
    parent = stream.words(8)
    assert child.size == 8 and not np.array_equal(child, parent)


def test_the_engine_draws_from_the_stream() -> None:
    masks = np.exp2(30 + 17 * engine._uniform(100_000))
    # Log-uniform over [2^30, 2^47]: log2 uniform with mean 38.5.
    logs = np.log2(masks)
    assert logs.min() >= 30 and logs.max() < 47
    assert abs(logs.mean() - 38.5) < 0.05
