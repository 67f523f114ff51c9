"""The native rescale (fedmatch.he.native_rescale) is SEAL's rescale_to_next word for word,
at every step of the kernel set's levels, on fresh encryptions and uniformly random words."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import native_rescale, sealmem
from fedmatch.he.native_rescale import Rescaler
from fedmatch.he.params import KERNEL_PARAM_SET, NARROW_PARAM_SET, ParamSet

N = KERNEL_PARAM_SET.poly_modulus_degree


def _words(ct: seal.Ciphertext) -> npt.NDArray[np.uint32]:
    out = np.empty((ct.size(), ct.coeff_modulus_size(), N), dtype=np.uint32)
    sealmem.read_ciphertext(ct, out)
    return out


@pytest.mark.parametrize("ps", [KERNEL_PARAM_SET, NARROW_PARAM_SET], ids=["kernel", "narrow"])
def test_every_step_is_seals_word_for_word(ps: ParamSet) -> None:
    ctx = ps.context()
    ev = seal.Evaluator(ctx)
    keygen = seal.KeyGenerator(ctx)
    public = seal.PublicKey()
    keygen.create_public_key(public)
    plain = seal.Plaintext()
    values = np.random.default_rng(2).uniform(-1, 1, N // 2)
    seal.CKKSEncoder(ctx).encode(values.tolist(), 2.0**40, plain)
    ct = seal.Ciphertext()
    seal.Encryptor(ctx, public).encrypt(plain, ct)
    rescaler = Rescaler(ps)
    rng = np.random.default_rng(3)
    steps = 0
    while ct.coeff_modulus_size() > 1:
        moduli = [m.value() for m in ctx.get_context_data(ct.parms_id()).parms().coeff_modulus()]
        # A random ciphertext at the same level (any words below their primes).
        random = seal.Ciphertext()
        ev.negate(ct, random)
        noise = np.stack([rng.integers(0, q, size=(2, N), dtype=np.uint64) for q in moduli], 1)
        sealmem.write_ciphertext(random, ctx, noise)
        for source in (ct, random):
            expected = seal.Ciphertext()
            ev.rescale_to_next(source, expected)
            assert np.array_equal(rescaler.rescale(_words(source)), _words(expected))
            assert expected.scale == source.scale / rescaler.last_prime(len(moduli))
        ev.rescale_to_next_inplace(ct)
        steps += 1
    assert steps == len(ps.coeff_bits) - 2
    with pytest.raises(HEError):
        rescaler.rescale(_words(ct))


def test_the_rounding_correction_is_exact_at_the_edges() -> None:
    """The correction's reduction (a double quotient and fixed corrections) against integer
    arithmetic, for the key switch's special prime and each rescale's prime, at the words
    where a quotient is exact or the centring flips: 0, 1, p/2 - 1 .. p/2 + 1, p - 1, and
    random words."""
    key_level = KERNEL_PARAM_SET.context().key_context_data()
    coeff = [m.value() for m in key_level.parms().coeff_modulus()]
    data, special = coeff[:-1], coeff[-1]
    rng = np.random.default_rng(3)
    # (p, the primes it is reduced to): the mod-down by P onto every data prime, and each
    # rescale by the last prime of a level onto those below it.
    cases = [(special, data)] + [(data[i], data[:i]) for i in range(len(data) - 1, 0, -1)]
    for p, rest in cases:
        half = p // 2
        edges = [0, 1, half - 1, half, half + 1, p - 2, p - 1]
        edges += [q * k % p for q in rest for k in (1, 2, (p // q))]
        words = np.array(edges + [int(v) for v in rng.integers(0, p, 2048 - len(edges))],
                         dtype=np.uint64)  # fmt: skip
        last = np.stack([words, words[::-1].copy()])
        qs = np.array(rest, dtype=np.uint64)
        out = np.empty((2, len(rest), words.size), dtype=np.uint32)
        native_rescale._centred_rows_jit(
            last, np.uint64(p), qs, 1.0 / qs.astype(np.float64),
            np.array([half % q for q in rest], dtype=np.uint64), out,
        )  # fmt: skip
        for k in range(2):
            for i, q in enumerate(rest):
                expected = [((int(x) + half) % p - half) % q for x in last[k]]
                assert out[k, i].tolist() == expected
