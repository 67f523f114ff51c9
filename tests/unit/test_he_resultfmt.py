"""The compact result format (fedmatch.he.resultfmt): size, the noise bound at its edge on
every parameter set with real SEAL keys, and refusal of malformed blocks."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import tenseal.sealapi as seal

from fedmatch.errors import HEError, ImplausibleResult, InvalidInput
from fedmatch.he import resultfmt, sealio, sealmem
from fedmatch.he.engine import PackedEngine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET, NARROW_PARAM_SET, ParamSet
from tests.federation import shared_keys

SETS = [DEFAULT_PARAM_SET, KERNEL_PARAM_SET, NARROW_PARAM_SET]
# Per set: x0 and x1 bits, bytes per block, log2 of the rounding bound (module docs).
WIDTHS = {
    DEFAULT_PARAM_SET: (43, 52, 97_284, 15.26),
    KERNEL_PARAM_SET: (43, 52, 97_284, 15.26),
    NARROW_PARAM_SET: (27, 36, 64_516, 18.26),
}
# What the bound must leave room for besides the rounding: the flood and evaluation noise.
FLOOD, EVALUATION = 2.0**16, 2.0**11


@pytest.fixture(scope="module", params=SETS, ids=lambda ps: ps.name)
def keys(request: pytest.FixtureRequest) -> RequesterKeys:
    ps: ParamSet = request.param
    return shared_keys() if ps == DEFAULT_PARAM_SET else RequesterKeys.generate(ps)


def _result(keys: RequesterKeys, values: np.ndarray) -> seal.Ciphertext:
    """``values`` (2 * slots reals: real parts, then imaginary parts) encrypted under the
    public key at the result level and scale, as a node's result ciphertext."""
    fmt = resultfmt.result_format(keys.params)
    slots = keys.params.slots
    plain, ct = seal.Plaintext(), seal.Ciphertext()
    packed = (values[:slots] + 1j * values[slots:]).tolist()
    keys._encoder.encode(packed, list(fmt.parms_id), fmt.scale, plain)
    seal.Encryptor(keys._ctx, keys._public).encrypt(plain, ct)
    return ct


def _seal_slots(keys: RequesterKeys, ct: seal.Ciphertext) -> np.ndarray:
    plain = seal.Plaintext()
    keys._decryptor.decrypt(ct, plain)
    values = np.asarray(keys._encoder.decode_complex(plain))
    return np.concatenate([values.real, values.imag])


# A non-match's value that every set holds (masks from 2^29 to 2^47).
_ORDINARY = -(2.0**31)


def _flat(values: np.ndarray) -> np.ndarray:
    return np.concatenate([values.real, values.imag])


@pytest.mark.parametrize("ps", SETS, ids=lambda ps: ps.name)
def test_widths_size_and_bound_are_what_the_docs_say(ps: ParamSet) -> None:
    fmt = resultfmt.result_format(ps)
    bits0, bits, size, log_bound = WIDTHS[ps]
    assert (fmt.bits0, fmt.bits, fmt.finer) == (bits0, bits, 9)
    assert fmt.size == 4 + 8192 * bits0 // 8 + 8192 * bits // 8 == size
    # 11.875 B per record with 17 bits of masks; the narrow set's 5 bits reach the 8.
    assert fmt.size / ps.block_records <= (8 if ps == NARROW_PARAM_SET else 11.9)
    bound = resultfmt.error_bound(ps)
    assert math.log2(bound) == pytest.approx(log_bound, abs=0.01)
    # Rounding steps of c0: 2^step slot units; c1's 2^9 finer.
    step = fmt.modulus / 2.0**fmt.k0 / fmt.scale
    assert step == pytest.approx(2**ps.result_step_bits, rel=1e-2)
    # Honest messages (below scale * 2^(hi + 1.5)) do not wrap modulo 2^B.
    coefficient = fmt.scale * 2 ** (ps.mask_bits[1] + 1.5) * 2.0**fmt.k1 / fmt.modulus
    assert math.log2(coefficient) < fmt.bits - 1 - 0.25
    # The sign margin with the smallest mask stays inside the set's resolution.
    assert (FLOOD + EVALUATION + bound) / 2 ** ps.mask_bits[0] < ps.resolution


def test_a_block_is_smaller_than_the_seal_ciphertext(keys: RequesterKeys) -> None:
    rng = np.random.default_rng(1)
    values = np.exp2(rng.uniform(*keys.params.mask_bits, keys.params.block_records)) * -0.3
    ct = _result(keys, values)
    data = resultfmt.compress(ct, keys.params)
    assert len(data) == resultfmt.result_format(keys.params).size
    assert len(data) / keys.params.block_records < 12
    assert len(data) < 0.8 * len(sealio.to_bytes(ct))


def test_the_slots_are_seals_within_the_bound(keys: RequesterKeys) -> None:
    """Against SEAL's own decryption and decoder of the same ciphertext: the slot order is
    SEAL's, and the error stays within the bound computed for this key's own canonical norm
    (and the format's, which is larger)."""
    rng = np.random.default_rng(2)
    ps = keys.params
    s = keys._secret_poly
    own = resultfmt.error_bound(ps, resultfmt.secret_norm(s))
    assert own <= resultfmt.error_bound(ps)
    for _ in range(4):
        signs = rng.choice([-1.0, 1.0], ps.block_records)
        masks = np.exp2(rng.uniform(*ps.mask_bits, ps.block_records))
        values = signs * masks * rng.uniform(0, 2)
        ct = _result(keys, values)
        expected = _seal_slots(keys, ct)
        data = resultfmt.compress(ct, ps)
        got = _flat(resultfmt.decrypt_slots(data, ps, s))
        assert float(np.max(np.abs(got - expected))) < own
        # With the spectrum the key holder keeps: the same slots, bit for bit.
        kept = resultfmt.decrypt_slots(data, ps, s, resultfmt.secret_spectrum(s))
        assert np.array_equal(_flat(kept), got)


def test_zero_sign_errors_at_the_bounds_edge(keys: RequesterKeys) -> None:
    """64 blocks (524,288 records) per set. Every record not made large sits just past the
    margin the bound claims: a score 1% above ``(flood + evaluation noise + E) / 2^lo`` from
    the threshold, under the smallest mask (2^lo), with the flood at its full 2^16 against
    it: a decrypted magnitude of 1.01 E + 677. A quarter of the records carry masks up to
    2^(hi + 1) (the largest honest values, which the modulus must hold without wrapping)."""
    rng = np.random.default_rng(3)
    ps = keys.params
    lo, hi = ps.mask_bits
    bound = resultfmt.error_bound(ps)
    margin = 1.01 * (FLOOD + EVALUATION + bound) / 2**lo
    edge = 2**lo * margin - FLOOD - EVALUATION
    worst, errors = 0.0, 0
    for _ in range(64):
        signs = rng.choice([-1.0, 1.0], ps.block_records)
        magnitudes = np.full(ps.block_records, edge)
        large = rng.random(ps.block_records) < 0.25
        magnitudes[large] = np.exp2(rng.uniform(lo, hi + 1, int(large.sum())))
        ct = _result(keys, signs * magnitudes)
        exact = _seal_slots(keys, ct)
        got = _flat(resultfmt.decrypt_slots(resultfmt.compress(ct, ps), ps, keys._secret_poly))
        errors += int(np.count_nonzero(np.sign(got) != signs))
        worst = max(worst, float(np.max(np.abs(got - exact))))
    print(f"{ps.name}: worst rounding error {worst:.0f} against the bound {bound:.0f}")
    assert errors == 0
    assert worst < bound


def test_the_engine_sends_compact_blocks(keys: RequesterKeys) -> None:
    """A padding block (the engine's own path: decoys, rescale, re-randomization) is a
    compact block that decrypts to plausible non-matches."""
    ps = keys.params
    engine = PackedEngine(ps, 128)
    block = engine.padding_block(open_key_bundle(keys.public_bundle()), 0.45)
    assert len(block) == resultfmt.result_format(ps).size
    assert not keys.decrypt_matches(block).any()


def test_the_native_compression_is_the_numpy_one_byte_for_byte(keys: RequesterKeys) -> None:
    """The kernel sets compress natively (one pass, fedmatch.he.native_compress); the bytes
    are the numpy path's for encrypted values up to the format's wrap, and for uniformly
    random words with every coefficient's extremes (0 and q - 1 in each prime). The default
    set's 60-bit prime stays on the numpy path, which the native one refuses."""
    ps = keys.params
    fmt = resultfmt.result_format(ps)
    ct = _result(keys, np.full(ps.block_records, _ORDINARY))
    if not ps.kernel:
        with pytest.raises(HEError):
            resultfmt._native_body(ct, fmt, ps)
        return
    rng = np.random.default_rng(17)
    top = 2.0 ** (ps.mask_bits[1] + 1)
    for values in (rng.uniform(-top, top, ps.block_records), np.zeros(ps.block_records)):
        ct = _result(keys, values)
        assert resultfmt._native_body(ct, fmt, ps) == resultfmt._seal_body(ct, fmt, ps)
    moduli = np.array(fmt.moduli, dtype=np.uint64)[:, None]
    for _ in range(3):
        words = rng.integers(0, 2**62, size=(2, len(fmt.moduli), fmt.degree), dtype=np.uint64)
        words %= moduli
        words[:, :, :2] = 0
        words[:, :, 2:4] = moduli - np.uint64(1)
        sealmem.write_ciphertext(ct, ps.context(), words)
        assert resultfmt._native_body(ct, fmt, ps) == resultfmt._seal_body(ct, fmt, ps)
    assert resultfmt.compress(ct, ps)[4:] == resultfmt._seal_body(ct, fmt, ps)


def test_malformed_blocks_are_refused_before_any_work(keys: RequesterKeys) -> None:
    ps = keys.params
    fmt = resultfmt.result_format(ps)
    good = resultfmt.compress(_result(keys, np.full(ps.block_records, _ORDINARY)), ps)
    seal_bytes = sealio.to_bytes(_result(keys, np.full(ps.block_records, _ORDINARY)))
    cases = {
        "empty": b"",
        "tag only": resultfmt.FORMAT_TAG,
        "short": good[:-1],
        "long": good + b"\x00",
        "huge": good * 200,  # 19 MB: refused on its length
        "a SEAL ciphertext": seal_bytes,
        "SEAL's magic at the right size": b"\x5e\xa1" + good[2:],
        "another version": resultfmt.FORMAT_TAG[:1] + b"\x02" + good[2:],
        "other widths": good[:2] + bytes([fmt.bits0 + 1, fmt.bits - 1]) + good[4:],
    }
    for name, data in cases.items():
        start = time.perf_counter()
        with pytest.raises(HEError) as caught:
            keys.decrypt_matches(data)
        assert isinstance(caught.value, InvalidInput), name
        assert not isinstance(caught.value, ImplausibleResult), name
        assert time.perf_counter() - start < 0.5, name
        with pytest.raises(HEError):
            keys.decrypt_values(data) if data[:2] == resultfmt.FORMAT_TAG else resultfmt.parse(
                data, ps
            )
    # Well-formed header, random body: some slots, judged implausible (never a crash).
    rng = np.random.default_rng(4)
    for _ in range(5):
        body = rng.integers(0, 256, fmt.size - 4, dtype=np.uint8).tobytes()
        with pytest.raises(ImplausibleResult):
            keys.decrypt_matches(good[:4] + body)
    # All ones and all zeros in the body: the extreme words decode without error.
    for fill in (b"\x00", b"\xff"):
        data = good[:4] + fill * (fmt.size - 4)
        try:
            keys.decrypt_matches(data)
        except ImplausibleResult:
            pass


def test_an_answer_decrypts_together_as_each_block_alone(keys: RequesterKeys) -> None:
    """decrypt_many (batches of a few blocks per transform) gives every block's slots bit
    for bit as decrypt_slots alone, for a count that is not a whole number of batches; a
    bad block anywhere refuses the whole answer and names the block."""
    rng = np.random.default_rng(6)
    ps = keys.params
    s = keys._secret_poly
    blocks = []
    for _ in range(2 * resultfmt._BATCH + 3):
        # A plausible answer: a few matches (positive) among non-matches.
        signs = -np.ones(ps.block_records)
        signs[rng.choice(ps.block_records, 10, replace=False)] = 1.0
        values = signs * np.exp2(rng.uniform(*ps.mask_bits, ps.block_records))
        blocks.append(resultfmt.compress(_result(keys, values), ps))
    together = resultfmt.decrypt_many(blocks, ps, s)
    assert together.shape == (len(blocks), ps.slots)
    for got, data in zip(together, blocks, strict=True):
        assert np.array_equal(got, resultfmt.decrypt_slots(data, ps, s))
    flags = keys.decrypt_matches_many(blocks)
    assert [int(f.sum()) for f in flags] == [10] * len(blocks)
    for found, data in zip(flags, blocks, strict=True):
        assert np.array_equal(found, keys.decrypt_matches(data))
    assert keys.decrypt_matches_many([]) == []
    bad = 2 * resultfmt._BATCH + 1
    with pytest.raises(InvalidInput, match=f"block {bad}: result block must be"):
        keys.decrypt_matches_many([*blocks[:bad], blocks[bad][:-1], *blocks[bad + 1 :]])
    fmt = resultfmt.result_format(ps)
    noise = rng.integers(0, 256, fmt.size - 4, dtype=np.uint8).tobytes()
    with pytest.raises(ImplausibleResult, match="block 1: result block has"):
        keys.decrypt_matches_many([blocks[0], blocks[1][:4] + noise, blocks[2]])


def test_compress_refuses_a_ciphertext_off_the_result_level(keys: RequesterKeys) -> None:
    ps = keys.params
    ct = seal.Ciphertext()
    keys._encryptor.encrypt_zero(ct)  # top level
    with pytest.raises(HEError, match="result level"):
        resultfmt.compress(ct, ps)
    result = _result(keys, np.full(ps.block_records, _ORDINARY))
    result.scale = result.scale * 2
    with pytest.raises(HEError, match="result scale"):
        resultfmt.compress(result, ps)


def _ntt_words(ps: ParamSet, coefficients: np.ndarray) -> np.ndarray:
    """NTT-form words of a small polynomial at the result level, through SEAL."""
    fmt = resultfmt.result_format(ps)
    ctx = ps.context()
    ct = seal.Ciphertext(ctx, list(fmt.parms_id), 2)
    ct.resize(ctx, list(fmt.parms_id), 2)
    words = np.ones((2, len(fmt.moduli), ps.poly_modulus_degree), dtype=np.uint64)
    for limb, q in enumerate(fmt.moduli):
        words[0, limb] = np.where(coefficients < 0, coefficients + q, coefficients).astype(
            np.uint64
        )
    sealmem.write_ciphertext(ct, ctx, words)
    seal.Evaluator(ctx).transform_to_ntt_inplace(ct)
    sealmem.read_ciphertext(ct, words)
    first: np.ndarray = words[0]
    return first


def test_a_secret_beyond_the_norm_bound_is_refused() -> None:
    ps = DEFAULT_PARAM_SET
    n = ps.poly_modulus_degree
    rng = np.random.default_rng(5)
    ordinary = rng.integers(-1, 2, n)
    recovered = resultfmt.secret_coefficients(ps, _ntt_words(ps, ordinary))
    np.testing.assert_array_equal(recovered, ordinary)
    # Ternary but lopsided: s = 1 + X + ... + X^(n-1) has |s(zeta)| up to ~2N/pi.
    with pytest.raises(HEError, match="canonical norm"):
        resultfmt.secret_coefficients(ps, _ntt_words(ps, np.ones(n, dtype=np.int64)))
    with pytest.raises(HEError, match="not ternary"):
        resultfmt.secret_coefficients(ps, _ntt_words(ps, 2 * ordinary))


def _negacyclic(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``x * s`` in Z[X]/(X^N + 1) modulo 2^64, the schoolbook way in Python integers."""
    n = x.shape[0]
    xs, ss = [int(v) for v in x], [int(v) for v in s]
    out = [0] * n
    for i, si in enumerate(ss):
        if si:
            for j, xj in enumerate(xs):
                k = i + j
                out[k % n] += (si if k < n else -si) * xj
    return np.array([v % (1 << 64) for v in out], dtype=np.uint64)


def test_the_product_by_the_secret_is_exact() -> None:
    """The requester's negacyclic product (transforms of N/2 points, chunks of 26 bits) is
    the integer one at full width (52 bits, three chunks), against the schoolbook product
    (a small degree: the transform is the one N = 8192 takes); and at N = 8192 in the
    worst case, every chunk at its largest and every secret coefficient 1 (sums of 8,192
    products of 26 bits, the largest there are), where ``c_k = x (2k + 2 - N)``."""
    rng = np.random.default_rng(17)
    x = rng.integers(0, 1 << 52, 256, dtype=np.uint64)
    s = rng.integers(-1, 2, 256).astype(np.int8)
    found = resultfmt._times_secret(x, resultfmt.secret_spectrum(s))
    np.testing.assert_array_equal(found, _negacyclic(x, s))
    n, top = 8192, (1 << 52) - 1
    worst = resultfmt._times_secret(
        np.full(n, top, dtype=np.uint64), resultfmt.secret_spectrum(np.ones(n, dtype=np.int8))
    )
    expected = [top * (2 * k + 2 - n) % (1 << 64) for k in range(n)]
    np.testing.assert_array_equal(worst, np.array(expected, dtype=np.uint64))


@pytest.mark.parametrize("bits", [27, 36, 43, 52, 57, 60])
def test_unpacking_reads_back_what_was_packed(bits: int) -> None:
    """The byte-window unpacking (widths up to 57 bits; wider ones take the bit-by-bit path)
    against the packing, with values at both ends of the width."""
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, 8192, dtype=np.uint64)
    values[:3] = [0, (1 << bits) - 1, 1 << (bits - 1)]
    packed = resultfmt._pack(values, bits)
    assert len(packed) == 8192 * bits // 8
    np.testing.assert_array_equal(resultfmt._unpack(packed, bits, 8192), values)
