"""SEAL's NTT-form words in slot order: where a rotation of the slots is a cyclic shift.

A CKKS plaintext or ciphertext polynomial in NTT form holds its values at the odd powers
``psi^e`` of a 2N-th root of unity, in SEAL's bit-reversed order (word ``j`` at
``e = 2 * bitrev(j) + 1``). Rotating the slots left by ``r`` is the automorphism
``X -> X^(3^r)`` (SEAL's generator is 3), which moves the value at ``psi^(e * 3^r)`` to
``psi^e``: a permutation of the words, no arithmetic. Ordered along the two orbits of
multiplication by 3 (``3^s`` and ``-3^s`` mod 2N, s < N / 2), it is a cyclic left shift
by ``r`` within each half. The kernel (:mod:`fedmatch.he.kernel`) keeps its operands in
this order so that it can rotate a block's sum while it computes it, instead of key
switches after it (checked against SEAL's own rotations in tests/unit/test_kernel.py).
Conjugating the slots of a real-coefficient polynomial is ``X -> X^-1``, which moves the
value at ``psi^(-e)`` to ``psi^e``: position p of one half and position p of the other
swap (:func:`conjugated`), so the kernel sums conjugated diagonals by reading the other
half.
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fedmatch.errors import HEError

# Word arrays of any unsigned width (SEAL's uint64 words, the kernel's uint32 ones).
WordT = TypeVar("WordT", bound=np.generic)

__all__ = ["GENERATOR", "conjugated", "folded_slots", "rotated", "slot_order"]

# SEAL's GaloisTool generator of the rotation group (galois element of a left step: 3).
GENERATOR = 3


@cache
def slot_order(degree: int) -> npt.NDArray[np.int64]:
    """``order[p]``: the NTT word index of slot-order position ``p`` (positions 0 .. N/2-1
    along ``3^s``, then N/2 .. N-1 along ``-3^s``), for ring degree ``degree``."""
    bits = degree.bit_length() - 1
    if degree < 4 or degree != 1 << bits:
        raise HEError("the ring degree must be a power of two")
    modulus = 2 * degree
    # word j holds psi^(2 * bitrev(j) + 1): invert that map for the odd exponents.
    words = np.arange(degree, dtype=np.int64)
    reversed_ = np.zeros(degree, dtype=np.int64)
    for b in range(bits):
        reversed_ |= ((words >> b) & 1) << (bits - 1 - b)
    word_of_exponent = np.empty(modulus, dtype=np.int64)
    word_of_exponent[2 * reversed_ + 1] = words
    powers = np.empty(degree // 2, dtype=np.int64)
    g = 1
    for s in range(degree // 2):
        powers[s] = g
        g = g * GENERATOR % modulus
    order = np.concatenate([word_of_exponent[powers], word_of_exponent[(-powers) % modulus]])
    order.setflags(write=False)
    return order


def rotated(words: npt.NDArray[np.generic], shift: int) -> npt.NDArray[np.generic]:
    """NTT-form ``words`` (last axis: the degree, SEAL's order) of a polynomial whose slots
    are rotated left by ``shift``: what SEAL's rotation gives before its key switch."""
    degree = words.shape[-1]
    order = slot_order(degree)
    half = degree // 2
    in_order = words[..., order]
    moved = np.concatenate(
        [
            np.roll(in_order[..., :half], -shift, axis=-1),
            np.roll(in_order[..., half:], -shift, axis=-1),
        ],
        axis=-1,
    )
    out = np.empty_like(words)
    out[..., order] = moved
    return out


@cache
def _conjugation(degree: int) -> npt.NDArray[np.int64]:
    order = slot_order(degree)
    source = np.empty(degree, dtype=np.int64)
    # The word at slot-order position p takes the word at p's partner in the other half.
    source[order] = order[(np.arange(degree) + degree // 2) % degree]
    source.setflags(write=False)
    return source


def conjugated(words: npt.NDArray[WordT]) -> npt.NDArray[WordT]:
    """NTT-form ``words`` (last axis: the degree, SEAL's order) of a polynomial whose
    slots are conjugated: what SEAL's conjugation gives before its key switch."""
    out: npt.NDArray[WordT] = np.ascontiguousarray(words[..., _conjugation(words.shape[-1])])
    return out


@cache
def folded_slots(degree: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Where slot ``s`` (the value at ``zeta^e``, ``e = 3^s mod 2N``, SEAL's order) sits in
    the cyclic transform of length N/2 of a real polynomial folded modulo ``X^(N/2) - i``
    (which evaluates it at ``zeta^(4k + 1)``): entry ``(e - 1) / 4`` for ``e = 1 mod 4``,
    else the conjugate of entry ``(2N - e - 1) / 4``. Returns (entries, conjugate flags)."""
    exponents = np.array(
        [pow(GENERATOR, s, 2 * degree) for s in range(degree // 2)], dtype=np.int64
    )
    direct = exponents % 4 == 1
    position = np.where(direct, exponents - 1, 2 * degree - exponents - 1) // 4
    conjugate = ~direct
    position.setflags(write=False)
    conjugate.setflags(write=False)
    return position, conjugate
