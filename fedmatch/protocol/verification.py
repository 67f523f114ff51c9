"""Signed hit verdicts: a human expert's confirmation or rejection of one candidate hit.

A candidate hit (a handle at a member state's node, for one query) becomes usable only when
trained people of the requesting state have checked it (Eurodac Art. 38(4)) and two of them
separately confirmed it (AI Act Art. 14(5); DOMAIN.md section 2). Each person signs a
*verdict statement* with the Ed25519 key their ``verifier`` certificate binds: canonical
ASCII JSON (sorted keys) after a domain-separation prefix, modelled on
:mod:`fedmatch.protocol.statement`, naming the query, the record's member state, the handle, confirm
or reject (a reject carries a reason code), the probe's declared sex (so that a
different-sex hit can be recognized without revealing anything else), the verifier's
certificate name, the time and a nonce.

A verdict binds the evidence the person looked at: the SHA-256 of the probe image and of the
candidate's facial image as the owning node released it in the verification packet
(:mod:`fedmatch.protocol.packet`). The coordinator and the node refuse a verdict whose hashes
are not those of the released images: nobody can confirm a hit on images other than the ones
shown. ``""`` stands for "no image": a record enrolled from a template alone (not
verifiable) or a lookup made from a template.

The same code checks verdicts at the coordinator and again at the node that owns the
record: :func:`verify_verdict` (one verdict: chain to the federation root, CRLs, role,
state, key, signature) and :func:`assess` (one hit's verdicts: rejected, verified by enough
distinct people, or pending). Verification raises PermissionDenied; it never returns a bool.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedmatch.audit.note import NoteSigner
from fedmatch.domain import Sex, check_member_state
from fedmatch.errors import InvalidInput, PermissionDenied
from fedmatch.protocol.canonical import canonical_json
from fedmatch.protocol.limits import HANDLE_BYTES
from fedmatch.protocol.statement import key_id

__all__ = [
    "DIFFERENT_SEX_CONFIRMATIONS",
    "MAX_VERDICTS",
    "REJECT_REASONS",
    "VERDICT_DOMAIN",
    "Assessment",
    "Evidence",
    "HitKey",
    "SignedVerdict",
    "Verdict",
    "VerdictSigner",
    "VerdictStatement",
    "VerifiedVerdict",
    "assess",
    "assess_all",
    "check_evidence",
    "different_sex",
    "read_verdicts",
    "sign_verdict",
    "verify_verdict",
    "write_verdicts",
]

VERDICT_DOMAIN = b"fedmatch/hit-verdict/v2\x00"
_VERSION = 2
MAX_VERDICT_BYTES = 2048
MAX_CHAIN_BYTES = 16 * 1024
# 64 hits per resolve (fedmatch.protocol.limits) and a few people each.
MAX_VERDICTS = 256
# A verdict dated later than this is refused: clocks differ, but not by minutes.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000

# Why an expert rejects a candidate hit; codes only, never free text (they are logged).
REJECT_REASONS = (
    "different_person",
    "insufficient_quality",
    "inconclusive",
    "data_error",
)

# Two people check a hit on a person of a different sex, waiver or not (DOMAIN.md section 2).
DIFFERENT_SEX_CONFIRMATIONS = 2

_HEX = re.compile(r"[0-9a-f]+")
_QUERY_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {
    "v",
    "query_id",
    "requesting_state",
    "member_state",
    "handle",
    "verdict",
    "reason",
    "probe_sex",
    "probe_image",
    "candidate_image",
    "verifier",
    "issued_ms",
    "nonce",
    "signer",
}


class Verdict(enum.StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"


def different_sex(record: Sex, probe: Sex) -> bool:
    """Whether a record's sex differs from the probe's declared sex (both known)."""
    return Sex.UNSPECIFIED not in (record, probe) and record != probe


def needs_two_people(record: Sex, probe: Sex) -> bool:
    """Whether a hit is not shown to be of the same sex: a record of known sex and a probe
    of another sex or of none declared. Such a hit needs two confirmations even under the
    second-person waiver (DOMAIN.md: a different-sex hit always goes for review), so that
    leaving the probe's sex out cannot skip the review."""
    return record is not Sex.UNSPECIFIED and record != probe


@dataclass(frozen=True)
class HitKey:
    """One candidate hit: a handle at a member state's node within one query."""

    member_state: str
    handle: bytes

    def label(self) -> str:
        return f"{self.member_state}:{self.handle.hex()}"


@dataclass(frozen=True)
class Evidence:
    """What a verifier compared: the SHA-256 (hex) of the probe image and of the candidate's
    facial image from its verification packet; "" where there was no image."""

    probe_image: str
    candidate_image: str


@dataclass(frozen=True)
class VerdictStatement:
    query_id: str
    requesting_state: str
    member_state: str
    handle: str  # hex of the per-query position handle
    verdict: Verdict
    reason: str  # a REJECT_REASONS code for a reject, "" for a confirm
    probe_sex: Sex  # the sex the requesting state declares for the person searched
    probe_image: str  # SHA-256 hex of the probe image the verifier compared ("" none)
    candidate_image: str  # SHA-256 hex of the candidate's released facial image ("" none)
    verifier: str  # the DNS name of the verifier's certificate
    issued_ms: int
    nonce: str
    signer: str  # key id of the signing key (fedmatch.protocol.statement.key_id)

    def __post_init__(self) -> None:
        if not _QUERY_ID.fullmatch(self.query_id):
            raise InvalidInput("verdict query_id must be 32 lowercase hex digits")
        check_member_state(self.requesting_state, "verdict requesting_state")
        check_member_state(self.member_state, "verdict member_state")
        if len(self.handle) != 2 * HANDLE_BYTES or not _HEX.fullmatch(self.handle):
            raise InvalidInput(f"verdict handle must be {2 * HANDLE_BYTES} hex digits")
        object.__setattr__(self, "verdict", _enum(Verdict, self.verdict, "verdict"))
        object.__setattr__(self, "probe_sex", _enum(Sex, self.probe_sex, "probe_sex"))
        if self.verdict is Verdict.REJECT and self.reason not in REJECT_REASONS:
            raise InvalidInput(f"a reject needs a reason code: one of {', '.join(REJECT_REASONS)}")
        if self.verdict is Verdict.CONFIRM and self.reason:
            raise InvalidInput("a confirmation carries no reason code")
        for name, digest in (("probe_image", self.probe_image),
                             ("candidate_image", self.candidate_image)):  # fmt: skip
            if digest and not _SHA256.fullmatch(digest):
                raise InvalidInput(f"verdict {name} must be a SHA-256 in hex, or empty")
        if not self.verifier or len(self.verifier) > 128 or not self.verifier.isprintable():
            raise InvalidInput("verdict verifier must be a certificate name")
        if len(self.nonce) != 32 or not _HEX.fullmatch(self.nonce):
            raise InvalidInput("verdict nonce must be 32 hex digits (128 bits)")
        if len(self.signer) != 16 or not _HEX.fullmatch(self.signer):
            raise InvalidInput("verdict signer must be a 16-hex-digit key id")
        if isinstance(self.issued_ms, bool) or not isinstance(self.issued_ms, int):
            raise InvalidInput("verdict issued_ms must be an integer")
        if self.issued_ms < 0:
            raise InvalidInput("verdict issued_ms must be non-negative")

    @property
    def hit(self) -> HitKey:
        return HitKey(self.member_state, bytes.fromhex(self.handle))

    @property
    def evidence(self) -> Evidence:
        return Evidence(self.probe_image, self.candidate_image)

    def encode(self) -> bytes:
        return canonical_json(
            {
                "v": _VERSION,
                "query_id": self.query_id,
                "requesting_state": self.requesting_state,
                "member_state": self.member_state,
                "handle": self.handle,
                "verdict": self.verdict.value,
                "reason": self.reason,
                "probe_sex": self.probe_sex.value,
                "probe_image": self.probe_image,
                "candidate_image": self.candidate_image,
                "verifier": self.verifier,
                "issued_ms": self.issued_ms,
                "nonce": self.nonce,
                "signer": self.signer,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> VerdictStatement:
        if len(data) > MAX_VERDICT_BYTES:
            raise InvalidInput(f"verdict statement exceeds {MAX_VERDICT_BYTES} bytes")
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            raise InvalidInput("verdict statement is not JSON") from None
        if not isinstance(obj, dict) or set(obj) != _FIELDS or obj.get("v") != _VERSION:
            raise InvalidInput("verdict statement has unknown fields or version")
        strings = {k: obj[k] for k in _FIELDS - {"v", "issued_ms"}}
        if not all(isinstance(v, str) and len(v) <= 256 for v in strings.values()):
            raise InvalidInput("verdict statement has a field of the wrong type")
        if type(obj["issued_ms"]) is not int:
            raise InvalidInput("verdict statement has a field of the wrong type")
        statement = cls(**strings, issued_ms=obj["issued_ms"])
        if statement.encode() != data:
            raise InvalidInput("verdict statement is not canonical")
        return statement


def _enum(kind: Any, value: object, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise InvalidInput(f"verdict {name} has an unknown value") from None


@dataclass(frozen=True)
class SignedVerdict:
    """A verdict statement with its signature and the signer's certificate chain (PEM)."""

    statement: bytes
    signature: bytes
    signer_chain: bytes

    def __post_init__(self) -> None:
        if not self.statement or not self.signature:
            raise PermissionDenied("verdict is not signed")
        if len(self.statement) > MAX_VERDICT_BYTES:
            raise InvalidInput(f"verdict statement exceeds {MAX_VERDICT_BYTES} bytes")
        if len(self.signer_chain) > MAX_CHAIN_BYTES:
            raise InvalidInput(f"verdict signer_chain exceeds {MAX_CHAIN_BYTES} bytes")
        if len(self.signature) != 64:
            raise InvalidInput("a verdict signature is a 64-byte Ed25519 signature")


class _Identity(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def member_state(self) -> str | None: ...
    @property
    def signing_key(self) -> bytes: ...
    @property
    def dns(self) -> str: ...


@dataclass(frozen=True)
class VerifiedVerdict:
    statement: VerdictStatement
    # The person: their certificate's name and signing key (both tell people apart).
    verifier: str
    signing_key: bytes


def sign_verdict(
    signer: NoteSigner,
    chain_pem: bytes,
    verifier: str,
    query_id: str,
    requesting_state: str,
    hit: HitKey,
    evidence: Evidence,
    verdict: Verdict,
    probe_sex: Sex,
    reason: str = "",
    issued_ms: int | None = None,
) -> SignedVerdict:
    """A verifier's side: state and sign a verdict on one candidate hit, compared on the
    images ``evidence`` names. ``verifier`` is the DNS name of the certificate in
    ``chain_pem`` (``anna.verifier.de.fedmatch.eu``)."""
    statement = VerdictStatement(
        query_id=query_id,
        requesting_state=requesting_state,
        member_state=hit.member_state,
        handle=hit.handle.hex(),
        verdict=verdict,
        reason=reason,
        probe_sex=probe_sex,
        probe_image=evidence.probe_image,
        candidate_image=evidence.candidate_image,
        verifier=verifier,
        issued_ms=int(time.time() * 1000) if issued_ms is None else issued_ms,
        nonce=secrets.token_hex(16),
        signer=key_id(signer.public_key_bytes()),
    ).encode()
    return SignedVerdict(statement, signer.sign(VERDICT_DOMAIN + statement), chain_pem)


def verify_verdict(
    signed: SignedVerdict,
    query_id: str,
    requesting_state: str,
    verify_chain: Callable[[bytes], _Identity],
    now_ms: int | None = None,
) -> VerifiedVerdict:
    """Check one verdict for this query of ``requesting_state``; raises PermissionDenied.

    ``verify_chain`` verifies a PEM chain against the federation root and its CRLs (a
    revoked verifier is refused there) and returns the holder's identity. The holder must
    be a ``verifier`` of the requesting state (the receiving state's experts check a hit,
    Eurodac Art. 38(4)), named in the statement, holding the key that signed it."""
    statement = VerdictStatement.decode(signed.statement)
    if statement.query_id != query_id or statement.requesting_state != requesting_state:
        raise PermissionDenied("a verdict is for another query")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if statement.issued_ms > now + MAX_CLOCK_SKEW_MS:
        raise PermissionDenied("a verdict is dated in the future")
    holder = verify_chain(signed.signer_chain)
    if holder.role != "verifier" or holder.member_state != requesting_state:
        raise PermissionDenied(
            f"a verdict is signed by a {holder.role} of {holder.member_state or 'EU'}, not by "
            f"an authorized verifier of {requesting_state}"
        )
    if holder.dns != statement.verifier:
        raise PermissionDenied("a verdict names another verifier than its certificate")
    if not holder.signing_key or key_id(holder.signing_key) != statement.signer:
        raise PermissionDenied("a verdict is signed with a key its certificate does not carry")
    try:
        Ed25519PublicKey.from_public_bytes(holder.signing_key).verify(
            signed.signature, VERDICT_DOMAIN + signed.statement
        )
    except (InvalidSignature, ValueError):
        raise PermissionDenied("a verdict signature does not verify") from None
    return VerifiedVerdict(statement, holder.dns, holder.signing_key)


@dataclass(frozen=True)
class Assessment:
    """What the verdicts on one hit add up to."""

    hit: HitKey
    status: str  # "verified", "rejected" or "pending"
    confirmed_by: tuple[str, ...]  # distinct verifiers who confirmed (certificate names)
    rejected_by: tuple[str, ...]
    reasons: tuple[str, ...]  # reject reason codes
    probe_sex: Sex

    @property
    def verified(self) -> bool:
        return self.status == "verified"


def assess(hit: HitKey, verdicts: Sequence[VerifiedVerdict], required: int) -> Assessment:
    """Rejected if anyone rejected it; verified if at least ``required`` distinct people
    confirmed it; else pending. One person is one certificate name and one signing key:
    the same person signing twice (or under two names with one key) counts once."""
    mine = [v for v in verdicts if v.statement.hit == hit]
    # A verifier who leaves the probe's sex out declares nothing; two who declare different
    # sexes contradict each other.
    sexes = {v.statement.probe_sex for v in mine} - {Sex.UNSPECIFIED}
    if len(sexes) > 1:
        raise InvalidInput("the verdicts on one hit declare different sexes for the probe")
    rejects = [v for v in mine if v.statement.verdict is Verdict.REJECT]
    confirms = [v for v in mine if v.statement.verdict is Verdict.CONFIRM]
    names: set[str] = set()
    keys: set[bytes] = set()
    for v in confirms:
        if v.verifier not in names and v.signing_key not in keys:
            names.add(v.verifier)
            keys.add(v.signing_key)
    status = "rejected" if rejects else "verified" if len(names) >= required else "pending"
    return Assessment(
        hit=hit,
        status=status,
        confirmed_by=tuple(sorted(names)),
        rejected_by=tuple(sorted({v.verifier for v in rejects})),
        reasons=tuple(sorted({v.statement.reason for v in rejects})),
        probe_sex=next(iter(sexes), Sex.UNSPECIFIED),
    )


def assess_all(
    hits: Iterable[HitKey],
    signed: Sequence[SignedVerdict],
    query_id: str,
    requesting_state: str,
    required: int,
    verify_chain: Callable[[bytes], _Identity],
) -> dict[HitKey, Assessment]:
    """Verify every verdict (any bad one refuses the whole request) and assess each hit.
    A verdict on a hit that is not among ``hits`` is refused as well."""
    if len(signed) > MAX_VERDICTS:
        raise InvalidInput(f"at most {MAX_VERDICTS} verdicts per request")
    wanted = list(dict.fromkeys(hits))
    verified = [verify_verdict(s, query_id, requesting_state, verify_chain) for s in signed]
    if any(v.statement.hit not in wanted for v in verified):
        raise InvalidInput("a verdict names a hit that is not in this request")
    return {hit: assess(hit, verified, required) for hit in wanted}


def check_evidence(
    verdicts: Iterable[VerdictStatement], released: Mapping[HitKey, str], probe_image: str | None
) -> None:
    """Every verdict must name the images that were released for its hit: the candidate
    image of the hit's verification packet (``released``: hit to its image's SHA-256, ""
    for a record without one) and the probe image the requester declared when it asked
    for the packets (``probe_image``; None: no packet was asked for). PermissionDenied
    otherwise: a verdict on a hit whose packet was never released, or on other images."""
    for v in verdicts:
        if probe_image is None or v.hit not in released:
            raise PermissionDenied(
                "a verdict needs the hit's verification packet: none was released for it"
            )
        if v.probe_image != probe_image or v.candidate_image != released[v.hit]:
            raise PermissionDenied("a verdict names other images than the ones released")


# Verdict files, as `fedmatch verify-hit` writes them: JSON, each verdict's bytes in base64.
_FILE_FORMAT = "fedmatch-hit-verdicts-v1"


def write_verdicts(signed: Sequence[SignedVerdict], path: Path) -> None:
    from fedmatch.fileio import write_atomically

    body = {
        "format": _FILE_FORMAT,
        "verdicts": [
            {
                "statement": base64.b64encode(s.statement).decode(),
                "signature": base64.b64encode(s.signature).decode(),
                "signer_chain": s.signer_chain.decode("ascii"),
            }
            for s in signed
        ],
    }
    write_atomically(path, (json.dumps(body, indent=1) + "\n").encode(), mode=0o644)


def read_verdicts(path: Path) -> list[SignedVerdict]:
    """The verdicts of a verdict file (signatures not checked: the receiver does)."""
    try:
        obj = json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"verdict file {path} could not be read ({exc.strerror})") from None
    except ValueError:
        raise InvalidInput(f"verdict file {path} is not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != _FILE_FORMAT:
        raise InvalidInput(f"verdict file {path} is not a fedmatch hit verdict file")
    items = obj.get("verdicts")
    if not isinstance(items, list) or len(items) > MAX_VERDICTS:
        raise InvalidInput(f"verdict file {path} must list at most {MAX_VERDICTS} verdicts")
    try:
        return [
            SignedVerdict(
                base64.b64decode(item["statement"], validate=True),
                base64.b64decode(item["signature"], validate=True),
                str(item["signer_chain"]).encode("ascii"),
            )
            for item in items
        ]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise InvalidInput(f"verdict file {path} is malformed") from None


@dataclass(frozen=True)
class VerdictSigner:
    """A verifier's workstation: the signing key their ``verifier`` certificate binds, and
    that certificate chain (PEM, leaf first)."""

    key: NoteSigner
    chain_pem: bytes

    @property
    def name(self) -> str:
        """The certificate's DNS name, which every verdict names as its verifier."""
        from cryptography import x509

        from fedmatch.pki.names import identity_from_certificate

        try:
            leaf = x509.load_pem_x509_certificates(self.chain_pem)[0]
        except (ValueError, IndexError):
            raise InvalidInput("the verifier's chain is not a PEM certificate") from None
        return identity_from_certificate(leaf).dns

    def confirm(
        self,
        query_id: str,
        requesting_state: str,
        hit: HitKey,
        evidence: Evidence,
        probe_sex: Sex = Sex.UNSPECIFIED,
    ) -> SignedVerdict:
        return sign_verdict(
            self.key, self.chain_pem, self.name, query_id, requesting_state, hit, evidence,
            Verdict.CONFIRM, probe_sex,
        )  # fmt: skip

    def reject(
        self,
        query_id: str,
        requesting_state: str,
        hit: HitKey,
        evidence: Evidence,
        reason: str,
        probe_sex: Sex = Sex.UNSPECIFIED,
    ) -> SignedVerdict:
        return sign_verdict(
            self.key, self.chain_pem, self.name, query_id, requesting_state, hit, evidence,
            Verdict.REJECT, probe_sex, reason,
        )  # fmt: skip
