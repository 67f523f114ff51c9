"""The register and its audit log reconcile (issue 19, "Register and log reconcile"; item 1's
record that nobody could see): every row of a node's register has its enrolment entry in the
node's log, and no row is left of a record whose erasure is logged. A mismatch makes the node
unhealthy and named (``node status``, a warning at start, a metric), and each change of the
register brings a signed ``register_reconciled`` entry that auditors recount.

First with real ``node serve`` processes, real SQLite files and real logs, and a second writer
that is a plain sqlite3 INSERT; then on the in-process federation of the tests (real nodes
over mTLS, real files), for enrolments, erasures, a record put back after its erasure, the
auditor's check of a forged count, and the quota metrics a lookup moves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedmatch.audit.auditor import run_audit
from fedmatch.audit.entry import AuditEvent, EventKind, SignedEntry
from fedmatch.audit.register import ERASED_ROW
from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Category, Purpose
from fedmatch.ops.metrics import node_metrics
from fedmatch.ops.status import EXIT_UNHEALTHY
from node.reconcile import reconcile_files
from node.service import NodeService
from tests.federation import DIM, Federation, auditor_config, enrol, federation, header
from tests.integration.test_operations import Party, _fedmatch, _node_config, _start, _stop
from tests.integration.test_single_writer import _entries
from tests.second_writer import insert_behind_the_back
from tests.unit.test_metrics import scrape, value

# --------------------------------------------------------------------------- processes


def _status(node: Party) -> tuple[int, dict[str, object], str]:
    done = _fedmatch("node", "status", "--config", str(node.config), "--address", node.address)
    return done.returncode, json.loads(done.stdout), done.stdout


def _reconciled(audit_dir: Path) -> list[SignedEntry]:
    return [e for e in _entries(audit_dir) if e.kind is EventKind.REGISTER_RECONCILED]


def _until(check: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def test_a_row_inserted_behind_the_nodes_back_is_named_by_status_and_at_start(
    tmp_path: Path,
) -> None:
    # A register seeded by `node seed` (logged, with the row ids it added) reconciles.
    config = _node_config(tmp_path, "FR", 20, json_table=False)
    node = _start(tmp_path, "node", config, "node-fr")
    try:
        code, status, _ = _status(node)
        assert code == 0, status
        register = status["register"]
        assert isinstance(register, dict)
        assert register["reconciliation"]["reconciled"] is True
        assert register["reconciliation"]["records"] == 20
        (entry,) = _reconciled(tmp_path / "audit-fr")
        assert entry.event.outcome == "reconciled"
        assert entry.event.counts["records"] == 20 and entry.event.counts["unlogged"] == 0
        metrics = scrape(node.metrics_port)
        assert value(metrics, "fedmatch_register_unreconciled_records", problem="unlogged") == 0

        # A second writer adds a record the log never hears of.
        row = insert_behind_the_back(tmp_path / "fr.sqlite", "FR-2026-INTRUDER")
        code, status, text = _status(node)
        assert code == EXIT_UNHEALTHY
        assert (
            "register does not reconcile with the audit log: 1 record without an enrolment "
            f"entry in the audit log (row id {row})"
        ) in status["problems"]  # type: ignore[operator]
        reconciliation = status["register"]["reconciliation"]  # type: ignore[index]
        assert reconciliation["unlogged_rows"] == [row] and reconciliation["reconciled"] is False
        assert "FR-2026-INTRUDER" not in text  # row ids, never a reference

        # The running node finds it too (its register's file changed under it): the metric,
        # and a signed entry saying so with its next checkpoint.
        def unlogged() -> float:
            found = scrape(node.metrics_port)
            return value(found, "fedmatch_register_unreconciled_records", problem="unlogged")

        _until(lambda: unlogged() == 1, "the node's metric counts the unlogged row")
        _until(lambda: len(_reconciled(tmp_path / "audit-fr")) == 2, "a reconciliation entry")
        last = _reconciled(tmp_path / "audit-fr")[-1]
        assert last.event.outcome == "not_reconciled"
        assert last.event.counts["records"] == 21 and last.event.counts["unlogged"] == 1
        assert last.event.labels["unlogged_rows"] == str(row)
    finally:
        assert _stop(node) == 0
    # At start: a clear warning naming the row; the node serves, and says it is unhealthy.
    again = _start(tmp_path, "node", config, "node-fr-again")
    try:
        warning = [line for line in again.lines() if "does not reconcile" in line]
        assert len(warning) == 1 and "WARNING" in warning[0], again.lines()
        named = f"1 record without an enrolment entry in the audit log (row id {row})"
        assert named in warning[0]
        code, _, _ = _status(again)
        assert code == EXIT_UNHEALTHY
        # Nothing new to say: the restart logs no second entry for the same register.
        assert len(_reconciled(tmp_path / "audit-fr")) == 2
    finally:
        assert _stop(again) == 0


# --------------------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("reconcile")
    with federation(tmp, records=30) as running:
        yield running


def _last_reconciled(node: NodeService) -> AuditEvent:
    found = [e for e in node.audit.log.iter_entries() if e.kind is EventKind.REGISTER_RECONCILED]
    return found[-1].event


def _metrics(node: NodeService) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = generate_latest(node_metrics(node).registry).decode()
    return {
        f.name: [(s.name, dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def _files(fed: Federation, state: str) -> tuple[Path, Path]:
    return fed.tmp / f"{state}.sqlite", fed.tmp / f"audit-{state}" / "log"


def test_an_enrolled_register_reconciles_and_the_auditor_checks_it(
    fed: Federation, tmp_path: Path
) -> None:
    it = fed.nodes["IT"]
    rng = np.random.default_rng(7)
    for i in range(3):
        enrol(it, unit_vectors(rng, 1, DIM)[0], f"IT-REC-{i}", Category.APPLICANT,
              dt.date(2026, 5, 1))  # fmt: skip
    enrolled = [e for e in it.audit.log.iter_entries() if e.kind is EventKind.RECORD_ENROLLED]
    assert len(enrolled) == 3 and all(len(e.event.labels["record_digest"]) == 64 for e in enrolled)
    fed.lifecycles["IT"].erase(header("IT"), "IT-REC-1", "erasure_request")
    it.publish_checkpoint()
    last = _last_reconciled(it)
    assert last.outcome == "reconciled" and last.counts["records"] == 32
    assert reconcile_files(*_files(fed, "IT"), "IT").digest == last.labels["register_digest"]
    # Unchanged since: a checkpoint adds no entry.
    size = it.audit.log.size
    it.publish_checkpoint()
    assert it.audit.log.size == size
    result = run_audit(auditor_config(fed.tmp, fed, state_dir=tmp_path / "auditor"))
    assert result.ok, result.report
    assert result.summary["registers_checked"] == 3


def test_a_row_left_after_its_logged_erasure_is_named(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    fr = fed.nodes["FR"]
    database, log_dir = _files(fed, "FR")
    db = sqlite3.connect(database)
    try:
        (row,) = db.execute("SELECT id FROM records WHERE reference = 'FR-SYN-00000003'").fetchone()
        saved = db.execute("SELECT * FROM records WHERE id = ?", (row,)).fetchone()
    finally:
        db.close()
    fed.lifecycles["FR"].erase(header("FR"), "FR-SYN-00000003", "erasure_request")
    assert reconcile_files(database, log_dir, "FR").reconciled
    # Put back by a second writer (a copy kept aside, a careless restore by hand...).
    db = sqlite3.connect(database)
    try:
        db.execute(f"INSERT INTO records VALUES ({', '.join('?' * len(saved))})", saved)
        db.commit()
    finally:
        db.close()
    result = reconcile_files(database, log_dir, "FR")
    assert result.erased_rows == (row,) and result.unlogged_rows == ()
    assert result.problems() == [
        f"1 row of erased records still in the register (row id {row}): their erasure is logged"
    ]
    with caplog.at_level(logging.WARNING):
        fr.publish_checkpoint()
    assert any("does not reconcile" in r.getMessage() for r in caplog.records)
    last = _last_reconciled(fr)
    assert last.outcome == "not_reconciled" and last.labels["erased_rows"] == str(row)
    found = _metrics(fr)
    assert value(found, "fedmatch_register_unreconciled_records", problem="erased_present") == 1
    # Erased again by the node: its receipt says the row had no standing enrolment, and the
    # register reconciles (the log's count is not taken down twice).
    fed.lifecycles["FR"].erase(header("FR"), "FR-SYN-00000003", "erasure_request")
    receipt = [e for e in fr.audit.log.iter_entries() if e.kind is EventKind.RECORD_ERASED][-1]
    assert receipt.event.labels["register_row"] == ERASED_ROW
    fr.publish_checkpoint()
    assert _last_reconciled(fr).outcome == "reconciled"
    assert reconcile_files(database, log_dir, "FR").reconciled


def test_quota_metrics_move_after_a_lookup(fed: Federation) -> None:
    it = fed.nodes["IT"]
    before = _metrics(it)
    requester = fed.requester("DE")
    probe = unit_vectors(np.random.default_rng(9), 1, DIM)[0]
    requester.lookup(probe, requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358", "C-1"))
    after = _metrics(it)
    for sample in ("fedmatch_quota_used_today", "fedmatch_quota_charged_total"):
        was = value(before, sample, member_state="DE")
        assert value(after, sample, member_state="DE") == was + 1
    assert value(after, "fedmatch_quota_daily_limit") == it.policy.daily_quota
    assert value(after, "fedmatch_quota_refused_total", member_state="DE") == 0
    # With DE's quota used up, its next lookup is refused at IT, and counted.
    saved = it.policy
    used = int(value(after, "fedmatch_quota_used_today", member_state="DE"))
    it.policy = dataclasses.replace(saved, daily_quota=used)
    try:
        requester.lookup(probe, requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358",
                                                 "C-2"))  # fmt: skip
        refused = _metrics(it)
    finally:
        it.policy = saved
    assert value(refused, "fedmatch_quota_refused_total", member_state="DE") == 1
    assert value(refused, "fedmatch_quota_used_today", member_state="DE") == used
    assert value(refused, "fedmatch_quota_daily_limit") == used
    # Labels: member-state codes only.
    families = ("fedmatch_quota_used_today", "fedmatch_quota_charged", "fedmatch_quota_refused")
    labels = {k for f in families for _, have, _ in refused[f] for k in have}
    assert labels == {"member_state"}


def test_a_forged_reconciliation_count_is_found_by_the_auditor(
    fed: Federation, tmp_path: Path
) -> None:
    de = fed.nodes["DE"]
    honest = de.reconciler.result
    # The node states one record more than its log accounts for, signed with its own key.
    forged = AuditEvent(
        EventKind.REGISTER_RECONCILED,
        outcome="reconciled",
        counts={"records": honest.records + 1, "unlogged": 0, "erased_present": 0,
                "missing": 0, "unaccounted": 0},
        labels={"register_digest": honest.digest},
    )  # fmt: skip
    de.audit.record(forged)
    result = run_audit(auditor_config(fed.tmp, fed, state_dir=tmp_path / "auditor"))
    assert not result.ok
    (finding,) = [f for f in result.findings if f.party == "DE"]
    assert finding.severity == "violation" and finding.kind == "register-count-mismatch"
    assert f"counts {honest.records + 1} records" in finding.message
    assert f"the log before it accounts for {honest.records}" in finding.message
