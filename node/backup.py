"""Backup and restore of a node: register, replay store, audit log and witness state.

A backup directory holds::

    manifest.json        what was taken: register and log state, size + SHA-256 of each file
    manifest.sig         the node's Ed25519 audit key's signature over the manifest
    register.sqlite      the register (SQLite online backup API; templates stay encrypted)
    replay.sqlite        seen nonces and quotas (online backup API)
    notices.sqlite       the notice inbox and outbox (online backup API)
    audit/...            the audit directory: log/log.bin, log/checkpoint, witness.json, ...

Consistency: the register snapshot and the log copy are taken under the register's write
lock held exclusively (:mod:`node.locks`); a running node holds it shared from a register
write until that write's audit entry is durable, so the backup has every enrolled record
together with its entry, or neither. Searches go on meanwhile (they only append entries;
the copy ends at the last complete entry, and the copied checkpoint covers a prefix of it).

The backup never holds a storage key: encrypted templates are copied as they are, and the
restored register needs the node's configured key (checked before anything is replaced).

Restore verifies the signature, every file's size and hash, the log against its checkpoint
(every entry's signature too) and the register's integrity and key, then replaces the live
files, which are moved aside (``*.before-restore-<time>``), never deleted. It refuses while
a process has the register open, and refuses existing files unless ``force``. It is all or
nothing: the register and audit directory are staged beside the live ones
(``*.restoring``), completed and made durable, then renamed into place, the register last;
a failure before that last rename puts back everything moved and removes every copy. A live
replay store is kept (it holds every nonce seen since the backup; the backup's copy would
let a recent request be replayed); the backup's is restored only when the node lost its own.
So is the live witness state when it is at least as recent: it is about the coordinator's
log, and forgetting checkpoints this node cosigned would let a coordinator fork past them.

What a restore loses (:mod:`node.restore_loss`): before anything is replaced, the restore
compares the live node with what it is about to restore. The backup is staged, the changes
since the backup it can apply again are applied to the staged copy (below), and then the
live register (it is moved aside, never changed) is compared record by record with the
staged one: records enrolled after the backup (reference and row id), records erased after
it that would come back, records whose status, mark, facial image or other values changed,
and hit links (which states got a record's details, the own-record hits a mark is passed
on along). The live log, when it verifies and extends the backup's, gives the entries after
the backup that the restored log will not have, by kind, and those about a record with it;
when it cannot be read or is another history, the report says "log not usable" and the
losses listed are the register's only (what the log held after the backup is unknown, and
counts as lost). If anything is lost the restore refuses (:class:`RestoreLossRefused`,
nothing changed, the whole list in its report) unless ``accept_loss``; ``dry_run`` reports
the same and restores nothing. The list goes to the operator only.

Records erased after the backup would come back with it, and marks set after it would be
lost: when the live log is still readable and extends the backup's, restore applies the last
RECORD_ERASED / RECORD_MARKED / RECORD_UNMARKED entry after the backup of each record (named
by ``labels["record_digest"]``) again, in the staged copies: no node can open the restored
register without them. Otherwise the report says so (and they are among the losses), and
the operator applies them by hand from the moved-aside log.

The restored log is the backup's log, then a signed ``node_restored`` entry (counts and
digests only: the backup manifest's SHA-256 and log root, the previous log's size and root,
the records and changes lost, the entries dropped and re-applied; never a reference), then
the re-applied changes, each logged again, and a new checkpoint.

What a restore means for auditors: an auditor or witness that saw a later checkpoint now
sees fewer entries, or a different tree of the same size: `fedmatch audit verify` reports
a ``rollback`` or ``fork`` of the node's log, as it must. So the restore writes a signed
announcement (:mod:`fedmatch.audit.restores`) in ``<audit directory>/restores/<time>.json``
(earlier restores' announcements are kept there): the backup's signed checkpoint, the
manifest's digest and audit section, the previous log's signed checkpoint when it verified,
the restored log's checkpoint and the counts of what was lost. The operator hands it to the
auditors; each one checks it against what it verified itself and acknowledges it (`fedmatch
audit accept-restore`, :mod:`fedmatch.audit.acknowledge`), after which its verification
continues from the backup's checkpoint. The lost entries are in the moved-aside log.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedmatch.audit.entry import AuditEvent, EventKind, SignedEntry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import CHECKPOINT_FILE, LOG_FILE, AuditLog, scan_records
from fedmatch.audit.merkle import MerkleTree, leaf_hash
from fedmatch.audit.note import Checkpoint, Note, NoteSigner, NoteVerifier, open_checkpoint
from fedmatch.audit.party import AuditConfig, node_origin
from fedmatch.audit.restores import RESTORES, make_announcement
from fedmatch.domain import MarkKind, reference_digest
from fedmatch.errors import ConfigError, InvalidInput, PreconditionFailed
from fedmatch.fileio import fsync_directory
from node.config import NodeConfig
from node.locks import WRITE_WAIT_SECONDS, OpenLock, WriteLock
from node.restore_loss import (
    LogLoss,
    RestoreLosses,
    compare_registers,
    dropped_entries,
    log_losses,
    wanted_records,
)
from node.sealing import KeyEncryptionKey, check_register_key
from node.store import facial_image_count

__all__ = [
    "BACKUP_FORMAT",
    "RestoreLossRefused",
    "RestoreReport",
    "restore_backup",
    "take_backup",
    "verify_backup",
]

BACKUP_FORMAT = "fedmatch-node-backup-v1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
REGISTER = "register.sqlite"
REPLAY = "replay.sqlite"
NOTICES = "notices.sqlite"
AUDIT = "audit"
# The signed message is the manifest under its own prefix (never a valid note text).
_DOMAIN = b"fedmatch/node-backup-manifest/v1\x00"
_CHUNK = 1 << 20


class BackupError(PreconditionFailed):
    """A backup is damaged, incomplete, of another node, or cannot be restored here."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not (path.parent == root and path.name in (MANIFEST, SIGNATURE)):
            yield path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"short write of {path.name}")
        os.fsync(fd)
    finally:
        os.close(fd)


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (online backup API, WAL included)."""
    # Created private first: the copy's metadata is personal data from its first byte.
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(str(source), timeout=WRITE_WAIT_SECONDS)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)


def _register_state(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        (check,) = db.execute("PRAGMA integrity_check").fetchone()
        if check != "ok":
            raise BackupError(f"register copy fails SQLite's integrity check: {check[:200]}")
        meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta")}
        count, top = db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM records").fetchone()
        images = facial_image_count(db)  # the facial images travel in the register copy
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"register copy is not a readable register: {exc}") from None
    finally:
        db.close()
    return {
        "records": int(count),
        "facial_images": int(images),
        "max_record_id": int(top),
        "member_state": meta.get("member_state", ""),
        "dimension": meta.get("dimension", ""),
        "model_id": meta.get("model_id", ""),
        "schema_version": meta.get("schema_version", ""),
        "register_id": meta.get("register_id", ""),
        "storage_key_id": meta.get("sealing_key_id", ""),
    }


@dataclass(frozen=True)
class LogState:
    entries: int
    checkpoint_size: int
    checkpoint_root: bytes = field(repr=False)
    root: bytes = field(repr=False)
    tree: MerkleTree = field(repr=False, compare=False)
    raw: tuple[bytes, ...] = field(repr=False, compare=False)


def verify_log_files(log_dir: Path, verifier: NoteVerifier, origin: str) -> LogState:
    """Read-only verification of a log directory: every record's frame, every entry's
    signature and numbering, and the checkpoint's signature and root."""
    try:
        data = (log_dir / LOG_FILE).read_bytes()
        note = (log_dir / CHECKPOINT_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise BackupError(f"audit log file {Path(str(exc.filename)).name} is missing") from None
    records, end = scan_records(data)
    if end != len(data):
        raise BackupError(f"audit log is damaged after entry {len(records)}")
    tree = MerkleTree()
    raw: list[bytes] = []
    try:
        checkpoint, _ = open_checkpoint(note, verifier, origin)
        for seq, (start, length) in enumerate(records):
            entry = SignedEntry.decode(data[start : start + length])
            entry.verify(verifier)
            if entry.seq != seq or entry.party != origin:
                raise AuditVerificationError(f"entry {seq} is numbered or named wrongly")
            tree.append(leaf_hash(entry.raw))
            raw.append(entry.raw)
    except AuditVerificationError as exc:
        raise BackupError(f"audit log does not verify: {exc}") from None
    if checkpoint.size > len(tree) or tree.root(checkpoint.size) != checkpoint.root:
        raise BackupError(
            f"audit log ({len(tree)} entries) does not match its checkpoint "
            f"(size {checkpoint.size})"
        )
    return LogState(
        len(tree), checkpoint.size, checkpoint.root, tree.root(len(tree)), tree, tuple(raw)
    )


def _signer(audit: AuditConfig, member_state: str) -> NoteSigner:
    signer = NoteSigner.load(audit.signing_key)
    if signer.name != node_origin(member_state):
        raise ConfigError(
            f"audit.signing_key is named {signer.name!r}; this node logs as "
            f"{node_origin(member_state)!r}"
        )
    return signer


def _copy_audit(audit_dir: Path, target: Path) -> None:
    """The audit directory, the log cut at its last complete entry (searches may be
    appending), the checkpoint read first so that it covers a prefix of the copy."""
    log_dir = audit_dir / "log"
    note = (log_dir / CHECKPOINT_FILE).read_bytes()
    data = (log_dir / LOG_FILE).read_bytes()
    _, end = scan_records(data)
    _write(target / "log" / CHECKPOINT_FILE, note)
    _write(target / "log" / LOG_FILE, data[:end])
    for path in sorted(audit_dir.rglob("*")):
        rel = path.relative_to(audit_dir)
        if not path.is_file() or rel.parts[0] == "log" or path.name.endswith(".tmp"):
            continue
        _write(target / rel, path.read_bytes())


def take_backup(
    node: NodeConfig, audit: AuditConfig, out: Path, wait: float = WRITE_WAIT_SECONDS
) -> dict[str, Any]:
    """Write a verified, signed backup of the node to ``out`` (new or empty); the manifest."""
    signer = _signer(audit, node.member_state)
    origin = node_origin(node.member_state)
    if not node.database.exists():
        raise ConfigError(f"node.database {node.database} does not exist")
    if not (audit.directory / "log" / LOG_FILE).exists():
        raise ConfigError(f"audit.directory {audit.directory} holds no audit log")
    if out.exists() and any(out.iterdir()):
        raise PreconditionFailed(f"backup directory {out} is not empty")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = time.time()
    with WriteLock(node.database).exclusive(wait):
        locked = time.time()
        _sqlite_copy(node.database, out / REGISTER)
        _copy_audit(audit.directory, out / AUDIT)
        paused_ms = (time.time() - locked) * 1000
    if node.replay_path.exists():
        _sqlite_copy(node.replay_path, out / REPLAY)
    if node.notices_path.exists():
        _sqlite_copy(node.notices_path, out / NOTICES)
    register = _register_state(out / REGISTER)
    if register["member_state"] != node.member_state:
        raise BackupError(f"register belongs to {register['member_state']!r}")
    log_state = verify_log_files(out / AUDIT / "log", signer.verifier(), origin)
    manifest: dict[str, Any] = {
        "format": BACKUP_FORMAT,
        "member_state": node.member_state,
        "origin": origin,
        "signer": signer.vkey(),
        "created_unix": int(started),
        "register": register,
        "audit": {
            "entries": log_state.entries,
            "root": base64.b64encode(log_state.root).decode(),
            "checkpoint_size": log_state.checkpoint_size,
            "checkpoint_root": base64.b64encode(log_state.checkpoint_root).decode(),
        },
        "writes_paused_ms": round(paused_ms, 1),
        "files": {
            p.relative_to(out).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in _files(out)
        },
    }
    text = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    _write(out / MANIFEST, text)
    _write(out / SIGNATURE, base64.b64encode(signer.sign(_DOMAIN + text)) + b"\n")
    fsync_directory(out)
    return manifest


def verify_backup(src: Path, verifier: NoteVerifier, member_state: str) -> dict[str, Any]:
    """Check a backup before anything is restored; raises :class:`BackupError`."""
    return _verify_backup(src, verifier, member_state)[0]


def _verify_backup(
    src: Path, verifier: NoteVerifier, member_state: str
) -> tuple[dict[str, Any], LogState]:
    try:
        text = (src / MANIFEST).read_bytes()
        signature = base64.b64decode((src / SIGNATURE).read_bytes().strip(), validate=True)
    except (OSError, binascii.Error, ValueError):
        raise BackupError(f"{src} has no readable {MANIFEST} and {SIGNATURE}") from None
    try:
        verifier.verify(_DOMAIN + text, signature)
    except AuditVerificationError:
        raise BackupError(
            "backup manifest signature does not verify with this node's audit key "
            "(altered, or another node's backup)"
        ) from None
    manifest: dict[str, Any] = json.loads(text)
    if manifest.get("format") != BACKUP_FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r} is not {BACKUP_FORMAT}")
    if manifest.get("member_state") != member_state:
        raise BackupError(f"backup is of {manifest.get('member_state')!r}, not {member_state}")
    listed: dict[str, dict[str, Any]] = manifest["files"]
    present = {p.relative_to(src).as_posix() for p in _files(src)}
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        raise BackupError(
            f"backup files differ from its manifest: extra {extra}, missing {missing}"
        )
    for name, want in listed.items():
        path = src / name
        if path.stat().st_size != want["size"] or _sha256(path) != want["sha256"]:
            raise BackupError(f"backup file {name} does not match its manifest (damaged)")
    log_state = verify_log_files(src / AUDIT / "log", verifier, manifest["origin"])
    if (
        log_state.entries != manifest["audit"]["entries"]
        or base64.b64encode(log_state.root).decode() != manifest["audit"]["root"]
    ):
        raise BackupError("backup audit log does not match its manifest")
    state = _register_state(src / REGISTER)
    if "facial_images" not in manifest["register"]:
        state.pop("facial_images")  # a backup taken before facial images were counted
    if state != manifest["register"]:
        raise BackupError("backup register does not match its manifest")
    return manifest, log_state


@dataclass(frozen=True)
class RestoreReport:
    manifest: dict[str, Any]
    moved_aside: tuple[str, ...]
    erasures_reapplied: tuple[int, ...]  # row ids
    marks_reapplied: tuple[int, ...]  # row ids marked or unmarked again
    notes: tuple[str, ...]
    losses: RestoreLosses
    restored: bool = True  # False: refused, or a dry run
    dry_run: bool = False
    loss_accepted: bool = False
    announcement: str = ""  # the signed announcement for the auditors
    restored_log_entries: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "restored": self.restored,
            "dry_run": self.dry_run,
            "loss_accepted": self.loss_accepted,
            "member_state": self.manifest["member_state"],
            "records": self.manifest["register"]["records"],
            "log_entries": self.manifest["audit"]["entries"],
            "restored_log_entries": self.restored_log_entries,
            "backup_created_unix": self.manifest["created_unix"],
            "moved_aside": list(self.moved_aside),
            "erasures_reapplied": len(self.erasures_reapplied),
            "marks_reapplied": len(self.marks_reapplied),
            "announcement": self.announcement,
            "lost": self.losses.to_json(),
            "notes": list(self.notes),
        }


class RestoreLossRefused(PreconditionFailed):
    """The restore would lose records, changes or log entries and the loss was not
    accepted: nothing was changed; :attr:`report` lists what would be lost."""

    def __init__(self, report: RestoreReport) -> None:
        super().__init__(
            f"restore refused: it would lose {report.losses.summary()}. Nothing was changed; "
            "the list is in the report. Restore anyway with --accept-loss (accept_loss=True)"
        )
        self.report = report

    @property
    def losses(self) -> RestoreLosses:
        return self.report.losses


# Changes to records that a restore re-applies from the live log, and the state each leaves.
_REAPPLIED = {
    EventKind.RECORD_ERASED: "erased",
    EventKind.RECORD_MARKED: "marked",
    EventKind.RECORD_UNMARKED: "unmarked",
}


# A change to re-apply: the state it leaves, its time (Unix ms) and, for a mark, its kind.
_Change = tuple[str, int, MarkKind]


def _mark_kind(labels: Mapping[str, str], state: str) -> MarkKind:
    """The kind of a logged mark: entries written before marks had a kind (register schema
    3) were all protection granted (Eurodac recast Art. 31(1))."""
    if state != "marked":
        return MarkKind.NONE
    try:
        return MarkKind(labels.get("mark_kind") or MarkKind.PROTECTION_GRANTED.value)
    except ValueError:
        raise BackupError("live audit log has a mark of an unknown kind") from None


@dataclass(frozen=True)
class _LiveLog:
    """The live log as a restore found it."""

    present: bool
    state: LogState | None = None  # verified (None: not usable)
    note: bytes | None = None  # its signed checkpoint, when that verified
    usable: bool = False  # verified and extends the backup's log (or the backup's it)
    why: str = ""

    @property
    def label(self) -> str:
        """How the restore's entry names the previous log."""
        if not self.present:
            return "absent"
        if self.usable:
            return "usable"
        return "other_history" if self.state is not None else "not_usable"


def _read_live_log(
    log_dir: Path, verifier: NoteVerifier, origin: str, backup: LogState
) -> _LiveLog:
    if not (log_dir / LOG_FILE).exists():
        return _LiveLog(False)
    note: bytes | None = None
    try:
        text = (log_dir / CHECKPOINT_FILE).read_bytes()
        open_checkpoint(text, verifier, origin)
        note = text
    except (OSError, AuditVerificationError, InvalidInput):
        pass
    try:
        live = verify_log_files(log_dir, verifier, origin)
    except BackupError as exc:
        return _LiveLog(True, None, note, False, f"live audit log not usable: {exc}")
    if live.entries >= backup.entries and live.tree.root(backup.entries) == backup.root:
        return _LiveLog(True, live, note, True)
    if live.entries < backup.entries and backup.tree.root(live.entries) == live.root:
        return _LiveLog(True, live, note, True)  # the backup is the later one: none dropped
    return _LiveLog(
        True, live, note, False,
        "live audit log not usable: it does not extend the backup's (another history); "
        "later erasures and marks not re-applied (apply them by hand)",
    )  # fmt: skip


def _later_changes(live: _LiveLog, backup: LogState) -> tuple[dict[str, _Change], str]:
    """The last erasure or (un)marking after the backup of each record (by its reference
    digest) with its time and mark kind, from a usable live log; a note when the live log
    cannot be trusted for them."""
    if not live.usable or live.state is None:
        return {}, (live.why if live.present else "")
    changes: dict[str, _Change] = {}
    for raw in live.state.raw[backup.entries :]:
        entry = SignedEntry.decode(raw)
        labels = entry.event.labels
        digest = labels.get("record_digest", "")
        state = _REAPPLIED.get(entry.kind)
        if state is None or not digest or (digest in changes and changes[digest][0] == "erased"):
            continue
        try:
            changes[digest] = (state, entry.unix_ms, _mark_kind(labels, state))
        except BackupError as exc:
            return {}, f"live audit log not usable for changes after the backup: {exc}"
    return changes, ""


def restore_backup(
    src: Path,
    node: NodeConfig,
    audit: AuditConfig,
    kek: KeyEncryptionKey | None,
    force: bool = False,
    accept_loss: bool = False,
    dry_run: bool = False,
) -> RestoreReport:
    """Verify ``src`` and make it the node's register and audit directory (and its replay
    store, when the node has lost its own). Refused (:class:`RestoreLossRefused`, nothing
    changed) when it would lose anything the live node holds, unless ``accept_loss``; with
    ``dry_run`` it only reports what it would lose."""
    signer = _signer(audit, node.member_state)
    origin = node_origin(node.member_state)
    manifest, backup_log = _verify_backup(src, signer.verifier(), node.member_state)
    reg = manifest["register"]
    if (reg["dimension"], reg["model_id"]) != (str(node.dimension), node.model_id):
        raise BackupError(
            f"backup register holds dimension {reg['dimension']} of model {reg['model_id']!r}; "
            f"this node is configured for {node.dimension} of {node.model_id!r}"
        )
    check_register_key(src / REGISTER, kek)  # refuse before replacing anything
    # Marks and erasures touch no template: a clear register (one to seal after the
    # restore) is opened for them without the key, which would refuse its clear templates.
    reapply_kek = kek if reg["storage_key_id"] else None
    notes: list[str] = []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with OpenLock(node.database, exclusive=True):
        live = [p for p in (node.database, audit.directory) if p.exists()]
        if live and not force and not dry_run:
            raise PreconditionFailed(
                f"{', '.join(str(p) for p in live)} exist: pass --force to replace them "
                "(they are moved aside, not deleted; --dry-run lists what would be lost)"
            )
        live_log = _read_live_log(audit.directory / "log", signer.verifier(), origin, backup_log)
        changes, why = _later_changes(live_log, backup_log)
        if why:
            notes.append(why)
        work = _Restore(node, audit, stamp)
        try:
            notes.extend(work.stage(src))
            # Applied to the staged copies, still under the exclusive open lock: no node can
            # open the restored register before they are in it (and serve records erased
            # since the backup), nor append to the restored log meanwhile.
            erased, marked, events, covered = _reapply_changes(
                node, reapply_kek, work.register, changes
            )
            # What is lost: the live register against the staged one as it will be, and the
            # live log's entries after the backup (before anything is replaced).
            losses = _losses(node, work.register, live_log, backup_log, covered)
            report = RestoreReport(
                manifest, (), tuple(erased), tuple(marked), tuple(notes), losses,
                restored=False, dry_run=dry_run,
            )  # fmt: skip
            if dry_run:
                failures = work.undo()
                return replace(report, notes=(*report.notes, *failures))
            if losses.anything and not accept_loss:
                raise RestoreLossRefused(report)
            restored_note, size, index = _log_restore(
                signer, origin, work.audit / "log", manifest, src, live_log, losses, events,
                len(erased), len(marked),
            )  # fmt: skip
            announcement = _announce(
                signer, node.member_state, manifest, src, live_log, losses, restored_note,
                index, len(erased), len(marked), accept_loss, audit.directory, work.audit,
                stamp,
            )  # fmt: skip
            work.swap()
        except BaseException as exc:
            for failure in work.undo():
                exc.add_note(failure)
            raise
        finally:
            work.tidy()
    if manifest["register"]["storage_key_id"] == "" and kek is not None:
        notes.append("restored register stores clear templates: run `fedmatch node seal`")
    notes.append(
        "the node's log is back at the backup's, then this restore's node_restored entry: "
        "auditors who saw a later checkpoint will report a rollback; hand them the signed "
        f"announcement {announcement} (each acknowledges it: `fedmatch audit accept-restore`)"
    )
    return replace(
        report,
        moved_aside=tuple(work.moved),
        notes=tuple(notes),
        restored=True,
        loss_accepted=losses.anything,
        announcement=str(announcement),
        restored_log_entries=size,
    )


def _losses(
    node: NodeConfig,
    restored_register: Path,
    live_log: _LiveLog,
    backup: LogState,
    covered: set[str],
) -> RestoreLosses:
    """What the restore loses: the live register against the staged restored one (changes
    since the backup applied again), and the live log's entries after the backup."""
    dropped: list[SignedEntry] = []
    if live_log.usable and live_log.state is not None:
        dropped = dropped_entries(live_log.state.raw, backup.entries)
    ids, digests = wanted_records(dropped)
    register = compare_registers(node.database, restored_register, node.member_state, ids, digests)
    if not live_log.present:
        log = LogLoss(False, False, backup_entries=backup.entries)
    elif not live_log.usable or live_log.state is None:
        state = live_log.state
        log = LogLoss(
            True, False, live_log.why,
            live_entries=state.entries if state is not None else None,
            live_root=state.root if state is not None else None,
            backup_entries=backup.entries,
        )  # fmt: skip
    else:
        state = live_log.state
        log = log_losses(dropped, backup.entries, state.entries, state.root, covered, register)
    return RestoreLosses(register, log)


def _log_restore(
    signer: NoteSigner,
    origin: str,
    log_dir: Path,
    manifest: dict[str, Any],
    src: Path,
    live: _LiveLog,
    losses: RestoreLosses,
    events: list[AuditEvent],
    erased: int,
    marked: int,
) -> tuple[bytes, int, int]:
    """Log the restore in the staged log (counts and digests: no reference), then the
    changes applied again; its new signed checkpoint, size and the restore entry's index."""
    counts = losses.counts() | {
        "backup_entries": int(manifest["audit"]["entries"]),
        "records": int(manifest["register"]["records"]) - erased,
        "erasures_reapplied": erased,
        "marks_reapplied": marked,
    }
    labels = {
        "manifest_sha256": _sha256(src / MANIFEST),
        "backup_root": manifest["audit"]["root"],
        "previous_log": live.label,
    }
    if live.state is not None:
        counts["previous_entries"] = live.state.entries
        labels["previous_root"] = base64.b64encode(live.state.root).decode()
    restored = AuditEvent(
        EventKind.NODE_RESTORED,
        registers=(manifest["member_state"],),
        outcome="restored",
        reason="loss_accepted" if losses.anything else "nothing_lost",
        counts=counts,
        labels=labels,
    )
    log = AuditLog(log_dir, signer, origin)
    try:
        index = log.append(restored).seq
        for event in events:
            log.append(event)
        note = log.checkpoint()
        return note, log.size, index
    finally:
        log.close()


def _announce(
    signer: NoteSigner,
    member_state: str,
    manifest: dict[str, Any],
    src: Path,
    live: _LiveLog,
    losses: RestoreLosses,
    restored_note: bytes,
    index: int,
    erased: int,
    marked: int,
    accepted: bool,
    live_audit: Path,
    staged_audit: Path,
    stamp: str,
) -> Path:
    """Write the signed announcement for the auditors into the staged audit directory
    (with the announcements of earlier restores the live one holds); its final path."""
    log = losses.log
    lost = losses.counts() | {
        "dropped_by_kind": dict(sorted(log.dropped_by_kind.items())),
        "not_reapplied_by_kind": dict(sorted(log.not_reapplied_by_kind.items())),
        "previous_log": live.label,
        "loss_accepted": accepted and losses.anything,
    }
    state = live.state
    data = make_announcement(
        signer,
        member_state=member_state,
        restored_unix=int(time.time()),
        manifest_sha256=_sha256(src / MANIFEST),
        manifest=manifest,
        backup_checkpoint=(src / AUDIT / "log" / CHECKPOINT_FILE).read_bytes(),
        previous_log=live.label,
        previous_checkpoint=live.note,
        previous_entries=state.entries if state is not None else None,
        previous_root=state.root if state is not None else None,
        restored_checkpoint=restored_note,
        node_restored_index=index,
        lost=lost,
        reapplied={"erasures": erased, "marks": marked},
    )
    earlier = live_audit / RESTORES
    if earlier.is_dir():
        for path in sorted(earlier.iterdir()):
            target = staged_audit / RESTORES / path.name
            if path.is_file() and not target.exists():
                _write(target, path.read_bytes())
    name = f"{stamp}.json"
    _write(staged_audit / RESTORES / name, data)
    return live_audit / RESTORES / name


# Staged copies are written beside their targets (same file system: renames are atomic).
_STAGED = ".restoring"
# What SQLite and node.locks keep beside a register file.
_SIDECARS = ("-wal", "-shm", "-journal", ".lock", ".write.lock")


def _staged(path: Path) -> Path:
    return path.with_name(path.name + _STAGED)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class _Restore:
    """A restore's copies beside the live files and its renames. Everything is staged and
    made durable first; then the live audit directory is moved aside, the staged one and
    any restored store renamed into place, and last the staged register renamed over the
    live one (one atomic step: the restore's commit point). Until then :meth:`undo` puts
    every rename back and removes every copy, so a failed restore leaves the node as it
    was; the live register is never written, only copied aside."""

    def __init__(self, node: NodeConfig, audit: AuditConfig, stamp: str) -> None:
        self.node = node
        self.live_audit = audit.directory
        self.stamp = stamp
        self.register = _staged(node.database)
        self.audit = _staged(audit.directory)
        self.moved: list[str] = []
        self._made: list[Path] = []  # removed by undo
        self._renamed: list[tuple[Path, Path]] = []  # (from, to), put back by undo
        self._stores: list[tuple[Path, Path]] = []  # (staged, live) replay and notices
        self._committed = False
        # Left by a restore that crashed: staged copies only, never live data (and no other
        # restore runs: it would hold the open lock).
        stores = (_staged(node.replay_path), _staged(node.notices_path))
        for path in (self.register, self.audit, *stores, *self._register_sidecars()):
            _remove(path)

    def _aside(self, path: Path) -> Path:
        return path.with_name(f"{path.name}.before-restore-{self.stamp}")

    def _new(self, path: Path) -> Path:
        """``path``, about to be created: removed again if the restore fails."""
        if path.exists():
            raise FileExistsError(errno.EEXIST, "restore would overwrite it", str(path))
        self._made.append(path)
        return path

    def _rename(self, source: Path, target: Path) -> None:
        os.replace(source, target)
        self._renamed.append((source, target))

    def _register_sidecars(self) -> list[Path]:
        return [self.register.with_name(self.register.name + s) for s in _SIDECARS]

    def stage(self, src: Path) -> list[str]:
        """Copy the backup's register, audit directory and (where the node has none) replay
        and notice stores beside the live ones; notes on what is kept."""
        notes: list[str] = []
        stray = _logs_beside(self.node.database)
        if stray and not self.node.database.exists():
            raise PreconditionFailed(
                f"{self.node.database.name}{stray[0]} is there without its register: move it "
                "away first (SQLite would apply it to the restored register)"
            )
        self.node.database.parent.mkdir(parents=True, exist_ok=True)
        self.live_audit.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_restore(src / REGISTER, self._new(self.register))
        shutil.copytree(src / AUDIT, self._new(self.audit))
        if self.live_audit.exists() and _keep_live_witness(self.live_audit, self.audit):
            notes.append("kept the live witness state (coordinator checkpoints seen since)")
        # A live replay store has every nonce seen since the backup (and the quotas used):
        # restoring the older one would reopen a replay window, so it is kept.
        if self.node.replay_path.exists():
            notes.append("kept the live replay store (nonces seen since the backup)")
        elif (src / REPLAY).exists():
            self._stage_store(src / REPLAY, self.node.replay_path)
        # Likewise the live notices: they hold what arrived and what was sent since.
        if self.node.notices_path.exists():
            notes.append("kept the live notice inbox and outbox")
        elif (src / NOTICES).exists():
            self._stage_store(src / NOTICES, self.node.notices_path)
        return notes

    def _stage_store(self, backup: Path, live: Path) -> None:
        live.parent.mkdir(parents=True, exist_ok=True)
        staged = self._new(_staged(live))
        _sqlite_restore(backup, staged)
        self._stores.append((staged, live))

    def swap(self) -> None:
        """Make the staged copies durable, copy the live register aside, and rename the
        staged files into place, the register last."""
        for path in (self.register, *(staged for staged, _ in self._stores)):
            _settle_wal(path)
            _fsync_file(path)
        _fsync_tree(self.audit)
        database = self.node.database
        if database.exists():
            aside = self._new(self._aside(database))
            _sqlite_copy(database, aside)
            _fsync_file(aside)
            self.moved.append(str(aside))
            _settle_wal(database)
        if self.live_audit.exists():
            aside = self._aside(self.live_audit)
            self._rename(self.live_audit, aside)
            self.moved.append(str(aside))
        self._rename(self.audit, self.live_audit)
        for staged, live in self._stores:
            self._rename(staged, live)
        os.replace(self.register, database)
        self._committed = True
        for directory in {database.parent, self.live_audit.parent}:
            fsync_directory(directory)

    def undo(self) -> list[str]:
        """Put back what was moved and remove what was made (nothing once committed); what
        could not be undone, for the operator."""
        if self._committed:
            return []
        failures: list[str] = []
        for source, target in reversed(self._renamed):
            try:
                os.replace(target, source)
            except OSError as exc:
                failures.append(f"restore could not move {target} back to {source}: {exc}")
        # Copies only: the live register is untouched until the commit, and what was
        # moved is back in place or, where that failed, still at its moved-aside name.
        for path in reversed(self._made):
            try:
                _remove(path)
            except OSError as exc:
                failures.append(f"restore could not remove {path}: {exc}")
        return failures

    def tidy(self) -> None:
        """Remove the lock files and SQLite sidecars the staged register leaves behind."""
        for path in self._register_sidecars():
            path.unlink(missing_ok=True)


def _settle_wal(path: Path) -> None:
    """Fold a register's write-ahead log into its file and check that SQLite left no log
    beside it: a -wal or -journal left next to a register would be applied to the file
    renamed over it, whose pages it does not describe, and a staged copy must be whole
    in its own file before it is renamed into place."""
    db = sqlite3.connect(str(path), timeout=WRITE_WAIT_SECONDS)
    try:
        (busy, *_) = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.close()  # the last connection to close removes the -wal and -shm
    left = _logs_beside(path)
    if busy or left:
        raise PreconditionFailed(
            f"{path.name} is open in another process ({', '.join(left) or 'busy'}); stop it first"
        )


def _logs_beside(path: Path) -> list[str]:
    """The suffixes of the SQLite logs (WAL, rollback journal) beside ``path``."""
    return [s for s in ("-wal", "-journal") if path.with_name(path.name + s).exists()]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _witnessed_size(path: Path) -> int:
    """The size of the coordinator checkpoint a witness state file holds (-1: none). The
    node re-verifies the note's signature when it loads the file."""
    try:
        state = json.loads(path.read_text())
        note = Note.parse(base64.b64decode(state["latest_note"], validate=True))
        return Checkpoint.parse(note.body).size
    except (OSError, ValueError, KeyError, TypeError, binascii.Error, AuditVerificationError):
        return -1


def _keep_live_witness(live: Path, restored: Path) -> bool:
    """Keep the live witness state and evidence: they are about the coordinator's log, not
    this node's, and going back would let a coordinator fork past checkpoints this node
    already cosigned."""
    name = "witness.json"
    if _witnessed_size(live / name) < max(0, _witnessed_size(restored / name)):
        return False
    shutil.copy2(live / name, restored / name)
    for path in sorted((live / "evidence").rglob("*")):
        target = restored / "evidence" / path.relative_to(live / "evidence")
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return True


def _fsync_tree(root: Path) -> None:
    """Make a copied directory durable: its files, its directories, and its entry."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            fsync_directory(path)
    fsync_directory(root)
    fsync_directory(root.parent)


def _sqlite_restore(source: Path, target: Path) -> None:
    """Replace ``target``'s content with ``source`` through SQLite (WAL-safe), in WAL mode."""
    if not target.exists():
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)


def _reapply_changes(
    node: NodeConfig,
    kek: KeyEncryptionKey | None,
    register: Path,
    changes: dict[str, _Change],
) -> tuple[list[int], list[int], list[AuditEvent], set[str]]:
    """Erase, mark or unmark again the records of the (staged) ``register`` that the live
    log says changed after the backup; row ids erased, row ids (un)marked, the entries that
    log each change applied again (written after the restore's own entry), and the
    reference digests of every record whose last change the register now reflects."""
    if not changes:
        return [], [], [], set()
    from node.store import RecordStore

    # The staged file has its own open lock (beside it), so the restore's exclusive lock on
    # the live register does not stop this store.
    store = RecordStore(register, node.member_state, node.dimension, node.model_id, kek)
    erased: list[int] = []
    marked: list[int] = []
    covered: set[str] = set()
    events: list[AuditEvent] = []
    try:
        db = sqlite3.connect(register.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT id, reference FROM records ORDER BY id").fetchall()
        finally:
            db.close()
        logged: list[tuple[EventKind, str, MarkKind]] = []
        for row_id, reference in rows:
            digest = reference_digest(node.member_state, reference)
            if digest not in changes:
                continue
            covered.add(digest)
            state, unix_ms, mark = changes[digest]
            if state == "erased":
                erased.append(row_id)
                logged.append((EventKind.RECORD_ERASED, digest, mark))
                continue
            when = dt.datetime.fromtimestamp(unix_ms / 1000, dt.UTC)
            # An unmark first, so that a mark of the other kind never meets an old one.
            if state == "marked" and store.status(row_id).mark not in (MarkKind.NONE, mark):
                store.set_marked(row_id, MarkKind.NONE, when)
            if store.set_marked(row_id, mark, when):
                marked.append(row_id)
                kind = EventKind.RECORD_MARKED if state == "marked" else EventKind.RECORD_UNMARKED
                logged.append((kind, digest, mark))
        if erased:
            store.erase(erased)
        for kind, digest, mark in logged:
            labels = {"record_digest": digest} | ({"mark_kind": mark.value} if mark else {})
            events.append(
                AuditEvent(
                    kind,
                    registers=(node.member_state,),
                    outcome=_REAPPLIED[kind],
                    reason="reapplied_after_restore",
                    labels=labels,
                )
            )
    finally:
        store.close()
    return erased, marked, events, covered
