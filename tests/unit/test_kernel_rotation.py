"""The result's random rotation done by the kernel while it sums (fedmatch.he.slotorder,
kernel.products' shifts): the slot order is SEAL's rotation, the rotated sums are bit for
bit an independent computation of them, and they decrypt to the rotated scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tenseal.sealapi as seal

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.errors import HEError
from fedmatch.he import kernel, sealio, sealmem
from fedmatch.he.engine import rotated_flags
from fedmatch.he.kernel_engine import KernelEngine
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET
from fedmatch.he.slotorder import conjugated, rotated, slot_order
from tests.he_keys import keys_for

PS = KERNEL_PARAM_SET
MODULI = kernel.KernelModuli.top_level(PS)
# 0, within a tile, a whole number of tiles (2,048 on more than one core), both, and the
# last slot; on one core a tile is a whole half, and every shift is within it.
SHIFTS = (0, 1, 37, 2048, 2085, PS.slots - 1)
assert kernel.tile_for(PS.poly_modulus_degree, 2) == 2048


@pytest.fixture(scope="module")
def evaluation() -> EvaluationKeys:
    return open_key_bundle(keys_for(PS).public_bundle())


@pytest.mark.parametrize("ps", [PS, DEFAULT_PARAM_SET], ids=["kernel", "default"])
def test_the_slot_order_rotates_as_seal_does(ps: Any) -> None:
    """Words moved by ``rotated`` decode to the slots rotated left, and SEAL's own
    rotation of a ciphertext rotates them the same way."""
    ctx = ps.context()
    encoder = seal.CKKSEncoder(ctx)
    keys = keys_for(ps)
    values = np.random.default_rng(1).standard_normal(ps.slots) + 0j
    plain = seal.Plaintext()
    encoder.encode(values.tolist(), ctx.first_parms_id(), 2.0**30, plain)
    limbs = plain.coeff_count() // ps.poly_modulus_degree
    words = np.empty((limbs, ps.poly_modulus_degree), dtype=np.uint64)
    sealmem.read_plaintext(plain, words)
    order = slot_order(ps.poly_modulus_degree)
    assert sorted(order.tolist()) == list(range(ps.poly_modulus_degree))
    evaluation = open_key_bundle(keys.public_bundle())
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, keys._secret).encrypt_symmetric(plain, ct)
    for shift in (1, 8, 512):  # single keys (rotation base 8)
        moved = seal.Plaintext()
        encoder.encode([0j] * ps.slots, ctx.first_parms_id(), 2.0**30, moved)
        sealmem.write_plaintext(moved, ctx, np.ascontiguousarray(rotated(words, shift)))
        decoded = np.asarray(encoder.decode_complex(moved))
        assert np.abs(decoded - np.roll(values, -shift)).max() < 1e-6
        turned = seal.Ciphertext()
        seal.Evaluator(ctx).rotate_vector(ct, shift, evaluation.galois_keys, turned)
        values_turned = keys.decrypt_values(sealio.to_bytes(turned))
        # SEAL's rotation noise is ~1e-3 here; the other direction would be off by ~1.
        assert np.abs(values_turned - np.roll(values, -shift)).max() < 1e-2


def _reference(rot: np.ndarray, diagonals: np.ndarray, shift: int) -> np.ndarray:
    """sum_k R[(k + shift) mod dp] * rotated(D[k], shift) mod q, in numpy, SEAL's order."""
    dp = diagonals.shape[0]
    moved = rotated(diagonals, shift).astype(np.uint64)
    q = MODULI.moduli[:, None]  # (moduli, 1), against (k, parts, moduli, N)
    paired = rot[(np.arange(dp) + shift) % dp].astype(np.uint64)
    # Each product reduced (below 2^30), their sum below 2^37: exact in uint64.
    products = (paired * moved[:, None]) % q
    total: np.ndarray = products.sum(axis=0, dtype=np.uint64) % q
    return total


@pytest.mark.parametrize("threads", [1, 2], ids=["one core, half tiles", "two, quarters"])
def test_rotated_sums_are_an_independent_computation_bit_for_bit(
    evaluation: EvaluationKeys, threads: int
) -> None:
    """Blocks without giant steps in one kernel call with different shifts (a full block
    and a partial one): each sum is the numpy reference's, word for word, with the tiles
    of either kernel (a shift within a tile, across tiles, and wrapping in its half)."""
    rng = np.random.default_rng(7)
    engine = KernelEngine(PS, 128, threads)
    gallery = unit_vectors(rng, PS.block_records + 700, 128)
    per = PS.block_records
    blocks = [engine.encode_block_rows(gallery[b : b + per], 128) for b in (0, per)]
    query = engine.open_probe(keys_for(PS).encrypt_probe(capture(gallery[3], rng, 0.8))).query
    rotations = engine._rotations(query, evaluation, lambda: False)
    # The stack's words (the engine computes them natively, fedmatch.he.keyswitch).
    rot = np.stack([rotations.words(k) for k in range(128)]).astype(np.uint64)
    jobs = [(b, shift) for shift in SHIFTS for b in range(len(blocks))]
    sums = engine._rotated_products(
        rotations, [(blocks[b], shift) for b, shift in jobs], evaluation, lambda: False
    )
    assert sums.applied == [shift for _, shift in jobs]
    diagonals_of = [_natural_diagonals(engine, gallery[b * per : (b + 1) * per]) for b in (0, 1)]
    for (b, shift), acc, conj in zip(jobs, sums.sums, sums.conjugates, strict=True):
        diagonals = diagonals_of[b]
        found = np.empty_like(rot[0])
        sealmem.read_ciphertext(acc, found)
        assert np.array_equal(found, _reference(rot, diagonals, shift)), shift
        # The conjugate sum: the same over the conjugated diagonals (SEAL's conjugation
        # before its key switch), word for word.
        assert conj is not None
        sealmem.read_ciphertext(conj, found)
        assert np.array_equal(found, _reference(rot, conjugated(diagonals), shift)), shift


def _natural_diagonals(engine: KernelEngine, rows: np.ndarray) -> np.ndarray:
    """A block's diagonals (no giant steps) as SEAL encodes them: NTT words, SEAL's order."""
    _, diagonals = engine._diagonals(rows, 128)
    ctx = PS.context()
    encoder = seal.CKKSEncoder(ctx)
    out = np.empty((len(diagonals), MODULI.moduli.shape[0], PS.poly_modulus_degree), np.uint64)
    plain = seal.Plaintext()
    for i, diagonal in enumerate(diagonals):
        encoder.encode(diagonal.tolist(), ctx.first_parms_id(), PS.register_scale, plain)
        sealmem.read_plaintext(plain, out[i])
    return out


@pytest.mark.parametrize("baby_steps", [128, 16], ids=["no-giant-steps", "giant-steps"])
def test_rotated_sums_decrypt_to_the_rotated_scores(
    evaluation: EvaluationKeys, baby_steps: int
) -> None:
    """Rotated by the whole shift without giant steps, by its multiple of dp with them
    (the rest is left to a key switch after the masks)."""
    keys = keys_for(PS)
    rng = np.random.default_rng(11)
    gallery = unit_vectors(rng, 3000, 128)
    engine = KernelEngine(PS, 128)
    block = engine.encode_block_rows(gallery, baby_steps)
    probe = capture(gallery[4], rng, 0.8)
    query = engine.open_probe(keys.encrypt_probe(probe)).query
    rotations = engine._rotations(query, evaluation, lambda: False, baby_steps)
    scores = np.zeros(PS.block_records)
    scores[: gallery.shape[0]] = gallery.astype(np.float64) @ probe.astype(np.float64)
    expected = scores[: PS.slots] + 1j * scores[PS.slots :]
    for shift in (0, 1, 300, 2049):
        sums = engine._rotated_products(rotations, [(block, shift)], evaluation, lambda: False)
        (acc,), (applied,), (conj,) = sums.sums, sums.applied, sums.conjugates
        assert applied == (shift if baby_steps == 128 else shift // 128 * 128)
        values = keys.decrypt_values(sealio.to_bytes(acc))
        assert np.abs(values - np.roll(expected, -applied)).max() < 1e-4
        if baby_steps == 128:
            # The kernel's conjugate sum decrypts to the conjugated scores.
            assert conj is not None
            values = keys.decrypt_values(sealio.to_bytes(conj))
            assert np.abs(values - np.conj(np.roll(expected, -applied))).max() < 1e-4
        else:
            # With giant steps SEAL conjugates the block after the threshold.
            assert conj is None


def test_flags_move_with_the_slots() -> None:
    slots = PS.slots
    flags = np.zeros(2 * slots, dtype=np.bool_)
    flags[[5, slots + 9]] = True  # row 5 (slot 5, real) and row slots + 9 (slot 9, imaginary)
    moved = rotated_flags(flags, 3)
    assert np.flatnonzero(moved).tolist() == [2, slots + 6]
    assert np.flatnonzero(rotated_flags(flags, 7)).tolist() == [slots - 2, slots + 2]


def test_a_kernel_search_rotates_without_key_switches(evaluation: EvaluationKeys) -> None:
    """A register large enough for no giant steps: no result block is rotated after its
    masks (the key switches for the rotation are gone)."""
    engine = KernelEngine(PS, 128)
    rows = unit_vectors(np.random.default_rng(2), 2 * PS.block_records, 128)
    engine._blocks = [engine.encode_block_rows(rows[b::2], 128) for b in (0, 1)]
    engine._rows.replace(rows)
    engine._size, engine._baby_steps = rows.shape[0], 128
    shifts: list[int] = []
    original = engine._rotate

    def spy(ct: seal.Ciphertext, shift: int, keys: EvaluationKeys) -> None:
        shifts.append(shift)
        original(ct, shift, keys)

    engine._rotate = spy  # type: ignore[method-assign]
    probe = unit_vectors(np.random.default_rng(3), 1, 128)[0]
    out = engine.search(evaluation, keys_for(PS).encrypt_probe(probe), 0.45, lambda: False)
    assert len(out.blocks) == 2 and any(out.layout.shifts)
    # The probe's checks rotate it (by multiples of dp); the result blocks are not (their
    # shifts, random in [0, 4096), would not all be multiples of 128).
    assert all(s % 128 == 0 for s in shifts)
    assert shifts.count(0) >= 2


class _CountingEvaluator:
    """SEAL's evaluator, counting its conjugations (the binding's methods cannot be
    patched on the object itself)."""

    def __init__(self, inner: seal.Evaluator) -> None:
        self.inner, self.conjugations = inner, 0

    def complex_conjugate(self, *args: Any) -> None:
        self.conjugations += 1
        self.inner.complex_conjugate(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("blocks", [2, 4])
def test_a_kernel_search_conjugates_no_block_by_key_switch(
    evaluation: EvaluationKeys, blocks: int
) -> None:
    """Without giant steps the conjugations are the probe's checks' only (the same count
    for 2 blocks as for 4): no block's scores are key-switched with the requester's keys,
    and the search still finds exactly numpy's matches."""
    engine = KernelEngine(PS, 128)
    rng = np.random.default_rng(5)
    rows = unit_vectors(rng, blocks * PS.block_records, 128)
    engine._blocks = [
        engine.encode_block_rows(rows[b * PS.block_records : (b + 1) * PS.block_records], 128)
        for b in range(blocks)
    ]
    engine._rows.replace(rows)
    engine._size, engine._baby_steps = rows.shape[0], 128
    counting = _CountingEvaluator(engine._evaluator)
    engine._evaluator = counting
    keys = keys_for(PS)
    probe = capture(rows[PS.block_records + 77], rng, 0.8)
    out = engine.search(evaluation, keys.encrypt_probe(probe), 0.45, lambda: False)
    # Two for the replication term (the probe, then the term itself for the blocks'
    # conjugate sums), one for the consistency term's, one for the norm excess.
    assert counting.conjugations == 4
    scores = rows @ probe
    found = set()
    for b, ct in enumerate(out.blocks):
        for p in np.flatnonzero(keys.decrypt_matches(ct)):
            found.add(out.layout.row(b, int(p)))
    clear = np.abs(scores - 0.45) > 1e-4
    assert found & set(np.flatnonzero(clear).tolist()) == set(
        np.flatnonzero((scores >= 0.45) & clear).tolist()
    )
    assert PS.block_records + 77 in found


def test_the_split_counts_the_shifts_left_to_key_switches() -> None:
    """With giant steps each block keeps ~2.25 key switches of its shift; the kernel
    engine's split weighs them (a large register: no giant steps, no key switches)."""
    engine = KernelEngine(PS, 128)
    assert engine.choose_baby_steps(122) == 128
    small = engine.choose_baby_steps(2)
    assert small < 128
    assert engine._rotation_cost(small, 2) < engine._rotation_cost(128, 2)


def test_a_shift_needs_a_block_without_giant_steps() -> None:
    tile = kernel.tile_for(PS.poly_modulus_degree)
    limbs, tiles = MODULI.moduli.shape[0], PS.poly_modulus_degree // tile
    rotations = np.zeros((limbs, tiles, 16, 2, tile), np.uint32)
    block = np.zeros((limbs, tiles, 16, tile), np.uint32)
    with pytest.raises(HEError, match="giant steps"):
        kernel.products(rotations, 8, [block], MODULI, 1, [5])
    for wrong in (-1, PS.slots):
        with pytest.raises(HEError, match="slot rotation"):
            kernel.products(rotations, 16, [block], MODULI, 1, [wrong])
