"""Uniform parts nobody chooses: every key and probe a node computes with carries, as its
second polynomial, one expanded from a seed.

A ciphertext or key is a pair ``(c0, c1)`` with ``c0 = -c1 * s + e (+ message)`` and ``c1``
uniform. SEAL loads any pair, so a requester that chooses ``c1`` itself can make the node
compute on the two parts separately: Galois keys with ``k0 = 0, k1 = P * gadget``, the
public key ``(0, 0)`` and a probe with ``c1 = encode(p)`` gave every record's exact score in
one query and every template in 128 (issue 15). Here the node fixes every ``c1``:

- the ``c1`` of the public key and of every Galois and relinearization key is the
  federation's common reference string, expanded from a label naming the parameter set and
  the key's place (multi-key RLWE uses a common ``a`` the same way; each requester's secret
  makes its keys its own). A bundle whose ``c1`` differs is refused at registration;
- a probe travels as a seed (32 random bytes, fresh per probe: two probes on one ``c1``
  would give their difference to the node) and ``c0`` with an empty ``c1``; the node expands
  ``c1`` itself. A probe whose ``c1`` is not empty is refused. Its norm copy (for the node's
  norm check) is expanded from the same seed under another label: one ``c1`` for both would
  give the node the difference of the two first parts, the probe times a known factor. (The
  probe also carries the requester's commitment to its template, for
  fedmatch.protocol.opening.)

What is left to a requester is ``c0`` (and the secret behind it): a key can then only
switch to a secret of its choosing, which turns everything computed on the register's side
into a uniform-looking polynomial multiplied by fresh masks, and the node's re-randomization
(an encryption under the bound public key) adds ``c1 * u`` to the result's second part.
``docs/threat-model.md`` says what this leaves (a chosen probe, issue 15 item 2).

Expansion: SHAKE-256 of a domain-separated label, 64-bit words masked to the modulus' bit
length, rejection-sampled below it; the values are taken as NTT-form residues (uniform in
NTT form is uniform).
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import numpy.typing as npt

from fedmatch.errors import HEError
from fedmatch.he import sealfmt
from fedmatch.he.params import ParamSet

__all__ = [
    "PROBE_HEAD_BYTES",
    "PROBE_SEED_BYTES",
    "check_key_uniform_parts",
    "data_moduli",
    "expand",
    "galois_label",
    "key_moduli",
    "new_probe_seed",
    "norm_copy_label",
    "open_probe_bytes",
    "probe_commitment",
    "probe_envelope",
    "probe_label",
    "public_key_label",
    "relin_label",
]

_DOMAIN = b"fedmatch.he.uniform.v1\x00"
PROBE_SEED_BYTES = 32
COMMITMENT_BYTES = 32
_PROBE_MAGIC = b"FMPROBE2"
_LENGTH = struct.Struct(">I")
_HEAD = len(_PROBE_MAGIC) + PROBE_SEED_BYTES + COMMITMENT_BYTES + _LENGTH.size
# Where the probe's first SEAL ciphertext starts (what precedes it: magic, seed, commitment,
# length of the first ciphertext).
PROBE_HEAD_BYTES = _HEAD


def expand(label: bytes, moduli: list[int], degree: int) -> npt.NDArray[np.uint64]:
    """``len(moduli) x degree`` residues, uniform below each modulus, from ``label``."""
    out = np.empty((len(moduli), degree), dtype=np.uint64)
    for limb, q in enumerate(moduli):
        mask = np.uint64((1 << q.bit_length()) - 1)
        filled, attempt = 0, 0
        while filled < degree:
            # A modulus is above half its bit length's range: each word is kept with
            # probability > 1/2, so twice the words (and 64 more) nearly always suffice in
            # one round; another round draws under the next attempt number.
            need = degree - filled
            seed = _DOMAIN + label + limb.to_bytes(2, "big") + attempt.to_bytes(4, "big")
            raw = np.frombuffer(hashlib.shake_256(seed).digest(8 * (2 * need + 64)), dtype="<u8")
            kept = (raw & mask)[(raw & mask) < np.uint64(q)][:need]
            out[limb, filled : filled + kept.size] = kept
            filled += kept.size
            attempt += 1
    return out


def public_key_label(params: ParamSet) -> bytes:
    return b"public-key\x00" + params.name.encode()


def galois_label(params: ParamSet, index: int, decomposition: int) -> bytes:
    """The label of Galois key ``index`` (``(element - 1) / 2``), decomposition part ``j``."""
    return b"galois-key\x00" + params.name.encode() + b"\x00%d\x00%d" % (index, decomposition)


def relin_label(params: ParamSet, decomposition: int) -> bytes:
    return b"relin-key\x00" + params.name.encode() + b"\x00%d" % decomposition


def probe_label(seed: bytes) -> bytes:
    return b"probe\x00" + seed


def norm_copy_label(seed: bytes) -> bytes:
    """The label of the probe's second ciphertext (its copy at the norm scale)."""
    return b"probe-norm\x00" + seed


def key_moduli(params: ParamSet) -> list[int]:
    """The moduli of the key level: the data primes and the special prime."""
    return [m.value() for m in params.parms().coeff_modulus()]


def data_moduli(params: ParamSet) -> list[int]:
    """The moduli of the top data level, where probes live (the special prime dropped)."""
    return key_moduli(params)[:-1]


# Bounds on decompressed members: a public key of the default set is ~390 KB, its Galois
# keys ~36 MB (46 x 2 keys), its relinearization key ~790 KB, a probe ciphertext ~260 KB;
# these leave room for larger sets.
_MAX_KEY_MEMBERS = 8 * 1024 * 1024
_MAX_GALOIS_MEMBERS = 256 * 1024 * 1024
_MAX_PROBE_MEMBERS = 4 * 1024 * 1024


def check_key_uniform_parts(
    params: ParamSet, public_key: bytes, galois_keys: bytes, relin_keys: bytes
) -> None:
    """Refuse (HEError) a public, Galois or relinearization key whose uniform part is not
    the one expanded from its label. Checks the shape too: NTT form, two polynomials at the
    key level (SEAL's own load then checks the rest)."""
    moduli = key_moduli(params)
    body, _ = sealfmt.unpack(public_key, "public key", _MAX_KEY_MEMBERS)
    key = sealfmt.ciphertext_at(body, 0, "public key")
    if key.end != len(body):
        raise HEError("public key has trailing bytes")
    _check_key(key, public_key_label(params), moduli)
    body, _ = sealfmt.unpack(galois_keys, "rotation keys", _MAX_GALOIS_MEMBERS)
    for index, j, key in sealfmt.kswitch_keys(body, "rotation keys"):
        _check_key(key, galois_label(params, index, j), moduli)
    body, _ = sealfmt.unpack(relin_keys, "relinearization keys", _MAX_GALOIS_MEMBERS)
    for index, j, key in sealfmt.kswitch_keys(body, "relinearization keys"):
        if index != 0:
            raise HEError("relinearization keys hold more than the key for s^2")
        _check_key(key, relin_label(params, j), moduli)


def _check_key(key: sealfmt.Polys, label: bytes, moduli: list[int]) -> None:
    size, limbs, degree = key.data.shape
    if size != 2 or limbs != len(moduli) or not key.ntt_form:
        raise HEError("key material is not a two-part NTT-form key at the key level")
    if not np.array_equal(key.data[1], expand(label, moduli, degree)):
        raise HEError(
            "key material's uniform part is not the federation's (expanded from its label); "
            "keys must be generated by fedmatch"
        )


def probe_envelope(seed: bytes, commitment: bytes, query: bytes, norm_copy: bytes) -> bytes:
    """A probe as it travels: magic, its seed, the requester's commitment to the template
    (fedmatch.protocol.opening; opaque here), the length of the first SEAL ciphertext, then
    both ciphertexts (the probe at the query scale, its copy at the norm scale, see
    fedmatch.he.engine), each with ``c1`` empty."""
    if len(seed) != PROBE_SEED_BYTES or len(commitment) != COMMITMENT_BYTES:
        raise HEError("probe seed or commitment has the wrong length")
    return _PROBE_MAGIC + seed + commitment + _LENGTH.pack(len(query)) + query + norm_copy


def probe_commitment(data: bytes) -> bytes:
    """The commitment a probe carries (HEError if the probe is not in seeded form)."""
    if len(data) <= _HEAD or data[: len(_PROBE_MAGIC)] != _PROBE_MAGIC:
        raise HEError("probe is not in seeded form (a seed, then the ciphertexts' first parts)")
    return data[_HEAD - COMMITMENT_BYTES - _LENGTH.size : _HEAD - _LENGTH.size]


def new_probe_seed() -> bytes:
    return os.urandom(PROBE_SEED_BYTES)


def open_probe_bytes(params: ParamSet, data: bytes) -> tuple[bytes, bytes]:
    """A received probe turned into the two SEAL ciphertexts the node loads (the probe and
    its norm copy), each ``c1`` expanded from the probe's seed, or HEError for a probe that
    is not in this form (no seed, a non-empty ``c1``, the wrong shape)."""
    probe_commitment(data)  # the form
    seed = data[len(_PROBE_MAGIC) : len(_PROBE_MAGIC) + PROBE_SEED_BYTES]
    (first,) = _LENGTH.unpack_from(data, _HEAD - _LENGTH.size)
    if not 0 < first < len(data) - _HEAD:
        raise HEError("probe is not in seeded form (a seed, then the ciphertexts' first parts)")
    parts = (data[_HEAD : _HEAD + first], data[_HEAD + first :])
    labels = (probe_label(seed), norm_copy_label(seed))
    return _expanded(params, parts[0], labels[0]), _expanded(params, parts[1], labels[1])


def _expanded(params: ParamSet, data: bytes, label: bytes) -> bytes:
    body, version = sealfmt.unpack(data, "probe ciphertext", _MAX_PROBE_MEMBERS)
    ct = sealfmt.ciphertext_at(body, 0, "probe ciphertext")
    moduli = data_moduli(params)
    if ct.end != len(body) or ct.data.shape != (2, len(moduli), params.poly_modulus_degree):
        raise HEError("probe ciphertext must be two polynomials at the top level")
    if not ct.ntt_form:
        raise HEError("probe ciphertext is not a CKKS ciphertext in NTT form")
    if ct.data[1].any():
        raise HEError("probe's second part must be empty: the node expands it from the seed")
    ct.data[1] = expand(label, moduli, params.poly_modulus_degree)
    return sealfmt.pack(body, version, compress=False)
