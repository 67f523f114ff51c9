"""The probe commitment and its opening: hit details only for real matches.

A node cannot see which of its positions a requester decrypted as positive, so before this a
requester could ask for the details of any position (issue 15, attack 5). Now:

1. at lookup, the requester commits to its probe template: ``SHA-256(domain, salt,
   template)`` with 32 random bytes of salt travels inside the probe (the signed request
   covers it through the probe hash); each node answers with a fresh X25519 public key
   for this query (its private half stays in the node's memory with the query's layout);
2. at resolve, the requester opens the commitment to each node it claims a hit at: salt and
   template, sealed to that node's query key (X25519, HKDF-SHA256, AES-256-GCM, bound to
   the query id and the node's state), so that the coordinator relaying it learns nothing;
3. the node checks the opening against the commitment, that the template has unit norm,
   and recomputes the plain similarity with each claimed record: details only for a
   record at or above its threshold, of a category the signed request named and a mark
   state its purpose may see; one resolve per query.

The node thus learns the probe only of a claimed hit, that is of a person it holds. A
requester that searched with another (scaled, packed) probe than it committed to gets
details for nothing but real matches of the committed template.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedmatch.domain import PROBE_NORM_TOLERANCE, check_member_state
from fedmatch.errors import InvalidInput, PermissionDenied

__all__ = [
    "COMMITMENT_BYTES",
    "OPENING_KEY_BYTES",
    "OpeningKey",
    "ProbeOpening",
    "check_opening",
    "commitment",
    "openings_by_state",
    "seal_opening",
    "seal_opening_with_reply",
]

_COMMIT_DOMAIN = b"fedmatch/probe-commitment/v1\x00"
_SEAL_DOMAIN = b"fedmatch/probe-opening/v1\x00"
_REPLY_DOMAIN = b"fedmatch/opening-reply/v1\x00"
SALT_BYTES = 32
COMMITMENT_BYTES = 32
OPENING_KEY_BYTES = 32
_NOT_OURS = "the probe's opening does not open with this query's key"
_NONCE = bytes(12)
# A sealed opening: ephemeral key, salt, up to 4,096 float32 values, the GCM tag.
MAX_SEALED_BYTES = OPENING_KEY_BYTES + 32 + 4 * 4096 + 16
MAX_OPENINGS = 64  # every sealing uses a fresh ephemeral key, so a fixed nonce is safe


def commitment(salt: bytes, template: npt.NDArray[np.floating]) -> bytes:
    """The commitment to ``template`` (as little-endian float32) under ``salt``."""
    data = np.ascontiguousarray(template, dtype="<f4").tobytes()
    return hashlib.sha256(_COMMIT_DOMAIN + salt + data).digest()


@dataclass(frozen=True)
class ProbeOpening:
    """What opens a probe commitment: its salt and the template (kept by the requester
    between lookup and resolve; personal data, like the photo it came from)."""

    salt: bytes = field(repr=False)
    template: npt.NDArray[np.float32] = field(repr=False)

    @classmethod
    def new(cls, template: npt.NDArray[np.floating]) -> ProbeOpening:
        return cls(secrets.token_bytes(SALT_BYTES), np.asarray(template, dtype=np.float32))

    def commitment(self) -> bytes:
        return commitment(self.salt, self.template)

    def encode(self) -> bytes:
        return self.salt + np.ascontiguousarray(self.template, dtype="<f4").tobytes()

    @classmethod
    def decode(cls, data: bytes, dimension: int) -> ProbeOpening:
        if len(data) != SALT_BYTES + 4 * dimension:
            raise InvalidInput(f"probe opening must hold a salt and {dimension} values")
        template = np.frombuffer(data[SALT_BYTES:], dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(template)):
            raise InvalidInput("probe opening has non-finite values")
        return cls(data[:SALT_BYTES], template)


def _aead(shared: bytes, query_id: str, member_state: str) -> AESGCM:
    info = _SEAL_DOMAIN + query_id.encode() + b"\x00" + member_state.encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    return AESGCM(key)


def _aad(query_id: str, member_state: str) -> bytes:
    return _SEAL_DOMAIN + query_id.encode() + b"\x00" + member_state.encode()


def _reply_key(shared: bytes, query_id: str, member_state: str) -> bytes:
    """The key of the node's answer to this sealing (its verification packets,
    fedmatch/protocol/packet.py): only the sealer and the node can derive it."""
    info = _REPLY_DOMAIN + query_id.encode() + b"\x00" + member_state.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def seal_opening(opening: ProbeOpening, node_key: bytes, query_id: str, member_state: str) -> bytes:
    """``opening`` sealed to a node's per-query key: ephemeral public key, then AES-GCM."""
    return seal_opening_with_reply(opening, node_key, query_id, member_state)[0]


def seal_opening_with_reply(
    opening: ProbeOpening, node_key: bytes, query_id: str, member_state: str
) -> tuple[bytes, bytes]:
    """:func:`seal_opening`, and the 32-byte key the node's reply to it is encrypted with."""
    if len(node_key) != OPENING_KEY_BYTES:
        raise InvalidInput(f"{member_state}'s opening key is not {OPENING_KEY_BYTES} bytes")
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(node_key))
    sealed = _aead(shared, query_id, member_state).encrypt(
        _NONCE, opening.encode(), _aad(query_id, member_state)
    )
    reply = _reply_key(shared, query_id, member_state)
    return ephemeral.public_key().public_bytes_raw() + sealed, reply


class OpeningKey:
    """A node's key for one query's opening (kept in memory with the query's layout)."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()

    def __repr__(self) -> str:
        return "OpeningKey(<private>)"

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def open(self, sealed: bytes, query_id: str, member_state: str, dimension: int) -> ProbeOpening:
        """The opening inside ``sealed``, or PermissionDenied (no opening, or one sealed
        for another query or node, or tampered with)."""
        return self.open_with_reply(sealed, query_id, member_state, dimension)[0]

    def open_with_reply(
        self, sealed: bytes, query_id: str, member_state: str, dimension: int
    ) -> tuple[ProbeOpening, bytes]:
        """:meth:`open`, and the key to encrypt the answer to the sealer with."""
        if len(sealed) <= OPENING_KEY_BYTES:
            raise PermissionDenied("hit details need the probe's opening, sealed to this node")
        try:
            peer = X25519PublicKey.from_public_bytes(sealed[:OPENING_KEY_BYTES])
            shared = self._key.exchange(peer)
            plain = _aead(shared, query_id, member_state).decrypt(
                _NONCE, sealed[OPENING_KEY_BYTES:], _aad(query_id, member_state)
            )
        except (InvalidTag, ValueError):
            raise PermissionDenied(_NOT_OURS) from None
        return ProbeOpening.decode(plain, dimension), _reply_key(shared, query_id, member_state)


def check_opening(opening: ProbeOpening, committed: bytes) -> None:
    """The opening must match the probe's commitment and be a unit-norm template."""
    if not secrets.compare_digest(opening.commitment(), committed):
        raise PermissionDenied("the probe's opening does not match its commitment")
    norm = float(np.linalg.norm(opening.template.astype(np.float64)))
    if abs(norm - 1.0) > PROBE_NORM_TOLERANCE:
        raise PermissionDenied("the committed probe template does not have unit norm")


def openings_by_state(pairs: Sequence[tuple[str, bytes]]) -> dict[str, bytes]:
    """A resolve's sealed openings by state, checked for size (the coordinator relays them
    unread, so this is all it can check): one per state, each at most MAX_SEALED_BYTES."""
    if len(pairs) > MAX_OPENINGS:
        raise InvalidInput(f"at most {MAX_OPENINGS} sealed openings per request")
    out: dict[str, bytes] = {}
    for state, sealed in pairs:
        check_member_state(state, "openings.member_state")
        if state in out:
            raise InvalidInput("one sealed opening per state")
        if len(sealed) > MAX_SEALED_BYTES:
            raise InvalidInput(f"a sealed opening is at most {MAX_SEALED_BYTES} bytes")
        out[state] = sealed
    return out
