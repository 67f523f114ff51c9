"""SEAL's CKKS rescale on uint32 words: the kernel engine's masked blocks from the top level
down to the result level without ``Evaluator.rescale_to_next``.

SEAL 4's ``RNSTool::divide_and_round_q_last_ntt_inplace``, per polynomial of a ciphertext in
NTT form at primes ``q_0 .. q_L``: the last row out of NTT form, ``r = (x + floor(q_L / 2))
mod q_L - floor(q_L / 2)`` (rounding, not flooring), and ``c_i' = (c_i - NTT_i(r mod q_i)) *
q_L^-1 mod q_i`` for ``i < L``; the scale becomes ``scale / q_L``. Every step is exact
modulo each prime, so the words are SEAL's bit for bit (tests/unit/test_native_rescale.py).
This is the key switch's mod-down by the special prime (:mod:`fedmatch.he.keyswitch`,
whose centring it shares) with ``q_L`` in its place.

At the kernel set's top level two rescales take a block to its result level {q_0, q_1}:
~0.5 ms natively (four inverse NTTs and ten forward ones of 8,192 uint32 words) against
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
from fedmatch.he import ckks_encode, keyswitch
from fedmatch.he.params import ParamSet

__all__ = ["Rescaler"]

_S32 = np.uint64(32)


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


_subtract_scale_jit = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")(
    _subtract_scale
)


@dataclass(frozen=True)
class _Step:
    """One rescale: from primes ``q_0 .. q_L`` to ``q_0 .. q_(L-1)``."""

    last: int
    last_tables: tuple[npt.NDArray[Any], ...]  # inverse NTT of q_L, twice (two parts)
    moduli: npt.NDArray[np.uint64]  # q_0 .. q_(L-1)
    inverses: npt.NDArray[np.float64]
    fixes: npt.NDArray[np.uint64]  # floor(q_L / 2) mod q_i
    forward: tuple[npt.NDArray[Any], ...]  # forward NTT of q_0 .. q_(L-1), twice
    inv: npt.NDArray[np.uint32]  # q_L^-1 mod q_i
    inv_shoup: npt.NDArray[np.uint32]


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
        moduli = [int(q) for q in tables.moduli]
        last, rest = moduli[-1], moduli[:-1]
        inv = [pow(last, -1, q) for q in rest]
        keep = list(range(len(rest)))
        twice = keep + keep
        return _Step(
            last=last,
            last_tables=(
                np.repeat(tables.inv_roots32[-1:], 2, axis=0),
                np.repeat(tables.inv_shoup32[-1:], 2, axis=0),
                np.repeat(tables.moduli[-1:], 2),
                np.repeat(tables.n_inv32[-1:], 2),
                np.repeat(tables.n_inv_shoup32[-1:], 2),
            ),
            moduli=tables.moduli[:-1].copy(),
            inverses=1.0 / tables.moduli[:-1].astype(np.float64),
            fixes=np.array([(last >> 1) % q for q in rest], dtype=np.uint64),
            forward=(tables.roots32[twice], tables.shoup32[twice], tables.moduli[twice]),
            inv=np.array(inv, dtype=np.uint32),
            inv_shoup=np.array([(v << 32) // q for v, q in zip(inv, rest, strict=True)],
                               dtype=np.uint32),
        )  # fmt: skip

    def rescale(self, words: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        """``words`` (2 x L x N) rescaled by their last prime: 2 x (L - 1) x N."""
        parts, count, n = words.shape
        step = self._steps.get(count)
        if step is None or parts != 2:
            raise HEError("no native rescale from this level")
        last = np.ascontiguousarray(words[:, -1])
        ckks_encode._inverse_small_jit(last, *step.last_tables)
        correction = np.empty((2, count - 1, n), dtype=np.uint32)
        keyswitch._centred_rows_jit(
            last.astype(np.uint64), np.uint64(step.last), step.moduli, step.inverses,
            step.fixes, correction,
        )  # fmt: skip
        ckks_encode._forward_small_jit(correction.reshape(2 * (count - 1), n), *step.forward)
        out = np.empty((2, count - 1, n), dtype=np.uint32)
        _subtract_scale_jit(words, correction, step.inv, step.inv_shoup, step.moduli, out)
        return out

    def last_prime(self, count: int) -> int:
        """The prime a rescale from ``count`` primes divides by."""
        return self._steps[count].last
