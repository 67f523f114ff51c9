"""A native CKKS encoder: slot values to a SEAL NTT-form plaintext without SEAL's
``CKKSEncoder.encode``, for the engine's per-block random plaintexts (masks, norm-excess
weights, garbling factors, decoys, flood noise).

SEAL's encode costs ~0.13 ms plus ~0.1 ms per modulus at N = 8192 (measured here: 0.52 ms
at the kernel set's top level, six of them per block). This one does the same steps
with numpy and numba:

1. Slot ``i`` holds the value of the message polynomial at ``zeta^(3^i mod 2N)``,
   ``zeta = exp(i pi / N)`` (SEAL's ``matrix_reps_index_map``), and its conjugate sits at
   ``zeta^-(3^i)``. Of each such pair exactly one exponent is 1 mod 4, so the N / 2 values
   at ``zeta^(4s + 1)`` fix the real polynomial, and ``c_j = m_j + i m_(j + N/2)`` follows
   from one complex FFT of length N / 2 (``m(zeta^(4s+1)) = sum_j c_j zeta^j
   exp(2 pi i s j / (N/2))``): half the length of SEAL's transform.
2. The coefficients, times the scale, rounded to integers (int64; a value of 2^62 or more
   is refused, SEAL's multi-precision path is not reproduced), reduced mod each prime of
   the level.
3. SEAL's forward NTT per prime (negacyclic, bit-reversed output: word ``k`` is the
   polynomial at ``psi^(2 bitrev(k) + 1)``), with the same primitive 2N-th root ``psi``
   that SEAL uses, read off SEAL's own encoding of the polynomial ``X`` when the encoder is
   built; Shoup multiplications (a 64 x 64 -> 128-bit high product, four 32-bit products
   in numba).
4. The words go into a plaintext shaped by SEAL (a scalar encode at the level and scale,
   ~6 us) through :mod:`fedmatch.he.sealmem`.

Agreement with SEAL (tests/unit/test_he_ckks_encode.py): before the NTT the coefficients
are SEAL's or differ by 1 where SEAL's and numpy's floating-point FFTs round a ``.5``
differently (both are double-precision transforms of the same values); the NTT is SEAL's
bit for bit; plaintexts decode to the same values within the encoding error, at every
level and scale of both parameter sets. The rounding error (std ~26 in slot units for
values encoded at scale 1, N = 8192) is SEAL's: it comes from rounding the coefficients,
and the FFT's own float error is far below it for the values the engine encodes.

Compiled by numba the first time (``warm_up``, ~1 s, paid when an engine starts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import sealmem
from fedmatch.he.params import ParamSet
from fedmatch.he.slotorder import folded_slots

__all__ = ["NativeEncoder", "native_encoder", "ntt_inverse", "warm_up"]

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
# Coefficients at or above this are refused: rounding to int64 must be exact.
_MAX_COEFF = float(2**62)


def _mulhi(a: Any, b: Any) -> Any:
    """High 64 bits of the 128-bit product of two uint64 (four 32-bit products)."""
    a_lo, a_hi = a & _M32, a >> _S32
    b_lo, b_hi = b & _M32, b >> _S32
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    cross = (lo_lo >> _S32) + (hi_lo & _M32) + lo_hi
    return (hi_lo >> _S32) + (cross >> _S32) + a_hi * b_hi


_mulhi_jit = numba.njit(inline="always", cache=False)(_mulhi)


# The NTTs: SEAL's negacyclic forward transform (Cooley-Tukey, roots in bit-reversed order,
# bit-reversed output: word k is the polynomial at psi^(2 bitrev(k) + 1)) and its inverse
# (Gentleman-Sande with the inverse roots), in place, on every row of ``words`` (moduli x N).
# A stage of gap g pairs word j with j + g inside each group of 2g words, and a group's g
# butterflies share one root. Stages with a gap of 8 or more run each group's butterflies
# over two contiguous runs (:func:`_wide_stage`), which the compiler vectorizes. Below 8 the
# runs are too short for a vector: those stages run across the groups (:func:`_narrow_stage`),
# called with a literal gap. Inlined, the gap is a constant and the compiler vectorizes
# that loop too. The strided views with a run-time stride these stages used to run over were
# not vectorized and took 2/3 of a transform. Per uint32 prime at N = 8192, measured here:
# forward 37 -> 24 us, inverse 45 -> 27 us; the uint64 path ~10% faster (its 128-bit high
# product dominates). The stages are inlined into the four transforms (numba's
# ``inline="always"``) rather than compiled as functions of their own: as many functions
# took ~2 s more to compile per process.

_NARROW = 8  # gaps below this run across groups; N must be at least 2 * _NARROW


def _fly_forward(x: Any, y: Any, w: Any, ws: Any, q: Any, q2: Any) -> Any:
    """Harvey's lazy forward butterfly on uint64 words below 4q < 2^64 (primes below 2^62):
    one correction instead of three, Shoup's quotient from the 128-bit high product."""
    x = x - q2 if x >= q2 else x
    t = y * w - _mulhi_jit(y, ws) * q
    return x + t, x + q2 - t


def _fly_inverse(x: Any, y: Any, w: Any, ws: Any, q: Any, q2: Any) -> Any:
    """The inverse butterfly on uint64 words below 2q, lazy as :func:`_fly_forward`."""
    u = x + y
    d = x + q2 - y
    return (u - q2 if u >= q2 else u), d * w - _mulhi_jit(d, ws) * q


def _fly_forward_small(x: Any, y: Any, w: Any, ws: Any, q: Any, q2: Any) -> Any:
    """:func:`_fly_forward` for primes below 2^30 on uint32 words (below 4q < 2^32): Shoup's
    quotient ``floor(y w' / 2^32)`` needs one 32 x 32 -> 64-bit product."""
    x = x - q2 if x >= q2 else x
    t = np.uint32(y * w - np.uint32((np.uint64(y) * np.uint64(ws)) >> _S32) * q)
    return x + t, x + q2 - t


def _fly_inverse_small(x: Any, y: Any, w: Any, ws: Any, q: Any, q2: Any) -> Any:
    """The inverse butterfly for primes below 2^30 on uint32 words below q, fully reduced:
    the sums stay below 2q < 2^31, and the output is the uint64 path's bit for bit."""
    u = x + y
    d = x + q - y
    t = np.uint32(d * w - np.uint32((np.uint64(d) * np.uint64(ws)) >> _S32) * q)
    return (u - q if u >= q else u), (t - q if t >= q else t)


_fly = numba.njit(cache=False)  # the compiler inlines these calls
_fly_forward_jit = _fly(_fly_forward)
_fly_inverse_jit = _fly(_fly_inverse)
_fly_forward_small_jit = _fly(_fly_forward_small)
_fly_inverse_small_jit = _fly(_fly_inverse_small)
_inline_stage = numba.njit(inline="always", cache=False, boundscheck=False, error_model="numpy")
_compiled = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")


def _wide_stage(fly: Any) -> Any:
    """One stage of gap ``gap >= _NARROW`` with butterfly ``fly``: per group, one root and
    two contiguous runs."""

    def stage(a: Any, w_all: Any, s_all: Any, q: Any, q2: Any, gap: int) -> None:
        m = a.size // (2 * gap)
        for i in range(m):
            w, ws = w_all[m + i], s_all[m + i]
            start = 2 * i * gap
            xs = a[start : start + gap]
            ys = a[start + gap : start + 2 * gap]
            for j in range(gap):
                xs[j], ys[j] = fly(xs[j], ys[j], w, ws, q, q2)

    return _inline_stage(stage)


def _narrow_stage(fly: Any) -> Any:
    """One stage of a gap below ``_NARROW`` with butterfly ``fly``, across the groups: call
    it with a literal gap."""

    def stage(a: Any, w_all: Any, s_all: Any, q: Any, q2: Any, gap: int) -> None:
        m = a.size // (2 * gap)
        for i in range(m):
            w, ws = w_all[m + i], s_all[m + i]
            base = 2 * gap * i
            for j in range(gap):
                k = base + j
                a[k], a[k + gap] = fly(a[k], a[k + gap], w, ws, q, q2)

    return _inline_stage(stage)


_forward_wide = _wide_stage(_fly_forward_jit)
_forward_narrow = _narrow_stage(_fly_forward_jit)
_inverse_wide = _wide_stage(_fly_inverse_jit)
_inverse_narrow = _narrow_stage(_fly_inverse_jit)
_forward_small_wide = _wide_stage(_fly_forward_small_jit)
_forward_small_narrow = _narrow_stage(_fly_forward_small_jit)
_inverse_small_wide = _wide_stage(_fly_inverse_small_jit)
_inverse_small_narrow = _narrow_stage(_fly_inverse_small_jit)


def _times_n_inv(x: Any, ni: Any, nis: Any, q: Any) -> Any:
    """``x * n^-1 mod q``, fully reduced (uint64 words, Shoup's quotient)."""
    t = x * ni - _mulhi_jit(x, nis) * q
    return t - q if t >= q else t


def _times_n_inv_small(x: Any, ni: Any, nis: Any, q: Any) -> Any:
    """:func:`_times_n_inv` on uint32 words (primes below 2^30)."""
    t = np.uint32(x * ni - np.uint32((np.uint64(x) * np.uint64(nis)) >> _S32) * q)
    return t - q if t >= q else t


def _forward_transform(wide: Any, narrow: Any, word: Any) -> Any:
    """The forward NTT with the stages ``wide`` and ``narrow`` on words of type ``word``
    (module comment above): lazy between stages, fully reduced at the end."""

    def transform(words: Any, roots: Any, shoup: Any, moduli: Any) -> None:
        count, n = words.shape
        if n < 2 * _NARROW:
            raise ValueError("the NTT needs at least 16 words a row")
        for limb in range(count):
            q = word(moduli[limb])
            q2 = q + q
            a, w_all, s_all = words[limb], roots[limb], shoup[limb]
            gap = n >> 1
            while gap >= _NARROW:
                wide(a, w_all, s_all, q, q2, gap)
                gap >>= 1
            narrow(a, w_all, s_all, q, q2, 4)
            narrow(a, w_all, s_all, q, q2, 2)
            narrow(a, w_all, s_all, q, q2, 1)
            for j in range(n):
                x = a[j]
                x = x - q2 if x >= q2 else x
                a[j] = x - q if x >= q else x

    return _compiled(transform)


def _inverse_transform(wide: Any, narrow: Any, word: Any, times_n_inv: Any) -> Any:
    """The inverse of :func:`_forward_transform`'s, times ``n_inv``, fully reduced."""

    def transform(
        words: Any, roots: Any, shoup: Any, moduli: Any, n_inv: Any, n_inv_shoup: Any
    ) -> None:
        count, n = words.shape
        if n < 2 * _NARROW:
            raise ValueError("the NTT needs at least 16 words a row")
        for limb in range(count):
            q = word(moduli[limb])
            q2 = q + q
            a, w_all, s_all = words[limb], roots[limb], shoup[limb]
            narrow(a, w_all, s_all, q, q2, 1)
            narrow(a, w_all, s_all, q, q2, 2)
            narrow(a, w_all, s_all, q, q2, 4)
            gap = _NARROW
            while gap < n:
                wide(a, w_all, s_all, q, q2, gap)
                gap <<= 1
            ni, nis = n_inv[limb], n_inv_shoup[limb]
            for j in range(n):
                a[j] = times_n_inv(a[j], ni, nis, q)

    return _compiled(transform)


# uint64 words, primes below 2^62 (words below 4q < 2^64 between the forward stages, 2q
# between the inverse ones).
_forward_jit = _forward_transform(_forward_wide, _forward_narrow, np.uint64)
_inverse_jit = _inverse_transform(_inverse_wide, _inverse_narrow, np.uint64, _fly(_times_n_inv))
# uint32 words, primes below 2^30 (SEAL's encode spends ~100 us per prime at N = 8192 on its
# forward NTT, this ~24 us); the inverse fully reduced at every stage, so its words are the
# uint64 path's bit for bit.
_forward_small_jit = _forward_transform(_forward_small_wide, _forward_small_narrow, np.uint32)
_inverse_small_jit = _inverse_transform(
    _inverse_small_wide, _inverse_small_narrow, np.uint32, _fly(_times_n_inv_small)
)
# Primes below this take the uint32 path (4q must stay below 2^32).
_SMALL_PRIME = 1 << 30


def _reduce_small(coeffs: Any, moduli: Any, inverses: Any, out: Any) -> None:
    """``out[l, j] = coeffs[j] mod q_l`` (int64 coefficients below 2^62 in magnitude,
    primes below 2^30) without an integer division: the quotient from a double product is
    off by at most one (|c| / q < 2^38, relative error 2^-52), corrected twice each way."""
    count, n = out.shape
    for limb in range(count):
        q = np.int64(moduli[limb])
        inverse = inverses[limb]
        row = out[limb]
        for j in range(n):
            c = coeffs[j]
            r = c - np.int64(np.float64(c) * inverse) * q
            r = r + q if r < 0 else r
            r = r + q if r < 0 else r
            r = r - q if r >= q else r
            r = r - q if r >= q else r
            row[j] = np.uint32(r)


_reduce_small_jit = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")(
    _reduce_small
)


def _bitrev(i: int, bits: int) -> int:
    return int(format(i, f"0{bits}b")[::-1], 2) if bits else 0


def _shoup(values: list[int], q: int) -> list[int]:
    return [(v << 64) // q for v in values]


class NTTTables:
    """The NTT tables of one level (its data primes), from SEAL's own roots."""

    def __init__(self, moduli: list[int], psis: list[int], degree: int) -> None:
        self._psis = list(psis)
        self._degree = degree
        bits = degree.bit_length() - 1
        rev = [_bitrev(i, bits) for i in range(degree)]
        self.moduli = np.array(moduli, dtype=np.uint64)
        roots, inv_roots, shoup, inv_shoup, n_inv, n_inv_shoup = [], [], [], [], [], []
        for q, psi in zip(moduli, psis, strict=True):
            powers = [1] * degree
            for i in range(1, degree):
                powers[i] = powers[i - 1] * psi % q
            psi_inv = pow(psi, -1, q)
            inv_powers = [1] * degree
            for i in range(1, degree):
                inv_powers[i] = inv_powers[i - 1] * psi_inv % q
            # Forward: root_powers[i] = psi^bitrev(i). Inverse (Gentleman-Sande, stage with
            # m groups reads index m + i): psi^-(bitrev(m + i)).
            forward = [powers[rev[i]] for i in range(degree)]
            inverse = [inv_powers[rev[i]] for i in range(degree)]
            roots.append(forward)
            inv_roots.append(inverse)
            shoup.append(_shoup(forward, q))
            inv_shoup.append(_shoup(inverse, q))
            ninv = pow(degree, -1, q)
            n_inv.append(ninv)
            n_inv_shoup.append((ninv << 64) // q)
        self.roots = np.array(roots, dtype=np.uint64)
        self.shoup = np.array(shoup, dtype=np.uint64)
        self.inv_roots = np.array(inv_roots, dtype=np.uint64)
        self.inv_shoup = np.array(inv_shoup, dtype=np.uint64)
        self.n_inv = np.array(n_inv, dtype=np.uint64)
        self.n_inv_shoup = np.array(n_inv_shoup, dtype=np.uint64)
        self.small = max(moduli) < _SMALL_PRIME
        if self.small:
            self.roots32 = self.roots.astype(np.uint32)
            self.inverses = 1.0 / self.moduli.astype(np.float64)
            self.shoup32 = np.array(
                [[(w << 32) // q for w in row] for row, q in zip(roots, moduli, strict=True)],
                dtype=np.uint32,
            )
            self.inv_roots32 = self.inv_roots.astype(np.uint32)
            self.inv_shoup32 = np.array(
                [[(w << 32) // q for w in row] for row, q in zip(inv_roots, moduli, strict=True)],
                dtype=np.uint32,
            )
            self.n_inv32 = self.n_inv.astype(np.uint32)
            self.n_inv_shoup32 = np.array(
                [(v << 32) // q for v, q in zip(n_inv, moduli, strict=True)], dtype=np.uint32
            )

    def row(self, index: int) -> NTTTables:
        """The tables of the level's prime ``index`` alone."""
        return NTTTables([int(self.moduli[index])], [self._psis[index]], self._degree)


class NativeEncoder:
    """Encodes ``slots`` complex values at a level and scale into an NTT-form plaintext
    equal to SEAL's ``CKKSEncoder.encode`` up to the rounding of ``.5`` (module doc)."""

    def __init__(self, params: ParamSet) -> None:
        self._params = params
        ctx = params.context()
        self._ctx = ctx
        self._seal = seal.CKKSEncoder(ctx)
        degree = params.poly_modulus_degree
        self._degree, self._half = degree, degree // 2
        # Slot i in the half-length transform: its entry, and whether it is the conjugate.
        self._position, self._conjugate = folded_slots(degree)
        j = np.arange(self._half)
        # c_j = zeta^-j * fft(V)_j / (N / 2).
        self._twist = np.exp(-1j * np.pi * j / degree) / self._half
        self._levels: dict[tuple[int, ...], NTTTables] = {}
        self._lock = threading.Lock()

    def _level(self, parms_id: list[int]) -> NTTTables:
        key = tuple(int(w) for w in parms_id)
        level = self._levels.get(key)
        if level is not None:
            return level
        with self._lock:
            level = self._levels.get(key)
            if level is None:
                data = self._ctx.get_context_data(list(key))
                if data is None:
                    raise HEError("parms_id is not a level of this parameter set")
                moduli = [m.value() for m in data.parms().coeff_modulus()]
                level = NTTTables(moduli, self._roots_of_seal(list(key), len(moduli)), self._degree)
                self._levels[key] = level
        return level

    def _roots_of_seal(self, parms_id: list[int], count: int) -> list[int]:
        """SEAL's psi per prime: word 0 of its NTT of the polynomial X (psi^1)."""
        coeffs = np.zeros(self._degree)
        coeffs[1] = 1.0
        plain = seal.Plaintext()
        self._seal.encode(self.slot_values(coeffs).tolist(), parms_id, 1.0, plain)
        words = np.empty((count, self._degree), dtype=np.uint64)
        sealmem.read_plaintext(plain, words)
        return [int(w) for w in words[:, 0]]

    def tables(self, parms_id: list[int]) -> NTTTables:
        """The NTT tables of a level (the key level included), built once."""
        return self._level(parms_id)

    def slot_values(self, coeffs: npt.NDArray[np.float64]) -> npt.NDArray[np.complex128]:
        """The slot values of the real polynomial ``coeffs`` (N of them, scale 1): what
        SEAL's decode gives; the inverse of :meth:`coefficients`."""
        half = self._half
        c = coeffs[:half] + 1j * coeffs[half:]
        values = np.fft.ifft(c / self._twist)  # V = (N/2) ifft(c zeta^j)
        out = values[self._position]
        chosen: npt.NDArray[np.complex128] = np.where(self._conjugate, np.conj(out), out)
        return chosen

    def coefficients(
        self, values: npt.NDArray[np.complex128], scale: float
    ) -> npt.NDArray[np.int64]:
        """The rounded coefficients (N, int64) of ``values`` (``slots`` complex) at
        ``scale``, before reduction and NTT."""
        values = np.asarray(values, dtype=np.complex128)
        if values.shape != (self._half,):
            raise HEError(f"a plaintext encodes {self._half} slot values")
        spread = np.empty(self._half, dtype=np.complex128)
        spread[self._position] = np.where(self._conjugate, np.conj(values), values)
        c = np.fft.fft(spread) * (self._twist * scale)
        out = np.empty(self._degree, dtype=np.float64)
        np.rint(c.real, out=out[: self._half])
        np.rint(c.imag, out=out[self._half :])
        if not np.isfinite(out).all() or np.abs(out).max(initial=0.0) >= _MAX_COEFF:
            raise HEError("encoded values are too large for the native encoder")
        return out.astype(np.int64)

    def ntt_words(
        self, coeffs: npt.NDArray[np.int64], parms_id: list[int]
    ) -> npt.NDArray[np.uint64]:
        """``coeffs`` reduced mod each prime of the level and NTT-transformed (moduli x N)."""
        level = self._level(parms_id)
        if level.small:
            return self.ntt_words32(coeffs, parms_id).astype(np.uint64)
        residues = np.mod(coeffs[None, :], level.moduli.astype(np.int64)[:, None])
        words = residues.astype(np.uint64)
        _forward_jit(words, level.roots, level.shoup, level.moduli)
        return words

    def ntt_words32(
        self, coeffs: npt.NDArray[np.int64], parms_id: list[int]
    ) -> npt.NDArray[np.uint32]:
        """:meth:`ntt_words` as uint32, at a :meth:`fast` level only (HEError otherwise)."""
        level = self._level(parms_id)
        if not level.small:
            raise HEError("the uint32 NTT needs primes below 2^30")
        small = np.empty((level.moduli.size, self._degree), dtype=np.uint32)
        _reduce_small_jit(coeffs, level.moduli, level.inverses, small)
        _forward_small_jit(small, level.roots32, level.shoup32, level.moduli)
        return small

    def fast(self, parms_id: list[int]) -> bool:
        """Whether this encoder beats SEAL's at ``parms_id``: only with primes below 2^30
        (the uint32 NTT). The default set's 50-60-bit primes take the 128-bit path, ~3x
        slower than SEAL (measured): the engine keeps SEAL's encoder there."""
        return self._level(parms_id).small

    def prepare(self) -> None:
        """Build the tables of every level now (~50 ms a level), not in a query."""
        data = self._ctx.first_context_data()
        while data is not None:
            self._level(list(data.parms_id()))
            data = data.next_context_data()

    def encode(
        self,
        values: npt.NDArray[np.complex128],
        parms_id: list[int],
        scale: float,
        plain: seal.Plaintext | None = None,
    ) -> seal.Plaintext:
        """``values`` encoded at ``parms_id`` and ``scale`` into ``plain`` (or a new
        plaintext), as SEAL's ``encode(values, parms_id, scale, plain)`` would."""
        words = self.ntt_words(self.coefficients(values, scale), parms_id)
        out = seal.Plaintext() if plain is None else plain
        # SEAL shapes the plaintext (level, size, NTT form, scale); the words are replaced.
        self._seal.encode(0.0, parms_id, scale, out)
        sealmem.write_plaintext(out, self._ctx, words.reshape(-1))
        return out


def ntt_inverse(
    encoder: NativeEncoder,
    words: npt.NDArray[np.uint64],
    parms_id: list[int],
    limbs: Sequence[int] | None = None,
) -> npt.NDArray[np.uint64]:
    """The coefficients (mod each prime) of NTT-form ``words``: what SEAL's inverse NTT
    gives. ``words`` has one row per prime of the level, or with ``limbs`` one row per
    listed prime (index into the level's primes; a prime may repeat). Primes below 2^30
    take the uint32 transform (~40 us a row at N = 8192), others the uint64 one."""
    level = encoder._level(parms_id)
    rows = list(range(level.moduli.size)) if limbs is None else list(limbs)
    if words.shape != (len(rows), encoder._degree):
        raise HEError("words do not have one row per selected prime")
    if level.small:
        small = np.array(words, dtype=np.uint32)
        _inverse_small_jit(
            small, level.inv_roots32[rows], level.inv_shoup32[rows], level.moduli[rows],
            level.n_inv32[rows], level.n_inv_shoup32[rows],
        )  # fmt: skip
        return small.astype(np.uint64)
    out = np.array(words, dtype=np.uint64, copy=True)
    _inverse_jit(
        out, level.inv_roots[rows], level.inv_shoup[rows], level.moduli[rows],
        level.n_inv[rows], level.n_inv_shoup[rows],
    )  # fmt: skip
    return out


_ENCODERS: dict[str, NativeEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def native_encoder(params: ParamSet) -> NativeEncoder:
    """This process's encoder for ``params`` (built once: the tables cost ~50 ms a level)."""
    encoder = _ENCODERS.get(params.name)
    if encoder is None:
        with _ENCODERS_LOCK:
            encoder = _ENCODERS.get(params.name)
            if encoder is None:
                encoder = NativeEncoder(params)
                _ENCODERS[params.name] = encoder
    return encoder


_compile_seconds: float | None = None


def warm_up() -> float:
    """Compile the NTT in this process (once); returns how long that took."""
    global _compile_seconds
    if _compile_seconds is None:
        started = time.perf_counter()
        q = np.array([17], dtype=np.uint64)
        width = 2 * _NARROW  # the shortest row the transforms take
        words = np.zeros((1, width), dtype=np.uint64)
        table = np.zeros((1, width), dtype=np.uint64)
        _forward_jit(words, table, table, q)
        _inverse_jit(words, table, table, q, q, q)
        small, table32 = (
            np.zeros((1, width), dtype=np.uint32),
            np.zeros((1, width), dtype=np.uint32),
        )
        _forward_small_jit(small, table32, table32, q)
        ones32 = np.ones(1, dtype=np.uint32)
        _inverse_small_jit(small, table32, table32, q, ones32, ones32)
        _reduce_small_jit(np.zeros(width, dtype=np.int64), q, np.ones(1), small)
        _compile_seconds = time.perf_counter() - started
    return _compile_seconds
