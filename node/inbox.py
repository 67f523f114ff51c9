"""A node's notices to and from other states: the inbox its authority works through, and the
outbox of notices still to be relayed (one SQLite file beside the register).

A notice says "the record behind your hit of query Q was marked / unmarked / erased" (Eurodac
recast Art. 31: other states are told within 72 hours and act on theirs) or carries a data
subject's correction or erasure request routed to the state that holds the record (DOMAIN.md
section 6). Notices travel node -> coordinator -> node; an undelivered one stays pending in
the outbox and is retried by the lifecycle job. Each received notice is due 72 hours after
receipt; an open item past its due time is listed as overdue.

A notice carries no biometric data. A notification names the sender's record only by a
digest of its reference (the receiver got the reference with the hit details and can match
it); a rights request names the receiver's own reference, which the receiver needs to act.
A mark's notice carries its kind (Art. 31(1) protection granted, 31(4) residence document)
and goes both ways (Art. 31(1)): to the states that received the marked record's details,
and to the states whose record the marked record hit when the sender searched with it; the
latter names the receiver's record by the digest of its reference (``hit_record_digest``).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from fedmatch.domain import MarkKind, check_member_state, reference_digest
from fedmatch.errors import InvalidInput, NotFound, PreconditionFailed
from fedmatch.protocol.limits import MAX_TEXT_FIELD

__all__ = [
    "NOTICE_DUE",
    "InboxItem",
    "Notice",
    "NoticeBox",
    "NoticeKind",
    "OutboxItem",
    "reference_digest",
]

# Eurodac recast Art. 31(1): other states are informed "no later than 72 hours" after a mark.
NOTICE_DUE = dt.timedelta(hours=72)


_ID = re.compile(r"^[0-9a-f]{32}$")
_DIGEST = re.compile(r"^([0-9a-f]{64})?$")


class NoticeKind(enum.StrEnum):
    RECORD_MARKED = "record_marked"
    RECORD_UNMARKED = "record_unmarked"
    RECORD_ERASED = "record_erased"
    CORRECTION_REQUEST = "correction_request"
    ERASURE_REQUEST = "erasure_request"

    @property
    def is_rights_request(self) -> bool:
        return self in (NoticeKind.CORRECTION_REQUEST, NoticeKind.ERASURE_REQUEST)


@dataclass(frozen=True)
class Notice:
    """One notice as it travels; checks its own fields."""

    notice_id: str
    kind: NoticeKind
    from_state: str
    to_state: str
    reference: str = ""
    reference_digest: str = ""
    query_id: str = ""
    case_reference: str = ""
    # A mark's notice: the kind marked or unmarked; MarkKind.NONE on every other kind.
    mark_kind: MarkKind = MarkKind.NONE
    # The other direction (Art. 31(1)): the receiver's record the sender's record hit.
    hit_record_digest: str = ""

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.notice_id):
            raise InvalidInput("notice_id must be 32 lowercase hex digits")
        try:
            object.__setattr__(self, "kind", NoticeKind(self.kind))
        except ValueError:
            raise InvalidInput("unknown notice kind") from None
        check_member_state(self.from_state, "notice.from_state")
        check_member_state(self.to_state, "notice.to_state")
        if self.from_state == self.to_state:
            raise InvalidInput("a notice goes to another state")
        for name in ("reference", "query_id", "case_reference"):
            value = getattr(self, name)
            if len(value) > MAX_TEXT_FIELD or not value.isprintable():
                raise InvalidInput(f"notice.{name} must be at most {MAX_TEXT_FIELD} characters")
        if not _DIGEST.fullmatch(self.reference_digest):
            raise InvalidInput("notice.reference_digest must be 64 hex digits")
        if not _DIGEST.fullmatch(self.hit_record_digest):
            raise InvalidInput("notice.hit_record_digest must be 64 hex digits")
        try:
            object.__setattr__(self, "mark_kind", MarkKind(self.mark_kind))
        except ValueError:
            raise InvalidInput(
                "notice.mark_kind is protection_granted or residence_document"
            ) from None
        is_mark = self.kind in (NoticeKind.RECORD_MARKED, NoticeKind.RECORD_UNMARKED)
        if is_mark != (self.mark_kind is not MarkKind.NONE):
            raise InvalidInput("a mark's notice, and only one, carries the mark's kind")
        if self.hit_record_digest and not is_mark:
            raise InvalidInput("only a mark's notice names a record of the receiver")
        if self.kind.is_rights_request:
            if not self.reference.strip():
                raise InvalidInput("a rights request names the record's reference number")
        elif self.reference or not self.reference_digest:
            # A notification never carries the reference itself, only its digest.
            raise InvalidInput("a notification names the record by its reference digest")

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)


@dataclass(frozen=True)
class InboxItem:
    item_id: int
    notice: Notice
    received: dt.datetime
    due: dt.datetime
    status: str
    acknowledged_by: str

    def overdue(self, now: dt.datetime) -> bool:
        return self.status == "open" and now > self.due


@dataclass(frozen=True)
class OutboxItem:
    notice: Notice
    created: dt.datetime
    attempts: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    notice_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    from_state TEXT NOT NULL,
    reference TEXT NOT NULL,
    reference_digest TEXT NOT NULL,
    query_id TEXT NOT NULL,
    case_reference TEXT NOT NULL,
    mark_kind TEXT NOT NULL DEFAULT '',
    hit_record_digest TEXT NOT NULL DEFAULT '',
    received_at TEXT NOT NULL,
    due_at TEXT NOT NULL,
    status TEXT NOT NULL,
    acknowledged_by TEXT NOT NULL DEFAULT '',
    acknowledged_at TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    notice_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    to_state TEXT NOT NULL,
    reference TEXT NOT NULL,
    reference_digest TEXT NOT NULL,
    query_id TEXT NOT NULL,
    case_reference TEXT NOT NULL,
    mark_kind TEXT NOT NULL DEFAULT '',
    hit_record_digest TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Notice files written before marks had a kind get the two columns; their marks'
    notices were all about protection granted (Eurodac recast Art. 31(1))."""
    for table in ("inbox", "outbox"):
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if "mark_kind" in have:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN mark_kind TEXT NOT NULL DEFAULT ''")
            db.execute(f"ALTER TABLE {table} ADD COLUMN hit_record_digest TEXT NOT NULL DEFAULT ''")
            db.execute(
                f"UPDATE {table} SET mark_kind = ?"  # noqa: S608 - table is one of two names
                " WHERE kind IN ('record_marked', 'record_unmarked')",
                (MarkKind.PROTECTION_GRANTED.value,),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


class NoticeBox:
    """The inbox and outbox of one node (``member_state``) in a SQLite file."""

    def __init__(self, path: Path, member_state: str) -> None:
        self.member_state = member_state
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        _migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- inbox ---------------------------------------------------------------------------

    def receive(self, notice: Notice, now: dt.datetime) -> tuple[InboxItem, bool]:
        """Store a delivered notice; (the item, whether it is new). A redelivery of the same
        notice id (a relay retried after a lost answer) is the same item."""
        if notice.to_state != self.member_state:
            raise PreconditionFailed("the notice is for another state")
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO inbox (notice_id, kind, from_state, reference,"
                " reference_digest, query_id, case_reference, mark_kind, hit_record_digest,"
                " received_at, due_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')",
                (
                    notice.notice_id,
                    notice.kind.value,
                    notice.from_state,
                    notice.reference,
                    notice.reference_digest,
                    notice.query_id,
                    notice.case_reference,
                    notice.mark_kind.value,
                    notice.hit_record_digest,
                    _stamp(now),
                    _stamp(now + NOTICE_DUE),
                ),
            )
            new = cur.rowcount == 1
            row = self._db.execute(
                _SELECT_INBOX + " WHERE notice_id = ?", (notice.notice_id,)
            ).fetchone()
        item = self._item(row)
        if item.notice != notice:
            raise PreconditionFailed("a different notice with this notice id was received")
        return item, new

    def items(self, open_only: bool = False) -> list[InboxItem]:
        where = " WHERE status = 'open'" if open_only else ""
        with self._lock:
            rows = self._db.execute(_SELECT_INBOX + where + " ORDER BY due_at, id").fetchall()
        return [self._item(r) for r in rows]

    def acknowledge(self, item_id: int, by: str, now: dt.datetime) -> InboxItem:
        if not 0 < item_id < 2**63:  # beyond SQLite's integers (the wire's is a uint64)
            raise NotFound("no inbox item with this id")
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(_SELECT_INBOX + " WHERE id = ?", (item_id,)).fetchone()
                if row is None:
                    raise NotFound("no inbox item with this id")
                if row[10] != "open":
                    raise PreconditionFailed("this inbox item was already acknowledged")
                self._db.execute(
                    "UPDATE inbox SET status = 'acknowledged', acknowledged_by = ?,"
                    " acknowledged_at = ? WHERE id = ?",
                    (by, _stamp(now), item_id),
                )
                row = self._db.execute(_SELECT_INBOX + " WHERE id = ?", (item_id,)).fetchone()
        return self._item(row)

    def _item(self, row: tuple[object, ...]) -> InboxItem:
        notice = Notice(
            notice_id=str(row[1]),
            kind=NoticeKind(str(row[2])),
            from_state=str(row[3]),
            to_state=self.member_state,
            reference=str(row[4]),
            reference_digest=str(row[5]),
            query_id=str(row[6]),
            case_reference=str(row[7]),
            mark_kind=MarkKind(str(row[12])),
            hit_record_digest=str(row[13]),
        )
        return InboxItem(
            item_id=int(str(row[0])),
            notice=notice,
            received=dt.datetime.fromisoformat(str(row[8])),
            due=dt.datetime.fromisoformat(str(row[9])),
            status=str(row[10]),
            acknowledged_by=str(row[11]),
        )

    # --- outbox --------------------------------------------------------------------------

    def queue(self, notice: Notice, now: dt.datetime) -> None:
        if notice.from_state != self.member_state:
            raise PreconditionFailed("a node sends notices only in its own name")
        with self._lock:
            self._db.execute(
                "INSERT INTO outbox (notice_id, kind, to_state, reference, reference_digest,"
                " query_id, case_reference, mark_kind, hit_record_digest, created_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (
                    notice.notice_id,
                    notice.kind.value,
                    notice.to_state,
                    notice.reference,
                    notice.reference_digest,
                    notice.query_id,
                    notice.case_reference,
                    notice.mark_kind.value,
                    notice.hit_record_digest,
                    _stamp(now),
                ),
            )

    def pending(self) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT notice_id, kind, to_state, reference, reference_digest, query_id,"
                " case_reference, created_at, attempts, mark_kind, hit_record_digest FROM outbox"
                " WHERE status = 'pending' ORDER BY id"
            ).fetchall()
        return [
            OutboxItem(
                Notice(
                    r[0],
                    NoticeKind(r[1]),
                    self.member_state,
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    MarkKind(r[9]),
                    r[10],
                ),
                dt.datetime.fromisoformat(r[7]),
                int(r[8]),
            )
            for r in rows
        ]

    def sent(self, notice_id: str, delivered: bool) -> None:
        """Record one delivery attempt; a delivered notice leaves the pending list."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1,"
                " status = CASE WHEN ? THEN 'delivered' ELSE status END WHERE notice_id = ?",
                (delivered, notice_id),
            )


_SELECT_INBOX = (
    "SELECT id, notice_id, kind, from_state, reference, reference_digest, query_id,"
    " case_reference, received_at, due_at, status, acknowledged_by, mark_kind,"
    " hit_record_digest FROM inbox"
)
