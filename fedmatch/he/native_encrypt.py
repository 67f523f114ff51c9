"""Fresh public-key encryptions of zero below the top level, computed without SEAL's
``Encryptor``: the re-randomization of the kernel set's result blocks.

The engine re-randomizes every result block by adding a fresh public-key encryption of its
flood noise (:meth:`fedmatch.he.engine.PackedBase._rerandomize`). SEAL's ``encrypt`` at a
level below the top does what :meth:`ZeroEncryptor.encrypt_zero` does here (SEAL 4, ``Encryptor::
encrypt_zero_internal`` and ``util::encrypt_zero_asymmetric``): it encrypts zero one level
*up* and rescales by that level's last prime (not from the key level: one level only).
At the kernel set's result level {q0, q1} that is ~2.5 ms per block, ~3.0 ms with the
flood's encode and the addition (measured here, load ~2-3: sampling with Blake2, three
NTTs of ``u``, six of the errors, the rescale's two inverse and four forward NTTs, on
64-bit words). Here the same function runs on the uint32 NTTs of
:mod:`fedmatch.he.ckks_encode` (primes below 2^30) with the engine's CSPRNG
(:mod:`fedmatch.he.rng`), ~0.95 ms per block with the flood folded in (five forward NTTs,
two inverse ones: the flood and the errors share the rescale's correction).

The encryption, at a level with primes ``q_0 .. q_(L-1)`` and ``q_L`` the next prime up:

1. The public key ``pk = (pk0, pk1)`` is SEAL's ciphertext of size 2 at the key level, in
   NTT form, with ``pk0 + pk1 * s = -e`` modulo the key-level modulus (``e`` the key's
   error, SEAL's ``-(a s + e), a``). Modulo any product of its primes, in particular
   ``q_0 .. q_L``, the same holds, so its first ``L + 1`` rows are a public key of the
   level above (SEAL uses exactly these rows; tests/unit/test_he_native_encrypt.py checks
   the relation with the requester's secret). Its words are read once per key
   (:class:`ZeroEncryptor`, cached by the engine per key id, as its SEAL encryptors).
2. ``u`` uniform ternary (each of -1, 0, 1 with probability 1/3: SEAL's
   ``sample_poly_ternary``), ``e0, e1`` from SEAL's error distribution. tenseal 0.3.18's
   SEAL is built without ``SEAL_USE_GAUSSIAN_NOISE``, so that is ``sample_poly_cbd``: a
   centered binomial, the difference of the popcounts of two 21-bit words (variance 10.5,
   sigma 3.24, |e| <= 21), not the clipped normal (sigma 3.2, max deviation 19.2) of older
   SEAL. Checked on the library's own keys: a key's error has variance 10.54 and 12.2% of
   zeros (the binomial's: 10.5 and 12.2%; a truncated normal would have ~24%). Every bit
   comes from the CSPRNG stream, fresh per call: ``u`` by rejection from bytes (255 is
   dropped, the rest taken mod 3: exact), each error coefficient from six bytes.
3. ``c_j = pk_j * u + e_j`` modulo ``q_0 .. q_L`` (NTT form; SEAL adds the errors in NTT
   form to every row, here they enter through the rescale's correction, the same sum), then SEAL's
   rescale by ``q_L`` (``RNSTool::divide_and_round_q_last_ntt_inplace``): ``r`` = the last
   row out of NTT form, centred as SEAL centres it (``((x + floor(q_L / 2)) mod q_L) -
   floor(q_L / 2)``), and ``c_j' = (c_j - r) * q_L^-1`` modulo each ``q_i``, ``i < L``. The
   errors and the flood ride in ``r``'s correction: ``c_j' = (pk_j u - NTT(r - e_j
   [- q_L m for j = 0])) q_L^-1``, one forward NTT per row instead of three: the result
   equals SEAL's rescale of ``(pk0 u + e0 + q_L m, pk1 u + e1)`` bit for bit (tested
   against ``Evaluator.rescale_to_next``), that is SEAL's encryption of zero plus the
   flood ``m`` encoded at the ciphertext's scale (:mod:`fedmatch.he.ckks_encode`).

Security. Given the same ``u, e0, e1``, the output is SEAL's ``encrypt`` output (its
function of them, bit for bit); ``u`` and the errors have SEAL's distributions, drawn from
a CSPRNG (AES-256-CTR rekeyed from the OS every MiB, :mod:`fedmatch.he.rng`) and fresh per
block, never reused or derived from anything the requester sees. So a re-randomized block
is what SEAL's path gave: the block plus a fresh RLWE encryption of zero under the
requester's bound public key (``pk1`` is the federation's reference string, so ``pk1 u +
e1`` is an RLWE sample whose secret ``u`` only the node ever held), with noise of SEAL's
shape after its modulus switch: per record, in slot units, ``Re(rho0(z) + rho1(z) s(z)) /
Delta`` with ``rho_j`` the rescale's rounding (within +-1/2 per coefficient, independent
as in :mod:`fedmatch.he.resultfmt`'s derivation: ``c_j`` is pseudo-random mod ``q_L``), plus
``(e0 + e1 s - u e)(z) / (q_L Delta)`` (below 2^-3 slot units). By Hoeffding it is below
``sqrt((N / 2) (1 + S^2) ln(2 / p) / 2) / Delta`` except with probability ``p`` per record
(:func:`noise_bound`; S = 400, p = 2^-40: 2^10.6 at the kernel set's result scale 2^6),
inside the 2^11 the compact format's sign bound allows (:mod:`fedmatch.he.resultfmt`) and
far below the uniform flood of 2^16 in slot units, which dominates both paths. The node
needs no secret to do this and keeps none: ``u`` and the errors are dropped after use.

Why one level up and not ``(pk0 u + e0, pk1 u + e1)`` at the result level directly (two
NTTs less): there the noise ``e0 + e1 s - u e`` is not divided by ``q_L``. Per record it
has a std of ~2^8.4 slot units at the kernel set's scale 2^6 and ~2^10 at the slots where
``|s(z)|`` is largest, a 2^-40 tail near 2^13: beyond the 2^11 the compact format's sign
bound allows (it would move the smallest resolved ``|s - t|`` from 9.95e-5 to ~1.05e-4).

Only levels whose next level up has primes below 2^30 are supported (:meth:`fast`): the
kernel set below the top. The default set keeps SEAL's encryptor (its 50-60-bit primes
took the native encoder ~3x SEAL's time), and so does the kernel set's top level, whose
level up is the key level with its 60-bit special prime.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import ckks_encode, rng, sealmem
from fedmatch.he.params import ParamSet

__all__ = [
    "ZeroEncryptor",
    "noise_bound",
    "rescale_correction",
    "sample_cbd",
    "sample_ternary",
    "warm_up",
]

_S32 = np.uint64(32)
# The uint32 NTTs of fedmatch.he.ckks_encode take primes below this.
_SMALL_PRIME = 1 << 30
# SEAL's sample_poly_cbd: two words of 21 random bits per coefficient (8 + 8 + 5).
_CBD_BYTES = 6


def sample_ternary(n: int) -> npt.NDArray[np.int64]:
    """``n`` coefficients uniform in {-1, 0, 1} from the CSPRNG stream: bytes below 255
    taken mod 3 (255 = 3 * 85 of them, so exactly uniform), 255 dropped."""
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        want = n - filled
        data = rng.stream().bytes_array(want + want // 64 + 16)
        kept = data[data < 255][:want]
        out[filled : filled + kept.size] = kept % 3
        filled += kept.size
    out -= 1
    return out


def sample_cbd(rows: int, n: int) -> npt.NDArray[np.int64]:
    """``rows x n`` error coefficients as SEAL's ``sample_poly_cbd``: popcount of 21 random
    bits minus popcount of 21 more (centered binomial, variance 10.5, |e| <= 21)."""
    out = np.empty((rows, n), dtype=np.int64)
    _cbd_jit(rng.stream().bytes_array(rows * n * _CBD_BYTES), _POPCOUNT, out)
    return out


# Bits set in each byte value.
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)


def _cbd(data: Any, popcount: Any, out: Any) -> None:
    """Six bytes per coefficient: the first three's 21 low bits count +1, the last three's
    -1 (bytes 2 and 5 keep their 5 low bits), as SEAL's ``cbd``."""
    rows, n = out.shape
    for j in range(rows):
        for k in range(n):
            b = (j * n + k) * 6
            plus = popcount[data[b]] + popcount[data[b + 1]] + popcount[data[b + 2] & 0x1F]
            minus = popcount[data[b + 3]] + popcount[data[b + 4]] + popcount[data[b + 5] & 0x1F]
            out[j, k] = plus - minus


def _key_products(pk: Any, pk_shoup: Any, u: Any, moduli: Any, out: Any) -> None:
    """``out[j, l] = pk[j, l] * u[l] mod q_l`` (uint32, Shoup with the key's precomputed
    quotients ``floor(pk 2^32 / q)``: one 32 x 32 -> 64-bit product and one correction,
    ``min(t, t - q)``, which wraps exactly when ``t < q``)."""
    parts, limbs, n = out.shape
    for j in range(parts):
        for limb in range(limbs):
            q = np.uint32(moduli[limb])
            w, ws, x, o = pk[j, limb], pk_shoup[j, limb], u[limb], out[j, limb]
            for k in range(n):
                hi = np.uint32((np.uint64(x[k]) * np.uint64(ws[k])) >> _S32)
                t = np.uint32(x[k] * w[k] - hi * q)
                o[k] = min(t, np.uint32(t - q))


def _correction(last: Any, e: Any, m: Any, q: Any, out: Any) -> None:
    """``out[j] = r_j - e_j (- q m for j = 0)``: ``r_j`` the last prime's coefficients of
    ``pk_j u + e_j`` centred as SEAL's rescale centres them (``((x + h) mod q) - h``,
    ``h = floor(q / 2)``, q odd: ``x - q`` for ``x > h``)."""
    parts, n = out.shape
    half = q >> 1
    for j in range(parts):
        for k in range(n):
            x = np.int64(last[j, k]) + e[j, k]
            x = x + q if x < 0 else x
            x = x - q if x >= q else x
            r = x - q if x > half else x
            out[j, k] = r - e[j, k] - (q * m[k] if j == 0 else 0)


def _finish(c: Any, w: Any, inv: Any, inv_shoup: Any, moduli: Any, target: Any) -> None:
    """``target[j, i] = (target[j, i] + (c[j, i] - w[j, i]) * inv_i) mod q_i``: the
    rescale's last step (``inv_i = q_L^-1 mod q_i``, Shoup) and the sum with the block
    (all uint32, each word below its modulus)."""
    parts, limbs, n = target.shape
    for j in range(parts):
        for i in range(limbs):
            q = np.uint32(moduli[i])
            v, vs = np.uint32(inv[i]), np.uint64(inv_shoup[i])
            x, y, o = c[j, i], w[j, i], target[j, i]
            for k in range(n):
                d = np.uint32(x[k] + q - y[k])  # below 2q < 2^31
                d = min(d, np.uint32(d - q))
                t = np.uint32(d * v - np.uint32((np.uint64(d) * vs) >> _S32) * q)
                t = min(t, np.uint32(t - q))
                total = np.uint32(o[k] + t)
                o[k] = min(total, np.uint32(total - q))


_jit = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")
_cbd_jit = _jit(_cbd)
_key_products_jit = _jit(_key_products)
_correction_jit = _jit(_correction)
_finish_jit = _jit(_finish)


@dataclass(frozen=True)
class _Switch:
    """A level (primes ``q_0 .. q_(L-1)``) and what the rescale from the level above
    needs: its parms_id, ``q_L``, and ``q_L^-1 mod q_i`` with Shoup quotients."""

    parms_id: list[int]
    up_id: list[int]
    moduli: npt.NDArray[np.uint64]  # q_0 .. q_L
    last: int
    inv: npt.NDArray[np.uint32]
    inv_shoup: npt.NDArray[np.uint32]


class ZeroEncryptor:
    """Fresh encryptions of zero under one requester's public key, native (module doc)."""

    def __init__(self, params: ParamSet, public_key: seal.PublicKey) -> None:
        ctx = params.context()
        self._params, self._ctx = params, ctx
        self._encoder = ckks_encode.native_encoder(params)
        self._evaluator = seal.Evaluator(ctx)
        self._degree = params.poly_modulus_degree
        key = public_key.data()
        key_level = ctx.key_context_data()
        if (
            key.size() != 2
            or not key.is_ntt_form()
            or list(key.parms_id()) != list(key_level.parms_id())
        ):
            raise HEError("public key is not a size-2 NTT-form ciphertext at the key level")
        words = np.empty((2, key.coeff_modulus_size(), self._degree), dtype=np.uint64)
        sealmem.read_ciphertext(key, words)
        moduli = np.array([m.value() for m in key_level.parms().coeff_modulus()], dtype=np.uint64)
        if bool((words >= moduli[None, :, None]).any()):
            raise HEError("public key has a word beyond its modulus")
        # Only the leading primes below 2^30 are ever used (fast()); their rows fit uint32.
        rows = int(np.cumprod(moduli < _SMALL_PRIME).sum())
        self._pk = words[:, :rows].astype(np.uint32)
        self._pk_shoup = ((words[:, :rows] << _S32) // moduli[None, :rows, None]).astype(np.uint32)
        self._switches: dict[tuple[int, ...], _Switch | None] = {}
        self._lock = threading.Lock()

    def _switch(self, parms_id: list[int]) -> _Switch | None:
        """The level's rescale data, or None if the native path does not cover it."""
        key = tuple(int(w) for w in parms_id)
        if key in self._switches:
            return self._switches[key]
        with self._lock:
            data = self._ctx.get_context_data(list(key))
            if data is None:
                raise HEError("parms_id is not a level of this parameter set")
            up = data.prev_context_data()
            switch = None
            if up is not None:
                moduli = [int(m.value()) for m in up.parms().coeff_modulus()]
                if len(moduli) <= self._pk.shape[1] and self._encoder.fast(list(up.parms_id())):
                    last = moduli[-1]
                    inv = [pow(last, -1, q) for q in moduli[:-1]]
                    switch = _Switch(
                        parms_id=list(key),
                        up_id=list(up.parms_id()),
                        moduli=np.array(moduli, dtype=np.uint64),
                        last=last,
                        inv=np.array(inv, dtype=np.uint32),
                        inv_shoup=np.array(
                            [(v << 32) // q for v, q in zip(inv, moduli, strict=False)],
                            dtype=np.uint32,
                        ),
                    )
            self._switches[key] = switch
        return switch

    def fast(self, parms_id: list[int]) -> bool:
        """Whether encryptions at ``parms_id`` run natively (module doc, last paragraph)."""
        return self._switch(parms_id) is not None

    def add_to(self, ct: seal.Ciphertext, flood: npt.NDArray[np.complex128] | None = None) -> None:
        """Add to ``ct`` (size 2, NTT form, at a :meth:`fast` level) a fresh encryption of
        ``flood`` (slot values, encoded at ``ct``'s scale; None: of zero)."""
        switch = self._switch(list(ct.parms_id()))
        if switch is None or ct.size() != 2 or not ct.is_ntt_form():
            raise HEError("ciphertext is not a size-2 NTT-form one at a native level")
        words = np.empty((2, switch.inv.size, self._degree), dtype=np.uint32)
        sealmem.read_ciphertext(ct, words)
        self._encrypt_into(switch, ct.scale, flood, words)
        sealmem.write_ciphertext(ct, self._ctx, words.astype(np.uint64))

    def encrypt_zero(self, parms_id: list[int], scale: float) -> seal.Ciphertext:
        """A fresh encryption of zero at ``parms_id`` (a :meth:`fast` level) and ``scale``."""
        switch = self._switch(parms_id)
        if switch is None:
            raise HEError("no native encryption at this level")
        ct = seal.Ciphertext(self._ctx, parms_id, 2)
        ct.resize(self._ctx, parms_id, 2)
        # SEAL shapes it (NTT form: the transform refuses a transparent ciphertext, hence
        # the ones); the words are then replaced.
        sealmem.write_ciphertext(
            ct, self._ctx, np.ones((2, switch.inv.size, self._degree), np.uint64)
        )
        self._evaluator.transform_to_ntt_inplace(ct)
        words = np.zeros((2, switch.inv.size, self._degree), dtype=np.uint32)
        self._encrypt_into(switch, scale, None, words)
        sealmem.write_ciphertext(ct, self._ctx, words.astype(np.uint64))
        ct.scale = scale
        return ct

    def _encrypt_into(
        self,
        switch: _Switch,
        scale: float,
        flood: npt.NDArray[np.complex128] | None,
        target: npt.NDArray[np.uint32],
    ) -> None:
        """``target`` (2 x L x N words at the level) plus a fresh encryption of ``flood``."""
        n, count = self._degree, switch.moduli.size
        u = self._encoder.ntt_words32(sample_ternary(n), switch.up_id)
        c = np.empty((2, count, n), dtype=np.uint32)
        _key_products_jit(self._pk[:, :count], self._pk_shoup[:, :count], u, switch.moduli, c)
        m = np.zeros(n, dtype=np.int64)
        if flood is not None:
            m = self._encoder.coefficients(flood, scale)
            if float(np.abs(m).max(initial=0)) * switch.last >= 2.0**62:
                raise HEError("flood too large for the native encryption")
        w = rescale_correction(self._encoder, c[:, -1], switch, sample_cbd(2, n), m)
        _finish_jit(c[:, :-1], w, switch.inv, switch.inv_shoup, switch.moduli, target)


def rescale_correction(
    encoder: ckks_encode.NativeEncoder,
    last: npt.NDArray[np.uint32],
    switch: _Switch,
    e: npt.NDArray[np.int64],
    m: npt.NDArray[np.int64],
) -> npt.NDArray[np.uint32]:
    """NTT(r_j - e_j [- q_L m for j = 0]) at the level (2 x L x N), from the last prime's
    NTT rows of ``pk_j u`` (2 x N): what the rescale subtracts (module doc, step 3)."""
    x = ckks_encode.ntt_inverse(encoder, last.astype(np.uint64), switch.up_id, [-1, -1])
    r = np.empty(e.shape, dtype=np.int64)
    _correction_jit(x, e, m, np.int64(switch.last), r)
    return np.stack([encoder.ntt_words32(r[j], switch.parms_id) for j in range(2)])


def noise_bound(params: ParamSet, scale: float, secret_norm: float, p: float = 2.0**-40) -> float:
    """Per record, in slot units at ``scale``: the bound (exceeded with probability at most
    ``p``) on the decryption noise of an encryption of zero made one level up and
    rescaled, SEAL's and this module's alike (module doc; ``secret_norm`` bounds
    |s(z)| over the slots)."""
    # Hoeffding: rounding terms of range 1 with sum of squared weights (N / 2)(1 + S^2);
    # 1/8 covers the errors' own share (module doc).
    spread = (params.poly_modulus_degree / 2) * (1.0 + secret_norm**2)
    return math.sqrt(spread * math.log(2.0 / p) / 2.0) / scale + 0.125


_compile_seconds: float | None = None


def warm_up() -> float:
    """Compile the products and the rescale's last step in this process (once)."""
    global _compile_seconds
    if _compile_seconds is None:
        started = time.perf_counter()
        q = np.array([17, 19], dtype=np.uint64)
        small = np.zeros((2, 1, 2), dtype=np.uint32)
        e = np.zeros((2, 2), dtype=np.int64)
        _cbd_jit(np.zeros(24, dtype=np.uint8), _POPCOUNT, e)
        _key_products_jit(small, small, small[0], q, small)
        _correction_jit(np.zeros((2, 2), dtype=np.uint64), e, e[0], np.int64(17), e)
        _finish_jit(small, small, small[0, 0], small[0, 0], q, small.copy())
        _compile_seconds = time.perf_counter() - started
    return _compile_seconds
