"""A block's garbling, threshold, masks and norm excess in one native pass over its words:
the kernel engine's :meth:`fedmatch.he.engine.PackedBase._blend`.

PackedBase does these steps with SEAL, at the top level, per block (a block of the kernel
set whose conjugate sum the kernel computed, see :class:`fedmatch.he.engine.Sums`):

- ``_garble``: ``acc += term_t * rho_t`` and ``conj += conj(term_t) * conj(rho_t)`` for each
  well-formedness term ``t``;
- ``_mask``: ``acc - thr`` and ``conj - conj(thr)`` (the plaintext from ``c0`` only), times
  the plaintexts ``plus = (r1 + r2) / 2`` and ``minus = (r1 - r2) / 2``, summed, plus
  ``excess * weights``.

Each is a word-wise product or sum modulo each prime of NTT-form words, so the whole is one
expression per word::

    out = ((acc + sum_t term_t rho_t - [c0] thr) plus
           + (conj + sum_t cterm_t crho_t - [c0] cthr) minus + excess weights) mod q

whose residue is the one SEAL's eleven calls give, bit for bit: the same plaintext words
(the same native encoder, the same draws in the same order: :func:`fedmatch.he.engine.
garbling_factors`, :func:`~fedmatch.he.engine.masks`, :func:`~fedmatch.he.engine.
excess_weights`), the same arithmetic modulo q (tests/unit/test_blend.py). Measured here at
the kernel set's top level: ~0.5 ms a block against ~2.5 ms for SEAL's calls.

The probe's words (its terms, their conjugates, the norm excess, the thresholds) are read
once per query (:class:`QueryWords`); a block's sums are read and the result's words go on
to the native rescale (:mod:`fedmatch.he.native_rescale`) before they enter a SEAL
ciphertext again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.he import ckks_encode, sealmem

__all__ = ["QueryWords", "blend", "warm_up"]


def _blend(
    acc: Any, conj: Any, terms: Any, cterms: Any, rhos: Any, crhos: Any, thr: Any, cthr: Any,
    plus: Any, minus: Any, excess: Any, weights: Any, moduli: Any, barrett: Any, out: Any,
) -> None:  # fmt: skip
    """The module's expression for every word (uint32 words below their primes; sums of at
    most 2 + 2 * terms products below 2^58 each stay below 2^64 for up to 30 terms)."""
    parts, count, n = acc.shape
    nterms = terms.shape[0]
    with_excess = excess.shape[0] > 0
    for p in range(parts):
        for i in range(count):
            q = np.uint64(moduli[i])
            b = barrett[i]
            a_row, c_row, o_row = acc[p, i], conj[p, i], out[p, i]
            for j in range(n):
                sa = np.uint64(a_row[j])
                sc = np.uint64(c_row[j])
                if p == 0:
                    sa += q - np.uint64(thr[i, j])
                    sc += q - np.uint64(cthr[i, j])
                for t in range(nterms):
                    sa += np.uint64(terms[t, p, i, j]) * np.uint64(rhos[t, i, j])
                    sc += np.uint64(cterms[t, p, i, j]) * np.uint64(crhos[t, i, j])
                ra = sa - ckks_encode._mulhi_jit(sa, b) * q
                ra = ra - q if ra >= q else ra
                rc = sc - ckks_encode._mulhi_jit(sc, b) * q
                rc = rc - q if rc >= q else rc
                s = ra * np.uint64(plus[i, j]) + rc * np.uint64(minus[i, j])
                if with_excess:
                    s += np.uint64(excess[0, p, i, j]) * np.uint64(weights[i, j])
                r = s - ckks_encode._mulhi_jit(s, b) * q
                o_row[j] = np.uint32(r - q if r >= q else r)


_blend_jit = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")(_blend)


def _ciphertext_words(ct: seal.Ciphertext) -> npt.NDArray[np.uint32]:
    out = np.empty((ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree()), np.uint32)
    sealmem.read_ciphertext(ct, out)
    return out


def _plaintext_words(plain: seal.Plaintext, degree: int) -> npt.NDArray[np.uint32]:
    out = np.empty((plain.coeff_count() // degree, degree), dtype=np.uint32)
    sealmem.read_plaintext(plain, out)
    return out


@dataclass(frozen=True)
class QueryWords:
    """One query's words for the blend, read once: its well-formedness terms and their
    conjugates (terms x 2 x L x N), the norm excess (0 or 1 x 2 x L x N) and the thresholds
    and their conjugates (L x N); ``sources`` are the objects they were read from (a later
    block of the same query is recognized by them)."""

    sources: tuple[object, ...]
    terms: npt.NDArray[np.uint32]
    cterms: npt.NDArray[np.uint32]
    excess: npt.NDArray[np.uint32]
    thr: npt.NDArray[np.uint32]
    cthr: npt.NDArray[np.uint32]

    @classmethod
    def read(
        cls,
        shape: tuple[int, int, int],
        terms: Sequence[tuple[seal.Ciphertext, float]],
        conjugated: Sequence[tuple[seal.Ciphertext, float]],
        excess: seal.Ciphertext | None,
        thresholds: seal.Plaintext,
        conj_thresholds: seal.Plaintext,
    ) -> QueryWords:
        """The words of a query's operands; ``shape``: a block's (2 x L x N)."""
        degree = shape[2]

        def stack(cts: Sequence[seal.Ciphertext]) -> npt.NDArray[np.uint32]:
            if not cts:
                return np.zeros((0, *shape), dtype=np.uint32)
            return np.stack([_ciphertext_words(ct) for ct in cts])

        return cls(
            sources=(terms, conjugated, excess, thresholds, conj_thresholds),
            terms=stack([t for t, _ in terms]),
            cterms=stack([t for t, _ in conjugated]),
            excess=stack([] if excess is None else [excess]),
            thr=_plaintext_words(thresholds, degree),
            cthr=_plaintext_words(conj_thresholds, degree),
        )

    def matches(self, *sources: object) -> bool:
        return len(sources) == len(self.sources) and all(
            a is b for a, b in zip(sources, self.sources, strict=True)
        )


def blend(
    acc: seal.Ciphertext,
    conj: seal.Ciphertext,
    query: QueryWords,
    rhos: npt.NDArray[np.uint32],
    crhos: npt.NDArray[np.uint32],
    plus: npt.NDArray[np.uint32],
    minus: npt.NDArray[np.uint32],
    weights: npt.NDArray[np.uint32],
    moduli: npt.NDArray[np.uint64],
) -> npt.NDArray[np.uint32]:
    """The module's expression's words (2 x L x N) at ``acc``'s level and scale (the mask
    plaintexts are at scale 1, so SEAL's product keeps the scale)."""
    words = _ciphertext_words(acc)
    out = np.empty_like(words)
    barrett = np.array([(1 << 64) // int(q) for q in moduli], dtype=np.uint64)
    _blend_jit(
        words, _ciphertext_words(conj), query.terms, query.cterms, rhos, crhos,
        query.thr, query.cthr, plus, minus, query.excess, weights, moduli, barrett, out,
    )  # fmt: skip
    return out


def warm_up() -> None:
    """Compile the blend with the array types a query uses."""
    z3 = np.zeros((1, 1, 2), dtype=np.uint32)
    z4 = np.zeros((1, 1, 1, 2), dtype=np.uint32)
    z2 = np.zeros((1, 2), dtype=np.uint32)
    moduli = np.array([17], dtype=np.uint64)
    _blend_jit(z3, z3, z4, z4, z3, z3, z2, z2, z2, z2, z4, z2, moduli, moduli, np.zeros_like(z3))
