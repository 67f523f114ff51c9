"""What a restore loses, compared with the live node (:func:`node.backup.restore_backup`).

Two sources, each read before anything is replaced:

- the registers: the live one (it is moved aside, never changed) against the staged
  restored one, after the erasures and marks since the backup were applied to it again.
  Records only in the live register were enrolled after the backup and are lost; records
  only in the restored one were erased after it and would come back; a record in both
  with other values (its Dublin status, its mark, its facial image, ...) loses a change.
  Hit links (which states received a record's details, and the own-record hits a mark is
  passed on along) are compared too: a lost link means a later erasure or mark would not
  be told to that state.
- the live log, when it verifies and extends the backup's: every entry after the backup is
  dropped from the restored log; those whose change was applied again (the last erasure,
  mark or unmark of a record still in the restored register) are logged again, the others
  are lost, counted by kind, and those about a record are listed with it. When the live log
  cannot be read or is another history, that is said ("log not usable") and the losses are
  the register's only.

References and row ids are listed for the operator, in the report printed by the command;
the log's ``node_restored`` entry and the announcement carry counts only (:meth:`counts`).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.domain import reference_digest

__all__ = ["LogLoss", "RegisterDiff", "RestoreLosses", "compare_registers", "log_losses"]

# Entries that change a record (or its links) in the register.
_RECORD_KINDS = frozenset(
    {
        EventKind.RECORD_ENROLLED,
        EventKind.RECORDS_SEEDED,
        EventKind.RECORD_MARKED,
        EventKind.RECORD_UNMARKED,
        EventKind.RECORD_ERASED,
        EventKind.RECORD_STATUS_SET,
        EventKind.OWN_HIT_LINKED,
        EventKind.HIT_DETAILS_REVEALED,
    }
)
# Changes a restore applies again from the live log (node.backup).
_REAPPLIED_KINDS = frozenset(
    {EventKind.RECORD_ERASED, EventKind.RECORD_MARKED, EventKind.RECORD_UNMARKED}
)
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")
# Encrypted (or clear) blobs, compared by digest when both registers hold them under the
# same data key, otherwise by presence (a re-encryption changes every ciphertext).
_BLOBS = ("template", "face_image")


@dataclass(frozen=True)
class LogLoss:
    """What the restored log will not have of the live one."""

    present: bool  # a live log was there
    usable: bool  # it verified and extends the backup's log (or the backup's extends it)
    why: str = ""  # when not usable
    live_entries: int | None = None  # None: not readable
    live_root: bytes | None = field(default=None, repr=False)
    backup_entries: int = 0
    dropped_by_kind: dict[str, int] = field(default_factory=dict)
    reapplied: int = 0  # dropped entries whose change the restore applied (and logged) again
    not_reapplied_by_kind: dict[str, int] = field(default_factory=dict)
    # Dropped entries about a record, not applied again: seq, kind and the record's row id
    # and reference as the live register names them (when it still holds the record).
    record_entries: tuple[dict[str, Any], ...] = ()

    @property
    def entries_dropped(self) -> int:
        return sum(self.dropped_by_kind.values())

    @property
    def entries_not_reapplied(self) -> int:
        return sum(self.not_reapplied_by_kind.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "usable": self.usable,
            "why": self.why,
            "live_entries": self.live_entries,
            "backup_entries": self.backup_entries,
            "entries_dropped": self.entries_dropped,
            "dropped_by_kind": dict(sorted(self.dropped_by_kind.items())),
            "reapplied": self.reapplied,
            "entries_not_reapplied": self.entries_not_reapplied,
            "not_reapplied_by_kind": dict(sorted(self.not_reapplied_by_kind.items())),
            "record_entries_not_reapplied": [dict(e) for e in self.record_entries],
        }


@dataclass(frozen=True)
class RegisterDiff:
    """The live register against the restored one."""

    state: str  # "compared", "absent" (no live register) or "not readable: ..."
    records_lost: tuple[dict[str, Any], ...] = ()  # live only: enrolled after the backup
    records_returning: tuple[dict[str, Any], ...] = ()  # restored only: erasure not re-applied
    records_changed: tuple[dict[str, Any], ...] = ()  # both, other values: fields named
    hit_links_lost: tuple[dict[str, Any], ...] = ()
    own_hit_links_lost: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    # Row id -> reference and reference digest -> (row id, reference) of the live records
    # the dropped log entries name.
    by_id: dict[int, str] = field(default_factory=dict, repr=False)
    by_digest: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False)

    @property
    def readable(self) -> bool:
        return self.state in ("compared", "absent")


@dataclass(frozen=True)
class RestoreLosses:
    register: RegisterDiff
    log: LogLoss

    @property
    def record_changes(self) -> int:
        r = self.register
        return (
            len(r.records_returning)
            + len(r.records_changed)
            + len(r.hit_links_lost)
            + len(r.own_hit_links_lost)
        )

    @property
    def anything(self) -> bool:
        """Whether the restore loses anything, or cannot tell (then it may)."""
        return bool(
            self.register.records_lost
            or self.record_changes
            or not self.register.readable
            or (self.log.present and not self.log.usable)
            or self.log.entries_not_reapplied
        )

    def summary(self) -> str:
        """One line for the operator: what is lost."""
        r, log = self.register, self.log
        parts = []
        if r.records_lost:
            parts.append(f"{len(r.records_lost)} records enrolled after the backup")
        if r.records_returning:
            parts.append(
                f"the erasure of {len(r.records_returning)} records (they would come back)"
            )
        if r.records_changed:
            parts.append(f"changes to {len(r.records_changed)} records")
        links = len(r.hit_links_lost) + len(r.own_hit_links_lost)
        if links:
            parts.append(f"{links} hit links")
        if not r.readable:
            parts.append(f"an unknown part of the live register ({r.state})")
        if log.present and not log.usable:
            parts.append(f"an unknown part of the live log (log not usable: {log.why})")
        elif log.entries_not_reapplied:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(log.not_reapplied_by_kind.items()))
            parts.append(f"{log.entries_not_reapplied} log entries after the backup ({kinds})")
        return "; ".join(parts) or "nothing"

    def counts(self) -> dict[str, int]:
        """Counts only (for the log entry and the announcement)."""
        return {
            "records_lost": len(self.register.records_lost),
            "records_returning": len(self.register.records_returning),
            "record_changes_lost": self.record_changes,
            "entries_dropped": self.log.entries_dropped,
            "entries_not_reapplied": self.log.entries_not_reapplied,
            "entries_reapplied": self.log.reapplied,
        }

    def to_json(self) -> dict[str, Any]:
        r = self.register
        return {
            "anything": self.anything,
            "summary": self.summary(),
            "register": r.state,
            "records_lost": [dict(x) for x in r.records_lost],
            "records_returning": [dict(x) for x in r.records_returning],
            "records_changed": [dict(x) for x in r.records_changed],
            "hit_links_lost": [dict(x) for x in r.hit_links_lost],
            "own_hit_links_lost": [dict(x) for x in r.own_hit_links_lost],
            "register_notes": list(r.notes),
            "log": self.log.to_json(),
        }


# -- the log -------------------------------------------------------------------------------


def dropped_entries(live_raw: Sequence[bytes], backup_entries: int) -> list[SignedEntry]:
    """The live log's entries after the backup's (the live log extends the backup's)."""
    return [SignedEntry.decode(raw) for raw in live_raw[backup_entries:]]


def wanted_records(dropped: Sequence[SignedEntry]) -> tuple[set[int], set[str]]:
    """The row ids and reference digests the dropped entries about records name."""
    ids: set[int] = set()
    digests: set[str] = set()
    for entry in dropped:
        if entry.kind not in _RECORD_KINDS:
            continue
        labels = entry.event.labels
        if labels.get("record_digest"):
            digests.add(labels["record_digest"])
        elif labels.get("record", "").isdigit():
            ids.add(int(labels["record"]))
    return ids, digests


def log_losses(
    dropped: Sequence[SignedEntry],
    backup_entries: int,
    live_entries: int,
    live_root: bytes,
    covered: set[str],
    register: RegisterDiff,
) -> LogLoss:
    """The loss of a usable live log: every dropped entry by kind; an erasure, mark or unmark
    of a record whose last change was applied again (``covered``: reference digests) counts
    as re-applied, every other one is lost."""
    dropped_by_kind: Counter[str] = Counter()
    lost_by_kind: Counter[str] = Counter()
    reapplied = 0
    about: list[dict[str, Any]] = []
    for entry in dropped:
        dropped_by_kind[entry.kind.value] += 1
        digest = entry.event.labels.get("record_digest", "")
        if entry.kind in _REAPPLIED_KINDS and digest in covered:
            reapplied += 1
            continue
        lost_by_kind[entry.kind.value] += 1
        if entry.kind not in _RECORD_KINDS:
            continue
        item: dict[str, Any] = {"seq": entry.seq, "kind": entry.kind.value}
        record = entry.event.labels.get("record", "")
        if digest and digest in register.by_digest:
            item["row_id"], item["reference"] = register.by_digest[digest]
        elif digest:
            item["record_digest"] = digest  # no longer in the live register
        elif record.isdigit():
            item["row_id"] = int(record)
            if int(record) in register.by_id:
                item["reference"] = register.by_id[int(record)]
        about.append(item)
    return LogLoss(
        present=True,
        usable=True,
        live_entries=live_entries,
        live_root=live_root,
        backup_entries=backup_entries,
        dropped_by_kind=dict(dropped_by_kind),
        reapplied=reapplied,
        not_reapplied_by_kind=dict(lost_by_kind),
        record_entries=tuple(about),
    )


# -- the registers -------------------------------------------------------------------------


def _open(path: Path) -> sqlite3.Connection:
    """A connection that reads ``path`` and changes nothing beside it: read-only where a
    -wal holds writes (a read-write connection would fold them into the file when it
    closes), else read-write but query-only (a read-only one would leave a -wal behind)."""
    if any(path.with_name(path.name + s).exists() for s in ("-wal", "-journal")):
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    else:
        db = sqlite3.connect(str(path))
        db.execute("PRAGMA query_only = 1")
    db.create_function("fm_sha256", 1, _sha256, deterministic=True)
    return db


def _sha256(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    data = value.encode() if isinstance(value, str) else bytes(value)
    return hashlib.sha256(data).hexdigest()


def _columns(db: sqlite3.Connection) -> list[str]:
    return [str(r[1]) for r in db.execute("PRAGMA table_info(records)")]


def _tables(db: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _sealing(db: sqlite3.Connection) -> tuple[str, str]:
    rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return str(rows.get("register_id", "")), str(rows.get("sealing_wrapped_key", ""))


def _rows(
    db: sqlite3.Connection, columns: list[str], blobs_by_digest: bool
) -> Iterator[tuple[Any, ...]]:
    """(reference, id, value per column) of every record, in reference order; blobs as
    digests (or presence), a mark's time as its day (as hit details carry it)."""
    exprs = []
    for c in columns:
        if c in _BLOBS:
            exprs.append(f'fm_sha256("{c}")' if blobs_by_digest else f'("{c}" IS NOT NULL)')
        elif c == "marked_at":
            exprs.append('substr("marked_at", 1, 10)')
        else:
            exprs.append(f'"{c}"')
    select = ", ".join(["reference", "id", *exprs])
    yield from db.execute(f"SELECT {select} FROM records ORDER BY reference")  # noqa: S608


def _links(db: sqlite3.Connection) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    tables = _tables(db)
    hits: set[tuple[str, ...]] = set()
    own: set[tuple[str, ...]] = set()
    if "hit_links" in tables:
        hits = {
            tuple(map(str, r))
            for r in db.execute(
                "SELECT r.reference, h.requesting_state, h.query_id FROM hit_links h"
                " JOIN records r ON r.id = h.record_id"
            )
        }
    if "own_hit_links" in tables:
        own = {
            tuple(map(str, r))
            for r in db.execute(
                "SELECT r.reference, o.other_state, o.other_digest, o.query_id"
                " FROM own_hit_links o JOIN records r ON r.id = o.record_id"
            )
        }
    return hits, own


def compare_registers(
    live: Path,
    restored: Path,
    member_state: str,
    wanted_ids: AbstractSet[int] = frozenset(),
    wanted_digests: AbstractSet[str] = frozenset(),
) -> RegisterDiff:
    """The live register against the restored one, record by record (streamed in reference
    order: a register of millions of records is never held in memory)."""
    if not live.exists():
        return RegisterDiff("absent")
    try:
        a = _open(live)
    except sqlite3.Error as exc:
        return RegisterDiff(f"not readable: {exc}")
    try:
        b = _open(restored)
        try:
            return _compare(a, b, member_state, wanted_ids, wanted_digests)
        finally:
            b.close()
    except sqlite3.Error as exc:
        return RegisterDiff(f"not readable: {type(exc).__name__}: {exc}")
    finally:
        a.close()


def _compare(
    a: sqlite3.Connection,
    b: sqlite3.Connection,
    member_state: str,
    wanted_ids: AbstractSet[int],
    wanted_digests: AbstractSet[str],
) -> RegisterDiff:
    live_columns, restored_columns = _columns(a), set(_columns(b))
    columns = [
        c
        for c in live_columns
        if c in restored_columns and c not in ("id", "reference") and _COLUMN.fullmatch(c)
    ]
    notes: list[str] = []
    missing = sorted(set(live_columns) - restored_columns)
    if missing:
        notes.append(f"the restored register has no column {', '.join(missing)} (older schema)")
    same_key = _sealing(a) == _sealing(b)
    if not same_key:
        notes.append(
            "the register was re-encrypted since the backup: templates and facial images "
            "compared by presence only"
        )
    lost: list[dict[str, Any]] = []
    returning: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    by_id: dict[int, str] = {}
    by_digest: dict[str, tuple[int, str]] = {}

    def seen(row_id: int, reference: str) -> None:
        if row_id in wanted_ids:
            by_id[row_id] = reference
        if wanted_digests:
            digest = reference_digest(member_state, reference)
            if digest in wanted_digests:
                by_digest[digest] = (row_id, reference)

    live_rows, restored_rows = _rows(a, columns, same_key), _rows(b, columns, same_key)
    x, y = next(live_rows, None), next(restored_rows, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            assert x is not None
            lost.append({"reference": x[0], "row_id": x[1]})
            seen(x[1], x[0])
            x = next(live_rows, None)
        elif x is None or y[0] < x[0]:
            returning.append({"reference": y[0], "row_id": y[1]})
            y = next(restored_rows, None)
        else:
            fields = [c for c, u, v in zip(columns, x[2:], y[2:], strict=True) if u != v]
            if fields:
                changed.append({"reference": x[0], "row_id": x[1], "fields": fields})
            seen(x[1], x[0])
            x, y = next(live_rows, None), next(restored_rows, None)
    hits_a, own_a = _links(a)
    hits_b, own_b = _links(b)
    # Links of a record that is lost go with it (it is listed already).
    gone = {r["reference"] for r in lost}
    hit_links = [
        {"reference": ref, "requesting_state": state, "query_id": query}
        for ref, state, query in sorted(hits_a - hits_b)
        if ref not in gone
    ]
    own_links = [
        {"reference": ref, "other_state": state, "other_digest": other, "query_id": query}
        for ref, state, other, query in sorted(own_a - own_b)
        if ref not in gone
    ]
    return RegisterDiff(
        "compared",
        tuple(lost),
        tuple(returning),
        tuple(changed),
        tuple(hit_links),
        tuple(own_links),
        tuple(notes),
        by_id,
        by_digest,
    )
