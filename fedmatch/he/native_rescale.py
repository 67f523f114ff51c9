"""SEAL's CKKS rescale on uint32 words: the kernel engine's masked blocks from the top level
down to the result level without ``Evaluator.rescale_to_next``.

SEAL 4's ``RNSTool::divide_and_round_q_last_ntt_inplace``, per polynomial of a ciphertext in
NTT form at primes ``q_0 .. q_L``: the last row out of NTT form, ``r = (x + floor(q_L / 2))
mod q_L - floor(q_L / 2)`` (rounding, not flooring), and ``c_i' = (c_i - NTT_i(r mod q_i)) *
q_L^-1 mod q_i`` for ``i < L``; the scale becomes ``scale / q_L``. Every step is exact
modulo each prime, so the words are SEAL's bit for bit (tests/unit/test_native_rescale.py).
The second half is :class:`DivideRound`, which the key switch's mod-down by the special
prime shares (:mod:`fedmatch.he.keyswitch`).

At the kernel set's top level two rescales take a block to its result level {q_0, q_1}:
~0.46 ms natively (four inverse NTTs and ten forward ones of 8,192 uint32 words) against
~1.5 ms for SEAL's two (measured here).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from fedmatch.errors import HEError
from fedmatch.he import ckks_encode
from fedmatch.he.params import ParamSet

__all__ = ["DivideRound", "Rescaler"]

_S32 = np.uint64(32)


def _centred_rows(last: Any, p: Any, moduli: Any, inverses: Any, fixes: Any, out: Any) -> None:
    """``out[k, i] = ((last[k] + floor(p / 2)) mod p) - floor(p / 2) mod q_i``, for ``last``
    out of NTT form (uint64 below p < 2^62): the rounding's correction before its NTT.

    ``c mod q_i`` (c below 2^62) from the quotient of a double product, as the encoder's
    reduction (:func:`fedmatch.he.ckks_encode._reduce_small`): its relative error is about
    2^-52 and c / q_i < 2^38, so the quotient is off by at most one and two corrections
    each way bound it. Fixed corrections, not loops until in range, let the compiler
    vectorize the row: ~40 us for a key switch's mod-down at the kernel set, against ~100."""
    half = p >> np.uint64(1)
    parts, count, n = out.shape
    for k in range(parts):
        row = last[k]
        for i in range(count):
            q = np.int64(moduli[i])
            inverse = inverses[i]
            fix = np.int64(fixes[i])
            target = out[k, i]
            for j in range(n):
                t = row[j] + half
                t = t - p if t >= p else t
                c = np.int64(t)
                r = c - np.int64(np.float64(c) * inverse) * q
                r = r + q if r < 0 else r
                r = r + q if r < 0 else r
                r = r - q if r >= q else r
                r = r - q if r >= q else r
                r -= fix
                r = r + q if r < 0 else r
                target[j] = np.uint32(r)


def _subtract_scale(words: Any, correction: Any, inv: Any, inv_shoup: Any, moduli: Any,
                    out: Any) -> None:  # fmt: skip
    """``out[k, i] = (words[k, i] - correction[k, i]) * inv[i] mod q_i`` (uint32 words)."""
    parts, count, n = out.shape
    for k in range(parts):
        for i in range(count):
            q = np.uint32(moduli[i])
            w, ws = np.uint32(inv[i]), np.uint64(inv_shoup[i])
            a, c, target = words[k, i], correction[k, i], out[k, i]
            for j in range(n):
                d = a[j] + q - c[j]
                d = d - q if d >= q else d
                t = np.uint32(d * w - np.uint32((np.uint64(d) * ws) >> _S32) * q)
                target[j] = t - q if t >= q else t


_jit = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")
_centred_rows_jit = _jit(_centred_rows)
_subtract_scale_jit = _jit(_subtract_scale)


@dataclass(frozen=True)
class DivideRound:
    """Dividing by a prime ``p`` and rounding, on the rows of primes ``q_0 .. q_(L-1)`` of a
    two-part ciphertext in NTT form, given ``p``'s row out of NTT form: a rescale's second
    half, and a key switch's mod-down with the special prime as ``p``."""

    p: int
    moduli: npt.NDArray[np.uint64]  # q_0 .. q_(L-1)
    inverses: npt.NDArray[np.float64]
    fixes: npt.NDArray[np.uint64]  # floor(p / 2) mod q_i
    forward: tuple[npt.NDArray[Any], ...]  # forward NTT of q_0 .. q_(L-1), twice
    inv: npt.NDArray[np.uint32]  # p^-1 mod q_i
    inv_shoup: npt.NDArray[np.uint32]

    @classmethod
    def of(cls, p: int, tables: ckks_encode.NTTTables, count: int) -> DivideRound:
        """For the first ``count`` primes of ``tables`` (uint32 tables: primes below 2^30)."""
        rest = [int(q) for q in tables.moduli[:count]]
        inv = [pow(p, -1, q) for q in rest]
        twice = [*range(count), *range(count)]
        return cls(
            p=p,
            moduli=tables.moduli[:count].copy(),
            inverses=1.0 / tables.moduli[:count].astype(np.float64),
            fixes=np.array([(p >> 1) % q for q in rest], dtype=np.uint64),
            forward=(tables.roots32[twice], tables.shoup32[twice], tables.moduli[twice]),
            inv=np.array(inv, dtype=np.uint32),
            inv_shoup=np.array([(v << 32) // q for v, q in zip(inv, rest, strict=True)],
                               dtype=np.uint32),
        )  # fmt: skip

    def apply(
        self, rows: npt.NDArray[np.uint32], last: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.uint32]:
        """``(rows - NTT(round-centred last mod q_i)) * p^-1 mod q_i`` (2 x L x N)."""
        parts, count, n = rows.shape
        correction = np.empty((parts, count, n), dtype=np.uint32)
        _centred_rows_jit(
            last, np.uint64(self.p), self.moduli, self.inverses, self.fixes, correction
        )
        ckks_encode._forward_small_jit(correction.reshape(parts * count, n), *self.forward)
        out = np.empty((parts, count, n), dtype=np.uint32)
        _subtract_scale_jit(rows, correction, self.inv, self.inv_shoup, self.moduli, out)
        return out


@dataclass(frozen=True)
class _Step:
    """One rescale: from primes ``q_0 .. q_L`` to ``q_0 .. q_(L-1)``."""

    last_tables: tuple[npt.NDArray[Any], ...]  # inverse NTT of q_L, twice (two parts)
    divide: DivideRound


class Rescaler:
    """Native rescales of size-2 NTT-form ciphertexts' words at the levels of a parameter
    set whose primes are below 2^30 (the kernel sets)."""

    def __init__(self, params: ParamSet) -> None:
        self._params = params
        self._encoder = ckks_encode.native_encoder(params)
        self._steps: dict[int, _Step] = {}
        self._lock = threading.Lock()
        ctx = params.context()
        data = ctx.first_context_data()
        while data is not None and data.next_context_data() is not None:
            parms_id = list(data.parms_id())
            tables = self._encoder.tables(parms_id)
            if not tables.small:
                raise HEError("native rescaling needs primes below 2^30")
            count = tables.moduli.size
            self._steps[count] = self._step(tables)
            data = data.next_context_data()
        # Compiled now (once per process), not in a query.
        top = max(self._steps)
        self.rescale(np.zeros((2, top, params.poly_modulus_degree), dtype=np.uint32))

    @staticmethod
    def _step(tables: ckks_encode.NTTTables) -> _Step:
        count = tables.moduli.size - 1
        return _Step(
            last_tables=(
                np.repeat(tables.inv_roots32[-1:], 2, axis=0),
                np.repeat(tables.inv_shoup32[-1:], 2, axis=0),
                np.repeat(tables.moduli[-1:], 2),
                np.repeat(tables.n_inv32[-1:], 2),
                np.repeat(tables.n_inv_shoup32[-1:], 2),
            ),
            divide=DivideRound.of(int(tables.moduli[-1]), tables, count),
        )

    def rescale(self, words: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        """``words`` (2 x L x N) rescaled by their last prime: 2 x (L - 1) x N."""
        parts, count, _ = words.shape
        step = self._steps.get(count)
        if step is None or parts != 2:
            raise HEError("no native rescale from this level")
        last = np.ascontiguousarray(words[:, -1])
        ckks_encode._inverse_small_jit(last, *step.last_tables)
        # Contiguous, as the key switch's rows are: one compiled variant for both.
        rows = np.ascontiguousarray(words[:, :-1])
        return step.divide.apply(rows, last.astype(np.uint64))

    def last_prime(self, count: int) -> int:
        """The prime a rescale from ``count`` primes divides by."""
        return self._steps[count].divide.p
