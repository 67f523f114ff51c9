"""Audit log entries: what each event records, its canonical bytes and its signature.

An entry is one event at one party (DOMAIN.md section 5): a search requested, authorized,
dispatched, answered or refused; hit details verified or revealed; a record enrolled, marked
or erased; a register reconciled with the log; a key epoch registered; the policy in force; a
restart; a restore from a backup; an auditor's access.

Privacy by construction: an entry has no field that can hold a template, an embedding, a
probe or a score. Values are short strings from a restricted alphabet, integers and lists or
maps of those; the probe appears only as the SHA-256 of its ciphertext, hit handles only as
digests.

Bytes: the leaf stored in the Merkle log is ``payload || "\\n" || key id (8 hex) || " " ||
base64(signature)``, where ``payload`` is the canonical JSON of the entry (sorted keys, no
spaces, ASCII) and the Ed25519 signature covers ``ENTRY_DOMAIN || payload``. Decoding
re-encodes the payload and refuses anything that is not canonical, so one event has exactly
one leaf.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.errors import InvalidInput
from fedmatch.protocol.canonical import canonical_json

__all__ = [
    "ENTRY_DOMAIN",
    "MAX_ENTRY_BYTES",
    "AuditEvent",
    "EventKind",
    "SignedEntry",
    "digest_hex",
    "encode_entry",
]

# Domain separation: a NUL never occurs in a signed note body or a cosigned message, so an
# entry signature can never pass as a checkpoint signature or a request signature.
ENTRY_DOMAIN = b"fedmatch/audit-entry/v1\x00"
MAX_ENTRY_BYTES = 16 * 1024
_VERSION = 1

# Short labels only: legal references, case numbers, operator ids, state codes, reason codes.
_MAX_TEXT = 256
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_ITEMS = 64


# The single-string fields of an event, in the order they are written.
_TEXT_FIELDS = (
    "query_id",
    "requesting_state",
    "purpose",
    "legal_basis",
    "case_reference",
    "unit",
    "operator",
    "probe_hash",
    "outcome",
    "reason",
)


class EventKind(enum.StrEnum):
    PARTY_STARTED = "party_started"
    POLICY_CHANGED = "policy_changed"
    SEARCH_REQUESTED = "search_requested"
    SEARCH_AUTHORIZED = "search_authorized"
    SEARCH_DISPATCHED = "search_dispatched"
    SEARCH_ANSWERED = "search_answered"
    SEARCH_REFUSED = "search_refused"
    REQUEST_REFUSED = "request_refused"
    # The coordinator asks a node for the verification packets of candidate hits (handles as
    # digests per state); the node releases them (counts and the images' digest, no image).
    PACKETS_AUTHORIZED = "packets_authorized"
    PACKETS_RELEASED = "packets_released"
    HIT_VERIFIED = "hit_verified"
    # An expert rejected a candidate hit: its details are never asked for (verifiers and
    # reason codes only).
    HIT_REJECTED = "hit_rejected"
    HIT_DETAILS_REVEALED = "hit_details_revealed"
    # A data subject's "which states hold my data" answered from verified candidates: the
    # states named (registers) and the verifiers who confirmed them; no hit details.
    SUBJECT_ANSWERED = "subject_answered"
    DECISION_PROPOSED = "decision_proposed"
    DECISION_CONFIRMED = "decision_confirmed"  # an official accepted or overrode it
    RECORD_ENROLLED = "record_enrolled"
    # `fedmatch node seed` added synthetic records to the register (counts and the row ids
    # they got; whether the --dev escape hatch let it seed a register of real or sealed
    # records).
    RECORDS_SEEDED = "records_seeded"
    # The node compared its register with this log (fedmatch/audit/register.py): the record
    # count, the digest of the register's references, and the rows that do not reconcile
    # (counts and row ids only). Written at start and when the register changed since.
    REGISTER_RECONCILED = "register_reconciled"
    RECORD_MARKED = "record_marked"
    RECORD_ERASED = "record_erased"
    RECORD_UNMARKED = "record_unmarked"  # protection withdrawn
    # The record's Dublin status as its authority recorded it (Eurodac recast Art. 16(1),
    # 28(4)): which fields changed, never their values.
    RECORD_STATUS_SET = "record_status_set"
    # The requesting state's own record produced a hit with another state's record: a mark
    # of it is passed on to that state too (Art. 31(1), both directions).
    OWN_HIT_LINKED = "own_hit_linked"
    # Notices between states (node/inbox.py): queued or relayed by the sender, relayed by
    # the coordinator, received into an inbox, acknowledged by the receiver's authority.
    NOTICE_SENT = "notice_sent"
    NOTICE_RELAYED = "notice_relayed"
    NOTICE_RECEIVED = "notice_received"
    NOTICE_ACKNOWLEDGED = "notice_acknowledged"
    KEYS_REGISTERED = "keys_registered"
    AUDIT_ACCESSED = "audit_accessed"
    # The node's register and log were restored from a backup (node/backup.py): counts of
    # what the restore lost and digests (the backup manifest's SHA-256, the previous log's
    # size and root), never a reference. The log before it is the backup's.
    NODE_RESTORED = "node_restored"


def digest_hex(data: bytes) -> str:
    """SHA-256 hex: how a probe ciphertext or a hit handle appears in a log."""
    return hashlib.sha256(data).hexdigest()


def _text(value: str, name: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or not value.isprintable():
        raise InvalidInput(f"audit field {name} must be at most 256 plain characters")
    return value


@dataclass(frozen=True)
class AuditEvent:
    """One event, before it is numbered, timed and signed by the log."""

    kind: EventKind
    query_id: str = ""
    requesting_state: str = ""
    purpose: str = ""
    legal_basis: str = ""
    case_reference: str = ""
    unit: str = ""
    operator: str = ""
    # The registers (member states) searched or addressed.
    registers: tuple[str, ...] = ()
    # SHA-256 of the encrypted probe: identifies the query data without holding it.
    probe_hash: str = ""
    outcome: str = ""
    reason: str = ""
    verifiers: tuple[str, ...] = ()
    # Numbers: records searched, hits revealed, per-category counts. Counts, never scores.
    counts: Mapping[str, int] = field(default_factory=dict)
    # Other short labels: key id, coordinator entry index, per-state outcomes, handle digests.
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))
        for name in _TEXT_FIELDS:
            if name != "probe_hash":
                _text(getattr(self, name), name)
        if self.probe_hash and not _HEX64.fullmatch(self.probe_hash):
            raise InvalidInput("audit field probe_hash must be 64 hex digits")
        for name in ("registers", "verifiers"):
            values = getattr(self, name)
            if not isinstance(values, tuple | list):
                raise InvalidInput(f"audit field {name} must be a list of strings")
            object.__setattr__(self, name, tuple(values))
            if len(values) > _MAX_ITEMS:
                raise InvalidInput(f"audit field {name} has more than {_MAX_ITEMS} items")
            for v in values:
                _text(v, name)
        for name, mapping in (("counts", self.counts), ("labels", self.labels)):
            if not isinstance(mapping, Mapping):
                raise InvalidInput(f"audit field {name} must be a mapping")
            if len(mapping) > _MAX_ITEMS:
                raise InvalidInput(f"audit field {name} has more than {_MAX_ITEMS} items")
            for k, v in mapping.items():
                if not isinstance(k, str) or not _KEY.fullmatch(k):
                    raise InvalidInput(f"audit field {name} has a bad key")
                if name == "counts":
                    # bool is an int subclass; a count is a plain integer.
                    if type(v) is not int or not 0 <= v < 2**53:
                        raise InvalidInput(f"audit count {k} must be a non-negative integer")
                elif not isinstance(v, str):
                    raise InvalidInput(f"audit label {k} must be a string")
                else:
                    _text(v, f"{name}.{k}")
        object.__setattr__(self, "counts", dict(sorted(self.counts.items())))
        object.__setattr__(self, "labels", dict(sorted(self.labels.items())))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value:
                out[name] = value
        for name in ("registers", "verifiers"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.counts:
            out["counts"] = dict(self.counts)
        if self.labels:
            out["labels"] = dict(self.labels)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AuditEvent:
        try:
            return cls(
                kind=EventKind(obj["kind"]),
                query_id=obj.get("query_id", ""),
                requesting_state=obj.get("requesting_state", ""),
                purpose=obj.get("purpose", ""),
                legal_basis=obj.get("legal_basis", ""),
                case_reference=obj.get("case_reference", ""),
                unit=obj.get("unit", ""),
                operator=obj.get("operator", ""),
                registers=tuple(obj.get("registers", ())),
                probe_hash=obj.get("probe_hash", ""),
                outcome=obj.get("outcome", ""),
                reason=obj.get("reason", ""),
                verifiers=tuple(obj.get("verifiers", ())),
                counts=dict(obj.get("counts", {})),
                labels=dict(obj.get("labels", {})),
            )
        except (KeyError, TypeError, ValueError, InvalidInput) as exc:
            raise AuditVerificationError(
                f"entry event is malformed ({type(exc).__name__})"
            ) from None


def _format_time(unix_ms: int) -> str:
    t = dt.datetime.fromtimestamp(unix_ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{unix_ms % 1000:03d}Z"


@dataclass(frozen=True)
class SignedEntry:
    """A numbered, timed, signed event as it sits in a party's log."""

    seq: int
    party: str
    unix_ms: int
    event: AuditEvent
    key_id: bytes
    raw: bytes = field(repr=False)

    @property
    def kind(self) -> EventKind:
        return self.event.kind

    @property
    def time(self) -> str:
        return _format_time(self.unix_ms)

    def verify(self, verifier: NoteVerifier) -> None:
        """Check the signature against the party's key; raises AuditVerificationError."""
        payload, _, _ = self.raw.rpartition(b"\n")
        if verifier.key_id != self.key_id:
            raise AuditVerificationError(
                f"entry {self.seq} is signed by key {self.key_id.hex()}, "
                f"not by {verifier.name}'s key {verifier.key_id.hex()}"
            )
        signature = base64.b64decode(self.raw.rsplit(b" ", 1)[1])
        try:
            verifier.verify(ENTRY_DOMAIN + payload, signature)
        except AuditVerificationError:
            raise AuditVerificationError(f"entry {self.seq}: bad signature") from None

    @classmethod
    def decode(cls, raw: bytes) -> SignedEntry:
        """Parse leaf bytes strictly (signature not checked: see :meth:`verify`)."""
        if len(raw) > MAX_ENTRY_BYTES:
            raise AuditVerificationError(f"entry is larger than {MAX_ENTRY_BYTES} bytes")
        payload, sep, trailer = raw.rpartition(b"\n")
        parts = trailer.split(b" ")
        if not sep or len(parts) != 2 or len(parts[0]) != 8:
            raise AuditVerificationError("entry trailer is malformed")
        try:
            key_id = bytes.fromhex(parts[0].decode("ascii"))
            signature = base64.b64decode(parts[1], validate=True)
            obj = json.loads(payload)
        except (ValueError, binascii.Error, RecursionError):  # (deep nesting fits in 16 KiB)
            raise AuditVerificationError("entry is not valid JSON with a signature") from None
        if len(signature) != 64:
            raise AuditVerificationError("entry signature is not 64 bytes")
        # One leaf per entry: the trailer must be spelled as encode_entry spells it (lower-case
        # hex, canonical base64), not merely decode to the same key id and signature.
        if parts[0] != key_id.hex().encode() or parts[1] != base64.b64encode(signature):
            raise AuditVerificationError("entry trailer is not canonical")
        if not isinstance(obj, dict) or canonical_json(obj) != payload:
            raise AuditVerificationError("entry payload is not canonical JSON")
        if obj.get("v") != _VERSION or set(obj) != {"v", "seq", "party", "time_ms", "event"}:
            raise AuditVerificationError("entry has an unknown version or fields")
        seq, party, unix_ms = obj["seq"], obj["party"], obj["time_ms"]
        if type(seq) is not int or seq < 0 or type(unix_ms) is not int or unix_ms < 0:
            raise AuditVerificationError("entry seq and time must be non-negative integers")
        if not isinstance(party, str) or not party or len(party) > _MAX_TEXT:
            raise AuditVerificationError("entry party is malformed")
        if not isinstance(obj["event"], dict):
            raise AuditVerificationError("entry event is malformed")
        event = AuditEvent.from_json(obj["event"])
        # Unknown event fields (which from_json would ignore) and explicit empty values are
        # refused: the payload must be exactly what encode_entry writes for this event.
        if canonical_json(event.to_json()) != canonical_json(obj["event"]):
            raise AuditVerificationError("entry event is not canonical")
        return cls(seq, party, unix_ms, event, key_id, raw)


def encode_entry(
    signer: NoteSigner, party: str, seq: int, unix_ms: int, event: AuditEvent
) -> SignedEntry:
    """Number, time and sign ``event`` as entry ``seq`` of ``party``'s log."""
    payload = canonical_json(
        {"v": _VERSION, "seq": seq, "party": party, "time_ms": unix_ms, "event": event.to_json()}
    )
    signature = signer.sign(ENTRY_DOMAIN + payload)
    raw = payload + b"\n" + signer.key_id.hex().encode() + b" " + base64.b64encode(signature)
    if len(raw) > MAX_ENTRY_BYTES:
        raise InvalidInput(f"audit entry exceeds {MAX_ENTRY_BYTES} bytes")
    return SignedEntry(seq, party, unix_ms, event, signer.key_id, raw)
