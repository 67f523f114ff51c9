"""A node's register reconciled with its audit log (what is compared and signed:
:mod:`fedmatch.audit.register`).

- :func:`reconcile`: one full comparison of a register's rows with a log's ledger, in
  numpy (with reading the rows and hashing their references, about 2 s of one core for a
  million rows);
- :func:`reconcile_files`: the same from the files, read only, for ``node status`` (a row
  that looks unlogged or erased is checked again once writes in flight have landed);
- :class:`Reconciler`: the serving node's view, compared in full at start and kept up to
  date by the node's own writes (each enrolment and erasure updates counts and the set of
  reference digests; nothing is rescanned). A write by anyone else shows in SQLite's
  ``data_version`` and brings one full comparison, on the checkpoint thread. It yields the
  ``register_reconciled`` entry to log with a checkpoint when the register changed since
  the last one.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedmatch.audit.entry import AuditEvent
from fedmatch.audit.log import LOG_FILE
from fedmatch.audit.register import (
    ERASED_ROW,
    UNLOGGED_ROW,
    LogLedger,
    Reconciliation,
    digest_of_sorted,
    reconciled_event,
)
from fedmatch.domain import reference_digests
from fedmatch.errors import FedmatchError
from node.store import RecordStore, reference_rows

__all__ = ["Reconciler", "RegisterRows", "reconcile", "reconcile_files"]

log = logging.getLogger("fedmatch.node.reconcile")

_DIGEST = np.dtype("S32")


@dataclass(frozen=True)
class RegisterRows:
    """A register's rows as its reconciliation sees them (row ids ascending)."""

    ids: npt.NDArray[np.int64]
    digests: npt.NDArray[np.bytes_]  # S32: each row's reference digest
    numbers: npt.NDArray[np.int64]  # a synthetic row's reference number; -1 otherwise

    @classmethod
    def of(cls, rows: list[tuple[int, str, int]], member_state: str) -> RegisterRows:
        """From :func:`node.store.reference_rows` (row id, reference, synthetic number)."""
        n = len(rows)
        digests = reference_digests(member_state, (r[1] for r in rows))
        return cls(
            np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
            np.array(digests, dtype=_DIGEST).reshape(n),
            np.fromiter((r[2] for r in rows), dtype=np.int64, count=n),
        )

    def __len__(self) -> int:
        return len(self.ids)


def _sorted_digest(digests: npt.NDArray[np.bytes_]) -> str:
    return digest_of_sorted(np.sort(digests).tobytes())


def reconcile(rows: RegisterRows, ledger: LogLedger) -> Reconciliation:
    """Compare every row with the log: a row is logged by its latest enrolment entry
    (same row id, and same reference digest where the entry names one) or, when synthetic,
    by a seeding entry whose range holds it; a logged erasure of its reference after that
    makes it a row of an erased record, and a row logged by nothing is unlogged."""
    n = len(rows)
    logged_at = np.full(n, -1, dtype=np.int64)
    if ledger.enrolled_rows and n:
        e_ids = np.asarray(ledger.enrolled_rows, dtype=np.int64)
        e_seqs = np.asarray(ledger.enrolled_seqs, dtype=np.int64)
        e_digests = np.array(ledger.enrolled_digests, dtype=_DIGEST)
        # The latest enrolment entry of each row id (a row id is reused only after the
        # row holding it was erased).
        order = np.lexsort((e_seqs, e_ids))
        e_ids, e_seqs, e_digests = e_ids[order], e_seqs[order], e_digests[order]
        last = np.r_[e_ids[1:] != e_ids[:-1], True]
        e_ids, e_seqs, e_digests = e_ids[last], e_seqs[last], e_digests[last]
        pos = np.minimum(np.searchsorted(e_ids, rows.ids), len(e_ids) - 1)
        found = (e_ids[pos] == rows.ids) & (
            (e_digests[pos] == rows.digests) | (e_digests[pos] == b"")
        )
        logged_at = np.where(found, e_seqs[pos], logged_at)
    synthetic = rows.numbers >= 0
    for seeded in ledger.seeded:
        key = rows.numbers if seeded.by_reference else rows.ids
        inside = synthetic & (key >= seeded.first) & (key <= seeded.last)
        logged_at = np.where(inside, np.maximum(logged_at, seeded.seq), logged_at)
    erased_at = np.full(n, -1, dtype=np.int64)
    if ledger.erased and n:
        x_digests = np.array(list(ledger.erased), dtype=_DIGEST)
        x_seqs = np.fromiter(ledger.erased.values(), dtype=np.int64, count=len(ledger.erased))
        order = np.argsort(x_digests)
        x_digests, x_seqs = x_digests[order], x_seqs[order]
        pos = np.minimum(np.searchsorted(x_digests, rows.digests), len(x_digests) - 1)
        erased_at = np.where(x_digests[pos] == rows.digests, x_seqs[pos], erased_at)
    erased = erased_at > logged_at  # erased after it was logged (or never logged)
    unlogged = (logged_at < 0) & ~erased
    return Reconciliation(
        records=n,
        digest=_sorted_digest(rows.digests),
        accounted=ledger.accounted,
        unlogged_rows=tuple(int(i) for i in rows.ids[unlogged]),
        erased_rows=tuple(int(i) for i in rows.ids[erased]),
    )


def _read_files(database: Path, log_dir: Path, member_state: str) -> Reconciliation:
    db = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
    try:
        # The register first: a row written meanwhile has its entry in the log read after.
        rows = reference_rows(db, member_state)
    finally:
        db.close()
    ledger = LogLedger.from_log_data((log_dir / LOG_FILE).read_bytes())
    return reconcile(RegisterRows.of(rows, member_state), ledger)


def reconcile_files(
    database: Path, log_dir: Path, member_state: str, settle_seconds: float = 5.0
) -> Reconciliation:
    """The register file compared with the log in ``log_dir``, both read only (the register
    with SQLite's ``mode=ro``), safe beside a running node. A node writes a row and then its
    entry (or deletes a row and then logs its erasure) under its register's write lock: a
    mismatch seen while one is in flight is compared once more after waiting for the
    writes in flight to land (at most ``settle_seconds``)."""
    result = _read_files(database, log_dir, member_state)
    if result.reconciled:
        return result
    from node.locks import WriteLock

    try:
        with WriteLock(database).exclusive(settle_seconds):
            pass  # every write begun before this has its entry now
    except (OSError, FedmatchError):  # a busy or read-only lock: compare again anyway
        log.debug("register writes did not settle; compared again as they are")
    return _read_files(database, log_dir, member_state)


class _Digests:
    """A growable array of 32-byte reference digests (one per row, any order)."""

    def __init__(self, digests: npt.NDArray[np.bytes_]) -> None:
        self._buf = np.array(digests, dtype=_DIGEST)
        self._n = len(digests)

    def add(self, digest: bytes) -> None:
        if self._n == len(self._buf):
            grown = np.empty(max(16, 2 * len(self._buf)), dtype=_DIGEST)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n] = digest
        self._n += 1

    def remove(self, digests: list[bytes]) -> None:
        live = self._buf[: self._n]
        keep = live[~np.isin(live, np.array(digests, dtype=_DIGEST))]
        self._buf[: len(keep)] = keep
        self._n = len(keep)

    def digest(self) -> str:
        return _sorted_digest(self._buf[: self._n])


class Reconciler:
    """The serving node's reconciliation of its register with its log (module docstring).

    Thread-safe. The node calls :meth:`added` after each enrolment and :meth:`removed` after
    each erasure, with whether its entry was logged; the checkpoint thread asks
    :meth:`due`, then calls :meth:`refresh` and :meth:`pending_entry` with the register's
    writes paused, so that no row is between its write and its entry.
    """

    def __init__(self, store: RecordStore, log_dir: Path) -> None:
        self._store = store
        self._log_dir = log_dir
        self._lock = threading.Lock()
        self._logged: AuditEvent | None = None
        self._changes = 0  # the node's own writes since start
        self._seen = -1  # ... when the last entry was decided (-1: never)
        self._scan()

    def _scan(self) -> None:
        # data_version first: a write by another process during the scan changes it again,
        # and the next refresh compares once more.
        version = self._store.data_version()
        rows = RegisterRows.of(self._store.reference_rows(), self._store.member_state)
        ledger = LogLedger.from_log_data((self._log_dir / LOG_FILE).read_bytes())
        result = reconcile(rows, ledger)
        with self._lock:
            self._version = version
            self._records = result.records
            self._accounted = result.accounted
            self._unlogged = set(result.unlogged_rows)
            self._erased = set(result.erased_rows)
            self._digests = _Digests(rows.digests)
            self._digest: str | None = result.digest
            self._result = result
            if self._logged is None and ledger.last_reconciled is not None:
                self._logged = ledger.last_reconciled.event

    @property
    def result(self) -> Reconciliation:
        """The register as last compared, with the node's own writes since."""
        with self._lock:
            if self._digest is None:
                self._digest = self._digests.digest()
                self._result = Reconciliation(
                    self._records,
                    self._digest,
                    self._accounted,
                    tuple(sorted(self._unlogged)),
                    tuple(sorted(self._erased)),
                )
            return self._result

    def row_state(self, row_id: int) -> str | None:
        """How an erasure of ``row_id`` is labelled: ``unlogged`` (it has no enrolment
        entry), ``already_erased`` (its record's erasure is logged) or None (a logged row,
        whose erasure cancels its enrolment)."""
        with self._lock:
            if row_id in self._unlogged:
                return UNLOGGED_ROW
            if row_id in self._erased:
                return ERASED_ROW
            return None

    def added(self, row_id: int, digest: bytes, logged: bool) -> None:
        """The node added row ``row_id`` (reference digest ``digest``); ``logged``: its
        enrolment entry is in the log."""
        with self._lock:
            self._records += 1
            self._digests.add(digest)
            if logged:
                self._accounted += 1
            else:
                self._unlogged.add(row_id)
            self._digest = None
            self._changes += 1

    def removed(self, rows: dict[int, bytes], logged: set[int]) -> None:
        """The node deleted ``rows`` (row id -> reference digest); ``logged``: the rows
        whose erasure entry is in the log."""
        with self._lock:
            for row_id in rows:
                self._records -= 1
                remedial = row_id in self._unlogged or row_id in self._erased
                self._unlogged.discard(row_id)
                self._erased.discard(row_id)
                if row_id in logged and not remedial:
                    self._accounted -= 1
            self._digests.remove(list(rows.values()))
            self._digest = None
            self._changes += 1

    def mismatches(self) -> dict[str, int]:
        """Rows that do not reconcile, by kind (cheap: no digest is computed), for the
        node's metrics."""
        with self._lock:
            logged = self._records - len(self._unlogged) - len(self._erased)
            return {
                "unlogged": len(self._unlogged),
                "erased_present": len(self._erased),
                "missing": max(0, self._accounted - logged),
                "unaccounted": max(0, logged - self._accounted),
            }

    def due(self) -> bool:
        """Whether a reconciliation entry may be due: the node wrote its register since the
        last one was decided, or another process wrote the file (a cheap check: one pragma,
        no scan)."""
        with self._lock:
            if self._changes != self._seen:
                return True
        return self._store.data_version() != self._version

    def refresh(self) -> bool:
        """Compare in full again if another process wrote the register file since the last
        comparison; whether it did."""
        if self._store.data_version() == self._version:
            return False
        # Also a key re-wrap (node rotate-key) beside the node: not a mismatch by itself.
        log.info(
            "register %s was written by another process: comparing it with the audit log again",
            self._store.path.name,
        )
        self._scan()
        return True

    def pending_entry(self) -> AuditEvent | None:
        """The ``register_reconciled`` entry to log now, or None when the last one logged
        still says the same (an unchanged register adds nothing to the log). Call with the
        register's writes paused, and :meth:`logged_entry` once it is logged."""
        with self._lock:
            changes = self._changes
        event = reconciled_event(self.result)
        with self._lock:
            self._seen = changes
            last = self._logged
        # The outcome follows from the counts: counts and labels say it all.
        if last is not None and (
            dict(last.counts) == dict(event.counts) and dict(last.labels) == dict(event.labels)
        ):
            return None
        return event

    def logged_entry(self, event: AuditEvent) -> None:
        with self._lock:
            self._logged = event
