"""SEAL's byte format, read and patched in place: the polynomials of ciphertexts and keys.

tenseal binds no writable access to a ciphertext's or key's polynomials, and the checks of
:mod:`fedmatch.he.uniform` need exactly that: read the uniform part of a received key or
probe, and (on the requester's side) replace it by one expanded from a seed. So this module
reads SEAL's serialization (SEAL 4.x, checked against the objects tenseal writes):

- every object: a 16-byte header (magic ``0xA15E``, header size, version, compression mode,
  two reserved bytes, total size), then the members, compressed as the header says;
- a ciphertext (and a public key, which is one): parms_id (4 x uint64), NTT flag (1 byte),
  size, ring degree, modulus count (uint64 each), scale and correction factor (8 bytes
  each), then its data as a nested serialized array (header, uint64 count, the words, poly
  by poly, limb by limb);
- key-switching keys (Galois keys): parms_id, the outer count, then per Galois element an
  inner count and that many nested serialized public keys;
- a plaintext (the secret key): parms_id, coefficient count, scale, then its data array.

Nothing here trusts a length it reads: every count is checked against the bytes there are,
and decompression is bounded by the size the header announces (itself bounded by the caller).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import zstandard

from fedmatch.errors import HEError

__all__ = ["Polys", "ciphertext_at", "kswitch_keys", "pack", "plaintext_words", "unpack"]

_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, reserved, size
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2
_CT_FIXED = struct.Struct("<32sBQQQdQ")  # parms_id, ntt, size, degree, moduli, scale, correction
_PT_FIXED = struct.Struct("<32sQd")  # parms_id, coefficient count, scale
_U64 = struct.Struct("<Q")


def _header(data: bytes | bytearray, offset: int, what: str) -> tuple[int, int, int, int]:
    """(compression, total size, major, minor) of the header at ``offset``."""
    if len(data) - offset < _HEADER.size:
        raise HEError(f"{what} is truncated")
    magic, size, major, minor, compr, _, total = _HEADER.unpack_from(data, offset)
    if magic != _MAGIC or size != _HEADER.size:
        raise HEError(f"{what} is not a SEAL object")
    return compr, total, major, minor


def unpack(data: bytes, what: str, max_bytes: int) -> tuple[bytearray, tuple[int, int]]:
    """The decompressed members of a serialized SEAL object (a writable copy) and its
    version, or HEError. ``max_bytes`` bounds the decompressed size before any work."""
    compr, total, major, minor = _header(data, 0, what)
    if total != len(data):
        raise HEError(f"{what} has a size that does not match its header")
    payload = data[_HEADER.size :]
    try:
        if compr == _COMPR_NONE:
            body = bytes(payload)
        elif compr == _COMPR_ZSTD:
            params = zstandard.get_frame_parameters(payload)
            if params.content_size > max_bytes:
                raise HEError(f"{what} is larger than allowed")
            body = zstandard.ZstdDecompressor().decompress(payload, max_output_size=max_bytes)
        elif compr == _COMPR_ZLIB:
            inflater = zlib.decompressobj()
            body = inflater.decompress(payload, max_bytes)
            if inflater.unconsumed_tail:
                raise HEError(f"{what} is larger than allowed")
        else:
            raise HEError(f"{what} uses an unknown compression mode")
    except (zstandard.ZstdError, zlib.error):
        raise HEError(f"{what} could not be decompressed") from None
    if len(body) > max_bytes:
        raise HEError(f"{what} is larger than allowed")
    return bytearray(body), (major, minor)


def pack(body: bytes | bytearray, version: tuple[int, int], compress: bool = True) -> bytes:
    """Members back into a serialized object SEAL loads (zstd, as SEAL writes, or none:
    the node's own reload skips a compression round)."""
    payload = zstandard.ZstdCompressor(level=1).compress(bytes(body)) if compress else bytes(body)
    compr = _COMPR_ZSTD if compress else _COMPR_NONE
    header = _HEADER.pack(_MAGIC, _HEADER.size, *version, compr, 0, _HEADER.size + len(payload))
    return header + payload


@dataclass(frozen=True)
class Polys:
    """A ciphertext's data, viewed in place in a members buffer: ``data[p, l]`` is limb
    ``l`` (one per modulus of its level) of polynomial ``p``; writes go to the buffer."""

    parms_id: bytes
    ntt_form: bool
    scale: float
    data: npt.NDArray[np.uint64]
    end: int  # offset just past this ciphertext in the buffer


def _array(
    body: bytearray, offset: int, words: int, what: str
) -> tuple[npt.NDArray[np.uint64], int]:
    """The uint64 words of the nested serialized array at ``offset`` (a writable view), which
    must hold exactly ``words`` of them, and the offset past it."""
    compr, total, _, _ = _header(body, offset, what)
    if compr != _COMPR_NONE or total != _HEADER.size + _U64.size + 8 * words:
        raise HEError(f"{what} has data of the wrong size")
    start = offset + _HEADER.size
    if len(body) < start + total - _HEADER.size or _U64.unpack_from(body, start)[0] != words:
        raise HEError(f"{what} is truncated")
    view = np.frombuffer(memoryview(body), dtype="<u8", count=words, offset=start + _U64.size)
    return view, offset + total


def ciphertext_at(body: bytearray, offset: int, what: str) -> Polys:
    """The ciphertext whose members start at ``offset``."""
    if len(body) - offset < _CT_FIXED.size:
        raise HEError(f"{what} is truncated")
    parms_id, ntt, size, degree, moduli, scale, _ = _CT_FIXED.unpack_from(body, offset)
    if not (0 < size <= 8 and 0 < degree <= 1 << 16 and 0 < moduli <= 64):
        raise HEError(f"{what} has an implausible shape")
    words = size * degree * moduli
    flat, end = _array(body, offset + _CT_FIXED.size, words, what)
    return Polys(parms_id, bool(ntt), scale, flat.reshape(size, moduli, degree), end)


def plaintext_words(body: bytearray, what: str) -> tuple[bytes, npt.NDArray[np.uint64]]:
    """(parms_id, coefficients) of a serialized plaintext's members (the secret key's)."""
    if len(body) < _PT_FIXED.size:
        raise HEError(f"{what} is truncated")
    parms_id, count, _ = _PT_FIXED.unpack_from(body, 0)
    if not 0 < count <= 1 << 24:
        raise HEError(f"{what} has an implausible shape")
    words, _ = _array(body, _PT_FIXED.size, count, what)
    return parms_id, words


def kswitch_keys(body: bytearray, what: str) -> Iterator[tuple[int, int, Polys]]:
    """(outer index, decomposition index, key) of every key in key-switching keys' members;
    for Galois keys the outer index is ``(galois_element - 1) / 2``."""
    if len(body) < 32 + _U64.size:
        raise HEError(f"{what} is truncated")
    (outer,) = _U64.unpack_from(body, 32)
    if outer > 1 << 16:
        raise HEError(f"{what} has an implausible shape")
    offset = 32 + _U64.size
    for index in range(outer):
        if len(body) - offset < _U64.size:
            raise HEError(f"{what} is truncated")
        (inner,) = _U64.unpack_from(body, offset)
        offset += _U64.size
        if inner > 64:
            raise HEError(f"{what} has an implausible shape")
        for j in range(inner):
            compr, total, _, _ = _header(body, offset, what)
            if compr != _COMPR_NONE:
                raise HEError(f"{what} has a nested key in an unexpected form")
            key = ciphertext_at(body, offset + _HEADER.size, what)
            if key.end != offset + total:
                raise HEError(f"{what} has a key of the wrong size")
            offset = key.end
            yield index, j, key
    if offset != len(body):
        raise HEError(f"{what} has trailing bytes")
