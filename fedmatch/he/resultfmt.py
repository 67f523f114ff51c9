"""The compact result format: a result block as the rounded high bits of its ciphertext.

A node's result block (:mod:`fedmatch.he.engine`) is a CKKS ciphertext ``(c0, c1)`` at the
result level (modulus ``Q``: one 60-bit prime for the default set, two 29-bit primes for the
kernel set) whose slots the requester only reads the signs of. SEAL's own serialization
sends all of ``c0`` and ``c1`` (16.0 B per record for the default set, 17.7 for the kernel
set, measured); this format sends what a decryption needs:

- The node takes the ciphertext (re-randomized, as before) out of NTT form, composes its
  residues to ``Z_Q`` (CRT, for two primes), and switches both polynomials to power-of-two
  moduli: ``x1 = round(c1 * 2^K1 / Q)`` and ``x0 = round(c0 * 2^K0 / Q)``, with
  ``K1 = K0 + d`` (``c1`` is kept ``d`` bits finer: its error is multiplied by the secret).
  Only the low ``B`` bits of ``x1`` and ``B - d`` of ``x0`` are sent: the decryption
  ``y = x0 * 2^d + x1 * s`` is computed modulo ``2^B``, which holds every honest message
  (the top bits no value uses are dropped: none for the default set, two for the kernel set).
- The requester computes ``y mod 2^B`` exactly (a negacyclic product by its ternary secret,
  in exact floating-point transforms of N/2 points, one pair per 26-bit chunk of ``x1``:
  see ``_folded``), centres it and decodes the slots with CKKS's canonical
  embedding (SEAL's slot order, checked against SEAL's decoder in the tests):
  ``slots = embed(y) * (Q / 2^K1) / scale``.

Wire format: a 4-byte header (:data:`FORMAT_TAG`, 2 bytes: format byte and version; then
the two widths, one byte each), then ``x0`` (``B - d`` bits per coefficient) and ``x1``
(``B`` bits), big-endian bit-packed. The default and kernel sets: 43 and 52 bits, 97,284
bytes per block of 8,192 records, 11.875 B per record; the narrow set (masks over 5 bits
instead of 17, see the end of this doc): 27 and 36 bits, 64,516 bytes, 7.875 B per record.
Measured per block: the node's compress ~0.6-0.9 ms with SEAL's inverse NTT and numpy,
~0.45 ms for the kernel sets' 29-bit primes in one native pass
(:mod:`fedmatch.he.native_compress`; SEAL's save: 0.5 ms default, 3.5 ms kernel), the
requester's expand, decrypt and decode ~0.65 ms (~1 ms with transforms of 2N points and
bit-by-bit unpacking, measured). A parser refuses any other size, tag
or width before any work (:class:`HEError`); whatever bytes pass decode to some slots,
which the requester's plausibility check then judges, so the work per block is
bounded.

Noise bound (the derivation the widths rest on)
-----------------------------------------------

Write ``D0 = Q / 2^K0``, ``D1 = Q / 2^K1`` (the rounding steps) and ``Delta`` the result
scale. Rounding leaves ``x_i = c_i * 2^K / Q + e_i`` with ``|e_i| <= 1/2`` per coefficient;
``y = (m + kQ) 2^K1 / Q + 2^d e0 + e1 * s``, and ``kQ 2^K1 / Q = k 2^K1`` vanishes modulo
``2^B``. The canonical embedding is a ring homomorphism, so a slot's error is
``(D0 * e0^(z) + D1 * e1^(z) * s^(z)) / Delta`` at that slot's root ``z``. Its real part (one
record) is ``sum_i D0 e0_i cos(a_i) + D1 |s^(z)| e1_i cos(b_i)`` over the N = 8192
coefficients, with ``sum cos^2 = N / 2`` exactly for these roots. The ``c_i`` are
pseudo-random modulo ``Q`` (a fresh public-key encryption was added), so the ``e_i`` are
independent, zero-mean and bounded: Hoeffding's inequality bounds a record's error by

    E = sqrt((N / 2) * (D0^2 + S^2 D1^2) * ln(2 / p) / 2) / Delta

except with probability ``p`` = 2^-40 per record, where ``S`` bounds ``|s^(z)|`` over the
slots. SEAL's secret is uniform ternary (~2N/3 nonzero coefficients): ``|s^(z)|`` has rms
sqrt(2N/3) = 74, its maximum over the 4,096 slots is ~220 (290 at the 99.9th percentile of
2,000 keys, 303 at most); :data:`SECRET_NORM_BOUND` = 400 is exceeded with probability
~2^-30 per key, and :mod:`fedmatch.he.keypair` checks every key against it (a fresh key is
redrawn, a loaded one refused), so ``S <= 400`` holds, not only probably.

The default and kernel sets have ``D0 / Delta = 2^7`` (``ParamSet.result_step_bits``) and
``d = 9`` (``result_finer_bits``; ``S D1 = 0.78 D0``): E = 39,187 (default) and 39,119
(kernel), 2^15.26 in slot units (:func:`error_bound` computes it); the narrow set's steps
of 2^10 give E = 2^18.26. With
``d = 9`` the two terms are balanced; each bit less of ``K0`` doubles E. Measured
(tests/unit/test_he_resultfmt.py, 64 blocks per set at the edge below): the largest error
over 524,288 records was ~11,300, the keys' own norms being ~200-250.

Wrap: an honest slot's parts are below 2^48 + 2^17 (masks 2^47 times |s - t| < 2, flood,
noise), so its complex magnitude is below 2^48.5 and every message coefficient below
``Delta * 2^48.5`` (a coefficient is an average of the slots' values); for masks up to
2^hi, ``Delta * 2^(hi + 1.5)``, from which :func:`result_format` derives ``B``. In the ``2^B``
domain that is 2^50.5 (default: 2^58.5 * 2^52 / 2^60) and 2^50.5 (kernel: 2^54.5 * 2^54 /
2^58.0), under 2^(B - 1) = 2^51 with the error (< 2^13 units) on top.

Sign: a record decrypts to ``r (s - t) + n + err`` with ``n`` the flood and evaluation
noise (``|n| <= 2^16 + 2^11``) and ``|err| <= E``. Its sign is that of ``s - t`` whenever
``r |s - t| > 2^16 + 2^11 + E = 106,771``; with the smallest mask ``r = 2^30`` that is
``|s - t| >= 9.95e-5`` (without compression: 6.3e-5), inside the engine's 1e-4 (see
:mod:`fedmatch.he.params`). For the median mask (2^38.5) compression moves a score by 1e-7.
Decoys and padding blocks are values of the same kind (``-r |t - s'|``) and keep their
sign the same way; a malformed probe's garbled values may wrap, which only makes noise
noisier. The requester's float arithmetic adds < 2^7 slot units (the FFT of values below
2^51) and the product by the secret is exact (checked per block).

Why not 8 B per record with 17 bits of masks: 64 bits per coefficient pair means
``2B - d = 64``; with ``d = 9``, ``B - d = 27.5``: E = 2^(15.26 + 15.5) = 2^30.8, above the
smallest mask itself (2^30), so no |s - t| <= 2 would keep its sign. What costs the bits is
the dynamic range of the values that must keep their sign: from ~2^16.7 (mask 2^30 at 1e-4,
above the flood) to 2^48.5 (mask 2^47), 32 bits, plus ~8 bits of the sum over 8,192
coefficients and ~9 of the secret. In general ``2B - d ~ 2 (hi + 1.5) + d - 2 step + 2.5``
with ``2^lo * resolution > 2^16 + 2^11 + E(step)``: at 64 bits, ~5 bits of mask range fit at
a resolution of 1e-3, ~2 at 1e-4.

The narrow set (``ckks-n8192-q29.29.29.25.60-k-narrow``, opt-in) takes the first: masks
over [2^29, 2^34], steps of 2^10 slot units, ``d = 9``: E = 2^18.26 = 312,950; the sign
holds for ``2^29 |s - t| > 2^16 + 2^11 + E``, ``|s - t| >= 7.1e-4`` (its resolution:
1e-3); honest coefficients below ``Delta * 2^35.5``: 2^34.5 in the 2^K1 domain, under
2^(B - 1) = 2^35; ``2B - d = 63`` bits per coefficient pair. What the narrower masks tell
the requester is measured in :mod:`fedmatch.he.params`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import sealmem
from fedmatch.he.params import ParamSet
from fedmatch.he.slotorder import folded_slots

__all__ = [
    "FAILURE_PROBABILITY",
    "FORMAT_TAG",
    "SECRET_NORM_BOUND",
    "ResultFormat",
    "compress",
    "decrypt_many",
    "decrypt_slots",
    "error_bound",
    "parse",
    "part_slots",
    "result_format",
    "secret_coefficients",
    "secret_norm",
    "secret_spectrum",
]

# Format byte and version: a future layout changes the version, and a requester refuses a
# block whose tag it does not know (a SEAL ciphertext starts 0x5E 0xA1).
FORMAT_TAG = b"\xc5\x01"
_HEADER = 4
# The canonical-norm bound on a secret key the error bound uses (see the module doc).
SECRET_NORM_BOUND = 400.0
# Per record, the probability that the rounding error exceeds error_bound().
FAILURE_PROBABILITY = 2.0**-40
# An honest slot's magnitude is below 2^(hi + 1.5) for masks up to 2^hi (see the module doc).
_ABOVE_MASK_BITS = 1.5
# Chunks of x1 convolved with the secret in floating point: 26 bits times up to 8,192
# ternary terms stay below 2^39, exact in float64 with rounding error ~2^-10.
_CHUNK_BITS = 26
# Blocks decrypted per transform call (decrypt_many).
_BATCH = 4


@dataclass(frozen=True)
class ResultFormat:
    """The compact format of one parameter set: its result level and the widths."""

    degree: int
    moduli: tuple[int, ...]  # the result level's primes
    parms_id: tuple[int, ...]
    scale: float  # the result scale (product scale over the primes rescaled away)
    k0: int  # c0 is switched to modulus 2^k0
    finer: int  # d: c1 is switched to 2^(k0 + d)
    bits: int  # B: x1 is sent modulo 2^B, x0 modulo 2^(B - d)

    @property
    def modulus(self) -> int:
        return math.prod(self.moduli)

    @property
    def k1(self) -> int:
        return self.k0 + self.finer

    @property
    def bits0(self) -> int:
        return self.bits - self.finer

    @property
    def size(self) -> int:
        """Bytes of one block."""
        return _HEADER + -(-self.degree * self.bits0 // 8) + -(-self.degree * self.bits // 8)


@cache
def result_format(params: ParamSet) -> ResultFormat:
    """The widths for ``params``, derived as the module doc says (cached)."""
    ctx = params.context()
    data = ctx.first_context_data()
    scale = float(2 ** (params.query_scale_bits + params.register_scale_bits))
    while len(data.parms().coeff_modulus()) > params.result_moduli:
        scale /= data.parms().coeff_modulus()[-1].value()
        data = data.next_context_data()
    moduli = tuple(int(m.value()) for m in data.parms().coeff_modulus())
    log_q = math.log2(math.prod(moduli))
    # The smallest K0 with steps of at most 2^result_step_bits slot units.
    k0 = math.ceil(log_q - math.log2(scale) - params.result_step_bits)
    k1 = k0 + params.result_finer_bits
    # B: the honest message (scale * 2^(hi + 1.5), in the 2^K1 domain) below 2^(B - 1),
    # with a quarter of a bit for the rounding error and float slack.
    value_bits = params.mask_bits[1] + _ABOVE_MASK_BITS
    need = math.log2(scale) + value_bits + k1 - log_q + 1.0
    bits = min(k1, math.ceil(need + 0.25))
    return ResultFormat(
        degree=params.poly_modulus_degree,
        moduli=moduli,
        parms_id=tuple(int(w) for w in data.parms_id()),
        scale=scale,
        k0=k0,
        finer=params.result_finer_bits,
        bits=bits,
    )


def error_bound(params: ParamSet, secret_norm: float = SECRET_NORM_BOUND) -> float:
    """The rounding error of one record (slot units) that is exceeded with probability at
    most :data:`FAILURE_PROBABILITY` (Hoeffding; see the module doc)."""
    fmt = result_format(params)
    d0 = fmt.modulus / 2.0**fmt.k0
    d1 = fmt.modulus / 2.0**fmt.k1
    spread = (fmt.degree / 2) * (d0**2 + secret_norm**2 * d1**2)
    return math.sqrt(spread * math.log(2.0 / FAILURE_PROBABILITY) / 2.0) / fmt.scale


@cache
def _evaluator(params: ParamSet) -> seal.Evaluator:
    return seal.Evaluator(params.context())


def _compose(fmt: ResultFormat, residues: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Coefficients in [0, Q) from their residues (limbs x degree); Q < 2^64."""
    if len(fmt.moduli) == 1:
        single: npt.NDArray[np.uint64] = residues[0].copy()
        return single
    if len(fmt.moduli) != 2 or max(fmt.moduli) >= 1 << 31:
        raise HEError("the compact format composes two primes below 2^31 at most")
    q0, q1 = (np.uint64(q) for q in fmt.moduli)
    inverse = np.uint64(pow(fmt.moduli[0], -1, fmt.moduli[1]))
    # Garner: c = r0 + q0 * ((r1 - r0) / q0 mod q1); every product stays below 2^62.
    diff = (residues[1] + q1 - residues[0] % q1) % q1
    out: npt.NDArray[np.uint64] = residues[0] + q0 * (diff * inverse % q1)
    return out


def _switch(fmt: ResultFormat, c: npt.NDArray[np.uint64], k: int) -> npt.NDArray[np.uint64]:
    """``round(c * 2^k / Q) mod 2^64``, exactly: a float estimate, then its exact integer
    remainder ``c * 2^k - x * Q`` (small, so exact in wrapping uint64 arithmetic) corrects
    it."""
    q = fmt.modulus
    estimate = np.floor(c.astype(np.float64) * (2.0**k / q)).astype(np.int64)
    x = estimate.astype(np.uint64)
    with np.errstate(over="ignore"):
        remainder = ((c << np.uint64(k)) - x * np.uint64(q)).view(np.int64)
    # remainder / q is within a few units of the fraction: round it exactly.
    extra = np.floor((remainder.astype(np.float64) + q / 2.0) / q).astype(np.int64)
    with np.errstate(over="ignore"):
        rest = remainder - extra * np.int64(q)
    # Now 2 * rest in [-q, q) up to float slack of one step: fix the edges exactly.
    extra += (2 * rest >= q).astype(np.int64) - (2 * rest < -q).astype(np.int64)
    out: npt.NDArray[np.uint64] = x + extra.astype(np.uint64)
    return out


def _pack(values: npt.NDArray[np.uint64], bits: int) -> bytes:
    """The low ``bits`` bits of every value, big-endian, concatenated."""
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.packbits(np.unpackbits(raw, axis=1)[:, 64 - bits :]).tobytes()


def _unpack(data: bytes, bits: int, count: int) -> npt.NDArray[np.uint64]:
    """The ``count`` values of ``bits`` bits each that :func:`_pack` packed. Eight values
    take ``bits`` whole bytes, so value ``8 g + r`` starts at bit ``r * bits`` of group
    ``g``: each of the eight positions is read for every group at once, as the big-endian
    word of the 8 bytes it starts in (~10x faster than expanding every bit, measured)."""
    if count % 8 or bits > 57 or len(data) * 8 != count * bits:
        flags = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits)
        padded = np.zeros((count, 64), dtype=np.uint8)
        padded[:, 64 - bits :] = flags.reshape(count, bits)
        words: npt.NDArray[np.uint64] = np.packbits(padded, axis=1).view(">u8").reshape(count)
        return words.astype(np.uint64)
    # Value 8 g + r is read as the big-endian word at byte g * bits + r * bits // 8: a
    # strided view of the bytes (8 more past the end, for the last group's windows),
    # swapped and copied in one pass.
    buffer = bytes(data) + bytes(8)
    out = np.empty(count, dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    groups = count // 8
    for r in range(8):
        start, offset = divmod(r * bits, 8)
        window = np.ndarray((groups,), dtype=">u8", buffer=buffer, offset=start, strides=(bits,))
        word = window.astype(np.uint64)
        word >>= np.uint64(64 - offset - bits)
        word &= mask
        out[r::8] = word
    return out


def compress(ct: seal.Ciphertext, params: ParamSet) -> bytes:
    """The compact bytes of a result ciphertext (``ct`` is left as it is). Refuses
    (HEError) a ciphertext that is not a two-part result at the set's result level and
    scale: the widths were derived for exactly that."""
    fmt = result_format(params)
    if ct.size() != 2 or not ct.is_ntt_form():
        raise HEError("a result block must be a two-part ciphertext in NTT form")
    if tuple(int(w) for w in ct.parms_id()) != fmt.parms_id:
        raise HEError("a result block must be at the parameter set's result level")
    if abs(ct.scale / fmt.scale - 1.0) > 1e-9:
        raise HEError("a result block must have the parameter set's result scale")
    header = FORMAT_TAG + bytes([fmt.bits0, fmt.bits])
    if params.kernel:
        # Imported here: it loads numba, which a default-set node never does.
        from fedmatch.he import ckks_encode

        if ckks_encode.native_encoder(params).fast(list(fmt.parms_id)):
            return header + _native_body(ct, fmt, params)
    return header + _seal_body(ct, fmt, params)


def _seal_body(ct: seal.Ciphertext, fmt: ResultFormat, params: ParamSet) -> bytes:
    """compress's body through SEAL's inverse NTT and numpy."""
    plain = seal.Ciphertext()
    try:
        _evaluator(params).transform_from_ntt(ct, plain)
    except (RuntimeError, ValueError) as exc:
        raise HEError(f"result block could not be transformed ({type(exc).__name__})") from None
    words = np.empty((2, len(fmt.moduli), fmt.degree), dtype=np.uint64)
    sealmem.read_ciphertext(plain, words)
    c0, c1 = _compose(fmt, words[0]), _compose(fmt, words[1])
    x0, x1 = _switch(fmt, c0, fmt.k0), _switch(fmt, c1, fmt.k1)
    return _pack(x0, fmt.bits0) + _pack(x1, fmt.bits)


def _native_body(ct: seal.Ciphertext, fmt: ResultFormat, params: ParamSet) -> bytes:
    """compress's body for primes below 2^30, natively (:mod:`fedmatch.he.native_compress`:
    the same bytes in one pass; the kernel sets' engines load numba anyway)."""
    from fedmatch.he import ckks_encode, native_compress

    count = len(fmt.moduli)
    words = np.empty((2, count, fmt.degree), dtype=np.uint64)
    sealmem.read_ciphertext(ct, words)
    encoder = ckks_encode.native_encoder(params)
    coeffs = ckks_encode.ntt_inverse(
        encoder, words.reshape(2 * count, -1), list(fmt.parms_id), list(range(count)) * 2
    )
    return native_compress.pack_switched(
        coeffs.reshape(2, count, -1), fmt.moduli, (fmt.k0, fmt.k1), (fmt.bits0, fmt.bits)
    )


def parse(data: bytes, params: ParamSet) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """``(x0, x1)`` of a compact block, or HEError for any other size, tag or width (the
    message names the problem, never the bytes)."""
    fmt = result_format(params)
    _check_block(data, fmt)
    x0, x1 = _parse_checked([data], fmt)
    return x0[0], x1[0]


def _check_block(data: bytes, fmt: ResultFormat) -> None:
    if len(data) != fmt.size:
        raise HEError(f"result block must be {fmt.size} bytes in the compact format")
    if data[:2] != FORMAT_TAG:
        raise HEError("result block is not in a compact format this requester knows")
    if data[2:4] != bytes([fmt.bits0, fmt.bits]):
        raise HEError("result block has widths other than its parameter set's")


def _parse_checked(
    blocks: Sequence[bytes], fmt: ResultFormat
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """``(x0, x1)`` of checked blocks (blocks x N each), every block unpacked in one pass:
    a part's bytes are whole groups of eight values, so the parts of all blocks end to end
    unpack as one run."""
    split = _HEADER + -(-fmt.degree * fmt.bits0 // 8)
    rows, n = len(blocks), fmt.degree
    x0 = _unpack(b"".join(data[_HEADER:split] for data in blocks), fmt.bits0, rows * n)
    x1 = _unpack(b"".join(data[split:] for data in blocks), fmt.bits, rows * n)
    return x0.reshape(rows, n), x1.reshape(rows, n)


@cache
def _fold_twist(degree: int) -> npt.NDArray[np.complex128]:
    """``zeta^j`` for ``j < N/2``, ``zeta = exp(i pi / N)``: see :func:`_folded`."""
    twist: npt.NDArray[np.complex128] = np.exp(1j * np.pi * np.arange(degree // 2) / degree)
    twist.setflags(write=False)
    return twist


def _folded(coeffs: npt.NDArray[np.float64]) -> npt.NDArray[np.complex128]:
    """A real polynomial modulo ``X^N + 1`` as ``N/2`` complex values whose cyclic
    transform of length ``N/2`` evaluates it: modulo ``X^(N/2) - i`` (one of the two
    factors of ``X^N + 1`` over C, which keeps all of a real polynomial) it is ``sum_j
    (a_j + i a_(j+N/2)) X^j``, and ``X = zeta Z`` (``zeta^(N/2) = i``) makes that modulus
    ``Z^(N/2) - 1``. Products and evaluations then take transforms of N/2 points instead
    of 2N (products, zero-padded) and N (evaluations). Polynomials along the last axis."""
    half = coeffs.shape[-1] // 2
    out = np.empty((*coeffs.shape[:-1], half), dtype=np.complex128)
    out.real = coeffs[..., :half]
    out.imag = coeffs[..., half:]
    out *= _fold_twist(coeffs.shape[-1])
    return out


def secret_spectrum(s: npt.NDArray[np.int8]) -> npt.NDArray[np.complex128]:
    """The secret's spectrum for the products of :func:`decrypt_slots`: the holder of the
    secret computes it once (a transform a block otherwise) and keeps it with the secret,
    as secret as it is."""
    out: npt.NDArray[np.complex128] = np.fft.fft(_folded(s.astype(np.float64)))
    return out


def _times_secret(
    x1: npt.NDArray[np.uint64], spectrum: npt.NDArray[np.complex128]
) -> npt.NDArray[np.uint64]:
    """``x1 * s`` in Z[X]/(X^N + 1), modulo 2^64, for every polynomial along the last
    axis: exact, by chunks of _CHUNK_BITS bits, each a negacyclic product in transforms of
    N/2 points (:func:`_folded`), all rows in one transform call."""
    n = x1.shape[-1]
    out = np.zeros(x1.shape, dtype=np.uint64)
    mask = np.uint64((1 << _CHUNK_BITS) - 1)
    untwist = np.conj(_fold_twist(n))
    half = n // 2
    full = np.empty(x1.shape, dtype=np.float64)
    rounded = np.empty(x1.shape, dtype=np.float64)
    for shift in range(0, 64, _CHUNK_BITS):
        chunk = x1 >> np.uint64(shift)
        chunk &= mask
        if not chunk.any():
            continue
        spectra = np.fft.fft(_folded(chunk.astype(np.float64)), axis=-1)
        spectra *= spectrum
        folded = np.fft.ifft(spectra, axis=-1)
        folded *= untwist
        full[..., :half] = folded.real
        full[..., half:] = folded.imag
        np.rint(full, out=rounded)
        full -= rounded
        if float(np.max(np.abs(full))) > 0.25:
            raise HEError("result block product lost exactness")  # cannot happen: see above
        words = rounded.astype(np.int64).view(np.uint64)
        words <<= np.uint64(shift)
        out += words
    return out


def decrypt_slots(
    data: bytes,
    params: ParamSet,
    s: npt.NDArray[np.int8],
    spectrum: npt.NDArray[np.complex128] | None = None,
) -> npt.NDArray[np.complex128]:
    """The slots of a compact block under the secret ``s`` (ternary coefficients, from
    :func:`secret_coefficients`; ``spectrum``: its :func:`secret_spectrum`, if kept), or
    HEError for bytes that are not a compact block."""
    slots: npt.NDArray[np.complex128] = decrypt_many([data], params, s, spectrum)[0]
    return slots


def decrypt_many(
    blocks: Sequence[bytes],
    params: ParamSet,
    s: npt.NDArray[np.int8],
    spectrum: npt.NDArray[np.complex128] | None = None,
) -> npt.NDArray[np.complex128]:
    """:func:`decrypt_slots` of every block (blocks x slots), each block's bytes checked
    first (HEError names the first bad one), then :data:`_BATCH` blocks per transform call
    and array operation: 0.67 -> 0.38 ms a block (measured, 128 blocks; larger batches
    leave the caches and were slower)."""
    fmt = result_format(params)
    for index, data in enumerate(blocks):
        try:
            _check_block(data, fmt)
        except HEError as exc:
            if len(blocks) == 1:
                raise
            raise HEError(f"block {index}: {exc}") from None
    if spectrum is None:
        spectrum = secret_spectrum(s)
    out = np.empty((len(blocks), fmt.degree // 2), dtype=np.complex128)
    for start in range(0, len(blocks), _BATCH):
        x0, x1 = _parse_checked(blocks[start : start + _BATCH], fmt)
        with np.errstate(over="ignore"):
            y = (x0 << np.uint64(fmt.finer)) + _times_secret(x1, spectrum)
        out[start : start + _BATCH] = _decode(y, params)
    return out


def part_slots(data: bytes, params: ParamSet, part: int) -> npt.NDArray[np.complex128]:
    """One part of a compact block decoded on its own (``part`` 0: ``c0``, the decryption
    under the secret 0; 1: ``c1``): for tests that play a requester with crafted keys."""
    fmt = result_format(params)
    x0, x1 = parse(data, params)
    return _decode(x0 << np.uint64(fmt.finer) if part == 0 else x1, params)


def _decode(y: npt.NDArray[np.uint64], params: ParamSet) -> npt.NDArray[np.complex128]:
    """The slots of ``y`` (modulo 2^B, in the 2^K1 domain; polynomials along the last
    axis): centred, then embedded."""
    fmt = result_format(params)
    y = y & np.uint64((1 << fmt.bits) - 1)
    signed = y.view(np.int64) - (y >= np.uint64(1 << (fmt.bits - 1))).astype(np.int64) * (
        1 << fmt.bits
    )
    position, conjugate = folded_slots(fmt.degree)
    # y at zeta^(4k + 1) for every k (:func:`_folded`); the slots at the other odd powers
    # are the conjugates of these (y is real).
    values = np.fft.ifft(_folded(signed.astype(np.float64)), axis=-1) * (fmt.degree // 2)
    picked = values[..., position]  # a copy
    picked[..., conjugate] = np.conj(picked[..., conjugate])
    unit = fmt.modulus / 2.0**fmt.k1 / fmt.scale
    out: npt.NDArray[np.complex128] = picked * unit
    return out


def secret_coefficients(
    params: ParamSet, ntt_words: npt.NDArray[np.uint64]
) -> npt.NDArray[np.int8]:
    """A secret key's ternary coefficients from its NTT-form words (one row per modulus of
    the key level), through SEAL's own inverse NTT at the result level. HEError if the
    words are not a ternary polynomial, or if its canonical norm exceeds
    :data:`SECRET_NORM_BOUND` (the error bound of this format would not hold)."""
    fmt = result_format(params)
    ctx = params.context()
    limbs = len(fmt.moduli)
    pid = list(fmt.parms_id)
    ct = seal.Ciphertext(ctx, pid, 2)
    ct.resize(ctx, pid, 2)
    # SEAL transforms only non-transparent ciphertexts: a nonzero c1 rides along.
    words = np.ones((2, limbs, fmt.degree), dtype=np.uint64)
    sealmem.write_ciphertext(ct, ctx, words)
    evaluator = _evaluator(params)
    evaluator.transform_to_ntt_inplace(ct)
    words[0] = ntt_words[:limbs]
    sealmem.write_ciphertext(ct, ctx, words)
    evaluator.transform_from_ntt_inplace(ct)
    sealmem.read_ciphertext(ct, words)
    s = np.zeros(fmt.degree, dtype=np.int64)
    for limb, q in enumerate(fmt.moduli):
        r = words[0, limb].astype(np.int64)
        centred = np.where(r > q // 2, r - q, r)
        if limb == 0:
            s = centred
        elif not np.array_equal(centred, s):
            raise HEError("secret key is not the same polynomial in every modulus")
    if not np.all(np.abs(s) <= 1):
        raise HEError("secret key is not ternary")
    if secret_norm(s) > SECRET_NORM_BOUND:
        raise HEError("secret key's canonical norm exceeds the compact result format's bound")
    return s.astype(np.int8)


def secret_norm(s: npt.NDArray[np.integer]) -> float:
    """max over the slots' roots of |s(zeta)| (the ``S`` of the module doc)."""
    n = s.shape[0]
    values = np.fft.ifft(s.astype(np.float64) * np.exp(1j * np.pi * np.arange(n) / n)) * n
    return float(np.max(np.abs(values)))
