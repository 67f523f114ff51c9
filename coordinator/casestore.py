"""The coordinator's case file: each query's current proposal and its confirmation (SQLite).

A resolve stores its proposal here (replacing an earlier, unconfirmed one of the same query);
an official's confirmation names the proposal by its digest and is accepted once. The file
survives a restart, so a confirmation may come long after the resolve. Rows hold the
proposal's canonical JSON (record metadata only, never a template, a handle or a score) and
the confirmation: who confirmed, when, accepted or overridden, and the override's reason.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fedmatch.errors import AlreadyExists, NotFound, PreconditionFailed

__all__ = ["CaseStore", "StoredProposal", "case_store_path"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    query_id TEXT PRIMARY KEY,
    requesting_state TEXT NOT NULL,
    case_reference TEXT NOT NULL,
    digest TEXT NOT NULL,
    proposal TEXT NOT NULL,
    proposed_at TEXT NOT NULL,
    confirmation TEXT
);
CREATE INDEX IF NOT EXISTS proposals_by_age ON proposals (proposed_at)
"""


@dataclass(frozen=True)
class StoredProposal:
    query_id: str
    requesting_state: str
    digest: str
    proposal: dict[str, Any]
    proposed_at: str
    confirmation: dict[str, Any] | None

    @property
    def responsible_state(self) -> str:
        return str(self.proposal["responsible_state"])

    @property
    def criterion(self) -> int:
        return int(self.proposal["criterion"])


def case_store_path(audit_directory: Path) -> Path:
    """Where the coordinator keeps its case file: beside its audit directory."""
    return audit_directory.with_name(audit_directory.name + ".cases.sqlite")


class CaseStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def purge(self, before: dt.datetime) -> int:
        """Delete every proposal made before ``before`` (confirmed or not); how many. The
        case file holds verified hits' record metadata: it is kept for the case's time
        limits, not forever (coordinator.case_retention_days)."""
        if before.utcoffset() is None:
            raise ValueError("purge needs a timezone-aware time")
        # proposed_at is UTC isoformat throughout, so the strings order as the times do.
        cutoff = before.astimezone(dt.UTC).isoformat()
        with self._lock:
            cur = self._db.execute("DELETE FROM proposals WHERE proposed_at < ?", (cutoff,))
        return int(cur.rowcount)

    def get(self, query_id: str) -> StoredProposal | None:
        with self._lock:
            row = self._db.execute(
                "SELECT query_id, requesting_state, digest, proposal, proposed_at, confirmation"
                " FROM proposals WHERE query_id = ?",
                (query_id,),
            ).fetchone()
        if row is None:
            return None
        return StoredProposal(
            row[0], row[1], row[2], json.loads(row[3]), row[4], json.loads(row[5] or "null")
        )

    def check_open(self, query_id: str) -> None:
        """Refuse work on a case whose proposal an official has already confirmed."""
        stored = self.get(query_id)
        if stored is not None and stored.confirmation is not None:
            raise AlreadyExists("this case's proposal was already confirmed by an official")

    def put(
        self,
        query_id: str,
        requesting_state: str,
        digest: str,
        proposal: dict[str, Any],
        proposed_at: str,
        case_reference: str = "",
    ) -> None:
        """Keep ``proposal`` as the case's current one (a new resolve of the same query
        replaces an unconfirmed proposal; a confirmed one stays)."""
        encoded = json.dumps(proposal, sort_keys=True, separators=(",", ":"))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT confirmation FROM proposals WHERE query_id = ?", (query_id,)
                ).fetchone()
                if row is not None and row[0] is not None:
                    raise AlreadyExists("this case's proposal was already confirmed by an official")
                self._db.execute(
                    "INSERT OR REPLACE INTO proposals (query_id, requesting_state,"
                    " case_reference, digest, proposal, proposed_at, confirmation)"
                    " VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (query_id, requesting_state, case_reference, digest, encoded, proposed_at),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def confirm(
        self,
        query_id: str,
        requesting_state: str,
        digest: str,
        record: Callable[[StoredProposal], tuple[dict[str, Any], T]],
        case_reference: str = "",
    ) -> T:
        """Confirm the case's current proposal once.

        Refused: no proposal of ``requesting_state`` for this query (NotFound: another
        state's case is not revealed to exist), a confirmed one (AlreadyExists), another
        digest than the current proposal's or another case reference than the resolve's
        (PreconditionFailed). ``record`` is called inside
        the transaction (it writes the audit entry) and returns the confirmation to store and
        its own result; if it raises, nothing is stored. The entry is written before the
        commit: a crash in between leaves a logged confirmation that the file lacks (a second
        one would be logged too, visibly), never a stored confirmation that is not logged.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT query_id, requesting_state, digest, proposal, proposed_at,"
                    " confirmation, case_reference FROM proposals WHERE query_id = ?",
                    (query_id,),
                ).fetchone()
                if row is None or row[1] != requesting_state:
                    raise NotFound("no case proposal with this query id")
                if row[5] is not None:
                    raise AlreadyExists("this case's proposal was already confirmed by an official")
                if row[2] != digest:
                    raise PreconditionFailed(
                        "the proposal digest is not the case's current proposal (resolve again "
                        "or confirm the proposal last answered)"
                    )
                if row[6] != case_reference:
                    # The logs name the case by its reference: one case, one reference.
                    raise PreconditionFailed("the confirmation names another case reference")
                stored = StoredProposal(row[0], row[1], row[2], json.loads(row[3]), row[4], None)
                confirmation, result = record(stored)
                self._db.execute(
                    "UPDATE proposals SET confirmation = ? WHERE query_id = ?",
                    (json.dumps(confirmation, sort_keys=True), query_id),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return result
