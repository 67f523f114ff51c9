"""Named homomorphic-encryption parameter sets.

A parameter set is fixed by name: requester and node never negotiate moduli, they agree on a
name, and a node rebuilds the SEAL context from its own copy of the set (it never trusts
parameters from the wire; it only checks that the received ones are the same).

``ckks-n8192-q60.40.60-s40`` (the default):
    CKKS, ring degree N = 8192 (4,096 slots), coefficient moduli of 60, 40 and 60 bits (the
    last one is the key-switching special prime), scale 2^40. Total 160 bits, inside the 218
    bits the HomomorphicEncryption.org standard allows for 128-bit classical security at
    N = 8192 (SEAL's ``CoeffModulus.MaxBitCount``). One rescale after the products leaves a
    single 60-bit prime: enough headroom for cosine scores in [-1, 1] at scale 2^40, with a
    measured absolute error around 2e-6.
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
    scale_bits: int

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_bits)

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

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
    name="ckks-n8192-q60.40.60-s40",
    poly_modulus_degree=8192,
    coeff_bits=(60, 40, 60),
    scale_bits=40,
)

PARAM_SETS: dict[str, ParamSet] = {DEFAULT_PARAM_SET.name: DEFAULT_PARAM_SET}


def get_param_set(name: str) -> ParamSet:
    try:
        return PARAM_SETS[name]
    except KeyError:
        raise HEError("unknown homomorphic-encryption parameter set") from None
