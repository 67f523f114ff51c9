"""The kernel set's native encryption of zero (fedmatch.he.native_encrypt) against SEAL: the
public key's relation at the primes used, the rescale bit for bit, decryption noise within
the derived bound and of SEAL's size, fresh randomness, and the engine's re-randomized
blocks decrypting as before."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import tenseal.sealapi as seal

from fedmatch.he import ckks_encode, native_encrypt, resultfmt, sealio, sealmem
from fedmatch.he.engine import PackedEngine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET
from tests.he_keys import keys_for

PS = KERNEL_PARAM_SET
N = PS.poly_modulus_degree


@pytest.fixture(scope="module")
def keys() -> RequesterKeys:
    return keys_for(PS)


@pytest.fixture(scope="module")
def evaluation(keys: RequesterKeys) -> EvaluationKeys:
    return open_key_bundle(keys.public_bundle())


@pytest.fixture(scope="module")
def zero(evaluation: EvaluationKeys) -> native_encrypt.ZeroEncryptor:
    return native_encrypt.ZeroEncryptor(PS, evaluation.public_key)


def _result_id() -> list[int]:
    return list(resultfmt.result_format(PS).parms_id)


def _words(ct: seal.Ciphertext) -> npt.NDArray[np.uint64]:
    out = np.empty((ct.size(), ct.coeff_modulus_size(), N), dtype=np.uint64)
    sealmem.read_ciphertext(ct, out)
    return out


def _flat(values: npt.NDArray[np.complex128]) -> npt.NDArray[np.float64]:
    return np.concatenate([values.real, values.imag])


def test_the_public_keys_rows_are_a_key_at_the_primes_used(
    keys: RequesterKeys, evaluation: EvaluationKeys
) -> None:
    """pk0 + pk1 s = -e modulo the key-level modulus, so modulo q0 q1 q2 too: the same small
    e (SEAL's centered binomial, |e| <= 21) in each of the three primes."""
    ctx = PS.context()
    up = ctx.get_context_data(_result_id()).prev_context_data()
    moduli = np.array([m.value() for m in up.parms().coeff_modulus()], dtype=np.uint64)
    pk = _words(evaluation.public_key.data())[:, : moduli.size]
    s = keys._secret_words[: moduli.size]
    relation = (pk[0] + pk[1] * s % moduli[:, None]) % moduli[:, None]
    coeffs = ckks_encode.ntt_inverse(ckks_encode.native_encoder(PS), relation, list(up.parms_id()))
    signed, q = coeffs.astype(np.int64), moduli[:, None].astype(np.int64)
    centred = np.where(signed > q // 2, signed - q, signed)
    assert (centred == centred[0]).all()  # one integer polynomial, read in every prime
    assert np.abs(centred[0]).max() <= 21
    assert 8.5 < float(centred[0].var()) < 12.5  # the binomial's 10.5


def test_the_rescale_is_seals_bit_for_bit(evaluation: EvaluationKeys) -> None:
    """With no errors and no flood, the native rescale of a ciphertext one level above the
    result level is SEAL's rescale_to_next of it."""
    ctx = PS.context()
    zero = native_encrypt.ZeroEncryptor(PS, evaluation.public_key)
    up_id = list(ctx.get_context_data(_result_id()).prev_context_data().parms_id())
    for _ in range(2):
        source = seal.Ciphertext()
        seal.Encryptor(ctx, evaluation.public_key).encrypt_zero(up_id, source)
        source.scale = 2.0**40
        theirs = seal.Ciphertext()
        seal.Evaluator(ctx).rescale_to_next(source, theirs)
        words = _words(source).astype(np.uint32)
        switch = zero._switch(_result_id())
        assert switch is not None
        correction = native_encrypt.rescale_correction(
            ckks_encode.native_encoder(PS), words[:, -1], switch,
            np.zeros((2, N), np.int64), np.zeros(N, np.int64),
        )  # fmt: skip
        mine = np.zeros((2, 2, N), dtype=np.uint32)
        native_encrypt._finish_jit(
            words[:, :-1], correction, switch.inv, switch.inv_shoup, switch.moduli, mine
        )
        assert np.array_equal(mine, _words(theirs))


def test_a_native_zero_decrypts_to_noise_within_the_bound_and_of_seals_size(
    keys: RequesterKeys, evaluation: EvaluationKeys, zero: native_encrypt.ZeroEncryptor
) -> None:
    fmt = resultfmt.result_format(PS)
    bound = native_encrypt.noise_bound(PS, fmt.scale, resultfmt.secret_norm(keys._secret_poly))
    assert bound < 2.0**11  # what the compact format's sign bound allows (resultfmt)
    ours = _flat(keys.decrypt_values(sealio.to_bytes(zero.encrypt_zero(_result_id(), fmt.scale))))
    theirs_ct = seal.Ciphertext()
    seal.Encryptor(PS.context(), evaluation.public_key).encrypt_zero(_result_id(), theirs_ct)
    theirs_ct.scale = fmt.scale
    theirs = _flat(keys.decrypt_values(sealio.to_bytes(theirs_ct)))
    assert np.abs(ours).max() < bound
    # The same shape: the rescale's rounding times the secret (std ~21 here, measured).
    assert 0.8 < float(ours.std() / theirs.std()) < 1.25
    assert abs(float(ours.mean())) < 1.0


def test_fresh_randomness_every_time(zero: native_encrypt.ZeroEncryptor) -> None:
    scale = resultfmt.result_format(PS).scale
    a, b = (_words(zero.encrypt_zero(_result_id(), scale)) for _ in range(2))
    assert not (a == b).any()  # not one word in common (a collision: ~2^-29 per word)
    u, v = native_encrypt.sample_ternary(N), native_encrypt.sample_ternary(N)
    assert set(np.unique(u).tolist()) == {-1, 0, 1} and not np.array_equal(u, v)
    e = native_encrypt.sample_cbd(2, N)
    assert np.abs(e).max() <= 21 and 9.5 < float(e.var()) < 11.5


def test_a_rerandomized_block_decrypts_as_before_within_the_flood(
    keys: RequesterKeys, evaluation: EvaluationKeys
) -> None:
    """The engine's path for the kernel set: a result-level block plus the flood (uniform in
    +-2^16 per part) and the native encryption's noise; two re-randomizations of one block
    differ in every word."""
    engine = PackedEngine(PS, 128)
    fmt = resultfmt.result_format(PS)
    assert engine._native_zero(evaluation, _result_id()) is not None
    assert engine._native_zero(evaluation, list(PS.context().first_parms_id())) is None
    rng = np.random.default_rng(3)
    top = 2.0**40
    values = rng.uniform(-top, top, PS.slots) + 1j * rng.uniform(-top, top, PS.slots)
    plain = seal.Plaintext()
    seal.CKKSEncoder(PS.context()).encode(values.tolist(), _result_id(), fmt.scale, plain)
    blocks = []
    for _ in range(2):
        ct = seal.Ciphertext()
        seal.Encryptor(PS.context(), evaluation.public_key).encrypt(plain, ct)
        before = _words(ct)
        engine._rerandomize(ct, evaluation)
        after = _words(ct)
        assert not (after == before).any()
        blocks.append(after)
        moved = _flat(keys.decrypt_values(sealio.to_bytes(ct)) - values)
        assert np.abs(moved).max() < 2.0**16 + 2.0**11
        assert np.abs(moved).max() > 2.0**16 * 0.9  # the flood is there, as wide as before
    assert not (blocks[0] == blocks[1]).any()


def test_decoy_blocks_are_made_at_the_result_level(
    keys: RequesterKeys, evaluation: EvaluationKeys
) -> None:
    """A padding block (decoys only) of the kernel set decrypts to negative decoys in every
    record, as before, its zero encryption now native at the result level."""
    engine = PackedEngine(PS, 128)
    block = engine.padding_block(evaluation, 0.45)
    assert not keys.decrypt_matches(block).any()
    hi = PS.mask_bits[1]
    flat = _flat(keys.decrypt_values(block))
    assert (flat < 0).all() and np.abs(flat).max() < 2.0 ** (hi + 1.5)


def test_the_default_set_keeps_seals_encryptor() -> None:
    engine = PackedEngine(DEFAULT_PARAM_SET, 128)
    keys = open_key_bundle(keys_for(DEFAULT_PARAM_SET).public_bundle())
    assert engine._native_zero(keys, list(DEFAULT_PARAM_SET.context().last_parms_id())) is None
