"""The coefficient words of SEAL ciphertexts and plaintexts, read and written without
serialization.

The product kernel (:mod:`fedmatch.he.kernel`) takes the probe's baby-step rotations out of
SEAL and puts its sums back in. tenseal's ``sealapi`` binds no buffer for that: ``data()``
returns the first word, ``dyn_array().at(i)`` one word per call, and ``save`` always
compresses (zstd): 2.4 ms to save one ciphertext of the kernel set plus 0.5 ms to
decompress it, measured here, so ~0.37 s per query for 127 rotations. Reading the words in
place costs ~0.1 ms per ciphertext.

How: pybind11 keeps the address of the C++ object right after the Python object's header
(and again as the ``unique_ptr`` holder); SEAL 4 lays a ``Ciphertext`` out as parms_id
(32 bytes), NTT flag, size, ring degree, modulus count, scale, correction factor, then its
``DynArray`` (pool handle, capacity, size, data pointer), and a ``Plaintext`` as parms_id,
coefficient count, scale, then its ``DynArray``. Nothing is read or written through that
address before the layout is checked, for every object and every access, against what the
binding itself reports: pybind11's simple-layout flags and holder, parms_id, size, degree,
modulus count, scale, NTT flag, the array's size and capacity, and the first, a middle and
the last word (through ``data()`` and ``dyn_array().at()``). An object of another tenseal
or SEAL build fails that check: it then goes through serialization
(:mod:`fedmatch.he.sealfmt`), slower and exact; :func:`in_place` says which path an object
takes.

Only copies leave this module: no view of SEAL's memory outlives the call that made it.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import sealfmt, sealio

__all__ = [
    "in_place",
    "read_ciphertext",
    "read_plaintext",
    "read_public_key",
    "write_ciphertext",
    "write_plaintext",
]

_WORD = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
# pybind11's instance: PyObject header (16 bytes), the value pointer, the holder (a
# unique_ptr: the same pointer), ..., the flags word at 48 (owned, simple layout, holder
# constructed, registered: bits 0-3).
_VALUE, _HOLDER, _FLAGS = 16, 24, 48
_SIMPLE_LAYOUT_AND_HOLDER = 0b0110
# SEAL 4 Ciphertext: parms_id 0..32, is_ntt_form 32, size 40, degree 48, modulus count 56,
# scale 64, correction factor 72, DynArray at 80 (pool handle 16 bytes, capacity 96, size
# 104, data pointer 112).
_CT_NTT, _CT_SIZE, _CT_DEGREE, _CT_MODULI, _CT_SCALE = 32, 40, 48, 56, 64
_CT_CAPACITY, _CT_COUNT, _CT_DATA = 96, 104, 112
# SEAL 4 Plaintext: parms_id 0..32, coefficient count 32, scale 40, DynArray at 48 (pool
# handle, capacity 64, size 72, data pointer 80).
_PT_COEFFS, _PT_SCALE, _PT_CAPACITY, _PT_COUNT, _PT_DATA = 32, 40, 64, 72, 80
_MAX_WORDS = 1 << 24


def _word(address: int) -> int:
    value: int = _WORD.unpack(ctypes.string_at(address, 8))[0]
    return value


def _object_address(obj: Any) -> int | None:
    """The C++ object behind a pybind11 instance of simple layout, or None."""
    if type(obj).__basicsize__ != 56:
        return None
    base = id(obj)
    value, holder, flags = _word(base + _VALUE), _word(base + _HOLDER), _word(base + _FLAGS)
    if value == 0 or value != holder or value % 8 or flags & _SIMPLE_LAYOUT_AND_HOLDER != 6:
        return None
    return value


def _parms_words(address: int) -> list[int]:
    return [_word(address + 8 * i) for i in range(4)]


def _ciphertext_data(ct: seal.Ciphertext, owner: Any | None = None) -> tuple[int, int] | None:
    """(data address, word count) of a ciphertext whose layout checks out, else None.
    ``owner``: the object whose first member ``ct`` is (a public key's ciphertext, which
    the binding hands out as a reference: pybind11 gives it no holder of its own)."""
    address = _object_address(ct if owner is None else owner)
    if address is None:
        return None
    size, degree, moduli = ct.size(), ct.poly_modulus_degree(), ct.coeff_modulus_size()
    count = size * degree * moduli
    header_ok = (
        _parms_words(address) == [int(w) for w in ct.parms_id()]
        and ctypes.string_at(address + _CT_NTT, 1) == (b"\x01" if ct.is_ntt_form() else b"\x00")
        and _word(address + _CT_SIZE) == size
        and _word(address + _CT_DEGREE) == degree
        and _word(address + _CT_MODULI) == moduli
        and _DOUBLE.unpack(ctypes.string_at(address + _CT_SCALE, 8))[0] == ct.scale
        and _word(address + _CT_COUNT) == count == ct.dyn_array().size()
        and count <= _word(address + _CT_CAPACITY) == ct.dyn_array().capacity()
    )
    if not header_ok or not 0 < count <= _MAX_WORDS:
        return None
    data = _word(address + _CT_DATA)
    if data == 0 or data % 8:
        return None
    words = ct.dyn_array()
    for index in (0, count // 2, count - 1):
        if _word(data + 8 * index) != words.at(index):
            return None
    if _word(data) != ct.data() or (size > 1 and _word(data + 8 * degree * moduli) != ct.data(1)):
        return None
    return data, count


def _plaintext_data(pt: seal.Plaintext) -> tuple[int, int] | None:
    """(data address, word count) of a plaintext whose layout checks out, else None."""
    address = _object_address(pt)
    if address is None:
        return None
    count = pt.coeff_count()
    header_ok = (
        _parms_words(address) == [int(w) for w in pt.parms_id()]
        and _word(address + _PT_COEFFS) == count
        and _DOUBLE.unpack(ctypes.string_at(address + _PT_SCALE, 8))[0] == pt.scale
        and _word(address + _PT_COUNT) == count == pt.dyn_array().size()
        and count <= _word(address + _PT_CAPACITY) == pt.dyn_array().capacity()
    )
    if not header_ok or not 0 < count <= _MAX_WORDS:
        return None
    data = _word(address + _PT_DATA)
    if data == 0 or data % 8:
        return None
    words = pt.dyn_array()
    for index in (0, count // 2, count - 1):
        if _word(data + 8 * index) != words.at(index) or words.at(index) != pt[index]:
            return None
    return data, count


def _view(data: int, count: int) -> npt.NDArray[np.uint64]:
    """The ``count`` words at ``data``, writable, in place (never returned to callers)."""
    buffer = (ctypes.c_uint64 * count).from_address(data)
    view: npt.NDArray[np.uint64] = np.frombuffer(memoryview(buffer), dtype=np.uint64, count=count)
    return view


# Off only to exercise the serialization path (tests); each access still checks its object.
_IN_PLACE = True


def in_place(obj: Any) -> bool:
    """Whether ``obj`` (a ciphertext or a plaintext) is read and written in place: its
    layout checks out against the binding's getters. False means the serialization path
    (another tenseal or SEAL build, or a layout check that failed)."""
    if not _IN_PLACE:
        return False
    if isinstance(obj, seal.Ciphertext):
        return _ciphertext_data(obj) is not None
    return isinstance(obj, seal.Plaintext) and _plaintext_data(obj) is not None


def _serialized(ct: seal.Ciphertext) -> tuple[bytearray, tuple[int, int], sealfmt.Polys]:
    body, version = sealfmt.unpack(sealio.to_bytes(ct), "ciphertext", 1 << 26)
    return body, version, sealfmt.ciphertext_at(body, 0, "ciphertext")


def read_ciphertext(ct: seal.Ciphertext, out: npt.NDArray[Any]) -> None:
    """Copy ``ct``'s words (shape: polynomials x moduli x degree) into ``out`` (any integer
    dtype wide enough for the moduli: the kernel keeps uint32)."""
    shape = (ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree())
    if out.shape != shape:
        raise HEError("ciphertext does not have the shape the kernel expects")
    found = _ciphertext_data(ct) if _IN_PLACE else None
    if found is not None:
        np.copyto(out, _view(*found).reshape(shape), casting="unsafe")
        return
    _, _, polys = _serialized(ct)
    np.copyto(out, polys.data, casting="unsafe")


def read_public_key(key: seal.PublicKey, out: npt.NDArray[Any]) -> None:
    """:func:`read_ciphertext` for a public key's (or a key-switching key part's)
    ciphertext: SEAL 4's ``PublicKey`` holds it as its only member, so the key's own object
    is where its layout is checked (as any ciphertext's, against ``key.data()``'s getters)."""
    ct = key.data()
    shape = (ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree())
    if out.shape != shape:
        raise HEError("public key does not have the shape expected")
    found = _ciphertext_data(ct, owner=key) if _IN_PLACE else None
    if found is not None:
        np.copyto(out, _view(*found).reshape(shape), casting="unsafe")
        return
    _, _, polys = _serialized(ct)
    np.copyto(out, polys.data, casting="unsafe")


def write_ciphertext(
    ct: seal.Ciphertext, context: seal.SEALContext, words: npt.NDArray[np.uint64]
) -> None:
    """Overwrite ``ct``'s words with ``words`` (same shape; each below its modulus, which
    the caller guarantees). Its parms_id, NTT flag and scale stay as they are."""
    shape = (ct.size(), ct.coeff_modulus_size(), ct.poly_modulus_degree())
    if words.shape != shape or words.dtype != np.uint64:
        raise HEError("kernel output does not have the ciphertext's shape")
    found = _ciphertext_data(ct) if _IN_PLACE else None
    if found is not None:
        _view(*found).reshape(shape)[...] = words
        return
    body, version, polys = _serialized(ct)
    polys.data[...] = words
    data = sealfmt.pack(body, version, compress=False)
    sealio.load_bytes(lambda path: ct.load(context, path), data, "kernel output")


def read_plaintext(pt: seal.Plaintext, out: npt.NDArray[Any]) -> None:
    """Copy an NTT-form plaintext's words (moduli x degree, flat in SEAL) into ``out``."""
    if out.size != pt.coeff_count():
        raise HEError("plaintext does not have the size the kernel expects")
    found = _plaintext_data(pt) if _IN_PLACE else None
    if found is not None:
        np.copyto(out, _view(*found).reshape(out.shape), casting="unsafe")
        return
    body, _ = sealfmt.unpack(sealio.to_bytes(pt), "plaintext", 1 << 26)
    _, words = sealfmt.plaintext_words(body, "plaintext")
    np.copyto(out, words.reshape(out.shape), casting="unsafe")


def write_plaintext(
    pt: seal.Plaintext, context: seal.SEALContext, words: npt.NDArray[np.uint64]
) -> None:
    """Overwrite an NTT-form plaintext's words (moduli x degree, flat) with ``words`` (each
    below its modulus, which the caller guarantees); parms_id and scale stay."""
    if words.dtype != np.uint64 or words.size != pt.coeff_count():
        raise HEError("words do not have the plaintext's size")
    found = _plaintext_data(pt) if _IN_PLACE else None
    if found is not None:
        _view(*found)[...] = words.reshape(-1)
        return
    body, version = sealfmt.unpack(sealio.to_bytes(pt), "plaintext", 1 << 26)
    _, target = sealfmt.plaintext_words(body, "plaintext")
    target[...] = words.reshape(-1)
    data = sealfmt.pack(body, version, compress=False)
    sealio.load_bytes(lambda path: pt.load(context, path), data, "encoded plaintext")
