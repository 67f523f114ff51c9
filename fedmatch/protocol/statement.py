"""Signed request statements: what a requesting authority vouches for, in canonical bytes.

Protobuf serialization is not canonical, so the requester signs a statement it encodes
itself (sorted-key ASCII JSON) and sends those exact bytes with the request: who asks, why,
under which legal basis, for which case, which register categories, which probe (by the
hash of its ciphertext), a 128-bit nonce and the time. The receiver decodes the statement,
refuses any that is not canonical, and checks every field against the request it came with.

Signatures are Ed25519 over a domain-separation prefix and the statement; the prefix differs
for the requester's signature and for a verifying authority's approval (law enforcement),
so one can never stand in for the other, nor for a log entry or a checkpoint. The signer's
key id (first 8 bytes of SHA-256 of its public key) is inside the statement.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedmatch.audit.note import NoteSigner
from fedmatch.domain import Category, QueryHeader
from fedmatch.errors import InvalidInput, PermissionDenied
from fedmatch.protocol.canonical import canonical_json

__all__ = [
    "ALL_CATEGORIES",
    "APPROVAL_DOMAIN",
    "MAX_STATEMENT_BYTES",
    "STATEMENT_DOMAIN",
    "RequestSigner",
    "RequestStatement",
    "SignedRequest",
    "VerifiedRequest",
    "approve",
    "key_id",
    "new_nonce",
    "sign_request",
    "verify_request",
]

STATEMENT_DOMAIN = b"fedmatch/request/v1\x00"
APPROVAL_DOMAIN = b"fedmatch/approval/v1\x00"
MAX_STATEMENT_BYTES = 4096
MAX_CHAIN_BYTES = 16 * 1024
_HEX = re.compile(r"[0-9a-f]+")
_FIELDS = {
    "v",
    "kind",
    "query_id",
    "requesting_state",
    "purpose",
    "legal_basis",
    "case_reference",
    "unit",
    "operator",
    "categories",
    "probe_hash",
    "nonce",
    "issued_ms",
    "signer",
    "prior_check",
    "urgent",
    "subject_category",
}


def key_id(public_key: bytes) -> str:
    """How a statement names its signer's Ed25519 key: 16 hex digits."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def new_nonce() -> str:
    return secrets.token_hex(16)


KINDS = ("lookup", "packets", "resolve", "confirm", "answer", "enrol", "lifecycle")


@dataclass(frozen=True)
class RequestStatement:
    # "lookup" (a search); "packets" (the candidates' verification packets: probe_hash is
    # then the SHA-256 of the probe image the verifiers compare with, fedmatch/protocol/
    # packet.py); "resolve" (hit details and a decision); "confirm" (an official's
    # confirmation of a case proposal: probe_hash is then the digest of the confirmation's
    # body, see fedmatch/protocol/casefile.py); "answer" (a data subject's answer from the
    # verdicts on a data-subject search's candidates: states only, never details); "enrol"
    # and "lifecycle" (an action at the state's own node: probe_hash is then the digest of
    # the whole request, see fedmatch/protocol/node_action.py)
    kind: str
    query_id: str
    requesting_state: str
    purpose: str
    legal_basis: str
    case_reference: str
    unit: str
    operator: str
    categories: tuple[str, ...]
    probe_hash: str  # SHA-256 hex of the probe ciphertext ("" for a resolve)
    nonce: str
    issued_ms: int
    signer: str
    # Law enforcement: the reference of the national check that failed first.
    prior_check: str = ""
    urgent: bool = False
    # The register category of the person searched (an applicant, someone apprehended
    # crossing...), as the requester declares it: published statistics count hits per pair
    # of categories (DOMAIN.md section 6). "" when not declared.
    subject_category: str = ""

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": 1,
            "kind": self.kind,
            "query_id": self.query_id,
            "requesting_state": self.requesting_state,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "case_reference": self.case_reference,
            "unit": self.unit,
            "operator": self.operator,
            "categories": list(self.categories),
            "probe_hash": self.probe_hash,
            "nonce": self.nonce,
            "issued_ms": self.issued_ms,
            "signer": self.signer,
            "prior_check": self.prior_check,
            "urgent": self.urgent,
            "subject_category": self.subject_category,
        }
        return canonical_json(obj)

    @classmethod
    def decode(cls, data: bytes) -> RequestStatement:
        if len(data) > MAX_STATEMENT_BYTES:
            raise InvalidInput(f"request statement exceeds {MAX_STATEMENT_BYTES} bytes")
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):  # (deep nesting fits in 4 KiB)
            raise InvalidInput("request statement is not JSON") from None
        if not isinstance(obj, dict) or set(obj) != _FIELDS or obj.get("v") != 1:
            raise InvalidInput("request statement has unknown fields or version")
        try:
            statement = cls(
                kind=_str(obj["kind"]),
                query_id=_str(obj["query_id"]),
                requesting_state=_str(obj["requesting_state"]),
                purpose=_str(obj["purpose"]),
                legal_basis=_str(obj["legal_basis"]),
                case_reference=_str(obj["case_reference"]),
                unit=_str(obj["unit"]),
                operator=_str(obj["operator"]),
                categories=tuple(_str(c) for c in _list(obj["categories"])),
                probe_hash=_str(obj["probe_hash"]),
                nonce=_str(obj["nonce"]),
                issued_ms=_int(obj["issued_ms"]),
                signer=_str(obj["signer"]),
                prior_check=_str(obj["prior_check"]),
                urgent=_bool(obj["urgent"]),
                subject_category=_str(obj["subject_category"]),
            )
        except TypeError:
            raise InvalidInput("request statement has a field of the wrong type") from None
        if statement.encode() != data:
            raise InvalidInput("request statement is not canonical")
        if statement.subject_category and statement.subject_category not in ALL_CATEGORIES:
            raise InvalidInput("request statement subject_category is not a register category")
        if len(statement.nonce) != 32 or not _HEX.fullmatch(statement.nonce):
            raise InvalidInput("request statement nonce must be 32 hex digits (128 bits)")
        if statement.kind not in KINDS:
            raise InvalidInput(f"request statement kind must be one of {', '.join(KINDS)}")
        return statement

    def check_header(self, header: QueryHeader) -> None:
        """The statement must say exactly what the request's header says."""
        mismatch = [
            name
            for name, mine, theirs in (
                ("query_id", self.query_id, header.query_id),
                ("requesting_state", self.requesting_state, header.requesting_state),
                ("purpose", self.purpose, header.purpose.value),
                ("legal_basis", self.legal_basis, header.legal_basis),
                ("case_reference", self.case_reference, header.case_reference),
                ("unit", self.unit, header.unit),
                ("operator", self.operator, header.operator),
            )
            if mine != theirs
        ]
        if mismatch:
            raise PermissionDenied(f"signed statement differs from the request: {mismatch[0]}")


def _str(value: object) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise TypeError
    return value


def _int(value: object) -> int:
    if type(value) is not int or value < 0:
        raise TypeError
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _list(value: object) -> Sequence[object]:
    if not isinstance(value, list) or len(value) > 16:
        raise TypeError
    return value


@dataclass(frozen=True)
class SignedRequest:
    """A statement with the requester's signature and certificate chain, and for law
    enforcement the verifying authority's approval with its chain."""

    statement: bytes
    signature: bytes
    signer_chain: bytes
    approval: bytes = b""
    approver_chain: bytes = b""

    def __post_init__(self) -> None:
        if not self.statement or not self.signature:
            raise PermissionDenied("request is not signed")
        if len(self.statement) > MAX_STATEMENT_BYTES:
            raise InvalidInput(f"request statement exceeds {MAX_STATEMENT_BYTES} bytes")
        for name in ("signer_chain", "approver_chain"):
            if len(getattr(self, name)) > MAX_CHAIN_BYTES:
                raise InvalidInput(f"{name} exceeds {MAX_CHAIN_BYTES} bytes")
        if len(self.signature) != 64 or (self.approval and len(self.approval) != 64):
            raise InvalidInput("request signatures are 64-byte Ed25519 signatures")

    def digest(self) -> str:
        """What the coordinator's log entry records of this request: SHA-256 hex."""
        return hashlib.sha256(
            b"".join(len(p).to_bytes(4, "big") + p for p in (self.statement, self.signature))
        ).hexdigest()


class _Identity(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def instance(self) -> str: ...
    @property
    def member_state(self) -> str | None: ...
    @property
    def signing_key(self) -> bytes: ...


@dataclass(frozen=True)
class VerifiedRequest:
    statement: RequestStatement
    signer: Any  # the requester's Identity (fedmatch.pki.names.Identity)
    approver: Any | None
    digest: str


def verify_request(
    signed: SignedRequest | None,
    header: QueryHeader,
    kind: str,
    probe_hash: str,
    verify_chain: Callable[[bytes], _Identity],
) -> VerifiedRequest:
    """Check a signed request against the request it came with; raises PermissionDenied.

    The signer is an officer of the requesting state (a person's ``officer`` certificate)
    and the request's ``operator`` is that certificate's instance, the officer's id.
    ``verify_chain`` verifies a PEM certificate chain against the federation root and its
    revocation lists and returns the holder's identity (role, state, instance, signing
    key)."""
    if signed is None:
        raise PermissionDenied("request is not signed by the requesting authority")
    statement = RequestStatement.decode(signed.statement)
    statement.check_header(header)
    if statement.kind != kind:
        raise PermissionDenied(f"signed statement is for a {statement.kind}, not a {kind}")
    if statement.probe_hash != probe_hash:
        raise PermissionDenied("signed statement is for another probe")
    signer = verify_chain(signed.signer_chain)
    if signer.role != "officer" or signer.member_state != header.requesting_state:
        # A workstation's (operator) certificate makes the channel; it signs nothing.
        raise PermissionDenied(
            f"request signed by a {signer.role} of {signer.member_state or 'EU'}, not by an "
            f"officer of {header.requesting_state}"
        )
    if statement.operator != signer.instance:
        # The operator id every log records is the signing officer's, never free text.
        raise PermissionDenied("request names another officer than the one who signed it")
    _check_signature(signer.signing_key, statement.signer, STATEMENT_DOMAIN, signed)
    approver = None
    if signed.approval:
        approver = verify_chain(signed.approver_chain)
        if approver.role != "verifier" or approver.member_state != header.requesting_state:
            raise PermissionDenied("approval is not by a verifying authority of the requester")
        _verify_ed25519(approver.signing_key, APPROVAL_DOMAIN + signed.statement, signed.approval)
    return VerifiedRequest(statement, signer, approver, signed.digest())


def _check_signature(public: bytes, named: str, domain: bytes, signed: SignedRequest) -> None:
    if not public or key_id(public) != named:
        raise PermissionDenied("request is signed with a key its certificate does not carry")
    _verify_ed25519(public, domain + signed.statement, signed.signature)


def _verify_ed25519(public: bytes, message: bytes, signature: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise PermissionDenied("request signature does not verify") from None


def sign_request(
    signer: NoteSigner,
    chain_pem: bytes,
    header: QueryHeader,
    kind: str,
    categories: Sequence[str],
    probe_hash: str = "",
    prior_check: str = "",
    urgent: bool = False,
    issued_ms: int | None = None,
    subject_category: str = "",
) -> SignedRequest:
    """The requester's side: state and sign a request (see :func:`verify_request`)."""
    statement = RequestStatement(
        kind=kind,
        query_id=header.query_id,
        requesting_state=header.requesting_state,
        purpose=header.purpose.value,
        legal_basis=header.legal_basis,
        case_reference=header.case_reference,
        unit=header.unit,
        operator=header.operator,
        categories=tuple(categories),
        probe_hash=probe_hash,
        nonce=new_nonce(),
        issued_ms=int(time.time() * 1000) if issued_ms is None else issued_ms,
        signer=key_id(signer.public_key_bytes()),
        prior_check=prior_check,
        urgent=urgent,
        subject_category=subject_category,
    ).encode()
    return SignedRequest(statement, signer.sign(STATEMENT_DOMAIN + statement), chain_pem)


def approve(signed: SignedRequest, verifier: NoteSigner, chain_pem: bytes) -> SignedRequest:
    """A verifying authority's approval of a law-enforcement request (the second signature)."""
    return replace(
        signed,
        approval=verifier.sign(APPROVAL_DOMAIN + signed.statement),
        approver_chain=chain_pem,
    )


ALL_CATEGORIES = tuple(c.value for c in Category)


@dataclass(frozen=True)
class RequestSigner:
    """An officer's signing key and personal certificate chain (``officer`` role), and the
    register categories their searches name (all by default; a node's policy may refuse
    some). Every request it signs names the officer of the certificate as its operator."""

    key: NoteSigner
    chain_pem: bytes
    categories: tuple[str, ...] = ALL_CATEGORIES
    # Law enforcement: the verifying authority's approval, and the prior national check.
    approve: Callable[[SignedRequest], SignedRequest] | None = None
    prior_check: str = ""

    def sign(
        self, header: QueryHeader, kind: str, probe_hash: str = "", subject_category: str = ""
    ) -> SignedRequest:
        """``subject_category``: the category of the person searched, if declared.
        InvalidInput if ``header.operator`` is not the officer's id (every party would
        refuse the request)."""
        if self.officer and header.operator != self.officer:
            raise InvalidInput(
                f"the request names operator {header.operator!r}, but it is signed by "
                f"officer {self.officer!r} (the certificate's id is the operator id)"
            )
        signed = sign_request(
            self.key,
            self.chain_pem,
            header,
            kind,
            self.categories,
            probe_hash,
            prior_check=self.prior_check,
            subject_category=subject_category,
        )
        return self.approve(signed) if self.approve is not None else signed

    @cached_property
    def officer(self) -> str:
        """The officer's id, the instance of the chain's leaf certificate; "" when that
        is no officer certificate (such requests are refused by every party)."""
        from fedmatch.pki.names import identity_from_certificate

        try:
            leaf = x509.load_pem_x509_certificates(self.chain_pem)[0]
            identity = identity_from_certificate(leaf)
        except (ValueError, IndexError, PermissionDenied):
            return ""
        return identity.instance if identity.role == "officer" else ""
