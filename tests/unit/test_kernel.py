"""The native product kernel against SEAL: bit for bit on the kernel parameter set, at the
lazy-reduction bound's worst case, and its sums decrypting to the plaintext scores."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tenseal.sealapi as seal

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.errors import HEError
from fedmatch.he import kernel, sealfmt, sealio, sealmem
from fedmatch.he.engine import PackedEngine
from fedmatch.he.kernel_engine import KernelEngine
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import KERNEL_PARAM_SET
from tests.he_keys import keys_for

PS = KERNEL_PARAM_SET
MODULI = kernel.KernelModuli.top_level(PS)
LIMBS = MODULI.moduli.shape[0]


@pytest.fixture(scope="module")
def evaluation() -> EvaluationKeys:
    return open_key_bundle(keys_for(PS).public_bundle())


def _words(ct: seal.Ciphertext) -> np.ndarray:
    """A ciphertext's words through SEAL's own serialization (the reference path)."""
    body, _ = sealfmt.unpack(sealio.to_bytes(ct), "ciphertext", 1 << 26)
    return sealfmt.ciphertext_at(body, 0, "ciphertext").data.copy()


def test_lazy_limits_of_the_kernel_set() -> None:
    """What the parameter set's docstring derives: 64 products, then 56 per fold, for the
    29-bit primes (16,400 for the 25-bit one)."""
    assert MODULI.first.tolist() == [64, 64, 64, 16400]
    assert MODULI.later.tolist() == [56, 56, 56, 16271]
    for q, first, later in zip(MODULI.moduli.tolist(), MODULI.first, MODULI.later, strict=True):
        assert int(first) * (q - 1) ** 2 < 1 << 64 <= (int(first) + 1) * (q - 1) ** 2
        assert ((1 << 32) - 1) * q + int(later) * (q - 1) ** 2 < 1 << 64
    with pytest.raises(HEError, match="below 2"):
        kernel.lazy_limits((1 << 31) + 11)


@pytest.mark.parametrize("dp", [128, 512])
@pytest.mark.parametrize("steps", ["every", "an eighth", "one"])
def test_the_worst_case_accumulation_is_exact(dp: int, steps: str) -> None:
    """Every residue at q - 1, the largest product there is, in every position: the
    accumulator folds in time and the sums are exact (dp = 512 is 8 folds). Through the
    tiled layout, as the engine stores blocks and rotations. One baby step (n1 = 1) is the
    odd count: the kernel's pass of two steps pairs it with a product by zero."""
    degree = PS.poly_modulus_degree
    n1 = {"every": dp, "an eighth": dp // 8, "one": 1}[steps]
    tile = kernel.tile_for(degree)
    top = (MODULI.moduli - 1).astype(np.uint32)
    rotations = np.broadcast_to(top[None, None, :, None], (n1, 2, LIMBS, degree))
    block = np.broadcast_to(top[None, :, None], (dp, LIMBS, degree))
    out = kernel.products(kernel.tiled(rotations, tile), n1, [kernel.tiled(block, tile)], MODULI)
    assert out.shape == (1, dp // n1, 2, LIMBS, PS.poly_modulus_degree)
    for limb, q in enumerate(MODULI.moduli.tolist()):
        assert np.all(out[:, :, :, limb] == n1 * (q - 1) ** 2 % q)


def _random_operands(
    rng: np.random.Generator, n1: int, dp: int, count: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Random residues below each modulus: ``n1`` rotations (n1 x 2 x moduli x N) and
    ``count`` blocks of ``dp`` diagonals (dp x moduli x N), natural layout."""
    degree, moduli = PS.poly_modulus_degree, MODULI.moduli.tolist()
    rotations = np.stack(
        [rng.integers(0, q, (n1, 2, degree), dtype=np.uint64) for q in moduli], axis=2
    ).astype(np.uint32)
    blocks = [
        np.stack(
            [rng.integers(0, q, (dp, degree), dtype=np.uint64) for q in moduli], axis=1
        ).astype(np.uint32)
        for _ in range(count)
    ]
    return rotations, blocks


@pytest.mark.parametrize("threads", [1, 2], ids=["serial", "parallel"])
def test_random_sums_equal_python_integers(threads: int) -> None:
    n1, dp, degree = 8, 16, PS.poly_modulus_degree
    rotations, blocks = _random_operands(np.random.default_rng(3), n1, dp, GROUP_PLUS_TWO)
    tile = kernel.tile_for(degree, threads)
    out = kernel.products(
        kernel.tiled(rotations, tile), n1, [kernel.tiled(b, tile) for b in blocks], MODULI, threads
    )
    for b, j, part, limb, c in [(0, 0, 0, 0, 0), (17, 1, 1, 2, degree - 1), (9, 1, 0, 1, 777)]:
        q = int(MODULI.moduli[limb])
        terms = [(rotations[k, part, limb, c], blocks[b][j * n1 + k, limb, c]) for k in range(n1)]
        expected = sum(int(x) * int(d) for x, d in terms)
        assert int(out[b, j, part, limb, c]) == expected % q


# More blocks than one kernel call takes: the second call's short group is padded.
GROUP_PLUS_TWO = kernel.GROUP + 2


@pytest.mark.parametrize("threads", [1, 2], ids=["serial", "parallel"])
def test_an_output_order_scatters_every_word_once(threads: int) -> None:
    """Sums asked for in an order come out as the plain sums moved there (``out[...,
    order[p]]`` = sum p), with and without conjugates; an order that is not a permutation of
    the ring's words (a word written twice, another never) is refused."""
    rng = np.random.default_rng(11)
    n1, degree = 8, PS.poly_modulus_degree
    rotations, blocks = _random_operands(rng, n1, n1, 3)
    tile = kernel.tile_for(degree, threads)
    stack, tiled = kernel.tiled(rotations, tile), [kernel.tiled(b, tile) for b in blocks]
    shifts = [0, 5, degree // 2 - 1]
    order = rng.permutation(degree)
    plain = kernel.products(stack, n1, tiled, MODULI, threads, shifts)
    moved = kernel.products(stack, n1, tiled, MODULI, threads, shifts, order)
    expected = np.empty_like(plain)
    expected[..., order] = plain
    assert np.array_equal(moved, expected)
    sums, conj = kernel.products_with_conjugates(stack, n1, tiled, MODULI, threads, shifts)
    moved_sums, moved_conj = kernel.products_with_conjugates(
        stack, n1, tiled, MODULI, threads, shifts, order
    )
    for before, after in ((sums, moved_sums), (conj, moved_conj)):
        expected = np.empty_like(before)
        expected[..., order] = before
        assert np.array_equal(after, expected)
    twice = order.copy()
    twice[1] = twice[0]
    for wrong in (twice, order[:-1], order + 1):
        with pytest.raises(HEError, match="permutation"):
            kernel.products(stack, n1, tiled, MODULI, threads, shifts, wrong)


@pytest.mark.parametrize(
    ("dimension", "rows", "baby_steps"),
    [
        (128, PS.block_records, None),  # one full block
        (128, 2 * PS.block_records + 1000, None),  # three blocks, the last partial
        (128, 100, None),  # one block of 100 rows
        (128, PS.block_records + 5, 16),  # giant steps: 8 of 16 baby steps, Horner in SEAL
        (512, 5000, None),  # d = 512: 512 diagonals, 8 folds
    ],
    ids=["1-block", "3-blocks-partial", "100-rows", "giant-steps", "d512"],
)
def test_kernel_sums_equal_seal_bit_for_bit(
    evaluation: EvaluationKeys, dimension: int, rows: int, baby_steps: int | None
) -> None:
    """The kernel engine's block sums are SEAL's multiply_plain + add_inplace sums, byte
    for byte: same rows, same split, same rotations of one real probe."""
    rng = np.random.default_rng(rows)
    gallery = unit_vectors(rng, rows, dimension)
    seal_engine, kernel_engine = PackedEngine(PS, dimension), KernelEngine(PS, dimension)
    per = PS.block_records
    chunks = [gallery[b : b + per] for b in range(0, rows, per)]
    plains = [seal_engine.encode_block_rows(c, baby_steps) for c in chunks]
    residues = [kernel_engine.encode_block_rows(c, baby_steps) for c in chunks]
    probe = capture(gallery[0], rng, 0.8)
    query = seal_engine.open_probe(keys_for(PS).encrypt_probe(probe)).query
    n1 = baby_steps or seal_engine._dp
    rotations = seal_engine._rotations(query, evaluation, lambda: False, n1)
    expected = seal_engine._products(rotations, plains, evaluation)
    found = kernel_engine._products(rotations, residues, evaluation)
    assert len(found) == len(expected) == len(chunks)
    for mine, theirs in zip(found, expected, strict=True):
        assert list(mine.parms_id()) == list(theirs.parms_id())
        assert mine.scale == theirs.scale and mine.is_ntt_form()
        assert sealio.to_bytes(mine) == sealio.to_bytes(theirs)


def test_kernel_sums_decrypt_to_the_plaintext_scores(evaluation: EvaluationKeys) -> None:
    """Decrypted before the threshold, a block's sums are the float64 scores within the
    set's derived precision (register encoding at 2^20: std ~1.8e-5, max below 1e-4)."""
    keys = keys_for(PS)
    rng = np.random.default_rng(11)
    gallery = unit_vectors(rng, PS.block_records + 300, 128)
    engine = KernelEngine(PS, 128)
    engine.load(gallery)
    probe = capture(gallery[4], rng, 0.8)
    query = engine.open_probe(keys.encrypt_probe(probe)).query
    rotations = engine._rotations(query, evaluation, lambda: False)
    sums = engine._products(rotations, engine._blocks, evaluation)
    scores = gallery.astype(np.float64) @ probe.astype(np.float64)
    for b, acc in enumerate(sums):
        values = keys.decrypt_values(sealio.to_bytes(acc))
        decrypted = np.concatenate([values.real, values.imag])
        expected = np.zeros(PS.block_records)
        part = scores[b * PS.block_records : (b + 1) * PS.block_records]
        expected[: part.shape[0]] = part
        error = np.abs(decrypted - expected)
        assert error.max() < 1e-4 and error.std() < 3e-5
    assert len(sums) == 2


def test_sealmem_reads_and_writes_what_serialization_does() -> None:
    """The in-place path (this tenseal build's layout) and the serialization fallback read
    the same words and write them so that SEAL reads them back."""
    ctx = PS.context()
    encoder = seal.CKKSEncoder(ctx)
    plain = seal.Plaintext()
    values = np.random.default_rng(5).standard_normal(PS.slots).astype(np.complex128)
    encoder.encode(values.tolist(), ctx.first_parms_id(), 2.0**20, plain)
    secret = keys_for(PS)._secret
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, secret).encrypt_symmetric(plain, ct)
    assert sealmem.in_place(ct) and sealmem.in_place(plain)  # this tenseal build's layout
    direct = np.empty((2, LIMBS, PS.poly_modulus_degree), dtype=np.uint64)
    sealmem.read_ciphertext(ct, direct)
    assert np.array_equal(direct, _words(ct))
    pt_words = np.empty((LIMBS, PS.poly_modulus_degree), dtype=np.uint32)
    sealmem.read_plaintext(plain, pt_words)
    body, _ = sealfmt.unpack(sealio.to_bytes(plain), "plaintext", 1 << 26)
    assert np.array_equal(pt_words.reshape(-1), sealfmt.plaintext_words(body, "plaintext")[1])
    changed = (direct + 1) % MODULI.moduli[None, :, None]
    sealmem.write_ciphertext(ct, ctx, changed)
    assert np.array_equal(_words(ct), changed)
    sealmem._IN_PLACE = False  # the fallback: serialization both ways
    try:
        again = np.empty_like(direct)
        sealmem.read_ciphertext(ct, again)
        assert np.array_equal(again, changed)
        sealmem.write_ciphertext(ct, ctx, direct)
    finally:
        sealmem._IN_PLACE = True
    assert np.array_equal(_words(ct), direct)
    with pytest.raises(HEError, match="shape"):
        sealmem.write_ciphertext(ct, ctx, direct[:, :2])


def test_the_kernel_is_compiled_when_the_engine_starts(evaluation: EvaluationKeys) -> None:
    """The engine's start compiles the one specialization a search uses: a search after it
    adds no signature (no query pays a compilation)."""
    engine = KernelEngine(PS, 128)
    assert engine.compile_seconds > 0
    # One specialization of each variant at most (the serial one if a test in this process
    # ran the kernel on one core) and the stack placement's one, and a search adds none.
    started = kernel.compiled_specializations()
    assert 2 <= started <= 3
    engine.load(unit_vectors(np.random.default_rng(12), 20, 128))
    keys = keys_for(PS)
    probe = unit_vectors(np.random.default_rng(13), 1, 128)[0]
    engine.search(evaluation, keys.encrypt_probe(probe), 0.45, lambda: False)
    assert kernel.compiled_specializations() == started


def test_a_default_set_engine_never_loads_numba() -> None:
    """numba (and its compiler) is imported only for a kernel parameter set."""
    code = (
        "import sys\n"
        "from fedmatch.he.engines import create_engine\n"
        "from fedmatch.he.params import DEFAULT_PARAM_SET\n"
        "create_engine(DEFAULT_PARAM_SET, 128, 1).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def test_place_writes_a_rotation_where_the_kernel_reads_it() -> None:
    """kernel.place puts word ``order[t * tile + c]`` of each part and modulus at
    ``[l, t, k, part, c]`` (numpy's gather and transpose as the reference), touching no
    other rotation, and refuses words of another shape."""
    rng = np.random.default_rng(5)
    moduli, degree, count, tile = 3, 512, 4, 64
    stack = rng.integers(0, 2**32, size=(moduli, degree // tile, count, 2, tile), dtype=np.uint32)
    before = stack.copy()
    words = rng.integers(0, 2**32, size=(2, moduli, degree), dtype=np.uint32)
    order = rng.permutation(degree)
    order.setflags(write=False)  # as slot_order's: the specialization an engine compiles
    kernel.place(stack, 2, words, order)
    expected = words[..., order].reshape(2, moduli, -1, tile).transpose(1, 2, 0, 3)
    assert np.array_equal(stack[:, :, 2], expected)
    untouched = [0, 1, 3]
    assert np.array_equal(stack[:, :, untouched], before[:, :, untouched])
    with pytest.raises(HEError):
        kernel.place(stack, 2, words[:, :2], order)
    with pytest.raises(HEError):
        kernel.place(stack, count, words, order)
