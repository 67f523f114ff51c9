"""The node's persistent register: one SQLite file.

The register's dimension and model id are fixed when the file is created and checked on
every open, so a register can never mix templates from two models. Templates are stored as
little-endian float32 blobs beside their metadata; the search engine reads them all once at
start and is updated on each enrolment.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedmatch.audit.register import SEED_OPERATOR, synthetic_prefix
from fedmatch.domain import Category, MarkKind, Sex, check_member_state
from fedmatch.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed
from node.locks import OpenLock, WriteLock
from node.records import NewRecord, RecordMeta, RecordStatus
from node.retention import RetentionFacts
from node.sealing import KeyEncryptionKey, TemplateSealer, open_sealer

__all__ = ["RecordStore", "facial_image_count", "migrate_schema", "reference_rows"]

# 2: birth date (minimum age at enrolment), marks, and the links of revealed hits (who was
# told about which record, so that a mark or an erasure can be passed on). 3: the facial
# image of each record (sealed like its template; NULL: enrolled from a template alone, not
# verifiable by image) and its quality figure. 4: the mark's kind (Eurodac recast Art. 31(1)
# protection granted, 31(4) residence document; schema 3's marks were all protection
# granted), the record's Dublin status (the state indicated as responsible and its basis,
# Art. 16(1); transfer, removal and left-territory dates; relocation, Art. 28(4)), the
# article resettlement data were taken under (Art. 18, 20: their retention), and the links
# of the node's own records to other states' records they produced a hit with (Art. 31(1):
# a mark is passed on in both directions). Older files are migrated when opened.
SCHEMA_VERSION = "4"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    reference TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    event_date TEXT NOT NULL,
    event_place TEXT NOT NULL,
    capture_date TEXT NOT NULL,
    sex TEXT NOT NULL DEFAULT '',
    operator_id TEXT NOT NULL DEFAULT '',
    model_id TEXT NOT NULL,
    template BLOB NOT NULL,
    enrolled_at TEXT NOT NULL,
    birth_date TEXT,
    birth_date_estimated INTEGER NOT NULL DEFAULT 0,
    marked_at TEXT,
    face_image BLOB,
    image_quality REAL,
    mark_kind TEXT NOT NULL DEFAULT '',
    responsible_state TEXT NOT NULL DEFAULT '',
    responsible_basis TEXT NOT NULL DEFAULT '',
    transferred_on TEXT,
    removed_on TEXT,
    left_territory_on TEXT,
    relocated_to TEXT NOT NULL DEFAULT '',
    relocated_on TEXT,
    resettlement_basis TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS hit_links (
    record_id INTEGER NOT NULL,
    requesting_state TEXT NOT NULL,
    query_id TEXT NOT NULL,
    case_reference TEXT NOT NULL,
    revealed_at TEXT NOT NULL,
    PRIMARY KEY (record_id, requesting_state, query_id)
);
CREATE TABLE IF NOT EXISTS own_hit_links (
    record_id INTEGER NOT NULL,
    other_state TEXT NOT NULL,
    other_digest TEXT NOT NULL,
    query_id TEXT NOT NULL,
    case_reference TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (record_id, other_state, other_digest)
);
"""

# The columns schemas 2 and 3 added, and those of schema 4, added to an older file by
# :func:`migrate_schema`.
_OLDER_COLUMNS = (
    "birth_date TEXT",
    "birth_date_estimated INTEGER NOT NULL DEFAULT 0",
    "marked_at TEXT",
    "face_image BLOB",
    "image_quality REAL",
)
_SCHEMA_4_COLUMNS = (
    "mark_kind TEXT NOT NULL DEFAULT ''",
    "responsible_state TEXT NOT NULL DEFAULT ''",
    "responsible_basis TEXT NOT NULL DEFAULT ''",
    "transferred_on TEXT",
    "removed_on TEXT",
    "left_territory_on TEXT",
    "relocated_to TEXT NOT NULL DEFAULT ''",
    "relocated_on TEXT",
    "resettlement_basis TEXT NOT NULL DEFAULT ''",
)


class RecordStore:
    """A member state's register in a SQLite file (created on first open)."""

    def __init__(
        self,
        path: Path,
        member_state: str,
        dimension: int,
        model_id: str,
        kek: KeyEncryptionKey | None = None,
    ) -> None:
        check_member_state(member_state)
        if dimension < 1:
            raise InvalidInput("register dimension must be positive")
        self.path = path
        self.member_state = member_state
        self.dimension = dimension
        self.model_id = model_id
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Held while open: a restore or re-encryption never runs under a live store.
        self._open_lock = OpenLock(path, exclusive=False)
        self.writes = WriteLock(path)  # see node.locks.register_write (backups)
        self._sealer: TemplateSealer | None = None
        # One connection shared by the server's threads, serialized by our own lock.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Erased records must not linger in free pages: SQLite overwrites deleted content.
        self._db.execute("PRAGMA secure_delete=ON")
        try:
            migrate_schema(self._db)
            self._db.executescript(_SCHEMA)
            self._check_or_init_meta()
            # Templates at rest: encrypted when a storage key is given (node/sealing.py).
            self._sealer = open_sealer(self._db, kek, path.name)
        except BaseException:
            self._db.close()
            self._open_lock.release()
            raise

    def _check_or_init_meta(self) -> None:
        want = {
            "schema_version": SCHEMA_VERSION,
            "member_state": self.member_state,
            "dimension": str(self.dimension),
            "model_id": self.model_id,
        }
        have = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not have:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", want.items())
            return
        for key, value in want.items():
            if have.get(key) != value:
                raise PreconditionFailed(
                    f"register {self.path.name} was created with {key}={have.get(key)!r}, "
                    f"not {value!r}"
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._open_lock.release()

    @property
    def storage_key_id(self) -> str | None:
        """The id of the key sealing this register's templates; None when stored clear."""
        return self._sealer.key_id if self._sealer is not None else None

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(n)

    def reference_rows(self) -> list[tuple[int, str, int]]:
        """(row id, reference, synthetic reference number or -1) of every row, in row-id
        order: what the register's reconciliation with its audit log reads
        (node/reconcile.py)."""
        with self._lock:
            return reference_rows(self._db, self.member_state)

    def data_version(self) -> int:
        """SQLite's ``data_version`` of this store's connection: it changes when another
        connection (another process: nothing else of the node writes this file) committed
        a change since it was last read, never for this store's own writes."""
        with self._lock:
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(version)

    def add(self, record: NewRecord) -> int:
        """Enrol one record; returns its row id."""
        return self.add_many([record])[0]

    def add_many(self, records: Iterable[NewRecord]) -> list[int]:
        """Enrol records in one transaction (all or nothing)."""
        rows = [(*self._row(r), *_birth(r.meta)) for r in records]
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        ids: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for row in rows:
                    cur = self._db.execute(
                        "INSERT INTO records (reference, category, event_date, event_place,"
                        " capture_date, sex, operator_id, model_id, template,"
                        " face_image, image_quality, resettlement_basis, birth_date,"
                        " birth_date_estimated, enrolled_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*row, now),
                    )
                    assert cur.lastrowid is not None
                    ids.append(cur.lastrowid)
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise AlreadyExists("a record with this reference number exists") from None
            except BaseException:
                # BEGIN itself may have failed (locked database): roll back only what began,
                # so the caller sees the real error.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return ids

    def _row(self, record: NewRecord) -> tuple[object, ...]:
        if record.model_id != self.model_id:
            raise PreconditionFailed(
                f"template from model {record.model_id[:64]!r}; "
                f"this register holds {self.model_id!r}"
            )
        if record.template.shape[0] != self.dimension:
            raise InvalidInput(f"template dimension must be {self.dimension}")
        m = record.meta
        blob = np.asarray(record.template, dtype="<f4").tobytes()
        image = record.image
        if self._sealer is not None:
            blob = self._sealer.seal(m.reference, blob)
            if image is not None:
                image = self._sealer.seal_image(m.reference, image)
        return (
            m.reference,
            m.category.value,
            m.event_date.isoformat(),
            m.event_place,
            m.capture_date.isoformat(),
            m.sex.value,
            m.operator_id,
            record.model_id,
            blob,
            image,
            record.image_quality,
            m.resettlement_basis,
        )

    def templates(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """All row ids and templates, in row-id order (the engine's row order)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, template, reference FROM records ORDER BY id"
            ).fetchall()
        return self._decoded(rows)

    def templates_between(
        self, first_id: int, last_id: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The row ids from ``first_id`` to ``last_id`` (inclusive) that exist, and their
        templates, in row-id order: what the search engine re-reads to re-encode a block
        instead of holding the register's templates a second time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, template, reference FROM records WHERE id BETWEEN ? AND ? ORDER BY id",
                (first_id, last_id),
            ).fetchall()
        return self._decoded(rows)

    def _decoded(
        self, rows: list[tuple[int, bytes, str]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(ids, templates) of (id, template, reference) rows, unsealed if sealed."""
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        sealer = self._sealer
        blobs = (sealer.open(r[2], r[1]) if sealer is not None else r[1] for r in rows)
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4")
        return ids, matrix.reshape(len(rows), self.dimension).astype(np.float32)

    def template(self, record_id: int) -> npt.NDArray[np.float32]:
        """One record's template (unsealed): the node's own plaintext check of a claimed
        hit (fedmatch/protocol/opening.py)."""
        with self._lock:
            row = self._db.execute(
                "SELECT template, reference FROM records WHERE id = ?", (record_id,)
            ).fetchone()
        if row is None:
            raise NotFound("record no longer exists")
        blob = self._sealer.open(row[1], row[0]) if self._sealer is not None else row[0]
        return np.frombuffer(blob, dtype="<f4").astype(np.float32)

    def face_image(self, record_id: int) -> tuple[bytes, float] | None:
        """One record's facial image (unsealed JPEG) and its quality figure, or None for a
        record enrolled from a template alone (not verifiable by image)."""
        with self._lock:
            row = self._db.execute(
                "SELECT face_image, image_quality, reference FROM records WHERE id = ?",
                (record_id,),
            ).fetchone()
        if row is None:
            raise NotFound("record no longer exists")
        if row[0] is None:
            return None
        image = self._sealer.open_image(row[2], row[0]) if self._sealer is not None else row[0]
        return bytes(image), float(row[1]) if row[1] is not None else 0.0

    def image_count(self) -> int:
        """How many records have a facial image (the others are not verifiable by image)."""
        with self._lock:
            return facial_image_count(self._db)

    def categories(self) -> list[Category]:
        """The category of every row, in row-id order (aligned with :meth:`templates`)."""
        with self._lock:
            rows = self._db.execute("SELECT category FROM records ORDER BY id").fetchall()
        return [Category(r[0]) for r in rows]

    def get(self, record_id: int) -> RecordMeta:
        with self._lock:
            row = self._db.execute(
                "SELECT reference, category, event_date, event_place, capture_date, sex,"
                " operator_id, birth_date, birth_date_estimated, resettlement_basis"
                " FROM records WHERE id = ?",
                (record_id,),
            ).fetchone()
        if row is None:
            raise NotFound("record no longer exists")
        return RecordMeta(
            reference=row[0],
            category=Category(row[1]),
            event_date=dt.date.fromisoformat(row[2]),
            event_place=row[3],
            capture_date=dt.date.fromisoformat(row[4]),
            sex=Sex(row[5]),
            operator_id=row[6],
            birth_date=dt.date.fromisoformat(row[7]) if row[7] else None,
            birth_date_estimated=bool(row[8]),
            resettlement_basis=row[9],
        )

    def enrolled_at(self, record_id: int) -> dt.datetime:
        """When the record was enrolled: the day its data were transmitted (Eurodac recast
        Art. 29 counts retention from it)."""
        with self._lock:
            row = self._db.execute(
                "SELECT enrolled_at FROM records WHERE id = ?", (record_id,)
            ).fetchone()
        if row is None:
            raise NotFound("record no longer exists")
        return dt.datetime.fromisoformat(row[0])

    def status(self, record_id: int) -> RecordStatus:
        """The record's mark and Dublin status (Eurodac recast Art. 16, 28(4), 31)."""
        with self._lock:
            row = self._db.execute(
                "SELECT mark_kind, marked_at, responsible_state, responsible_basis,"
                " transferred_on, removed_on, left_territory_on, relocated_to, relocated_on"
                " FROM records WHERE id = ?",
                (record_id,),
            ).fetchone()
        if row is None:
            raise NotFound("record no longer exists")
        return RecordStatus(
            mark=MarkKind(row[0]),
            marked_at=dt.datetime.fromisoformat(row[1]) if row[1] else None,
            responsible_state=row[2],
            responsible_basis=row[3],
            transferred_on=_date(row[4]),
            removed_on=_date(row[5]),
            left_territory_on=_date(row[6]),
            relocated_to=row[7],
            relocated_on=_date(row[8]),
        )

    # --- lifecycle: marks, erasure, links of revealed hits (node/lifecycle.py) ----------

    def find(self, reference: str) -> int:
        """The row id of the record with this origin reference number."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM records WHERE reference = ?", (reference,)
            ).fetchone()
        if row is None:
            raise NotFound("no record with this reference number")
        return int(row[0])

    def marked_flags(self) -> npt.NDArray[np.bool_]:
        """Whether each row is marked, in row-id order (aligned with :meth:`templates`)."""
        with self._lock:
            rows = self._db.execute("SELECT mark_kind FROM records ORDER BY id").fetchall()
        return np.fromiter((r[0] != "" for r in rows), dtype=np.bool_, count=len(rows))

    def set_marked(self, record_id: int, kind: MarkKind, when: dt.datetime) -> bool:
        """Mark a record with ``kind``, or unmark it (``MarkKind.NONE``); returns False when
        it already was in that state. The caller checks the kind against the category."""
        with self._lock:
            row = self._db.execute(
                "SELECT mark_kind FROM records WHERE id = ?", (record_id,)
            ).fetchone()
            if row is None:
                raise NotFound("record no longer exists")
            if row[0] == kind.value:
                return False
            if row[0] and kind is not MarkKind.NONE:
                raise PreconditionFailed(f"the record already carries a {row[0]} mark")
            stamp = when.isoformat(timespec="seconds") if kind is not MarkKind.NONE else None
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "UPDATE records SET mark_kind = ?, marked_at = ? WHERE id = ?",
                    (kind.value, stamp, record_id),
                )
        return True

    def set_status(self, record_id: int, status: RecordStatus) -> bool:
        """Write the record's Dublin status (all but the mark, :meth:`set_marked`); returns
        False when it already was this status."""
        with self._lock:
            row = self._db.execute(
                "SELECT mark_kind FROM records WHERE id = ?", (record_id,)
            ).fetchone()
            if row is None:
                raise NotFound("record no longer exists")
        if self.status(record_id) == status:
            return False
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "UPDATE records SET responsible_state = ?, responsible_basis = ?,"
                    " transferred_on = ?, removed_on = ?, left_territory_on = ?,"
                    " relocated_to = ?, relocated_on = ? WHERE id = ?",
                    (
                        status.responsible_state,
                        status.responsible_basis,
                        _iso(status.transferred_on),
                        _iso(status.removed_on),
                        _iso(status.left_territory_on),
                        status.relocated_to,
                        _iso(status.relocated_on),
                        record_id,
                    ),
                )
        return True

    def add_own_link(
        self, record_id: int, other_state: str, other_digest: str, query_id: str,
        case_reference: str, when: dt.datetime,
    ) -> bool:  # fmt: skip
        """Remember that this node's record produced a hit with ``other_state``'s record of
        reference digest ``other_digest`` (in the requesting state's query ``query_id``);
        False when that link was already known."""
        stamp = when.isoformat(timespec="seconds")
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO own_hit_links SELECT ?, ?, ?, ?, ?, ?"
                    " WHERE EXISTS (SELECT 1 FROM records WHERE id = ?)",
                    (record_id, other_state, other_digest, query_id, case_reference, stamp,
                     record_id),
                )  # fmt: skip
        return cur.rowcount == 1

    def own_links(self, record_id: int) -> list[tuple[str, str, str, str]]:
        """(other state, other record's digest, query id, case reference) of every hit this
        record produced with another state's record, as the requesting authority told it."""
        with self._lock:
            rows = self._db.execute(
                "SELECT other_state, other_digest, query_id, case_reference FROM own_hit_links"
                " WHERE record_id = ? ORDER BY linked_at, other_state, other_digest",
                (record_id,),
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def retention_rows(self) -> list[tuple[int, RetentionFacts, dt.date | None, dt.date | None]]:
        """For the erasure job (node/retention.py), of every record: its row id, what its
        retention depends on (category, capture date, the UTC day it was enrolled, i.e. its
        data transmitted, and a resettlement record's basis), the day a residence-document
        mark was set and the day the person left the territory (None: neither recorded), on
        which a Reg. 603/2013 irregular-crossing record is erased early (Art. 16(2))."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, category, capture_date, enrolled_at, resettlement_basis,"
                " CASE WHEN mark_kind = ? THEN marked_at END, left_territory_on"
                " FROM records ORDER BY id",
                (MarkKind.RESIDENCE_DOCUMENT.value,),
            ).fetchall()
        return [
            (
                int(r[0]),
                RetentionFacts(
                    Category(r[1]), dt.date.fromisoformat(r[2]), _day_of(r[3]), str(r[4])
                ),
                _day_of(r[5]) if r[5] else None,
                _date(r[6]),
            )
            for r in rows
        ]

    def erase(self, record_ids: Iterable[int]) -> None:
        """Delete records and their hit links for good: one transaction, then the WAL is
        checkpointed and truncated so that no copy of the deleted pages stays in it."""
        ids = [(int(i),) for i in record_ids]
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM hit_links WHERE record_id = ?", ids)
                self._db.executemany("DELETE FROM own_hit_links WHERE record_id = ?", ids)
                self._db.executemany("DELETE FROM records WHERE id = ?", ids)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def add_links(
        self, record_ids: Iterable[int], state: str, query_id: str, case_reference: str,
        when: dt.datetime,
    ) -> None:  # fmt: skip
        """Remember that ``state`` received these records' details (query, case, time)."""
        stamp = when.isoformat(timespec="seconds")
        rows = [(int(i), state, query_id, case_reference, stamp, int(i)) for i in record_ids]
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                # Only for records still there: one erased meanwhile leaves no link behind.
                self._db.executemany(
                    "INSERT OR IGNORE INTO hit_links SELECT ?, ?, ?, ?, ?"
                    " WHERE EXISTS (SELECT 1 FROM records WHERE id = ?)",
                    rows,
                )

    def links(self, record_id: int) -> list[tuple[str, str, str]]:
        """(requesting state, query id, case reference) of every reveal of this record."""
        with self._lock:
            rows = self._db.execute(
                "SELECT requesting_state, query_id, case_reference FROM hit_links"
                " WHERE record_id = ? ORDER BY revealed_at, requesting_state, query_id",
                (record_id,),
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _day_of(stamp: str) -> dt.date:
    """The day of a stored UTC timestamp (enrolled_at, marked_at)."""
    return dt.datetime.fromisoformat(stamp).date()


def _birth(meta: RecordMeta) -> tuple[str | None, int]:
    return (
        meta.birth_date.isoformat() if meta.birth_date is not None else None,
        int(meta.birth_date_estimated),
    )


def reference_rows(db: sqlite3.Connection, member_state: str) -> list[tuple[int, str, int]]:
    """(row id, reference, n) of every row of the register open in ``db``, in row-id order,
    where n is the number of a synthetic record's reference (added by ``node seed``: its
    operator and ``<state>-SYN-<n>``) and -1 for any other record."""
    prefix = synthetic_prefix(member_state)
    rows: list[tuple[int, str, int]] = db.execute(
        "SELECT id, reference, CASE WHEN operator_id = ?1 AND substr(reference, 1, ?2) = ?3"
        " AND length(reference) > ?2 AND substr(reference, ?2 + 1) NOT GLOB '*[^0-9]*'"
        " THEN CAST(substr(reference, ?2 + 1) AS INTEGER) ELSE -1 END"
        " FROM records ORDER BY id",
        (SEED_OPERATOR, len(prefix), prefix),
    ).fetchall()
    return rows


def facial_image_count(db: sqlite3.Connection) -> int:
    """How many records of the register open in ``db`` have a facial image; 0 for a file
    of schema 1 or 2 (read as it is, without migrating: node status, backup checks)."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(records)")}
    if "face_image" not in columns:
        return 0
    (n,) = db.execute("SELECT COUNT(*) FROM records WHERE face_image IS NOT NULL").fetchone()
    return int(n)


def migrate_schema(db: sqlite3.Connection) -> None:
    """Bring a register of schema 1, 2 or 3 to schema 4 (new columns; new tables are created
    by the schema script). Schema 3's marks were all protection granted (Eurodac recast Art.
    31(1), applicant data): they keep that kind. Idempotent; a new or current file is left
    alone."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] not in ("1", "2", "3"):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        # Each column the file lacks, whatever version it says it is: adding only what is
        # missing keeps the migration a single path.
        have = {r[1] for r in db.execute("PRAGMA table_info(records)")}
        for column in _OLDER_COLUMNS + _SCHEMA_4_COLUMNS:
            if column.split()[0] not in have:
                db.execute(f"ALTER TABLE records ADD COLUMN {column}")
        db.execute(
            "UPDATE records SET mark_kind = ? WHERE marked_at IS NOT NULL",
            (MarkKind.PROTECTION_GRANTED.value,),
        )
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
