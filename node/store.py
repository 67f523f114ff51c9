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

from fedmatch.domain import Category, Sex, check_member_state
from fedmatch.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed
from node.records import NewRecord, RecordMeta

__all__ = ["RecordStore"]

SCHEMA_VERSION = "1"

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
    enrolled_at TEXT NOT NULL
);
"""


class RecordStore:
    """A member state's register in a SQLite file (created on first open)."""

    def __init__(self, path: Path, member_state: str, dimension: int, model_id: str) -> None:
        check_member_state(member_state)
        if dimension < 1:
            raise InvalidInput("register dimension must be positive")
        self.path = path
        self.member_state = member_state
        self.dimension = dimension
        self.model_id = model_id
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the server's threads, serialized by our own lock.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._db.executescript(_SCHEMA)
            self._check_or_init_meta()
        except BaseException:
            self._db.close()
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

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(n)

    def add(self, record: NewRecord) -> int:
        """Enrol one record; returns its row id."""
        return self.add_many([record])[0]

    def add_many(self, records: Iterable[NewRecord]) -> list[int]:
        """Enrol records in one transaction (all or nothing)."""
        rows = [self._row(r) for r in records]
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        ids: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for row in rows:
                    cur = self._db.execute(
                        "INSERT INTO records (reference, category, event_date, event_place,"
                        " capture_date, sex, operator_id, model_id, template, enrolled_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        )

    def templates(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """All row ids and templates, in row-id order (the engine's row order)."""
        with self._lock:
            rows = self._db.execute("SELECT id, template FROM records ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4")
        return ids, matrix.reshape(len(rows), self.dimension).astype(np.float32)

    def categories(self) -> list[Category]:
        """The category of every row, in row-id order (aligned with :meth:`templates`)."""
        with self._lock:
            rows = self._db.execute("SELECT category FROM records ORDER BY id").fetchall()
        return [Category(r[0]) for r in rows]

    def get(self, record_id: int) -> RecordMeta:
        with self._lock:
            row = self._db.execute(
                "SELECT reference, category, event_date, event_place, capture_date, sex,"
                " operator_id FROM records WHERE id = ?",
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
        )
