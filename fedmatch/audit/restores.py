"""Restore announcements (signed by a node) and their acknowledgements (signed by an auditor).

A node restored from a backup (:mod:`node.backup`) goes back to the backup's log: an auditor
who verified a later checkpoint then sees a rollback or a fork of the node's log, as it must.
So that auditors can tell an announced restore from tampering, the restore writes an
*announcement* in the node's audit directory (``restores/<time>.json``), signed by the
node's audit key under its own domain prefix (never valid as a note, an entry or a backup
manifest signature). It holds:

- the backup's signed checkpoint (the one the backup's log carries), the SHA-256 of its
  manifest and the manifest's audit section;
- the previous (live) log's signed checkpoint, when it verified, its size and root;
- the restored log's signed checkpoint and the index of its ``node_restored`` entry;
- the counts of what the restore lost (records, record changes, log entries by kind) and of
  what it applied again, never a reference.

The operator hands it to the auditors. Each auditor checks it for itself (``fedmatch audit
accept-restore``, :mod:`fedmatch.audit.acknowledge`): the node's signature, and that the
backup's checkpoint is a prefix of the history that auditor verified; it then keeps its old
state as evidence and records an *acknowledgement* signed with its own key in
``<state_dir>/restores/<party>-<time>/``. :func:`load_acknowledged` reads them back for
``audit verify``, which names an acknowledged restore in the findings it explains.

Both documents are JSON: ``{"<kind>": body, "key_id": hex, "signature": base64}``, the
Ed25519 signature over ``domain || canonical JSON of body``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import scan_records
from fedmatch.audit.merkle import MerkleTree, leaf_hash
from fedmatch.audit.note import Checkpoint, Note, NoteSigner, NoteVerifier, open_checkpoint
from fedmatch.errors import InvalidInput
from fedmatch.protocol.canonical import canonical_json

__all__ = [
    "ACKNOWLEDGEMENT_DOMAIN",
    "ANNOUNCEMENT_DOMAIN",
    "RESTORES",
    "AcknowledgedRestore",
    "Announcement",
    "load_acknowledged",
    "make_acknowledgement",
    "make_announcement",
    "open_announcement",
    "peer_acknowledged",
]

ANNOUNCEMENT_FORMAT = "fedmatch-restore-announcement-v1"
ACKNOWLEDGEMENT_FORMAT = "fedmatch-restore-acknowledgement-v1"
# Domain separation: a NUL never occurs in a note or an entry payload, and the backup
# manifest has its own prefix, so none of these signatures passes for another.
ANNOUNCEMENT_DOMAIN = b"fedmatch/restore-announcement/v1\x00"
ACKNOWLEDGEMENT_DOMAIN = b"fedmatch/restore-acknowledgement/v1\x00"
# The directory of announcements in a node's audit directory, and of acknowledgements in an
# auditor's state directory.
RESTORES = "restores"
ACKNOWLEDGEMENT_FILE = "acknowledgement.json"
ANNOUNCEMENT_COPY = "announcement.json"
PREVIOUS_STATE = "previous"
_MAX_BYTES = 1 << 20


def _sign(signer: NoteSigner, domain: bytes, kind: str, body: dict[str, Any]) -> bytes:
    signature = base64.b64encode(signer.sign(domain + canonical_json(body))).decode()
    doc = {kind: body, "key_id": signer.key_id.hex(), "signature": signature}
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def _open(
    data: bytes, verifier: NoteVerifier, domain: bytes, kind: str, what: str
) -> dict[str, Any]:
    """The body of a signed document, once its signature verified with ``verifier``."""
    if len(data) > _MAX_BYTES:
        raise AuditVerificationError(f"{what} is larger than {_MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise AuditVerificationError(f"{what} is not valid JSON (damaged)") from None
    if not isinstance(doc, dict) or set(doc) != {kind, "key_id", "signature"}:
        raise AuditVerificationError(f"{what} is malformed: expected {kind}, key_id, signature")
    body, key_id, text = doc[kind], doc["key_id"], doc["signature"]
    if not isinstance(body, dict) or not isinstance(key_id, str) or not isinstance(text, str):
        raise AuditVerificationError(f"{what} is malformed")
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuditVerificationError(f"{what} signature is not base64") from None
    try:
        verifier.verify(domain + canonical_json(body), signature)
    except AuditVerificationError:
        other = "" if key_id == verifier.key_id.hex() else f" (it names key {key_id[:8]!r})"
        raise AuditVerificationError(
            f"{what} signature does not verify with {verifier.name}'s key "
            f"{verifier.key_id.hex()}{other}: altered, or signed by another key"
        ) from None
    return body


def _note(text: object, verifier: NoteVerifier, what: str) -> tuple[bytes, Checkpoint]:
    if not isinstance(text, str):
        raise AuditVerificationError(f"{what} is missing")
    note = text.encode()
    try:
        checkpoint, _ = open_checkpoint(note, verifier, verifier.name)
    except (AuditVerificationError, InvalidInput) as exc:
        raise AuditVerificationError(f"{what} does not verify: {exc}") from None
    return note, checkpoint


def _int(body: Mapping[str, Any], key: str, what: str) -> int:
    value = body.get(key)
    if type(value) is not int or value < 0:
        raise AuditVerificationError(f"{what}: {key} must be a non-negative integer")
    return value


# -- announcements (the node) ------------------------------------------------------------


def make_announcement(
    signer: NoteSigner,
    *,
    member_state: str,
    restored_unix: int,
    manifest_sha256: str,
    manifest: Mapping[str, Any],
    backup_checkpoint: bytes,
    previous_log: str,
    previous_checkpoint: bytes | None,
    previous_entries: int | None,
    previous_root: bytes | None,
    restored_checkpoint: bytes,
    node_restored_index: int,
    lost: Mapping[str, Any],
    reapplied: Mapping[str, int],
) -> bytes:
    """The signed announcement of a restore (counts and digests, no reference)."""
    previous: dict[str, Any] = {"log": previous_log}
    if previous_checkpoint is not None:
        previous["checkpoint"] = previous_checkpoint.decode()
    if previous_entries is not None and previous_root is not None:
        previous["entries"] = previous_entries
        previous["root"] = base64.b64encode(previous_root).decode()
    body = {
        "format": ANNOUNCEMENT_FORMAT,
        "origin": signer.name,
        "member_state": member_state,
        "restored_unix": restored_unix,
        "backup": {
            "manifest_sha256": manifest_sha256,
            "created_unix": manifest["created_unix"],
            "audit": dict(manifest["audit"]),
            "records": manifest["register"]["records"],
            "checkpoint": backup_checkpoint.decode(),
        },
        "previous": previous,
        "restored": {
            "checkpoint": restored_checkpoint.decode(),
            "node_restored_index": node_restored_index,
        },
        "lost": dict(lost),
        "reapplied": dict(reapplied),
    }
    return _sign(signer, ANNOUNCEMENT_DOMAIN, "announcement", body)


@dataclass(frozen=True)
class Announcement:
    """A restore announcement whose signature and checkpoints verified."""

    body: dict[str, Any] = field(repr=False)
    sha256: str  # of the body's canonical JSON: the same however the file is laid out
    origin: str
    member_state: str
    restored_unix: int
    manifest_sha256: str
    backup_created_unix: int
    backup_note: bytes = field(repr=False)
    backup_checkpoint: Checkpoint
    previous_note: bytes | None = field(repr=False)
    previous_checkpoint: Checkpoint | None
    restored_note: bytes = field(repr=False)
    restored_checkpoint: Checkpoint
    lost: dict[str, Any]


def open_announcement(data: bytes, verifier: NoteVerifier) -> Announcement:
    """Verify an announcement against the node's key (``verifier``); raises
    :class:`AuditVerificationError` naming what failed."""
    what = "restore announcement"
    body = _open(data, verifier, ANNOUNCEMENT_DOMAIN, "announcement", what)
    if body.get("format") != ANNOUNCEMENT_FORMAT:
        raise AuditVerificationError(f"{what} format is not {ANNOUNCEMENT_FORMAT}")
    if body.get("origin") != verifier.name:
        raise AuditVerificationError(f"{what} is of {body.get('origin')!r}, not {verifier.name}")
    backup, previous, restored = body.get("backup"), body.get("previous"), body.get("restored")
    lost = body.get("lost")
    if not all(isinstance(x, dict) for x in (backup, previous, restored, lost)):
        raise AuditVerificationError(f"{what} is malformed")
    assert isinstance(backup, dict) and isinstance(previous, dict) and isinstance(restored, dict)
    assert isinstance(lost, dict)
    backup_note, backup_cp = _note(backup.get("checkpoint"), verifier, "backup checkpoint")
    audit = backup.get("audit")
    if not isinstance(audit, dict) or (
        audit.get("checkpoint_size"),
        audit.get("checkpoint_root"),
    ) != (backup_cp.size, base64.b64encode(backup_cp.root).decode()):
        raise AuditVerificationError(f"{what}: the backup checkpoint is not the manifest's")
    previous_note: bytes | None = None
    previous_cp: Checkpoint | None = None
    if "checkpoint" in previous:
        previous_note, previous_cp = _note(previous["checkpoint"], verifier, "previous checkpoint")
    restored_note, restored_cp = _note(restored.get("checkpoint"), verifier, "restored checkpoint")
    if restored_cp.size <= backup_cp.size:
        raise AuditVerificationError(
            f"{what}: the restored log ({restored_cp.size} entries) does not extend the "
            f"backup's checkpoint ({backup_cp.size})"
        )
    digest = backup.get("manifest_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise AuditVerificationError(f"{what}: manifest_sha256 is malformed")
    member_state = body.get("member_state")
    if not isinstance(member_state, str):
        raise AuditVerificationError(f"{what}: member_state is malformed")
    return Announcement(
        body=body,
        sha256=hashlib.sha256(canonical_json(body)).hexdigest(),
        origin=verifier.name,
        member_state=member_state,
        restored_unix=_int(body, "restored_unix", what),
        manifest_sha256=digest,
        backup_created_unix=_int(backup, "created_unix", what),
        backup_note=backup_note,
        backup_checkpoint=backup_cp,
        previous_note=previous_note,
        previous_checkpoint=previous_cp,
        restored_note=restored_note,
        restored_checkpoint=restored_cp,
        lost=lost,
    )


def announced_origin(data: bytes) -> str:
    """The origin an announcement names (unverified: to choose the key to verify it with)."""
    try:
        doc = json.loads(data)
        origin = doc["announcement"]["origin"]
    except (ValueError, RecursionError, KeyError, TypeError):
        raise AuditVerificationError("restore announcement is malformed (no origin)") from None
    if not isinstance(origin, str):
        raise AuditVerificationError("restore announcement is malformed (no origin)")
    return origin


# -- acknowledgements (an auditor) -------------------------------------------------------


def make_acknowledgement(
    signer: NoteSigner,
    announcement: Announcement,
    previous_note: bytes,
    accepted_unix: int,
) -> bytes:
    """The auditor's signed record that it accepted ``announcement`` in place of the
    history it had verified up to ``previous_note``."""
    body = {
        "format": ACKNOWLEDGEMENT_FORMAT,
        "auditor": signer.name,
        "party": announcement.origin,
        "announcement_sha256": announcement.sha256,
        "manifest_sha256": announcement.manifest_sha256,
        "backup_created_unix": announcement.backup_created_unix,
        "restored_unix": announcement.restored_unix,
        "backup_checkpoint": announcement.backup_note.decode(),
        "previous_checkpoint": previous_note.decode(),
        "accepted_unix": accepted_unix,
    }
    return _sign(signer, ACKNOWLEDGEMENT_DOMAIN, "acknowledgement", body)


@dataclass(frozen=True)
class AcknowledgedRestore:
    """A restore this auditor acknowledged, with the history it held before (superseded)."""

    party: str  # the log origin
    path: Path  # the signed acknowledgement
    announcement_sha256: str
    backup_size: int
    backup_created_unix: int
    restored_unix: int
    accepted_unix: int
    superseded: tuple[bytes, ...] = field(repr=False)
    # Queries the superseded history answered or refused after the backup: query id ->
    # entry index.
    dropped_answers: Mapping[str, int] = field(repr=False, default_factory=dict)

    def superseded_root(self, size: int) -> bytes | None:
        """The root of the superseded history at ``size`` (None: it did not reach it)."""
        if not 0 < size <= len(self.superseded):
            return None
        tree = MerkleTree()
        tree.extend(leaf_hash(e) for e in self.superseded[:size])
        return tree.root(size)


def _entries(path: Path) -> tuple[bytes, ...]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ()
    records, _ = scan_records(data)
    return tuple(data[start : start + length] for start, length in records)


def load_acknowledged(
    state_dir: Path, verifier: NoteVerifier
) -> tuple[dict[str, list[AcknowledgedRestore]], list[str]]:
    """The restores this auditor (``verifier``: its own key) acknowledged in ``state_dir``,
    per party in the order accepted; and the acknowledgement files that do not verify."""
    found: dict[str, list[AcknowledgedRestore]] = {}
    bad: list[str] = []
    for path in sorted((state_dir / RESTORES).glob(f"*/{ACKNOWLEDGEMENT_FILE}")):
        try:
            body = _open(
                path.read_bytes(), verifier, ACKNOWLEDGEMENT_DOMAIN, "acknowledgement", str(path)
            )
            checkpoint = Checkpoint.parse(Note.parse(str(body["backup_checkpoint"]).encode()).body)
            superseded = _entries(path.parent / PREVIOUS_STATE / "entries.bin")
            answers: dict[str, int] = {}
            for index in range(checkpoint.size, len(superseded)):
                entry = SignedEntry.decode(superseded[index])
                if entry.kind in (EventKind.SEARCH_ANSWERED, EventKind.SEARCH_REFUSED):
                    answers.setdefault(entry.event.query_id, index)
            ack = AcknowledgedRestore(
                party=str(body["party"]),
                path=path,
                announcement_sha256=str(body["announcement_sha256"]),
                backup_size=checkpoint.size,
                backup_created_unix=int(body["backup_created_unix"]),
                restored_unix=int(body["restored_unix"]),
                accepted_unix=int(body["accepted_unix"]),
                superseded=superseded,
                dropped_answers=answers,
            )
        except (OSError, KeyError, TypeError, ValueError, AuditVerificationError, InvalidInput):
            bad.append(str(path))
            continue
        found.setdefault(ack.party, []).append(ack)
    for acks in found.values():
        acks.sort(key=lambda a: (a.accepted_unix, str(a.path)))
    return found, bad


def peer_acknowledged(peer_dir: Path, announcement_sha256: str) -> bool:
    """Whether the auditor state directory ``peer_dir`` holds an acknowledgement of the
    announcement (read only to word a finding: the peer's signature is not checked)."""
    for path in (peer_dir / RESTORES).glob(f"*/{ACKNOWLEDGEMENT_FILE}"):
        try:
            body = json.loads(path.read_bytes())["acknowledgement"]
            if body["announcement_sha256"] == announcement_sha256:
                return True
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return False
