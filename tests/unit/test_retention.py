"""Retention rules, the minimum age at enrolment, the register's schema 2 (migration, secure
erasure, marks, hit links) and the notice inbox: real SQLite files, a controllable clock."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedmatch.domain import Category, MarkKind, Sex
from fedmatch.errors import ConfigError, InvalidInput, NotFound, PreconditionFailed
from node.inbox import NOTICE_DUE, Notice, NoticeBox, NoticeKind, reference_digest
from node.records import NewRecord, RecordMeta
from node.retention import (
    RetentionPolicy,
    add_months,
    check_enrolment_age,
    load_retention,
)
from node.store import SCHEMA_VERSION, RecordStore

MODEL = "sface-2021dec-int8bq"
DIM = 8
ADULT = dt.date(1990, 5, 17)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def record(reference: str, category: Category, event: dt.date, born: dt.date = ADULT) -> NewRecord:
    meta = RecordMeta(reference, category, event, "Bari", event, Sex.FEMALE, "op", born)
    return NewRecord(meta, unit(len(reference)), MODEL)


# --- retention configuration (the periods themselves: tests/unit/test_retention_periods.py)


def test_add_months_clamps_to_month_end() -> None:
    assert add_months(dt.date(2027, 1, 31), 1) == dt.date(2027, 2, 28)
    assert add_months(dt.date(2027, 12, 31), 2) == dt.date(2028, 2, 29)
    assert add_months(dt.date(2024, 2, 29), 12) == dt.date(2025, 2, 28)


def test_retention_table_overrides_and_refuses_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[retention]\nrecast_from = "2026-07-01"\njob_interval_seconds = 60\n'
        "[retention.eurodac_2024]\ntemporary_protection = 36\n"
    )
    policy = load_retention(path)
    assert policy.recast_from == dt.date(2026, 7, 1)
    assert policy.job_interval_seconds == 60.0
    assert policy.eurodac_2024[Category.TEMPORARY_PROTECTION.value] == 36
    assert policy.eurodac_2024[Category.APPLICANT.value] == 120  # defaults kept
    assert load_retention(None) == RetentionPolicy()
    for body, message in [
        ("[retention]\nkeep = 1\n", "retention.keep: unknown key"),
        ("[retention.eurodac_2013]\napplicant = -1\n", "months in 0..1200"),
        ("[retention.eurodac_2013]\napplicant = true\n", "months in 0..1200"),
        ("[retention.eurodac_2024]\nvisitor = 5\n", "unknown category visitor"),
        ('[retention]\nrecast_from = "soon"\n', "must be a date"),
        ("[retention]\nrecast_from = 2026-06-12T00:00:00\n", "must be a date"),
        ("[retention]\njob_interval_seconds = 0\n", "must be positive"),
    ]:
        path.write_text(body)
        with pytest.raises(ConfigError, match=message):
            load_retention(path)


# --- minimum age ----------------------------------------------------------------------------


def test_minimum_age_six_at_capture() -> None:
    capture = dt.date(2026, 7, 1)
    check_enrolment_age(dt.date(2020, 7, 1), False, capture)  # six today: enrolled
    with pytest.raises(InvalidInput, match="under 6 at capture"):
        check_enrolment_age(dt.date(2020, 7, 2), False, capture)
    with pytest.raises(InvalidInput, match="birth_date is required"):
        check_enrolment_age(None, False, capture)
    with pytest.raises(InvalidInput, match="after capture_date"):
        check_enrolment_age(dt.date(2026, 7, 2), False, capture)


def test_uncertain_age_that_could_be_under_six_is_refused() -> None:
    capture = dt.date(2026, 7, 1)
    # Estimated 6 and a half: could be 5 and a half, so treated as under 6.
    with pytest.raises(InvalidInput, match="estimated age could be under 6"):
        check_enrolment_age(dt.date(2020, 1, 1), True, capture)
    # The same date, not an estimate: enrolled.
    check_enrolment_age(dt.date(2020, 1, 1), False, capture)
    # Estimated 7 (6 at the youngest): enrolled.
    check_enrolment_age(dt.date(2019, 7, 1), True, capture)


def test_new_record_refuses_a_child_under_six() -> None:
    event = dt.date(2026, 7, 1)
    with pytest.raises(InvalidInput, match="under 6"):
        record("IT-CHILD", Category.APPLICANT, event, born=dt.date(2022, 1, 1))
    meta = RecordMeta("IT-X", Category.APPLICANT, event, "Bari", event)
    with pytest.raises(InvalidInput, match="birth_date is required"):
        NewRecord(meta, unit(1), MODEL)


# --- the register: migration, erasure, marks, links -----------------------------------------

_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (
    id INTEGER PRIMARY KEY, reference TEXT NOT NULL UNIQUE, category TEXT NOT NULL,
    event_date TEXT NOT NULL, event_place TEXT NOT NULL, capture_date TEXT NOT NULL,
    sex TEXT NOT NULL DEFAULT '', operator_id TEXT NOT NULL DEFAULT '', model_id TEXT NOT NULL,
    template BLOB NOT NULL, enrolled_at TEXT NOT NULL
);
"""


def test_schema_1_register_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "IT.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", "1"), ("member_state", "IT"), ("dimension", str(DIM)),
         ("model_id", MODEL)],
    )  # fmt: skip
    db.execute(
        "INSERT INTO records (reference, category, event_date, event_place, capture_date,"
        " model_id, template, enrolled_at) VALUES ('IT-OLD', 'applicant', '2025-01-02', 'Bari',"
        " '2025-01-02', ?, ?, '2025-01-02T00:00:00')",
        (MODEL, unit(0).astype("<f4").tobytes()),
    )
    db.commit()
    db.close()

    store = RecordStore(path, "IT", DIM, MODEL)
    try:
        old = store.get(store.find("IT-OLD"))
        assert old.birth_date is None and old.category is Category.APPLICANT
        assert store.marked_flags().tolist() == [False]
        new_id = store.add(record("IT-NEW", Category.APPLICANT, dt.date(2026, 7, 1)))
        assert store.get(new_id).birth_date == ADULT
    finally:
        store.close()
    # Opened again: the file is at the current schema and stays there.
    with sqlite3.connect(path) as check:
        (version,) = check.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert version == SCHEMA_VERSION  # through every migration, to the current schema
    RecordStore(path, "IT", DIM, MODEL).close()


def test_erase_leaves_no_bytes_of_the_record_in_the_file_or_wal(tmp_path: Path) -> None:
    path = tmp_path / "IT.sqlite"
    store = RecordStore(path, "IT", DIM, MODEL)
    try:
        secret = "IT-ERASE-ME-7f3a9c"
        keep = store.add(record("IT-KEEP-1", Category.APPLICANT, dt.date(2026, 7, 1)))
        gone = store.add(record(secret, Category.IRREGULAR_CROSSING, dt.date(2026, 7, 1)))
        store.add_links([gone], "DE", "a" * 32, "DE-CASE-1", dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
        assert store.links(gone) == [("DE", "a" * 32, "DE-CASE-1")]
        files = [path, path.with_name(path.name + "-wal")]
        assert any(secret.encode() in f.read_bytes() for f in files if f.exists())

        store.erase([gone])

        with pytest.raises(NotFound):
            store.find(secret)
        assert store.links(gone) == []
        assert store.find("IT-KEEP-1") == keep
        for f in files:
            if f.exists():
                assert secret.encode() not in f.read_bytes(), f.name
    finally:
        store.close()


def test_marks_are_kept_in_the_register(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "IT.sqlite", "IT", DIM, MODEL)
    try:
        a = store.add(record("IT-A", Category.APPLICANT, dt.date(2026, 7, 1)))
        store.add(record("IT-B", Category.APPLICANT, dt.date(2026, 7, 1)))
        when = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
        assert store.set_marked(a, MarkKind.PROTECTION_GRANTED, when)
        assert not store.set_marked(a, MarkKind.PROTECTION_GRANTED, when)  # unchanged
        assert store.marked_flags().tolist() == [True, False]
        assert store.set_marked(a, MarkKind.NONE, when)
        assert store.marked_flags().tolist() == [False, False]
        with pytest.raises(NotFound):
            store.set_marked(999, MarkKind.PROTECTION_GRANTED, when)
    finally:
        store.close()


# --- the notice inbox -----------------------------------------------------------------------


def test_inbox_due_in_72_hours_overdue_after_and_acknowledged(tmp_path: Path) -> None:
    box = NoticeBox(tmp_path / "notices.sqlite", "DE")
    try:
        digest = reference_digest("IT", "IT-SYN-00000001")
        notice = Notice(
            Notice.new_id(), NoticeKind.RECORD_MARKED, "IT", "DE",
            reference_digest=digest, query_id="b" * 32, case_reference="DE-2026-1",
            mark_kind=MarkKind.PROTECTION_GRANTED,
        )  # fmt: skip
        received = dt.datetime(2026, 12, 30, 22, 0, tzinfo=dt.UTC)
        item, new = box.receive(notice, received)
        assert new and item.status == "open" and item.notice == notice
        assert item.due == received + NOTICE_DUE == dt.datetime(2027, 1, 2, 22, 0, tzinfo=dt.UTC)
        # A redelivery (the relay's answer was lost) is the same item.
        again, new = box.receive(notice, received + dt.timedelta(minutes=5))
        assert not new and again.item_id == item.item_id and again.due == item.due
        assert not item.overdue(item.due)
        assert item.overdue(item.due + dt.timedelta(seconds=1))

        acked = box.acknowledge(item.item_id, "officer-9", received + dt.timedelta(hours=1))
        assert acked.status == "acknowledged" and acked.acknowledged_by == "officer-9"
        assert not acked.overdue(item.due + dt.timedelta(days=9))
        assert box.items(open_only=True) == []
        with pytest.raises(PreconditionFailed):
            box.acknowledge(item.item_id, "officer-9", received)
        with pytest.raises(NotFound):
            box.acknowledge(12345, "officer-9", received)
    finally:
        box.close()


def test_notices_check_their_fields() -> None:
    nid = Notice.new_id()
    digest = reference_digest("IT", "IT-1")
    with pytest.raises(InvalidInput, match="reference digest"):
        Notice(nid, NoticeKind.RECORD_ERASED, "IT", "DE", reference="IT-1")
    with pytest.raises(InvalidInput, match="reference number"):
        Notice(nid, NoticeKind.ERASURE_REQUEST, "DE", "IT")
    with pytest.raises(InvalidInput, match="another state"):
        Notice(nid, NoticeKind.RECORD_MARKED, "IT", "IT", reference_digest=digest)
    with pytest.raises(InvalidInput, match="unknown notice kind"):
        Notice(nid, "record_lost", "IT", "DE", reference_digest=digest)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="notice_id"):
        Notice("x", NoticeKind.RECORD_MARKED, "IT", "DE", reference_digest=digest)
