"""Named homomorphic-encryption parameter sets, chosen by measurement on this machine.

A parameter set is fixed by name: requester and node never negotiate moduli, they agree on a
name, and a node rebuilds the SEAL context from its own copy of the set (it never trusts
parameters from the wire; it only checks that the received ones are the same).

``ckks-n8192-q60.50.60-c`` (the default), for the packed kernel of :mod:`fedmatch.he.engine`:

- CKKS, ring degree N = 8192: 4,096 complex slots, and two records per slot (real and
  imaginary part), so one ciphertext scores 8,192 records.
- Coefficient moduli 60 + 50 bits for data and a 60-bit special prime for key switching:
  170 bits, inside the 218 the HomomorphicEncryption.org standard allows for 128-bit
  classical security at N = 8192 (a test checks it against SEAL's own table).
- Query scale 2^40 (the one-step rotation chain adds ~2^-24 relative noise per step);
  register scale 2^20 (CKKS encoding rounds to ~2^-15 per coordinate, ~7e-5 on a score);
  product scale 2^60 in the 110-bit product modulus.
- Threshold subtraction, the complex-conjugate split and the masks are applied at the
  product level, then one rescale by the 50-bit prime leaves the result at the last 60-bit
  prime with scale 2^10. Masks are log-uniform in [2^30, 2^47], so a masked value
  ``r * (s - t) * 2^10`` stays below 2^59 and its magnitude carries 17 bits of noise.
- Measured here (d = 128): rotations of the query 0.15 s once per query; 15.6 ms of
  plaintext products per 8,192 records (1.9 us per record per core); threshold, masks,
  rescale, rotation and re-randomization ~5 ms per block; sign agreement with plaintext
  decisions 1.0 for |s - t| > 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tenseal.sealapi as seal

from fedmatch.errors import HEError

__all__ = ["DEFAULT_PARAM_SET", "MAX_BITS_128", "PARAM_SETS", "ParamSet", "get_param_set"]

# HomomorphicEncryption.org security standard (2018), table for 128-bit classical security
# with a ternary secret: the largest total coefficient-modulus bit count per ring degree.
MAX_BITS_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}


@dataclass(frozen=True)
class ParamSet:
    name: str
    poly_modulus_degree: int
    coeff_bits: tuple[int, ...]
    query_scale_bits: int
    register_scale_bits: int
    mask_bits: tuple[int, int]
    flood_bits: int
    rotation_base: int

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def block_records(self) -> int:
        """Records per result ciphertext: two per complex slot."""
        return 2 * self.slots

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_bits)

    @property
    def query_scale(self) -> float:
        return float(2**self.query_scale_bits)

    @property
    def register_scale(self) -> float:
        return float(2**self.register_scale_bits)

    @property
    def norm_scale(self) -> float:
        """The scale of a probe's norm copy: its square has the accumulators' scale
        (query scale times register scale), so the node's norm check adds to them."""
        return float(2 ** ((self.query_scale_bits + self.register_scale_bits) // 2))

    def rotation_steps(self) -> tuple[int, ...]:
        """Left-rotation steps the node needs: 1 (the query chain) and every digit of a
        base-``rotation_base`` slot shift (the per-query random rotation of results)."""
        steps = {1}
        power = 1
        while power < self.slots:
            steps.update(k * power for k in range(1, self.rotation_base))
            power *= self.rotation_base
        return tuple(sorted(s for s in steps if s < self.slots))

    def galois_elements(self) -> tuple[int, ...]:
        """Galois elements of :meth:`rotation_steps` (3^step mod 2N) and the complex
        conjugation (2N - 1)."""
        two_n = 2 * self.poly_modulus_degree
        return (*sorted(pow(3, s, two_n) for s in self.rotation_steps()), two_n - 1)

    def context(self) -> seal.SEALContext:
        """The SEAL context of this set (cached: contexts are immutable and costly)."""
        return _context(self)

    def parms(self) -> seal.EncryptionParameters:
        return _parms(self)


def _parms(ps: ParamSet) -> seal.EncryptionParameters:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(ps.poly_modulus_degree)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(ps.poly_modulus_degree, list(ps.coeff_bits)))
    return parms


@cache
def _context(ps: ParamSet) -> seal.SEALContext:
    if ps.total_bits > MAX_BITS_128.get(ps.poly_modulus_degree, 0):
        raise HEError(f"parameter set {ps.name} is below 128-bit security")
    # TC128 makes SEAL itself refuse parameters outside the standard as a second check.
    ctx = seal.SEALContext(_parms(ps), True, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise HEError(f"parameter set {ps.name} is not valid for SEAL")
    return ctx


DEFAULT_PARAM_SET = ParamSet(
    name="ckks-n8192-q60.50.60-c",
    poly_modulus_degree=8192,
    coeff_bits=(60, 50, 60),
    query_scale_bits=40,
    register_scale_bits=20,
    mask_bits=(30, 47),
    flood_bits=16,
    rotation_base=16,
)

PARAM_SETS: dict[str, ParamSet] = {DEFAULT_PARAM_SET.name: DEFAULT_PARAM_SET}


def get_param_set(name: str) -> ParamSet:
    try:
        return PARAM_SETS[name]
    except KeyError:
        raise HEError("unknown homomorphic-encryption parameter set") from None
