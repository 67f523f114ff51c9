"""The sharded engine's workers are forked from one process that built (and for the kernel
set compiled) the engine once (fedmatch.he.sharded._zygote_main): what they share, and what
they must not. The engine contract (tests/unit/test_engine_contract.py, the sharded
engines) runs real searches through them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.errors import Unavailable
from fedmatch.he.keys import open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET, ParamSet
from fedmatch.he.sharded import ShardedEngine
from tests.he_keys import keys_for

DIM = 128


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        # After the command name in parentheses: state, then the parent's pid.
        return int(fh.read().rsplit(")", 1)[1].split()[1])


@pytest.fixture(
    scope="module", params=[KERNEL_PARAM_SET, DEFAULT_PARAM_SET], ids=["kernel", "default"]
)
def engine(request: pytest.FixtureRequest) -> Iterator[ShardedEngine]:
    ps: ParamSet = request.param
    e = ShardedEngine(ps, DIM, 2)
    try:
        yield e
    finally:
        e.close()


def test_the_workers_are_forked_from_one_process(engine: ShardedEngine) -> None:
    zygote = engine._procs[0].pid
    assert zygote is not None and _parent(zygote) == os.getpid()
    pids = engine.worker_pids
    assert len(set(pids)) == 2 and zygote not in pids
    assert all(_parent(pid) == zygote for pid in pids)


def test_two_workers_never_draw_the_same_masks(engine: ShardedEngine) -> None:
    """Attack: a worker that replayed the random bytes the forking process had buffered
    would mask its blocks exactly as its sibling does. Two blocks of one identical row
    each (every score the same), one per worker: with shared streams their decrypted
    results would be equal slot for slot; they must differ everywhere."""
    ps = engine.params
    row = unit_vectors(np.random.default_rng(5), 1, DIM)[0]
    engine.load(np.repeat(row[None, :], 2 * ps.block_records, axis=0))
    keys = keys_for(ps)
    evaluation = engine.kept_keys(open_key_bundle(keys.public_bundle()))
    out = engine.search(evaluation, keys.encrypt_probe(row), 0.45, lambda: False)
    assert {engine._owner(b) for b in out.layout.order} == {0, 1}
    first, second = (
        np.sort(np.abs(np.asarray(keys.decrypt_values(block)).real)) for block in out.blocks
    )
    # Masked scores of one value, each block's slots in its own random rotation. Sorted,
    # equal masks leave them equal within the encryption noise: with the forking process
    # made to draw and the workers to keep its bytes, 99% of the values were within 1e-4
    # of each other (checked). Independent log-uniform masks differ by ~10% at a rank:
    # under 1% of them are that close.
    close = np.isclose(first, second, rtol=1e-4, atol=0.0)
    assert close.mean() < 0.05


def test_a_worker_that_ends_is_reported_not_waited_for() -> None:
    engine = ShardedEngine(DEFAULT_PARAM_SET, DIM, 2)  # its own: this one loses a worker
    try:
        os.kill(engine.worker_pids[0], 9)
        with pytest.raises(Unavailable, match="worker process ended"):
            engine.load(unit_vectors(np.random.default_rng(6), 10, DIM))
    finally:
        engine.close()


def test_ctrl_c_at_a_terminal_leaves_the_workers_to_the_node(engine: ShardedEngine) -> None:
    """SIGINT reaches the whole foreground process group: the workers and the process that
    forked them must not die of it (the node stops them itself, or they see its pipes end)."""
    for pid in (engine._procs[0].pid, *engine.worker_pids):
        assert pid is not None
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert engine._procs[0].is_alive()
    assert engine.held_bytes()["rows"] >= 0  # both workers answer
