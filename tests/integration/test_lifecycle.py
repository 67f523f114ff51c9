"""Record lifecycle over real servers: retention erasure with a controllable clock, marks and
their effect on purposes, notices relayed through a real coordinator into the other states'
inboxes, routed rights requests, the minimum age at enrolment. Real gRPC (mTLS), real HE
search, real SQLite files and signed audit logs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.log import AuditLog
from fedmatch.audit.merkle import leaf_hash, verify_inclusion
from fedmatch.audit.note import NoteSigner, open_checkpoint
from fedmatch.audit.party import PartyAudit, node_origin
from fedmatch.audit.stats import federation_stats
from fedmatch.demo.parties import tls_table
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, MarkKind, Purpose, Sex
from fedmatch.errors import NotFound
from fedmatch.protocol.wire import category_to_pb, header_to_pb
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc, node_pb2
from fedmatch.rpc.v1 import node_pb2_grpc as npg
from node.inbox import NOTICE_DUE, Notice, NoticeKind, reference_digest
from node.lifecycle import LifecycleJob
from node.notices import CoordinatorRelay, NoticeSigner, notice_to_pb
from node.policy import SearchPolicy
from node.records import NewRecord, RecordMeta
from node.retention import add_months
from node.store import RecordStore
from tests.federation import (
    BIRTH_DATE,
    DIM,
    MODEL,
    OPERATOR,
    TODAY,
    Federation,
    Keyring,
    enrol,
    federation,
    header,
    operator_toml,
    pki,
    security,
)

APPLICATION = TODAY.isoformat()
PG = MarkKind.PROTECTION_GRANTED.value


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("lifecycle"), ("DE", "IT", "FR"), records=40) as f:
        yield f


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng()


def at(day: dt.date, hour: int = 12) -> Callable[[], dt.datetime]:
    moment = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)
    return lambda: moment


def entries(audit: PartyAudit, kind: EventKind, since: int = 0) -> list[SignedEntry]:
    return [e for e in audit.log.iter_entries(since) if e.kind is kind]


def hits_at(fed: Federation, state: str, probe: np.ndarray, purpose: Purpose) -> int:
    report = fed.requester("DE").lookup(probe, header("DE", purpose))
    return next(n.matches for n in report.nodes if n.member_state == state)


def operator_stub(fed: Federation, state: str, operator_of: str) -> npg.NodeServiceStub:
    return npg.NodeServiceStub(fed.node_channel(state, f"operator-{operator_of}"))


def reveal_to_de(fed: Federation, probe: np.ndarray) -> str:
    """DE looks the person up and its experts confirm the hits: the owning nodes reveal the
    details (and remember that DE was told). Returns the query id."""
    requester = fed.requester("DE")
    report = requester.lookup(probe, header("DE"))
    assert report.matches, "the enrolled person must hit"
    requester.resolve(report, APPLICATION, fed.verdicts(report))
    return report.header.query_id


def test_records_expire_at_the_boundary_and_are_gone_from_every_place(
    fed: Federation, rng: np.random.Generator
) -> None:
    it, lifecycle = fed.nodes["IT"], fed.lifecycles["IT"]
    person, other = unit_vectors(rng, 2, DIM)
    ref = f"IT-EXP-{rng.integers(10**9)}"
    kept = f"IT-KEEP-{rng.integers(10**9)}"
    crossing = dt.date(2026, 7, 1)  # the recast: irregular crossing kept 5 years (Art. 29(6))
    enrol(it, capture(person, rng, 0.9), ref, Category.IRREGULAR_CROSSING, crossing, "Bari")
    enrol(it, capture(other, rng, 0.9), kept, Category.APPLICANT, crossing, "Bari")
    record_id = it.store.find(ref)
    query_id = reveal_to_de(fed, capture(person, rng, 0.9))
    # A second lookup leaves a pending handle that names the record, and a kept answer.
    pending = fed.requester("DE").lookup(capture(person, rng, 0.9), header("DE"))
    handle = next(h for s, h in pending.matches if s == "IT")
    qid = pending.header.query_id
    assert it.handles.resolve(qid, "DE", handle) == record_id
    assert qid in it._answers
    de_log_start = fed.nodes["DE"].audit.log.size
    coord_log_start = fed.coordinator.audit.log.size
    it_log_start = it.audit.log.size

    # Counted from transmission, the day the node enrolled the record (Art. 29(6)).
    ends = add_months(it.store.enrolled_at(record_id).date(), 60)
    job = LifecycleJob(lifecycle, interval=3600)  # run by hand: the clock decides
    lifecycle.clock = at(ends - dt.timedelta(days=1))  # the day before: kept
    job.run_once()
    assert it.store.find(ref) == record_id

    lifecycle.clock = at(ends)  # the boundary: erased
    erased, still_pending = job.run_once()
    assert erased >= 1 and still_pending == 0
    with pytest.raises(NotFound):
        it.store.find(ref)
    assert it.store.find(kept) > 0  # an applicant's 10 years are not over
    assert record_id not in it._ids.tolist()
    assert (it._categories[it._ids < 0] == 255).all()  # erased rows have no category
    assert it.record_count() == it.store.count()  # blank positions are not records
    with pytest.raises(NotFound, match="no longer exists"):
        it.handles.resolve(qid, "DE", handle)
    assert qid not in it._answers
    for f in (it.store.path, it.store.path.with_name(it.store.path.name + "-wal")):
        if f.exists():
            assert ref.encode() not in f.read_bytes()

    # Verifiable: the person's probe no longer hits at IT (real encrypted search).
    assert hits_at(fed, "IT", capture(person, rng, 0.9), Purpose.ASYLUM_DUBLIN) == 0
    assert hits_at(fed, "IT", capture(other, rng, 0.9), Purpose.ASYLUM_DUBLIN) == 1

    # The signed receipt: no personal data, and included in a checkpoint of IT's log.
    digest = reference_digest("IT", ref)
    (receipt,) = [
        e
        for e in entries(it.audit, EventKind.RECORD_ERASED, it_log_start)
        if e.event.labels["record_digest"] == digest
    ]
    assert receipt.event.reason == "retention_expired"
    assert receipt.event.labels["category"] == "irregular_crossing"
    assert receipt.event.labels["retention_rule"] == "reg-2024/1358-art29:irregular_crossing:60m"
    assert ref.encode() not in receipt.raw
    verifier = NoteSigner.load(Keyring(fed.tmp / "keys").path(node_origin("IT"))).verifier()
    receipt.verify(verifier)
    checkpoint, _ = open_checkpoint(it.audit.log.checkpoint(), verifier, node_origin("IT"))
    proof = it.audit.log.inclusion_proof(receipt.seq, checkpoint.size)
    verify_inclusion(leaf_hash(receipt.raw), receipt.seq, checkpoint.size, proof, checkpoint.root)

    # DE, which got the details, is told through the coordinator; due in 72 hours.
    inbox = fed.lifecycles["DE"].box.items()
    (item,) = [i for i in inbox if i.notice.reference_digest == digest]
    assert (item.notice.kind.value, item.notice.from_state) == ("record_erased", "IT")
    assert item.notice.query_id == query_id and item.notice.reference == ""
    assert item.due - item.received == NOTICE_DUE == dt.timedelta(hours=72)
    nid = item.notice.notice_id
    sent = entries(it.audit, EventKind.NOTICE_SENT, it_log_start)
    assert any(e.event.labels["notice_id"] == nid and e.event.outcome == "delivered" for e in sent)
    relayed = entries(fed.coordinator.audit, EventKind.NOTICE_RELAYED, coord_log_start)
    assert any(e.event.labels["notice_id"] == nid for e in relayed)
    received = entries(fed.nodes["DE"].audit, EventKind.NOTICE_RECEIVED, de_log_start)
    assert any(e.event.labels["notice_id"] == nid for e in received)


def test_marking_hides_the_record_from_the_purposes_the_policy_says(
    fed: Federation, rng: np.random.Generator
) -> None:
    it = fed.nodes["IT"]
    it.policy = SearchPolicy(marked_purposes=(Purpose.ASYLUM_DUBLIN.value,))
    person = unit_vectors(rng, 1, DIM)[0]
    ref = f"IT-MARK-{rng.integers(10**9)}"
    enrol(it, capture(person, rng, 0.9), ref, Category.APPLICANT, dt.date(2026, 8, 3), "Roma")
    query_id = reveal_to_de(fed, capture(person, rng, 0.9))
    assert hits_at(fed, "IT", capture(person, rng, 0.9), Purpose.BORDER_CONTROL) == 1
    it_start, de_start = it.audit.log.size, fed.nodes["DE"].audit.log.size
    coord_start = fed.coordinator.audit.log.size
    stub = operator_stub(fed, "IT", "IT")
    hdr = header_to_pb(header("IT"))

    marked = stub.MarkRecord(
        node_pb2.MarkRecordRequest(header=hdr, reference=ref, marked=True, mark_kind=PG)
    )
    assert (marked.outcome, marked.notices_sent, marked.notices_pending) == ("marked", 1, 0)
    again = stub.MarkRecord(
        node_pb2.MarkRecordRequest(header=hdr, reference=ref, marked=True, mark_kind=PG)
    )
    assert again.outcome == "unchanged"
    assert hits_at(fed, "IT", capture(person, rng, 0.9), Purpose.BORDER_CONTROL) == 0
    assert hits_at(fed, "IT", capture(person, rng, 0.9), Purpose.ASYLUM_DUBLIN) == 1

    unmarked = stub.MarkRecord(node_pb2.MarkRecordRequest(header=hdr, reference=ref, marked=False))
    assert unmarked.outcome == "unmarked"
    assert hits_at(fed, "IT", capture(person, rng, 0.9), Purpose.BORDER_CONTROL) == 1

    digest = reference_digest("IT", ref)
    (mark,) = [
        e
        for e in entries(it.audit, EventKind.RECORD_MARKED, it_start)
        if e.event.labels["record_digest"] == digest
    ]
    assert mark.event.labels["category"] == "applicant" and mark.event.operator
    assert entries(it.audit, EventKind.RECORD_UNMARKED, it_start)
    kinds = {
        i.notice.kind.value: i
        for i in fed.lifecycles["DE"].box.items()
        if i.notice.reference_digest == digest
    }
    assert set(kinds) == {"record_marked", "record_unmarked"}
    assert kinds["record_marked"].notice.query_id == query_id
    assert kinds["record_marked"].due == kinds["record_marked"].received + NOTICE_DUE
    ids = {i.notice.notice_id for i in kinds.values()}
    relayed = entries(fed.coordinator.audit, EventKind.NOTICE_RELAYED, coord_start)
    assert ids <= {e.event.labels["notice_id"] for e in relayed}
    received = entries(fed.nodes["DE"].audit, EventKind.NOTICE_RECEIVED, de_start)
    assert ids <= {e.event.labels["notice_id"] for e in received}
    it.policy = SearchPolicy()


def test_a_notice_the_coordinator_cannot_take_waits_and_is_retried(
    fed: Federation, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    fr, lifecycle = fed.nodes["FR"], fed.lifecycles["FR"]
    person = unit_vectors(rng, 1, DIM)[0]
    ref = f"FR-WAIT-{rng.integers(10**9)}"
    enrol(fr, capture(person, rng, 0.9), ref, Category.APPLICANT, dt.date(2026, 9, 9), "Lyon")
    reveal_to_de(fed, capture(person, rng, 0.9))
    start = fr.audit.log.size
    relay = lifecycle.relay
    # Nothing listens on port 9: the relay fails for real, the notice stays in the outbox.
    fr_security = security(fed.tmp, "node-FR")
    sign = NoticeSigner(fr.audit.signer, fr_security.chain_pem())
    down = CoordinatorRelay("127.0.0.1:9", fr_security.channel_credentials(), sign)
    lifecycle.relay = down
    clock = lifecycle.clock
    try:
        out = lifecycle.mark(header("FR"), ref, True, PG)
        # Still undelivered 73 hours later: the job says so to the operator (a count).
        lifecycle.clock = lambda: clock() + dt.timedelta(hours=73)
        with caplog.at_level(logging.WARNING, logger="fedmatch.node.lifecycle"):
            assert LifecycleJob(lifecycle, interval=3600).run_once()[1] == 1
        assert "outbox: 1 notices not delivered within 72 hours" in caplog.text
    finally:
        lifecycle.relay, lifecycle.clock = relay, clock
        down.close()
    assert (out.outcome, out.notices_sent, out.notices_pending) == ("marked", 0, 1)
    (pending,) = lifecycle.box.pending()
    (first,) = entries(fr.audit, EventKind.NOTICE_SENT, start)
    assert first.event.outcome == "pending" and first.event.reason == "Unavailable"

    _, still_pending = LifecycleJob(lifecycle, interval=3600).run_once()
    assert still_pending == 0 and lifecycle.box.pending() == []
    delivered = [i for i in fed.lifecycles["DE"].box.items() if i.notice == pending.notice]
    assert len(delivered) == 1 and delivered[0].notice.kind.value == "record_marked"
    outcomes = [e.event.outcome for e in entries(fr.audit, EventKind.NOTICE_SENT, start)]
    assert outcomes == ["pending", "delivered"]


def test_early_erasure_on_request_and_its_receipt(
    fed: Federation, rng: np.random.Generator
) -> None:
    it = fed.nodes["IT"]
    person = unit_vectors(rng, 1, DIM)[0]
    ref = f"IT-CIT-{rng.integers(10**9)}"
    enrol(it, capture(person, rng, 0.9), ref, Category.APPLICANT, dt.date(2026, 8, 3), "Roma")
    start = it.audit.log.size
    stub = operator_stub(fed, "IT", "IT")
    hdr = header_to_pb(header("IT"))
    with pytest.raises(grpc.RpcError) as err:
        stub.EraseRecord(node_pb2.EraseRecordRequest(header=hdr, reference=ref, reason="bored"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    done = stub.EraseRecord(
        node_pb2.EraseRecordRequest(header=hdr, reference=ref, reason="citizenship_acquired")
    )
    assert done.outcome == "erased"
    assert hits_at(fed, "IT", capture(person, rng, 0.9), Purpose.ASYLUM_DUBLIN) == 0
    (receipt,) = entries(it.audit, EventKind.RECORD_ERASED, start)
    assert receipt.event.reason == "citizenship_acquired"
    assert receipt.event.labels["retention_rule"] == "early:citizenship_acquired"
    with pytest.raises(grpc.RpcError) as err:
        stub.EraseRecord(
            node_pb2.EraseRecordRequest(header=hdr, reference=ref, reason="erasure_request")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_routed_rights_requests_reach_the_holding_state_and_are_logged(
    fed: Federation, rng: np.random.Generator
) -> None:
    ref = f"IT-SUBJ-{rng.integers(10**9)}"
    fr_start, it_start = fed.nodes["FR"].audit.log.size, fed.nodes["IT"].audit.log.size
    coord_start = fed.coordinator.audit.log.size
    fr = operator_stub(fed, "FR", "FR")
    sent = {}
    for kind in ("correction_request", "erasure_request"):
        answer = fr.RouteRightsRequest(
            node_pb2.RouteRightsRequestRequest(
                header=header_to_pb(header("FR")), kind=kind, to_state="IT", reference=ref
            )
        )
        assert answer.outcome == "delivered"
        sent[kind] = answer.notice_id

    it_stub = operator_stub(fed, "IT", "IT")
    listed = it_stub.ListInbox(
        node_pb2.ListInboxRequest(header=header_to_pb(header("IT")), open_only=True)
    )
    mine = {i.notice.kind: i for i in listed.items if i.notice.reference == ref}
    assert set(mine) == set(sent)
    for kind, item in mine.items():
        assert item.notice.notice_id == sent[kind] and item.notice.from_state == "FR"
        received = dt.datetime.fromisoformat(item.received)
        assert dt.datetime.fromisoformat(item.due) - received == dt.timedelta(hours=72)
        assert item.status == "open" and not item.overdue
    for party, kind, start in (
        (fed.nodes["FR"].audit, EventKind.NOTICE_SENT, fr_start),
        (fed.coordinator.audit, EventKind.NOTICE_RELAYED, coord_start),
        (fed.nodes["IT"].audit, EventKind.NOTICE_RECEIVED, it_start),
    ):
        logged = {e.event.labels["notice_id"] for e in entries(party, kind, start)}
        assert set(sent.values()) <= logged, kind
        assert all(ref.encode() not in e.raw for e in entries(party, kind, start))

    # Past the 72 hours an open item is overdue; the authority acknowledges it (logged).
    lifecycle = fed.lifecycles["IT"]
    real_clock = lifecycle.clock
    lifecycle.clock = lambda: real_clock() + dt.timedelta(hours=73)
    try:
        late = it_stub.ListInbox(
            node_pb2.ListInboxRequest(header=header_to_pb(header("IT")), open_only=True)
        )
        assert late.overdue >= 2
        assert all(i.overdue for i in late.items if i.notice.reference == ref)
        item_id = mine["erasure_request"].item_id
        acked = it_stub.AcknowledgeInbox(
            node_pb2.AcknowledgeInboxRequest(header=header_to_pb(header("IT")), item_id=item_id)
        )
        assert acked.status == "acknowledged" and not acked.overdue
        # An id beyond SQLite's integers is simply not there (found by the RPC fuzzer).
        for absent in (2**63, 2**64 - 1):
            with pytest.raises(grpc.RpcError) as err:
                it_stub.AcknowledgeInbox(
                    node_pb2.AcknowledgeInboxRequest(
                        header=header_to_pb(header("IT")), item_id=absent
                    )
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        lifecycle.clock = real_clock
    (ack,) = entries(fed.nodes["IT"].audit, EventKind.NOTICE_ACKNOWLEDGED, it_start)
    assert (
        ack.event.outcome == "overdue" and ack.event.labels["notice_id"] == sent["erasure_request"]
    )


def test_only_the_right_parties_may_call_the_lifecycle_rpcs(fed: Federation) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    hdr = header_to_pb(header("DE"))
    calls: list[Callable[[], object]] = [
        # Another state's operator at IT's node.
        lambda: operator_stub(fed, "IT", "DE").MarkRecord(
            node_pb2.MarkRecordRequest(
                header=hdr, reference="IT-SYN-00000001", marked=True, mark_kind=PG
            )
        ),
        lambda: operator_stub(fed, "IT", "DE").ListInbox(node_pb2.ListInboxRequest(header=hdr)),
        # An operator cannot put a notice into an inbox; only the coordinator relays.
        lambda: operator_stub(fed, "IT", "IT").DeliverNotice(
            node_pb2.DeliverNoticeRequest(notice=common_pb2.Notice())
        ),
        # An operator cannot use the relay; a node only in its own name.
        lambda: coordinator_pb2_grpc.CoordinatorServiceStub(
            fed.coordinator_channel("operator-DE")
        ).RelayNotice(coordinator_pb2.RelayNoticeRequest(notice=common_pb2.Notice())),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == denied
    from fedmatch.grpcutil.server import make_channel
    from fedmatch.pki.names import dns_name

    channel = make_channel(
        fed.coordinator_server.address, 1 << 20, 1 << 20,
        security(fed.tmp, "node-IT").channel_credentials(), dns_name("coordinator", "eu"),
    )  # fmt: skip
    try:
        forged = common_pb2.Notice(
            notice_id="c" * 32, kind="erasure_request", from_state="FR", to_state="DE",
            reference="DE-1",
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            coordinator_pb2_grpc.CoordinatorServiceStub(channel).RelayNotice(
                coordinator_pb2.RelayNoticeRequest(notice=forged)
            )
        assert err.value.code() == denied
    finally:
        channel.close()


@pytest.mark.parametrize(
    ("birth_date", "estimated", "message"),
    [
        ("2021-03-01", False, "under 6 at capture"),
        ("2019-10-01", True, "estimated age could be under 6"),
        ("", False, "birth_date is required"),
    ],
)
def test_enrolment_of_a_child_who_may_be_under_six_is_refused(
    fed: Federation, birth_date: str, estimated: bool, message: str
) -> None:
    before = fed.nodes["IT"].store.count()
    template = unit_vectors(np.random.default_rng(5), 1, DIM)[0]
    request = node_pb2.EnrollRequest(
        header=header_to_pb(header("IT")),
        record=node_pb2.RecordMetadata(
            reference=f"IT-CHILD-{birth_date or 'none'}-{estimated}",
            category=category_to_pb(Category.APPLICANT),
            event_date="2026-07-01",
            event_place="Bari",
            capture_date="2026-07-01",
            birth_date=birth_date,
            birth_date_estimated=estimated,
        ),
        template=node_pb2.Template(model_id="sface-2021dec-int8bq", values=template.tolist()),
    )
    with pytest.raises(grpc.RpcError) as err:
        operator_stub(fed, "IT", "IT").Enroll(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
    assert fed.nodes["IT"].store.count() == before
    # Logged as a refused enrolment (status and class, never the birth date), and counted
    # in the published statistics.
    entries = list(fed.nodes["IT"].audit.log.iter_entries())
    last = entries[-1].event
    assert (entries[-1].kind, last.labels["request"]) == (EventKind.REQUEST_REFUSED, "enroll")
    assert last.reason == "invalid_argument:InvalidInput"
    assert not birth_date or birth_date not in str(last)
    stats = federation_stats([], {"IT": entries}, threshold=1)
    assert stats["refused_requests_nodes"]["enroll"] >= 1


def test_an_adult_with_a_birth_date_is_enrolled(fed: Federation) -> None:
    template = unit_vectors(np.random.default_rng(6), 1, DIM)[0]
    request = node_pb2.EnrollRequest(
        header=header_to_pb(header("IT")),
        record=node_pb2.RecordMetadata(
            reference=f"IT-ADULT-{np.random.default_rng().integers(10**9)}",
            category=category_to_pb(Category.APPLICANT),
            sex=common_pb2.SEX_MALE,
            event_date="2026-07-01",
            event_place="Bari",
            capture_date="2026-07-01",
            birth_date="2019-06-30",
            birth_date_estimated=True,
        ),
        template=node_pb2.Template(model_id="sface-2021dec-int8bq", values=template.tolist()),
    )
    size = operator_stub(fed, "IT", "IT").Enroll(request).register_size
    assert size == fed.nodes["IT"].record_count()
    meta = fed.nodes["IT"].store.get(fed.nodes["IT"].store.find(request.record.reference))
    assert meta.birth_date == dt.date(2019, 6, 30) and meta.birth_date_estimated
    assert meta.sex is Sex.MALE


def _fedmatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmatch", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_node_serve_runs_the_erasure_job_and_the_operator_commands(tmp_path: Path) -> None:
    """A real `fedmatch node serve` process erases an expired record with its background
    job (at start, then every second), and `fedmatch node mark|inbox` work against it."""
    parties = pki(tmp_path, "IT")
    node = parties["node-IT"]
    db = tmp_path / "IT.sqlite"
    store = RecordStore(db, "IT", DIM, MODEL)
    try:
        old = dt.date(2023, 1, 10)  # 603/2013: irregular crossing kept 18 months, long gone
        new = dt.date(2026, 7, 1)
        for ref, category, day, seed in (
            ("IT-OLD-1", Category.IRREGULAR_CROSSING, old, 1),
            ("IT-NEW-1", Category.APPLICANT, new, 2),
        ):
            meta = RecordMeta(ref, category, day, "Bari", day, Sex.FEMALE, "op", BIRTH_DATE)
            template = unit_vectors(np.random.default_rng(seed), 1, DIM)[0]
            store.add(NewRecord(meta, template, MODEL))
    finally:
        store.close()
    config = tmp_path / "node-it.toml"
    config.write_text(
        f'[node]\nmember_state = "IT"\ndatabase = "IT.sqlite"\ndimension = {DIM}\n'
        # A coordinator address where nothing listens: notices are signed, tried, kept.
        'coordinator = "127.0.0.1:9"\n'
        f'search_workers = 1\n[audit]\ndirectory = "audit-it"\nsigning_key = "{node.signing_key}"\n'
        f'coordinator_key = "{parties["coordinator"].vkey}"\n'
        "[retention]\njob_interval_seconds = 1\n" + tls_table(node.tls, tmp_path)
    )
    # The workstation's [tls] and officer-1's [officer]: the officer's key signs each action.
    operator = operator_toml(tmp_path, "IT")
    port_file = tmp_path / "node.port"
    log = (tmp_path / "node.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedmatch", "node", "serve", "--config", str(config),
         "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
        stderr=log, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "node did not start"
            time.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        while True:
            with sqlite3.connect(db) as check:
                refs = {r[0] for r in check.execute("SELECT reference FROM records")}
            if "IT-OLD-1" not in refs:
                break
            assert time.monotonic() < deadline, "the erasure job did not run"
            time.sleep(0.2)
        assert refs == {"IT-NEW-1"}
        who = ["--node", address, "--config", str(operator), "--state", "IT"]
        # Another officer's id than the certificate's is refused before anything is sent.
        other = _fedmatch("node", "mark", *who, "--operator", "officer-3", "--reference",
                          "IT-NEW-1", "--kind", PG)  # fmt: skip
        assert other.returncode == 2 and "'officer-1'" in other.stderr, other.stderr
        marked = _fedmatch("node", "mark", *who, "--reference", "IT-NEW-1", "--kind", PG)
        assert marked.returncode == 0, marked.stderr
        assert json.loads(marked.stdout) == {
            "outcome": "marked", "notices_sent": 0, "notices_pending": 0,
        }  # fmt: skip
        inbox = _fedmatch("node", "inbox", *who, "--open")
        assert inbox.returncode == 0, inbox.stderr
        assert json.loads(inbox.stdout) == {"items": [], "overdue": 0}
        missing = _fedmatch("node", "erase", *who, "--reference", "IT-NONE", "--reason",
                            "citizenship_acquired")  # fmt: skip
        assert missing.returncode == 3 and "NOT_FOUND" in missing.stderr
        # The coordinator is unreachable: a routed request waits in the outbox.
        routed = _fedmatch("node", "route", *who, "--kind", "erasure_request", "--to", "DE",
                           "--reference", "DE-2026-77")  # fmt: skip
        assert routed.returncode == 0, routed.stderr
        assert json.loads(routed.stdout)["outcome"] == "pending"
        unknown = _fedmatch("node", "ack", *who, "--item", "99")
        assert unknown.returncode == 3 and "NOT_FOUND" in unknown.stderr
        unmarked = _fedmatch("node", "unmark", *who, "--reference", "IT-NEW-1")
        assert json.loads(unmarked.stdout)["outcome"] == "unmarked", unmarked.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    audit_log = AuditLog(tmp_path / "audit-it" / "log", NoteSigner.load(node.signing_key),
                         node_origin("IT"))  # fmt: skip
    try:
        entries = list(audit_log.iter_entries())
    finally:
        audit_log.close()
    kinds = [(e.kind, e.event.reason, e.event.labels.get("category")) for e in entries]
    # Who marked: the officer whose personal certificate signed, as the log names them.
    assert {e.event.operator for e in entries if e.kind is EventKind.RECORD_MARKED} == {OPERATOR}
    assert (EventKind.RECORD_ERASED, "retention_expired", "irregular_crossing") in kinds
    assert (EventKind.RECORD_MARKED, "", "applicant") in kinds
    assert (EventKind.RECORD_UNMARKED, "", "applicant") in kinds
    assert any(k is EventKind.NOTICE_SENT and reason == "Unavailable" for k, reason, _ in kinds)


def test_a_node_accepts_only_notices_its_sending_node_signed(fed: Federation) -> None:
    """The coordinator carries notices but cannot write one: IT checks the sending node's
    signature and certificate on every delivery (here sent with the coordinator's own
    credentials, as the relay sends them)."""
    deliver = npg.NodeServiceStub(fed.node_channel("IT")).DeliverNotice
    sign_fr = NoticeSigner(fed.nodes["FR"].audit.signer, security(fed.tmp, "node-FR").chain_pem())

    def notice(from_state: str = "FR") -> Notice:
        return Notice(
            Notice.new_id(), NoticeKind.ERASURE_REQUEST, from_state, "IT",
            reference="IT-SYN-00000003", case_reference=f"{from_state}-CASE-9",
        )  # fmt: skip

    good = sign_fr(notice())
    answer = deliver(node_pb2.DeliverNoticeRequest(notice=good))
    assert answer.item_id > 0
    unsigned = notice_to_pb(notice())
    in_another_name = sign_fr(notice("DE"))  # FR's node signing a notice "from DE"
    altered = sign_fr(notice())
    altered.reference = "IT-SYN-00000004"
    replayed_elsewhere = sign_fr(notice())
    replayed_elsewhere.signer_chain = security(fed.tmp, "operator-FR").chain_pem()
    for bad in (unsigned, in_another_name, altered, replayed_elsewhere):
        with pytest.raises(grpc.RpcError) as err:
            deliver(node_pb2.DeliverNoticeRequest(notice=bad))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ids = {i.notice.notice_id for i in fed.lifecycles["IT"].box.items()}
    assert good.notice_id in ids
    assert not ids & {m.notice_id for m in (unsigned, in_another_name, altered)}
