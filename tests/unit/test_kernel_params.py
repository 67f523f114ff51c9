"""The kernel parameter set's derivation (fedmatch.he.params), measured through the SEAL-only
engine: what its docstring claims about masks, flood, noise and decisions holds."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.he.engine import PackedEngine
from fedmatch.he.keys import EvaluationKeys, open_key_bundle
from fedmatch.he.params import KERNEL_PARAM_SET
from tests.he_flood import noise_and_flood
from tests.he_keys import keys_for

THRESHOLD = 0.45
PS = KERNEL_PARAM_SET


@pytest.fixture(scope="module")
def evaluation() -> EvaluationKeys:
    return open_key_bundle(keys_for(PS).public_bundle())


def test_the_kernel_set_has_the_derived_levels() -> None:
    """Three 29-bit data primes and a 25-bit one; a masked value (below 2^108 at the product
    level) keeps 3 bits of room there, after the first rescale (scale 2^35) and after the
    second (scale 2^6, values below 2^54) at the result level {q0, q1}."""
    moduli = [m.value() for m in PS.parms().coeff_modulus()]
    q0, q1, q2, q3 = (float(q) for q in moduli[:-1])
    assert [q.bit_length() for q in moduli] == [29, 29, 29, 25, 60]
    lo, hi = PS.mask_bits
    scale = 2.0 ** (PS.query_scale_bits + PS.register_scale_bits)
    top = scale * 2.0 ** (hi + 1)  # |s - t| < 2
    room = 2.0**2.9
    assert top * room < q0 * q1 * q2 * q3 / 2
    assert top / q3 * room < q0 * q1 * q2 / 2
    assert top / q3 / q2 * room < q0 * q1 / 2
    assert 2**5.99 < scale / q3 / q2 < 2**6.01
    assert PS.result_moduli == 2
    # The smallest decided value (mask 2^lo times 1e-4) is above the flood, as in the
    # default set (2^16.7 against 2^16).
    assert 2.0**lo * 1e-4 > 1.5 * 2.0**PS.flood_bits


def test_an_excluded_rows_zero_mask_leaves_nothing_next_to_a_decoy() -> None:
    """Masks are encoded at scale 1, so a zero mask (an excluded row) is zero up to the
    encoding's absolute error (std 26): at most ~150 (s - t), ~2^-18 of a decoy as small as
    2^30 * 0.1 (|t - s'| ~ 0.45 for an impostor score s'). Nor does the encoding mix a slot's two
    records: its imaginary error is the decoder's rounding."""
    ctx = PS.context()
    encoder = seal.CKKSEncoder(ctx)
    lo, hi = PS.mask_bits
    rng = np.random.default_rng(1)
    worst_zero, worst_imag = 0.0, 0.0
    for _ in range(4):
        r1, r2 = (np.exp2(rng.uniform(lo, hi, PS.slots)) for _ in range(2))
        excluded = rng.random(PS.slots) < 0.5
        r1[excluded] = 0.0
        decoded = []
        for values in ((r1 + r2) / 2, (r1 - r2) / 2):
            plain = seal.Plaintext()
            encoder.encode(values.astype(np.complex128).tolist(), ctx.first_parms_id(), 1.0, plain)
            decoded.append(np.asarray(encoder.decode_complex(plain)))
        effective = decoded[0] + decoded[1]  # what the real part's record is multiplied by
        worst_zero = max(worst_zero, float(np.abs(effective.real[excluded]).max()))
        worst_imag = max(worst_imag, float(np.abs(effective.imag).max()))
    assert worst_zero * 2 < 2.0**lo * 0.1 * 2.0**-18  # measured ~150
    assert worst_imag < 2.0 ** (hi - 40)  # the decoder's rounding of values up to 2^47


def test_the_kernel_sets_flood_bound(evaluation: EvaluationKeys) -> None:
    """As tests/unit/test_he.py::test_the_flood_bound_is_what_the_docs_say for the default
    set: the steps after the products (threshold, conjugation, masks, two rescales,
    rotation), run without the flood against the same steps in floating point with the
    masks as encoded, add ~2^8 in slot units (2^13 absolute at scale 2^6), against the
    flood of 2^16: a statistical distance of ~2^-9 per slot (the default set's: ~2^-7)."""
    noise, flood = noise_and_flood(PS, keys_for(PS), evaluation, THRESHOLD, encoded_masks=True)
    bound = 2.0**PS.flood_bits
    assert bound * 0.9 < flood.max() < bound * 1.1  # uniform in +-2^16, each part
    assert 2.0**4 < noise.max() < 2.0**9.5  # measured here: 2^7.85
    assert noise.max() / (2 * bound) < 2.0**-8  # ~2^-9


def test_the_kernel_set_decides_like_plaintext_at_1e4(evaluation: EvaluationKeys) -> None:
    """The derived precision, end to end through the SEAL engine with every protection:
    rows planted 1e-4 to 1e-3 on both sides of the threshold decide as in float64."""
    keys = keys_for(PS)
    rng = np.random.default_rng(46)
    probe = unit_vectors(rng, 1, 128)[0]
    rows = unit_vectors(rng, PS.block_records, 128)
    offsets = [1e-4, 2e-4, 5e-4, 1e-3]
    planted = {}
    for k, offset in enumerate(offsets):
        for sign, row in ((1, 100 + k), (-1, 4096 + 100 + k)):  # real and imaginary halves
            rows[row] = capture(probe, rng, THRESHOLD + sign * offset)
            planted[row] = sign > 0
    engine = PackedEngine(PS, 128)
    engine.load(rows)
    out = engine.search(evaluation, keys.encrypt_probe(probe), THRESHOLD, lambda: False)
    found = set()
    for b, ct in enumerate(out.blocks):
        for p in np.flatnonzero(keys.decrypt_matches(ct)):
            found.add(out.layout.row(b, int(p)))
    scores = rows.astype(np.float64) @ probe.astype(np.float64)
    assert found == set(np.flatnonzero(scores >= THRESHOLD).tolist())
    assert found >= {row for row, above in planted.items() if above}
