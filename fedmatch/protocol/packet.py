"""The verification packet: what a verifier of the requesting state needs to check one
candidate hit by image, and nothing that identifies the record before two verdicts.

After the requester proved a match to the owning node (it opened its probe commitment and
the node recomputed the similarity, :mod:`fedmatch.protocol.opening`), the node releases for
each proven candidate:

- the facial image kept at enrolment (a face crop, :mod:`fedmatch.biometrics.portrait`), or
  none for a record enrolled from a template alone ("not verifiable");
- the record's sex, age band at capture, capture date and the image-quality figure.

No reference number, category, event date or place: those come with the hit details, after
two people confirmed the hit (DOMAIN.md section 2).

The content is encrypted end to end to the requester, under the key derived from the very
X25519 exchange that sealed the opening (:func:`fedmatch.protocol.opening.seal_opening_with_reply`):
the coordinator relays it unread. The SHA-256 of the image travels beside the ciphertext, in
clear and bound into the authentication, so that the coordinator and the node can check
later that a verdict names the image that was released (and the requester checks that the
image it decrypted is the one named).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedmatch.domain import Sex
from fedmatch.errors import InvalidInput, PermissionDenied
from fedmatch.protocol.limits import HANDLE_BYTES

__all__ = [
    "AGE_BANDS",
    "MAX_PACKET_BYTES",
    "MAX_PACKET_REQUESTS",
    "MAX_SEALED_PACKET_BYTES",
    "CandidatePacket",
    "SealedPacket",
    "admit_packet_request",
    "age_band",
    "check_image_digest",
    "image_digest",
    "open_packet",
    "seal_packet",
]

_DOMAIN = b"fedmatch/verification-packet/v1\x00"
_NONCE_BYTES = 12
# A portrait crop is at most 480 px on its long side (fedmatch/biometrics/portrait.py): a
# JPEG of it is a few tens of KB, far under this bound; the metadata is a few hundred bytes.
MAX_IMAGE_BYTES = 512 * 1024
MAX_PACKET_BYTES = MAX_IMAGE_BYTES + 4096
MAX_SEALED_PACKET_BYTES = MAX_PACKET_BYTES + 12 + 16  # nonce and tag
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_META_BYTES = 1024

# Age at capture, in bands: enough to see that a candidate is of a plausible age, not a
# birth date (which would single the record out).
AGE_BANDS = ((0, 13), (14, 17), (18, 24), (25, 34), (35, 49), (50, 64), (65, 200))


# Packet requests per query: one, and a retry or two after a lost answer. The coordinator
# and the owning node each hold a query to this, and to the probe image of its first request.
MAX_PACKET_REQUESTS = 3


def admit_packet_request(served: int, declared: str | None, probe_image: str) -> None:
    """Refuse (PermissionDenied) a packet request beyond :data:`MAX_PACKET_REQUESTS` for its
    query, or one naming another probe image than the query's first (``declared``)."""
    if served >= MAX_PACKET_REQUESTS:
        raise PermissionDenied(
            f"at most {MAX_PACKET_REQUESTS} verification packet requests per query"
        )
    if declared is not None and declared != probe_image:
        raise PermissionDenied("the probe image differs from the one declared before")


def age_band(birth_date: dt.date | None, capture_date: dt.date) -> str:
    """The band of the age at capture (``"25-34"``, ``"65+"``), or "" when unknown."""
    if birth_date is None:
        return ""
    age = capture_date.year - birth_date.year
    if (capture_date.month, capture_date.day) < (birth_date.month, birth_date.day):
        age -= 1
    for low, high in AGE_BANDS:
        if low <= age <= high:
            return f"{low}+" if high >= 200 else f"{low}-{high}"
    return ""


def check_image_digest(value: str, name: str) -> str:
    """An image's SHA-256 as hex, or "" for none; InvalidInput otherwise."""
    if value and not _SHA256.fullmatch(value):
        raise InvalidInput(f"{name} must be a SHA-256 in lowercase hex, or empty")
    return value


def image_digest(image: bytes) -> str:
    """How verdicts, logs and ledgers name an image: SHA-256 in hex; "" for no image."""
    return hashlib.sha256(image).hexdigest() if image else ""


@dataclass(frozen=True)
class CandidatePacket:
    """One candidate's packet in clear (at the node before sealing, at the requester after)."""

    member_state: str
    handle: bytes
    image: bytes = field(repr=False)  # JPEG; b"" for a record not verifiable by image
    sex: Sex
    age_band: str
    capture_date: str  # YYYY-MM-DD
    image_quality: float

    @property
    def verifiable(self) -> bool:
        return bool(self.image)

    @property
    def image_sha256(self) -> str:
        return image_digest(self.image)

    def _meta(self) -> bytes:
        return json.dumps(
            {
                "sex": self.sex.value,
                "age_band": self.age_band,
                "capture_date": self.capture_date,
                "image_quality": round(float(self.image_quality), 4),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("ascii")


@dataclass(frozen=True)
class SealedPacket:
    """A packet as it travels: the handle, the image's SHA-256 (clear) and the ciphertext."""

    handle: bytes
    image_sha256: str
    ciphertext: bytes = field(repr=False)


def _aad(query_id: str, member_state: str, handle: bytes, digest: str) -> bytes:
    return b"\x00".join(
        (_DOMAIN, query_id.encode(), member_state.encode(), handle, digest.encode())
    )


def seal_packet(packet: CandidatePacket, reply_key: bytes, query_id: str) -> SealedPacket:
    """The node's side: ``packet`` encrypted to the requester that opened the commitment."""
    meta = packet._meta()
    plain = struct.pack(">I", len(meta)) + meta + packet.image
    nonce = secrets.token_bytes(_NONCE_BYTES)
    digest = packet.image_sha256
    aad = _aad(query_id, packet.member_state, packet.handle, digest)
    return SealedPacket(packet.handle, digest, nonce + AESGCM(reply_key).encrypt(nonce, plain, aad))


def open_packet(
    sealed: SealedPacket, reply_key: bytes, query_id: str, member_state: str
) -> CandidatePacket:
    """The requester's side: the packet in clear, or PermissionDenied (not for this query,
    node or handle, tampered with, or an image other than the one its hash names)."""
    if len(sealed.handle) != HANDLE_BYTES:
        raise InvalidInput(f"a packet's handle is {HANDLE_BYTES} bytes")
    if len(sealed.ciphertext) > MAX_SEALED_PACKET_BYTES:
        raise InvalidInput(f"a verification packet is at most {MAX_PACKET_BYTES} bytes")
    nonce, body = sealed.ciphertext[:_NONCE_BYTES], sealed.ciphertext[_NONCE_BYTES:]
    aad = _aad(query_id, member_state, sealed.handle, sealed.image_sha256)
    try:
        plain = AESGCM(reply_key).decrypt(nonce, body, aad)
    except (InvalidTag, ValueError):
        raise PermissionDenied(f"{member_state}'s verification packet does not open") from None
    try:
        (size,) = struct.unpack(">I", plain[:4])
        if size > _MAX_META_BYTES:
            raise ValueError
        meta = json.loads(plain[4 : 4 + size])
        image = plain[4 + size :]
        packet = CandidatePacket(
            member_state=member_state,
            handle=sealed.handle,
            image=image,
            sex=Sex(meta["sex"]),
            age_band=str(meta["age_band"]),
            capture_date=str(meta["capture_date"]),
            image_quality=float(meta["image_quality"]),
        )
    except (struct.error, ValueError, KeyError, TypeError):
        raise InvalidInput(f"{member_state}'s verification packet is malformed") from None
    if packet.image_sha256 != sealed.image_sha256:
        raise PermissionDenied(f"{member_state}'s packet holds another image than it names")
    if len(image) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"{member_state}'s packet image exceeds {MAX_IMAGE_BYTES} bytes")
    return packet
