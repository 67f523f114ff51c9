"""The native CKKS encoder (fedmatch.he.ckks_encode) against SEAL's CKKSEncoder: words,
coefficients before the NTT, and decoded values, at several levels and scales of both
parameter sets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import ckks_encode, sealmem
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET, ParamSet

# (scale, magnitude of the values): masks at scale 1, garbling factors at the register
# scale, flood and decoys at a result scale, unit values at the query scale.
CASES = [(1.0, 2.0**47), (2.0**20, 2.0**6), (2.0**6, 2.0**16), (2.0**10, 2.0**40), (2.0**40, 1.0)]


def _levels(ps: ParamSet) -> list[list[int]]:
    out, data = [], ps.context().first_context_data()
    while data is not None:
        out.append(list(data.parms_id()))
        data = data.next_context_data()
    return out


def _moduli(ps: ParamSet, parms_id: list[int]) -> list[int]:
    data = ps.context().get_context_data(parms_id)
    return [m.value() for m in data.parms().coeff_modulus()]


def _words(plain: seal.Plaintext, count: int, degree: int) -> npt.NDArray[np.uint64]:
    out = np.empty((count, degree), dtype=np.uint64)
    sealmem.read_plaintext(plain, out)
    return out


def _centered(residues: npt.NDArray[np.uint64], moduli: list[int]) -> list[int]:
    """The integers (CRT, centered) behind each coefficient's residues."""
    total = 1
    for q in moduli:
        total *= q
    out = []
    for j in range(residues.shape[1]):
        x = 0
        for limb, q in enumerate(moduli):
            part = total // q
            x += int(residues[limb, j]) * part * pow(part, -1, q)
        x %= total
        out.append(x - total if x > total // 2 else x)
    return out


@pytest.mark.parametrize("ps", [KERNEL_PARAM_SET, DEFAULT_PARAM_SET], ids=lambda p: p.name)
def test_native_encoding_is_seals(ps: ParamSet) -> None:
    ckks_encode.warm_up()
    native = ckks_encode.native_encoder(ps)
    encoder = seal.CKKSEncoder(ps.context())
    degree = ps.poly_modulus_degree
    rng = np.random.default_rng(11)
    checked = 0
    for parms_id in _levels(ps):
        moduli = _moduli(ps, parms_id)
        room = sum(np.log2(float(q)) for q in moduli) - 2
        for scale, magnitude in CASES:
            # Coefficients up to ~2^13 times the largest value: only where they fit.
            if np.log2(scale * magnitude) + 14 > min(room, 61):
                continue
            values = np.asarray(
                magnitude * (rng.standard_normal(ps.slots) + 1j * rng.standard_normal(ps.slots)),
                dtype=np.complex128,
            )
            expected = seal.Plaintext()
            encoder.encode(values.tolist(), parms_id, scale, expected)
            got = native.encode(values, parms_id, scale)
            assert list(got.parms_id()) == list(parms_id) and got.scale == expected.scale
            assert got.coeff_count() == expected.coeff_count() == len(moduli) * degree
            theirs = _words(expected, len(moduli), degree)
            ours = _words(got, len(moduli), degree)
            # The NTT is SEAL's bit for bit: ours of our coefficients is what we wrote.
            coeffs = native.coefficients(values, scale)
            assert np.array_equal(native.ntt_words(coeffs, parms_id), ours)
            # Before the NTT: SEAL's coefficients, or one off where a .5 rounds the other way.
            seal_coeffs = ckks_encode.ntt_inverse(native, theirs, parms_id)
            if len(moduli) == 1:
                q = moduli[0]
                ints = np.where(
                    seal_coeffs[0] > q // 2,
                    seal_coeffs[0].astype(np.int64) - q,
                    seal_coeffs[0].astype(np.int64),
                )
                diff = np.abs(ints - coeffs)
            else:
                sample = slice(0, 512)
                ints = np.array(_centered(seal_coeffs[:, sample], moduli), dtype=np.int64)
                diff = np.abs(ints - coeffs[sample])
            assert int(diff.max()) <= 1, (ps.name, len(moduli), scale, magnitude)
            # Both decode to the values within the encoding error.
            ours_decoded = np.array(encoder.decode_complex(got))
            theirs_decoded = np.array(encoder.decode_complex(expected))
            error = np.abs(theirs_decoded - values).max()
            assert np.abs(ours_decoded - theirs_decoded).max() <= max(1.0, error)
            assert np.abs(ours_decoded - values).max() <= 2 * error + 1e-9
            checked += 1
    assert checked >= 6


def test_masks_at_scale_one_keep_seals_encoding_error() -> None:
    """The kernel set's masks are encoded at scale 1: their absolute error (std ~26 per
    slot part, fedmatch.he.params) must not grow."""
    ps = KERNEL_PARAM_SET
    native = ckks_encode.native_encoder(ps)
    encoder = seal.CKKSEncoder(ps.context())
    parms_id = ps.context().first_parms_id()
    rng = np.random.default_rng(3)
    masks = np.exp2(30 + 17 * rng.random(ps.slots)).astype(np.complex128)
    masks[::7] = 0.0  # excluded rows' zero masks
    errors = []
    encodings: tuple[Callable[[], seal.Plaintext], ...] = (
        lambda: native.encode(masks, parms_id, 1.0),
        lambda: _seal_encoded(encoder, masks, parms_id),
    )
    for encode in encodings:
        decoded = np.array(encoder.decode_complex(encode()))
        errors.append(np.concatenate([(decoded - masks).real, (decoded - masks).imag]).std())
    ours, theirs = errors
    assert ours < 40 and abs(ours - theirs) < 0.05 * theirs


def _seal_encoded(
    encoder: seal.CKKSEncoder, values: npt.NDArray[np.complex128], parms_id: list[int]
) -> seal.Plaintext:
    plain = seal.Plaintext()
    encoder.encode(values.tolist(), parms_id, 1.0, plain)
    return plain


def test_native_encoder_refuses_what_it_cannot_round_exactly() -> None:
    native = ckks_encode.native_encoder(KERNEL_PARAM_SET)
    parms_id = KERNEL_PARAM_SET.context().first_parms_id()
    with pytest.raises(HEError):
        native.encode(np.full(KERNEL_PARAM_SET.slots, 2.0**70, dtype=np.complex128), parms_id, 1.0)
    with pytest.raises(HEError):
        native.encode(np.zeros(5, dtype=np.complex128), parms_id, 1.0)


def test_only_small_primes_take_the_native_path() -> None:
    kernel_levels = _levels(KERNEL_PARAM_SET)
    assert all(ckks_encode.native_encoder(KERNEL_PARAM_SET).fast(p) for p in kernel_levels)
    default = ckks_encode.native_encoder(DEFAULT_PARAM_SET)
    assert not any(default.fast(p) for p in _levels(DEFAULT_PARAM_SET))


def test_the_serialization_path_writes_the_same_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    ps = KERNEL_PARAM_SET
    native = ckks_encode.native_encoder(ps)
    parms_id = ps.context().first_parms_id()
    values = np.random.default_rng(4).standard_normal(ps.slots).astype(np.complex128)
    direct = native.encode(values, parms_id, 2.0**20)
    monkeypatch.setattr(sealmem, "_IN_PLACE", False)
    serialized = native.encode(values, parms_id, 2.0**20)
    monkeypatch.setattr(sealmem, "_IN_PLACE", True)
    count = len(_moduli(ps, parms_id))
    degree = ps.poly_modulus_degree
    assert np.array_equal(_words(direct, count, degree), _words(serialized, count, degree))


def test_the_small_inverse_ntt_is_the_uint64_one_bit_for_bit() -> None:
    """Primes below 2^30 take the uint32 inverse NTT: the same words as the uint64 path, for
    every prime of the level and for a selection of its rows (a prime may repeat)."""
    native = ckks_encode.native_encoder(KERNEL_PARAM_SET)
    parms_id = _levels(KERNEL_PARAM_SET)[0]
    moduli = _moduli(KERNEL_PARAM_SET, parms_id)
    rng = np.random.default_rng(8)
    drawn = np.stack([rng.integers(0, q, KERNEL_PARAM_SET.poly_modulus_degree) for q in moduli])
    drawn[:, :3] = np.array(moduli)[:, None] - 1  # the largest residues
    words = drawn.astype(np.uint64)
    level = native._level(parms_id)
    expected = words.copy()
    ckks_encode._inverse_jit(
        expected, level.inv_roots, level.inv_shoup, level.moduli, level.n_inv, level.n_inv_shoup
    )
    assert np.array_equal(ckks_encode.ntt_inverse(native, words, parms_id), expected)
    picked = ckks_encode.ntt_inverse(native, words[[2, 2, 0]], parms_id, [2, 2, 0])
    assert np.array_equal(picked, expected[[2, 2, 0]])
    assert np.array_equal(native.ntt_words32(expected[1].astype(np.int64), parms_id)[1], words[1])
    with pytest.raises(HEError):
        ckks_encode.ntt_inverse(native, words[:2], parms_id)


def _root(q: int, degree: int) -> int:
    """A primitive 2N-th root of unity modulo ``q`` (q = 1 mod 2N)."""
    for g in range(2, 1000):
        psi = pow(g, (q - 1) // (2 * degree), q)
        if pow(psi, degree, q) == q - 1:
            return psi
    raise AssertionError("no root found")


@pytest.mark.parametrize("degree", [16, 32, 64, 256])
def test_the_ntts_are_the_negacyclic_transform_by_definition(degree: int) -> None:
    """Both NTTs on both word widths, at sizes where every stage kind runs (the stages with
    a gap under 8 are compiled for their gap): word k of the forward transform is the
    polynomial at psi^(2 bitrev(k) + 1), evaluated directly, for inputs as large as each
    path takes; the inverse gives the polynomial back."""
    rng = np.random.default_rng(degree)
    bits = degree.bit_length() - 1
    # Primes = 1 mod 2N for N up to 8192: the kernel set's (uint32 path) and the default
    # set's (uint64 path).
    for q in (
        _moduli(KERNEL_PARAM_SET, _levels(KERNEL_PARAM_SET)[0])[0],
        _moduli(DEFAULT_PARAM_SET, _levels(DEFAULT_PARAM_SET)[0])[0],
    ):
        psi = _root(q, degree)
        tables = ckks_encode.NTTTables([q], [psi], degree)
        poly = [int(v) for v in rng.integers(0, q, degree)]
        poly[:2] = [q - 1, q - 1]
        expected = [
            sum(
                c * pow(psi, (2 * ckks_encode._bitrev(k, bits) + 1) * j, q)
                for j, c in enumerate(poly)
            )
            % q
            for k in range(degree)
        ]
        words = np.array([poly], dtype=np.uint64)
        ckks_encode._forward_jit(words, tables.roots, tables.shoup, tables.moduli)
        assert words[0].tolist() == expected
        back = words.copy()
        inverse = (tables.inv_roots, tables.inv_shoup, tables.moduli)
        ckks_encode._inverse_jit(back, *inverse, tables.n_inv, tables.n_inv_shoup)
        assert back[0].tolist() == poly
        if tables.small:
            small = np.array([poly], dtype=np.uint32)
            ckks_encode._forward_small_jit(small, tables.roots32, tables.shoup32, tables.moduli)
            assert small[0].tolist() == expected
            inverse32 = (tables.inv_roots32, tables.inv_shoup32, tables.moduli)
            ckks_encode._inverse_small_jit(small, *inverse32, tables.n_inv32, tables.n_inv_shoup32)
            assert small[0].tolist() == poly


def test_the_ntts_refuse_rows_shorter_than_their_stages() -> None:
    """The stages with a constant gap need 16 words a row; a shorter row is an error, never a
    write beyond it (the compiled loops do not check bounds)."""
    q = np.array([17], dtype=np.uint64)
    table = np.ones((1, 8), dtype=np.uint64)
    with pytest.raises(ValueError, match="16 words"):
        ckks_encode._forward_jit(np.zeros((1, 8), dtype=np.uint64), table, table, q)
    with pytest.raises(ValueError, match="16 words"):
        ckks_encode._inverse_jit(np.zeros((1, 8), dtype=np.uint64), table, table, q, q, q)
    table32 = np.ones((1, 8), dtype=np.uint32)
    with pytest.raises(ValueError, match="16 words"):
        ckks_encode._forward_small_jit(np.zeros((1, 8), dtype=np.uint32), table32, table32, q)
    ones = np.ones(1, dtype=np.uint32)
    with pytest.raises(ValueError, match="16 words"):
        ckks_encode._inverse_small_jit(
            np.zeros((1, 8), dtype=np.uint32), table32, table32, q, ones, ones
        )
