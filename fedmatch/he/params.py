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

``ckks-n8192-q30.29.29.60-k`` (the kernel set), for the native product kernel of
:mod:`fedmatch.he.kernel` (selected by ``ParamSet.kernel``; added beside the default, not
swapped for it, until the kernel engine is faster end to end with every protection):

- CKKS, N = 8192, records packed as in the default set.
- Data primes q0 = 1073692673 (~2^30.0), q1 = 536641537 and q2 = 536690689 (~2^29.0 each),
  special prime ~2^60: 148 bits, inside the 218 allowed for 128-bit security (the same test
  checks it against SEAL's table). Small primes are the point: the register is stored as
  ``uint32`` residues and a product of two residues fits 64 bits many times over.
- Scales as in the default set: query 2^40, register 2^20, product S = 2^60. The product
  scale is not free: the probe's norm copy is at sqrt(S) = 2^30, and that copy's precision
  is what the norm check and the garbling terms of :mod:`fedmatch.he.engine` rest on
  (measured with this set: scores move by at most ~8.5e-5 through them, as with the default).
- Levels: the probe, its baby-step rotations and the products live at the top level
  {q0, q1, q2} (Q3 ~ 2^88.0); threshold, conjugate split, masks and norm excess are applied
  there; one rescale drops q2 and leaves the result at {q0, q1} (Q2 ~ 2^59.0) with scale
  S / q2 = 2^31.0. It stays there: a second rescale would leave q0 alone (2^30), too small to
  hold a value with 17 bits of mask spread and 1e-4 of score precision (~2^32 of range).
- Masks: log-uniform in [2^8, 2^25], 17 bits of spread as in the default set, but at the
  bottom of what fits. Top: a masked value at the product level is below
  2^25 * 2 * 2^60 = 2^86 < Q3 / 2 = 2^87, after the rescale below 2^57 < Q2 / 2 = 2^58
  (one bit of room at each level; |s - t| < 2). Bottom: masks are encoded at scale 1, so
  their encoding error is absolute (std 26, at most ~150 over 16K masks, measured); at 2^8
  a mask is 10 std above it and never changes sign. A real-valued encoding has no imaginary
  error (measured ~1e-8, the decoder's rounding), so the conjugate split keeps a slot's two
  records apart even with masks this small.
- Flood: 2^-8 in slot units (2^23 absolute at scale 2^31). The smallest value the sign must
  decide, a mask at 2^8 less 7 std of its encoding error (74) times 1e-4, is 2^-7.1: 1.9
  times the flood. The noise added after the products (conjugation and rotation key switches,
  rescale; tests/unit/test_kernel_params.py) is ~2^-17 units: the statistical distance per
  slot is ~2^-10 (the default set: ~2^-7), again a bound and not circuit privacy.
- Lazy accumulation: residues are below q <= 2^30, so one product is below 2^60 (q0) or
  2^58 (q1, q2). From zero, uint64 holds floor((2^64 - 1) / (q - 1)^2) products: 16 for q0,
  64 for q1 and q2. The kernel then folds the accumulator (hi * (2^32 mod q) + lo, below
  2^32 q) and continues for 12 (q0) or 56 (q1, q2) products per fold, and reduces exactly
  once per output. d = 128 (dp = 128) and d = 512 (dp = 512) are both exact, also for the
  worst case of every residue at q - 1 (tests/unit/test_kernel.py).
- Sizes, measured: probe ~211 KB (both ciphertexts, ``c1`` empty), result ~145 KB per block,
  key bundle ~45 MB; register 1.5 KB per record at d = 128 (dp x 3 x 4 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tenseal.sealapi as seal

from fedmatch.errors import HEError

__all__ = [
    "DEFAULT_PARAM_SET",
    "KERNEL_PARAM_SET",
    "MAX_BITS_128",
    "PARAM_SETS",
    "ParamSet",
    "get_param_set",
]

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
    # Plaintext products by the native kernel (fedmatch.he.kernel) instead of SEAL's: needs
    # data primes below 2^31 (residues stored as uint32).
    kernel: bool = False

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

KERNEL_PARAM_SET = ParamSet(
    name="ckks-n8192-q30.29.29.60-k",
    poly_modulus_degree=8192,
    coeff_bits=(30, 29, 29, 60),
    query_scale_bits=40,
    register_scale_bits=20,
    mask_bits=(8, 25),
    flood_bits=-8,
    rotation_base=16,
    kernel=True,
)

PARAM_SETS: dict[str, ParamSet] = {ps.name: ps for ps in (DEFAULT_PARAM_SET, KERNEL_PARAM_SET)}


def get_param_set(name: str) -> ParamSet:
    try:
        return PARAM_SETS[name]
    except KeyError:
        raise HEError("unknown homomorphic-encryption parameter set") from None
