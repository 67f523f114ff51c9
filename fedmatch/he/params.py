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

``ckks-n8192-q29.29.29.25.60-k`` (the kernel set), for the native product kernel of
:mod:`fedmatch.he.kernel` (selected by ``ParamSet.kernel``; added beside the default, not
swapped for it, until the kernel engine is faster end to end with every protection):

- CKKS, N = 8192, records packed as in the default set.
- Four small data primes, q0 = 536608769, q1 = 536641537, q2 = 536690689 (29 bits) and
  q3 = 33538049 (25 bits), and a 60-bit special prime: 172 bits, inside the 218 allowed for
  128-bit security (the same test checks it against SEAL's table). Small primes are the
  point: the register is stored as ``uint32`` residues and products fit 64 bits many times.
- Scales, masks and flood as in the default set: query 2^40, register 2^20, product
  S = 2^60 (the probe's norm copy is at sqrt(S) = 2^30, and the norm check and garbling
  terms rest on that copy's precision); masks log-uniform in [2^30, 2^47]; flood 2^16.
- Levels: probe, baby-step rotations, products, threshold, conjugate split, masks and norm
  excess at the top level {q0..q3}, Q4 ~ 2^112.0: a masked value is below
  2^47 * 2 * 2^60 = 2^108 (3 bits of room under Q4 / 2). Two rescales follow: q3 (scale
  2^35.0, values below 2^83 < Q3 / 2 = 2^86), then q2: the result lives at {q0, q1}
  (Q2 ~ 2^58.0, as large as the default's single 60-bit prime) with scale 2^6.0 and values
  below 2^54 (3 bits of room). q3 is the small one so that the result keeps a scale of
  2^6: the noise added after the products (key switches, rescales, ~2^14 absolute) is then
  2^7.9 in slot units against the flood's 2^16, a statistical distance of ~2^-9 per slot
  (the default's: ~2^-7; with a 29-bit q3 the scale would be 2^2 and that noise 2^11.6).
- Why four primes and not three: with three 29-30-bit primes (Q3 ~ 2^88) and S = 2^60 a
  masked value leaves the masks 2^25, so a 17-bit spread would start at 2^8. Masks are
  encoded at scale 1 and their encoding error is absolute (std 26, measured); an excluded
  row's zero mask then leaves ~26 (s - t) of its score next to decoys as small as
  2^8 |t - s'|: excluded duplicates decrypted as matches (the engine contract's exclusion
  tests failed that way). Here, as in the default set, that term is ~2^-20 of a decoy.
  Narrower masks would weaken the magnitude bound (0.046-0.23 bit per record at 17 bits, see
  the narrow set below); a smaller S the norm check.
- Rotation base 8 (29 Galois keys, bundle ~46 MB; base 16 would need 46 keys, 71.5 MB,
  over the 64 MB bundle bound). A result's random shift costs no key switch: the kernel
  rotates a block's sum as it computes it (:mod:`fedmatch.he.slotorder`); only a small
  register's blocks, with giant steps, leave the shift modulo dp to up to three key
  switches at the result level.
- Lazy accumulation: a product of residues below a 29-bit q is below 2^58; from zero,
  uint64 holds floor((2^64 - 1) / (q - 1)^2) = 64 of them (16,400 for q3); the kernel then
  folds the accumulator (hi * (2^32 mod q) + lo, below 2^32 q, congruent) and continues 56
  products per fold, and reduces exactly once per output. d = 128 (dp = 128, one fold) and
  d = 512 (dp = 512, eight) are exact, also with every residue at q - 1
  (tests/unit/test_kernel.py).
- Sizes, measured: probe ~260 KB (both ciphertexts, ``c1`` empty), key bundle ~46 MB;
  register 1,792 B per record at d = 128 (dp x 14 bytes: three 29-bit residues in uint32
  words whose 3 spare top bits each hold 3 of the 25-bit residue's high 9 bits, its low 16
  in a uint16; :class:`fedmatch.he.kernel.PackedBlock`).

Result blocks, both sets, leave in the compact format of :mod:`fedmatch.he.resultfmt`
(derivation there): ``c0`` rounded to steps of 2^7 slot units, ``c1`` to steps 2^9 finer,
sent modulo 2^43 and 2^52 (the kernel set's two unused top bits dropped): 97,284 bytes per
8,192 records, 11.875 B per record. Rounding error per record: at most E = 2^15.26 (39,187)
slot units except with probability 2^-40 (Hoeffding over the 8,192 coefficients, with the
secret key's canonical norm checked to be at most 400). A record's sign survives when
``r |s - t| > 2^16 (flood) + 2^11 (evaluation noise) + E``: with the smallest mask 2^30,
``|s - t| >= 9.95e-5``, inside the 1e-4 above. The issue's 8 B per record does not fit a
sound bound with masks over [2^30, 2^47]: 64 bits per coefficient pair leave an error of
2^30.8, above the smallest masked value itself.

``ckks-n8192-q29.29.29.25.60-k-narrow`` (opt-in, never a default): the kernel set with
masks log-uniform in [2^29, 2^34] and coarser results, for **7.875 B per record** down
(64,516 bytes per 8,192 records: ``c0`` rounded to steps of 2^10 slot units, ``c1`` to steps
2^9 finer, sent modulo 2^27 and 2^36). Same moduli, scales, flood, keys, kernel and
protections as the kernel set; only the masks, the result widths and the resolution differ.
What it costs:

- **Privacy.** A masked value's magnitude is ``r |s - t|``; with ``log2 r`` uniform over w
  bits, the requester reads ``log2 |s - t|`` through uniform noise w bits wide. w = 5 here
  against 17: per record and query, the mutual information between magnitude and score is
  ~3.4 times larger (:func:`fedmatch.he.leakage.magnitude_information`, synthetic 128-d
  scores: 0.155 bit against 0.046 at the threshold 0.45, and 0.78 against 0.23 bit for a
  requester that puts its threshold at the median score), and averaging over repeated
  queries of one probe reaches a given precision (w^2 / 12 per query, over the number of
  queries) ~12 times sooner: one query here tells about what 12 tell on the other sets.
  Records near the threshold and far from it are told apart with a total-variation distance
  of ~0.6 for a factor 8 in ``|s - t|`` (tests/unit/test_narrow_set.py; 0.18 with 17 bits,
  tests/unit/test_he.py::test_masked_magnitudes_say_almost_nothing_about_the_score).
- **Resolution 1e-3** instead of 1e-4: a score within 1e-3 of the threshold may decide
  either way. The rounding bound is E = 2^18.26 slot units (2^-40 tail, as below), and the
  sign survives when ``2^29 |s - t| > 2^16 + 2^11 + E``: ``|s - t| >= 7.1e-4``.
- Why not keep 17 bits of masks: the bits a result costs are twice the range of the values
  that must keep their sign (from the smallest mask at the resolution, above the flood and
  E, to twice the largest mask), plus the finer bits of ``c1``; 64 bits leave ~5 bits of
  mask range at a resolution of 1e-3, ~2 at 1e-4 (fedmatch.he.resultfmt's module doc).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import tenseal.sealapi as seal

from fedmatch.errors import ConfigError, HEError

__all__ = [
    "DEFAULT_PARAM_SET",
    "KERNEL_PARAM_SET",
    "MAX_BITS_128",
    "NARROW_PARAM_SET",
    "PARAM_SETS",
    "ParamSet",
    "check_param_set_name",
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
    # Data primes a result block keeps: after the masks, the engine rescales until this many
    # are left.
    result_moduli: int = 1
    # The compact result format's widths (fedmatch.he.resultfmt): c0 is rounded to steps of
    # 2^result_step_bits slot units, c1 to steps 2^result_finer_bits finer.
    result_step_bits: int = 7
    result_finer_bits: int = 9
    # Scores this close to the threshold may decide either way: the masks' smallest value
    # times this must exceed the flood, the evaluation noise and the rounding bound.
    resolution: float = 1e-4

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
    name="ckks-n8192-q29.29.29.25.60-k",
    poly_modulus_degree=8192,
    coeff_bits=(29, 29, 29, 25, 60),
    query_scale_bits=40,
    register_scale_bits=20,
    mask_bits=(30, 47),
    flood_bits=16,
    rotation_base=8,
    kernel=True,
    result_moduli=2,
)

# The kernel set with narrow masks, for 8 B per record down: what it costs in privacy is in
# the module doc. Never a default; a federation opts in by naming it.
NARROW_PARAM_SET = replace(
    KERNEL_PARAM_SET,
    name="ckks-n8192-q29.29.29.25.60-k-narrow",
    mask_bits=(29, 34),
    result_step_bits=10,
    resolution=1e-3,
)

PARAM_SETS: dict[str, ParamSet] = {
    ps.name: ps for ps in (DEFAULT_PARAM_SET, KERNEL_PARAM_SET, NARROW_PARAM_SET)
}


def get_param_set(name: str) -> ParamSet:
    try:
        return PARAM_SETS[name]
    except KeyError:
        raise HEError("unknown homomorphic-encryption parameter set") from None


def check_param_set_name(name: str, setting: str) -> None:
    """A configuration's ``he_param_set``: one of the named sets, else a ConfigError that
    lists them (a node and its federation must agree on the name, see the module doc)."""
    if name not in PARAM_SETS:
        known = ", ".join(sorted(PARAM_SETS))
        raise ConfigError(f"{setting} must name a parameter set: one of {known}")
