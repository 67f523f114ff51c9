"""The baby-step/giant-step split of the packed engine: chosen from the block count, any
split gives the plaintext decisions, and enrolment that outgrows a split re-chooses it."""

from __future__ import annotations

import numpy as np
import pytest

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.he.engine import (
    HOISTED_BABY_STEP,
    PackedEngine,
    choose_baby_steps,
    choose_kernel_baby_steps,
    kernel_rotation_cost,
    rotation_cost,
    split_for,
)
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET
from tests.federation import shared_keys

THRESHOLD = 0.45
BASE = DEFAULT_PARAM_SET.rotation_base
PER_BLOCK = DEFAULT_PARAM_SET.block_records


@pytest.fixture(scope="module")
def evaluation() -> EvaluationKeys:
    return open_key_bundle(shared_keys().public_bundle())


def _rows(engine: PackedEngine, evaluation: EvaluationKeys, probe: np.ndarray) -> set[int]:
    keys = shared_keys()
    out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
    found = set()
    for b, ct in enumerate(out.blocks):
        for p in np.flatnonzero(keys.decrypt_matches(ct)):
            row = out.layout.row(b, int(p))
            assert row is not None, "a padding position decrypted as a match"
            found.add(row)
    return found


def test_split_follows_the_block_count() -> None:
    # A few blocks: a real split (the 20,000-record register of a small state); 64 blocks
    # and more: every baby step shared, no giant step (the engine's design for 1M records).
    assert [choose_baby_steps(128, b, BASE) for b in (1, 3, 8, 32, 64, 122)] == [
        16, 16, 32, 64, 128, 128,
    ]  # fmt: skip
    assert rotation_cost(128, 128, 3, BASE) == 127
    assert rotation_cost(128, 16, 3, BASE) == 15 + 3 * 7
    for blocks in (1, 3, 10, 100):
        best = choose_baby_steps(128, blocks, BASE)
        assert all(
            rotation_cost(128, best, blocks, BASE) <= rotation_cost(128, 1 << i, blocks, BASE)
            for i in range(8)
        )


@pytest.mark.parametrize("baby_steps", [1, 4, 16, 32, 128])
def test_every_split_gives_the_plaintext_decisions(
    baby_steps: int, evaluation: EvaluationKeys
) -> None:
    rng = np.random.default_rng(baby_steps)
    gallery = unit_vectors(rng, PER_BLOCK + 500, 128)  # a full block and a partial one
    engine = PackedEngine(DEFAULT_PARAM_SET, 128)
    engine.choose_baby_steps = lambda blocks: baby_steps  # type: ignore[method-assign]
    engine.load(gallery)
    exact = gallery.astype(np.float64)
    for row in (0, PER_BLOCK - 1, PER_BLOCK, PER_BLOCK + 499):
        probe = capture(gallery[row], rng, 0.7)
        want = set(np.flatnonzero(exact @ probe.astype(np.float64) >= THRESHOLD).tolist())
        assert row in want
        assert _rows(engine, evaluation, probe) == want


@pytest.mark.slow
def test_enrolment_that_outgrows_the_split_re_chooses_it(evaluation: EvaluationKeys) -> None:
    rng = np.random.default_rng(5)
    engine = PackedEngine(DEFAULT_PARAM_SET, 128)
    engine.load(unit_vectors(rng, PER_BLOCK + 100, 128))
    assert engine._baby_steps == 16
    first = engine._blocks[0]
    # 21 blocks still cost less than twice the best split: only the touched blocks change.
    engine.append(unit_vectors(rng, 20 * PER_BLOCK - 200, 128))
    assert engine._baby_steps == 16 and engine._blocks[0] is first
    # At 23 blocks n1 = 16 costs 15 + 23 * 7 = 176 key switches, n1 = 64 costs 86: the whole
    # register is re-encoded once with the better split, and still searches correctly.
    grown = unit_vectors(rng, 2 * PER_BLOCK, 128)
    engine.append(grown)
    assert engine._nblocks(engine.size) == 23
    assert engine._baby_steps == 64 and engine._blocks[0] is not first
    assert {getattr(b, "baby_steps", None) for b in engine._blocks} == {64}
    probe = capture(grown[7], rng, 0.8)
    assert engine.size - 2 * PER_BLOCK + 7 in _rows(engine, evaluation, probe)


def test_the_kernel_split_counts_shared_baby_steps_and_conjugations() -> None:
    """The kernel engine's model (fedmatch.he.engine.kernel_rotation_cost): baby steps
    divided among the workers that share them, and with giant steps the leftover shift
    (2.25 key switches on average at dp = 128, base 8) and a conjugation per block."""
    base = KERNEL_PARAM_SET.rotation_base
    hoisted = HOISTED_BABY_STEP
    assert kernel_rotation_cost(128, 128, 7, base, sharers=2) == pytest.approx(127 * hoisted / 2)
    # 32 baby steps: 31 shared by two, 3 giant steps of one key switch, 3.25 per block.
    expected = 31 * hoisted / 2 + 7 * 3 + 7 * 3.25
    assert kernel_rotation_cost(128, 32, 7, base, sharers=2) == pytest.approx(expected)
    # The multi-worker engines split with it, for their blocks per worker (the workers of
    # a sharded kernel engine share the baby steps; a Ray engine's actors do not).
    assert split_for(KERNEL_PARAM_SET, 128, 11, 2) == choose_kernel_baby_steps(128, 11, base, 2)
    # Hoisted baby steps are cheap enough that 7 blocks per worker take no giant steps (the
    # kernel then rotates and conjugates every block's sum); one block per worker does.
    assert split_for(KERNEL_PARAM_SET, 128, 7, 2) == 128
    assert split_for(KERNEL_PARAM_SET, 128, 1, 1) < 128
    assert split_for(DEFAULT_PARAM_SET, 128, 7) == choose_baby_steps(128, 7, BASE)
