"""A register reconciled with its audit log (node/reconcile.py, fedmatch/audit/register.py),
on real SQLite files and real logs: which rows are logged, by an enrolment entry or a seeded
range (also one written before the range labels existed), which are not, the digest, and
the auditor's recount of a node's latest reconciliation entry."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedmatch.audit.entry import AuditEvent, EventKind, SignedEntry
from fedmatch.audit.log import LOG_FILE, AuditLog, scan_records
from fedmatch.audit.note import NoteSigner
from fedmatch.audit.party import node_origin
from fedmatch.audit.register import (
    ERASED_ROW,
    UNLOGGED_ROW,
    LogLedger,
    Reconciliation,
    check_reconciled,
    reconciled_event,
    register_digest,
)
from fedmatch.demo.seed import seed_logged, seed_register
from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Category, Sex, reference_digest, reference_digests
from node.reconcile import Reconciler, _Digests, reconcile_files
from node.records import NewRecord, RecordMeta
from node.store import RecordStore
from tests.second_writer import insert_behind_the_back

STATE = "IT"
DIM = 8
MODEL = "test-model"
TODAY = dt.date(2026, 6, 1)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    out = AuditLog(tmp_path / "audit" / "log", NoteSigner.generate(node_origin(STATE)),
                   node_origin(STATE))  # fmt: skip
    yield out
    out.close()


def _db(tmp_path: Path) -> Path:
    return tmp_path / "it.sqlite"


def _reconcile(tmp_path: Path) -> Reconciliation:
    return reconcile_files(_db(tmp_path), tmp_path / "audit" / "log", STATE, settle_seconds=0)


def _record(reference: str, operator: str = "officer-9") -> NewRecord:
    template = unit_vectors(np.random.default_rng(len(reference)), 1, DIM)[0]
    meta = RecordMeta(
        reference, Category.APPLICANT, TODAY, "Rome", TODAY, Sex.FEMALE, operator_id=operator,
        birth_date=dt.date(1990, 1, 1),
    )  # fmt: skip
    return NewRecord(meta=meta, template=template, model_id=MODEL)


def _enrol(tmp_path: Path, log: AuditLog, reference: str, logged: bool = True) -> int:
    """A record added as a node adds it: the row, then its entry (unless ``logged`` is
    False: a row written behind the node's back)."""
    store = RecordStore(_db(tmp_path), STATE, DIM, MODEL)
    try:
        row = store.add(_record(reference))
    finally:
        store.close()
    if logged:
        labels = {"record": str(row), "record_digest": reference_digest(STATE, reference)}
        log.append(AuditEvent(EventKind.RECORD_ENROLLED, labels=labels))
    return row


def _erase(tmp_path: Path, log: AuditLog, reference: str, **labels: str) -> None:
    store = RecordStore(_db(tmp_path), STATE, DIM, MODEL)
    try:
        store.erase([store.find(reference)])
    finally:
        store.close()
    event = AuditEvent(
        EventKind.RECORD_ERASED,
        labels={"record_digest": reference_digest(STATE, reference), **labels},
    )
    log.append(event)


def _insert_behind_the_back(tmp_path: Path, reference: str, operator: str = "intruder",
                            row_id: int | None = None) -> int:  # fmt: skip
    return insert_behind_the_back(_db(tmp_path), reference, operator, row_id)


def test_the_register_digest_is_over_the_sorted_reference_digests() -> None:
    rng = np.random.default_rng(1)
    digests = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(200)]
    # Digests ending in zero bytes sort and hash like any others in the numpy path.
    digests += [d[:30] + b"\x00\x00" for d in digests[:20]] + [b"\x00" * 32]
    expected = hashlib.sha256(
        b"fedmatch/register-references/v1\x00" + b"".join(sorted(digests))
    ).hexdigest()
    assert register_digest(reversed(digests)) == expected
    grown = _Digests(np.array(digests[:5], dtype="S32"))
    for d in digests[5:]:
        grown.add(d)
    assert grown.digest() == expected
    grown.remove(digests[:3])
    assert grown.digest() == register_digest(digests[3:])


def test_a_seeded_register_reconciles(tmp_path: Path, log: AuditLog) -> None:
    seeded = seed_logged(log, _db(tmp_path), STATE, 12, 1, DIM, MODEL, TODAY)
    seed_logged(log, _db(tmp_path), STATE, 3, 2, DIM, MODEL, TODAY)
    assert seeded.rows == tuple(range(1, 13))
    result = _reconcile(tmp_path)
    assert result.reconciled and result.problems() == []
    assert (result.records, result.accounted, result.logged) == (15, 15, 15)
    references = [f"IT-SYN-{i:08d}" for i in range(15)]
    assert result.digest == register_digest(reference_digests(STATE, references))


def test_a_seeding_logged_before_its_range_was_reconciles_by_reference_numbers(
    tmp_path: Path, log: AuditLog
) -> None:
    """Older `node seed` entries have counts only: the references seeding numbers from the
    register's size before it (IT-SYN-00000000...) name what they added."""
    for count, seed in ((5, 1), (4, 2)):
        added = seed_register(_db(tmp_path), STATE, count, seed, DIM, MODEL, TODAY)
        log.append(AuditEvent(
            EventKind.RECORDS_SEEDED, registers=(STATE,), operator="seed", outcome="ok",
            counts={"added": count, "records": added.records}, labels={"dev": "no"},
        ))  # fmt: skip
    assert _reconcile(tmp_path).reconciled
    # A synthetic-looking row beyond the numbers those entries name is not logged by them.
    row = _insert_behind_the_back(tmp_path, "IT-SYN-00000009", operator="seed")
    result = _reconcile(tmp_path)
    assert result.unlogged_rows == (row,) and not result.reconciled


def test_rows_behind_the_nodes_back_are_unlogged(tmp_path: Path, log: AuditLog) -> None:
    seed_logged(log, _db(tmp_path), STATE, 4, 1, DIM, MODEL, TODAY)
    _enrol(tmp_path, log, "IT-2026-1")
    assert _reconcile(tmp_path).reconciled
    first = _insert_behind_the_back(tmp_path, "IT-2026-2")
    # Written as a seeding would be, but by no seeding: not in the logged range.
    second = _insert_behind_the_back(tmp_path, "IT-SYN-00000099", operator="seed")
    result = _reconcile(tmp_path)
    assert result.unlogged_rows == (first, second)
    assert (result.records, result.accounted, result.missing) == (7, 5, 0)
    assert result.problems() == [
        f"2 records without an enrolment entry in the audit log (row ids {first}, {second})"
    ]


def test_a_row_of_an_erased_record_is_named(tmp_path: Path, log: AuditLog) -> None:
    _enrol(tmp_path, log, "IT-2026-1")
    row = _enrol(tmp_path, log, "IT-2026-2")
    _erase(tmp_path, log, "IT-2026-2")
    assert _reconcile(tmp_path).reconciled
    # Put back by someone: the same row again, or the record under a new row id.
    back = _insert_behind_the_back(tmp_path, "IT-2026-2", operator="op-1", row_id=row)
    result = _reconcile(tmp_path)
    assert back == row and result.erased_rows == (row,) and result.unlogged_rows == ()
    assert "their erasure is logged" in result.problems()[0]


def test_a_reference_enrolled_again_after_its_erasure_reconciles(
    tmp_path: Path, log: AuditLog
) -> None:
    _enrol(tmp_path, log, "IT-2026-1")
    _enrol(tmp_path, log, "IT-2026-2")
    _erase(tmp_path, log, "IT-2026-2")
    _enrol(tmp_path, log, "IT-2026-2")  # re-enrolled: its entry comes after the erasure
    result = _reconcile(tmp_path)
    assert result.reconciled and (result.records, result.accounted) == (2, 2)


def test_an_enrolment_entry_without_its_reference_digest_logs_its_row_id(
    tmp_path: Path, log: AuditLog
) -> None:
    """Entries written before enrolments named the reference digest: the row id alone."""
    _enrol(tmp_path, log, "IT-2026-1", logged=False)
    row = _enrol(tmp_path, log, "IT-2026-2", logged=False)
    log.append(AuditEvent(EventKind.RECORD_ENROLLED, labels={"record": str(row)}))
    result = _reconcile(tmp_path)
    assert result.unlogged_rows == (row - 1,) and result.accounted == 1


def test_a_reused_row_id_holding_another_record_is_unlogged(tmp_path: Path, log: AuditLog) -> None:
    """SQLite gives the largest row id again once its row is gone: the enrolment entry of
    the erased record does not log a different record under that id."""
    _enrol(tmp_path, log, "IT-2026-1")
    row = _enrol(tmp_path, log, "IT-2026-2")
    _erase(tmp_path, log, "IT-2026-2")
    again = _insert_behind_the_back(tmp_path, "IT-2026-3")
    assert again == row
    assert _reconcile(tmp_path).unlogged_rows == (row,)


def test_a_row_deleted_without_its_erasure_is_missing(tmp_path: Path, log: AuditLog) -> None:
    _enrol(tmp_path, log, "IT-2026-1")
    _enrol(tmp_path, log, "IT-2026-2")
    db = sqlite3.connect(_db(tmp_path))
    db.execute("DELETE FROM records WHERE reference = 'IT-2026-2'")
    db.commit()
    db.close()
    result = _reconcile(tmp_path)
    assert (result.records, result.accounted, result.missing) == (1, 2, 1)
    assert result.problems() == ["1 logged record missing from the register with no erasure entry"]


def test_a_remedial_erasure_cancels_no_enrolment(tmp_path: Path, log: AuditLog) -> None:
    _enrol(tmp_path, log, "IT-2026-1")
    _insert_behind_the_back(tmp_path, "IT-2026-2")
    assert not _reconcile(tmp_path).reconciled
    _erase(tmp_path, log, "IT-2026-2", register_row=UNLOGGED_ROW)
    assert _reconcile(tmp_path).reconciled


def test_the_serving_view_follows_the_nodes_writes(tmp_path: Path, log: AuditLog) -> None:
    seed_logged(log, _db(tmp_path), STATE, 3, 1, DIM, MODEL, TODAY)
    store = RecordStore(_db(tmp_path), STATE, DIM, MODEL)
    try:
        view = Reconciler(store, log.directory)
        assert view.result.reconciled and view.due()
        first = view.pending_entry()
        assert first is not None and first.outcome == "reconciled"
        log.append(first)
        view.logged_entry(first)
        assert not view.due() and view.pending_entry() is None  # unchanged: no new entry
        # An enrolment whose entry could not be written is an unlogged row.
        row = store.add(_record("IT-2026-1"))
        view.added(row, reference_digests(STATE, ["IT-2026-1"])[0], logged=False)
        assert view.result.unlogged_rows == (row,) and view.row_state(row) == UNLOGGED_ROW
        assert view.mismatches() == {
            "unlogged": 1, "erased_present": 0, "missing": 0, "unaccounted": 0
        }  # fmt: skip
        # Erased again (logged as remedial): the register reconciles, and matches the files.
        store.erase([row])
        view.removed({row: reference_digests(STATE, ["IT-2026-1"])[0]}, logged={row})
        assert view.result.reconciled
        # A write by another process is found by data_version, and compared in full.
        assert not view.refresh()
        other = _insert_behind_the_back(tmp_path, "IT-2026-2")
        assert view.due() and view.refresh()
        assert view.result.unlogged_rows == (other,)
        event = view.pending_entry()
        assert event is not None and event.outcome == "not_reconciled"
        assert event.counts["unlogged"] == 1 and event.labels["unlogged_rows"] == str(other)
        assert ERASED_ROW == "already_erased"
    finally:
        store.close()


def _entries(log: AuditLog) -> list[SignedEntry]:
    data = (log.directory / LOG_FILE).read_bytes()
    return [SignedEntry.decode(data[a : a + n]) for a, n in scan_records(data)[0]]


def test_the_ledger_reads_the_log_file_as_the_entries(tmp_path: Path, log: AuditLog) -> None:
    seed_logged(log, _db(tmp_path), STATE, 3, 1, DIM, MODEL, TODAY)
    _enrol(tmp_path, log, "IT-2026-1")
    _erase(tmp_path, log, "IT-2026-1")
    log.append(AuditEvent(EventKind.SEARCH_ANSWERED, outcome="ok"))
    log.append(reconciled_event(_reconcile(tmp_path)))
    fast = LogLedger.from_log_data((log.directory / LOG_FILE).read_bytes())
    slow = LogLedger.from_entries(_entries(log))
    assert fast == slow
    assert (fast.enrolments, fast.seeded_records, fast.erasures, fast.accounted) == (1, 3, 1, 3)


def test_the_auditor_recounts_the_latest_reconciliation(tmp_path: Path, log: AuditLog) -> None:
    seed_logged(log, _db(tmp_path), STATE, 3, 1, DIM, MODEL, TODAY)
    _enrol(tmp_path, log, "IT-2026-1")
    assert check_reconciled(_entries(log)).seq is None  # none logged yet
    honest = _reconcile(tmp_path)
    log.append(reconciled_event(honest))
    checked = check_reconciled(_entries(log))
    assert checked.seq is not None and checked.problems == ()
    # A node that states one record more than its log accounts for is found.
    forged = Reconciliation(honest.records + 1, honest.digest, honest.accounted + 1)
    log.append(reconciled_event(forged))
    (problem,) = check_reconciled(_entries(log)).problems
    assert problem[0] == "register-count-mismatch"
    assert "counts 5 records, 5 of them accounted for by the log; the log before it " \
        "accounts for 4" in problem[1]  # fmt: skip
    # An entry that says the register does not reconcile is a finding by itself.
    row = _insert_behind_the_back(tmp_path, "IT-2026-2")
    log.append(reconciled_event(_reconcile(tmp_path)))
    (problem,) = check_reconciled(_entries(log)).problems
    assert problem == (
        "register-not-reconciled",
        f"entry {len(_entries(log)) - 1}: the node's register does not reconcile with its "
        f"log: unlogged 1; unlogged_rows: {row}",
    )
