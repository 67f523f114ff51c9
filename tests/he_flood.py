"""The re-randomization's flood against the noise it must hide, measured for a parameter set.

One block's accumulated scores are decrypted (exact to the product stage); the engine's steps
after it (threshold, conjugation, masks, rescales, the final rotation) then run without the
flood, with masks and shift from a recorded stream; the result against the same steps done
in floating point is the noise they add. Then the flood is added and measured on its own.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

import fedmatch.he.engine as engine_module
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.he import sealio
from fedmatch.he.engine import PackedEngine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import EvaluationKeys
from fedmatch.he.params import ParamSet

__all__ = ["noise_and_flood"]

_SHIFT = 1234


def noise_and_flood(
    ps: ParamSet,
    keys: RequesterKeys,
    evaluation: EvaluationKeys,
    threshold: float,
    encoded_masks: bool,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per slot part (real and imaginary), the noise of the steps after the products and
    the flood's own contribution, in slot units. ``encoded_masks``: compare against the
    masks as the encoder rounds them (a set whose masks' absolute encoding error matters),
    else against the exact masks."""
    rng = np.random.default_rng(45)
    gallery = unit_vectors(rng, ps.block_records, 128)
    engine = PackedEngine(ps, 128)
    engine.load(gallery)
    query = engine.open_probe(keys.encrypt_probe(capture(gallery[3], rng, 0.8))).query
    rotations = engine._rotations(query, evaluation, lambda: False, 128)
    (acc,) = engine._products(rotations, [engine._blocks[0]], evaluation)
    before = keys.decrypt_values(sealio.to_bytes(acc))
    drawn: list[npt.NDArray[np.float64]] = []
    stream = np.random.default_rng(7)

    def recorded(n: int) -> npt.NDArray[np.float64]:
        drawn.append(stream.random(n))
        return drawn[-1]

    original = engine_module._uniform
    engine_module._uniform = recorded
    try:
        masked = engine._mask(acc, engine._threshold(acc, threshold), evaluation, threshold)
    finally:
        engine_module._uniform = original
    engine._rotate(masked, _SHIFT, evaluation)
    unflooded = keys.decrypt_values(sealio.to_bytes(masked))
    lo, hi = ps.mask_bits
    r1, r2 = (np.exp2(lo + (hi - lo) * d) for d in drawn[:2])
    real, imag = r1, r2
    if encoded_masks:
        encoder, parms_id = seal.CKKSEncoder(ps.context()), ps.context().first_parms_id()

        def as_encoded(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            plain = seal.Plaintext()
            encoder.encode(values.astype(np.complex128).tolist(), parms_id, 1.0, plain)
            return np.asarray(encoder.decode_complex(plain)).real

        plus, minus = as_encoded((r1 + r2) / 2), as_encoded((r1 - r2) / 2)
        real, imag = plus + minus, plus - minus
    expected = real * (before.real - threshold) + 1j * imag * (before.imag - threshold)
    expected = np.roll(expected, -_SHIFT)
    noise = np.abs(np.concatenate([(unflooded - expected).real, (unflooded - expected).imag]))
    engine._rerandomize(masked, evaluation)
    flooded = keys.decrypt_values(sealio.to_bytes(masked))
    flood = np.abs(np.concatenate([(flooded - unflooded).real, (flooded - unflooded).imag]))
    return noise, flood
