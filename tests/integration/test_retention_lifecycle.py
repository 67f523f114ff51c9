"""Retention over a real node: recast periods counted from transmission (Eurodac recast Reg.
2024/1358 Art. 29), resettlement kept by the article its data were taken under (Art. 29(2)-
(5)), and the early erasure of Reg. 603/2013 irregular-crossing records (Art. 16(2)). Real
gRPC (mTLS), real SQLite registers, signed audit logs; the lifecycle's clock moves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, MarkKind
from fedmatch.errors import NotFound
from fedmatch.protocol.wire import category_to_pb, header_to_pb
from fedmatch.rpc.v1 import node_pb2
from fedmatch.rpc.v1 import node_pb2_grpc as npg
from node.inbox import reference_digest
from node.lifecycle import LifecycleJob
from node.retention import add_months
from tests.federation import DIM, MODEL, TODAY, Federation, enrol, federation, header

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("retention"), ("DE", "IT"), records=6) as f:
        yield f


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng()


@pytest.fixture()
def job(fed: Federation) -> Iterator[LifecycleJob]:
    """IT's erasure job, run by hand; the lifecycle's clock is restored afterwards."""
    lifecycle = fed.lifecycles["IT"]
    clock = lifecycle.clock
    try:
        yield LifecycleJob(lifecycle, interval=3600)
    finally:
        lifecycle.clock = clock


def at(day: dt.date) -> Callable[[], dt.datetime]:
    moment = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
    return lambda: moment


def receipt(fed: Federation, reference: str, since: int) -> SignedEntry:
    digest = reference_digest("IT", reference)
    (entry,) = [
        e
        for e in fed.nodes["IT"].audit.log.iter_entries(since)
        if e.kind is EventKind.RECORD_ERASED and e.event.labels["record_digest"] == digest
    ]
    return entry


def present(fed: Federation, reference: str) -> bool:
    try:
        fed.nodes["IT"].store.find(reference)
    except NotFound:
        return False
    return True


def transmitted(fed: Federation, reference: str) -> dt.date:
    store = fed.nodes["IT"].store
    return store.enrolled_at(store.find(reference)).date()


def enrol_request(
    reference: str, category: Category, day: str, basis: str = ""
) -> node_pb2.EnrollRequest:
    template = unit_vectors(np.random.default_rng(len(reference)), 1, DIM)[0]
    return node_pb2.EnrollRequest(
        header=header_to_pb(header("IT")),
        record=node_pb2.RecordMetadata(
            reference=reference,
            category=category_to_pb(category),
            event_date=day,
            event_place="Roma",
            capture_date=day,
            birth_date="1990-05-17",
            resettlement_basis=basis,
        ),
        template=node_pb2.Template(model_id=MODEL, values=template.tolist()),
    )


def operator(fed: Federation) -> npg.NodeServiceStub:
    return npg.NodeServiceStub(fed.node_channel("IT", "operator-IT"))


# --- the day a period counts from -----------------------------------------------------------


def test_a_recast_record_counts_from_transmission_not_capture(
    fed: Federation, rng: np.random.Generator, job: LifecycleJob
) -> None:
    """Eurodac recast Art. 29(6): irregular-crossing data are kept five years "from the date
    on which the biometric data were transmitted": the day the node enrolled the record, not
    the day they were taken. Kept the day before that anniversary, erased on it."""
    it, lifecycle = fed.nodes["IT"], fed.lifecycles["IT"]
    ref = f"IT-TX-{rng.integers(10**9)}"
    captured = dt.date(2026, 7, 1)
    enrol(it, capture(unit_vectors(rng, 1, DIM)[0], rng, 0.9), ref, Category.IRREGULAR_CROSSING,
          captured, "Bari")  # fmt: skip
    expires = add_months(transmitted(fed, ref), 60)
    assert expires > add_months(captured, 60), "enrolled after capture: a later anniversary"
    start = it.audit.log.size

    lifecycle.clock = at(add_months(captured, 60))  # five years after capture: still kept
    job.run_once()
    assert present(fed, ref)
    lifecycle.clock = at(expires - DAY)
    job.run_once()
    assert present(fed, ref)
    lifecycle.clock = at(expires)
    job.run_once()
    assert not present(fed, ref)
    entry = receipt(fed, ref, start)
    assert entry.event.reason == "retention_expired"
    assert entry.event.labels["retention_rule"] == "reg-2024/1358-art29:irregular_crossing:60m"


def test_a_603_2013_record_counts_from_capture(
    fed: Federation, rng: np.random.Generator, job: LifecycleJob
) -> None:
    """Reg. 603/2013 Art. 16(1): 18 months from the date the data were taken (captured
    before 2026-06-12), whenever the record was enrolled here."""
    it, lifecycle = fed.nodes["IT"], fed.lifecycles["IT"]
    ref = f"IT-OLDTX-{rng.integers(10**9)}"
    captured = dt.date(2026, 6, 11)
    enrol(it, capture(unit_vectors(rng, 1, DIM)[0], rng, 0.9), ref, Category.IRREGULAR_CROSSING,
          captured, "Bari")  # fmt: skip
    start = it.audit.log.size
    lifecycle.clock = at(dt.date(2027, 12, 10))
    job.run_once()
    assert present(fed, ref)
    lifecycle.clock = at(dt.date(2027, 12, 11))
    job.run_once()
    assert not present(fed, ref)
    rule = receipt(fed, ref, start).event.labels["retention_rule"]
    assert rule == "reg-603/2013:irregular_crossing:18m"


# --- resettlement by its basis --------------------------------------------------------------


@pytest.mark.parametrize(
    ("basis", "message"),
    [
        # Eurodac recast Art. 29(2): data taken under Art. 18(1) are not recorded.
        pytest.param("18(1)", "not recorded: Art. 29(2)", id="art-18(1)-not-recorded"),
        # Art. 29(3)-(5): the period depends on the basis, so it must be given.
        pytest.param("", "resettlement_basis is required", id="no-basis"),
        pytest.param("18(2)", "resettlement_basis must be", id="no-point"),
    ],
)
def test_resettlement_enrolment_without_a_recorded_basis_is_refused(
    fed: Federation, basis: str, message: str
) -> None:
    before = fed.nodes["IT"].store.count()
    request = enrol_request(f"IT-RS-REF-{basis or 'none'}", Category.RESETTLEMENT, "2026-07-01",
                            basis)  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        operator(fed).Enroll(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
    assert fed.nodes["IT"].store.count() == before
    last = list(fed.nodes["IT"].audit.log.iter_entries())[-1]
    assert (last.kind, last.event.labels["request"]) == (EventKind.REQUEST_REFUSED, "enroll")


def test_a_basis_on_another_category_is_refused(fed: Federation) -> None:
    request = enrol_request("IT-RS-APPL", Category.APPLICANT, "2026-07-01", "18(2)(a)")
    with pytest.raises(grpc.RpcError) as err:
        operator(fed).Enroll(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only for resettlement" in (err.value.details() or "")


def test_resettlement_is_kept_by_its_basis(
    fed: Federation, rng: np.random.Generator, job: LifecycleJob
) -> None:
    """Eurodac recast Art. 29(4): Art. 18(2)(b) and (c) data 3 years; 29(3) 18(2)(a) and
    29(5) Art. 20 data 5 years; each from transmission."""
    it, lifecycle = fed.nodes["IT"], fed.lifecycles["IT"]
    tag = rng.integers(10**9)
    refs = {basis: f"IT-RS-{basis}-{tag}" for basis in ("18(2)(a)", "18(2)(b)", "18(2)(c)", "20")}
    for basis, ref in refs.items():
        operator(fed).Enroll(enrol_request(ref, Category.RESETTLEMENT, "2026-07-01", basis))
        assert it.store.get(it.store.find(ref)).resettlement_basis == basis
    sent = {basis: transmitted(fed, ref) for basis, ref in refs.items()}
    start = it.audit.log.size

    three = add_months(min(sent.values()), 36)
    lifecycle.clock = at(three - DAY)
    job.run_once()
    assert all(present(fed, ref) for ref in refs.values())
    lifecycle.clock = at(add_months(max(sent.values()), 36))
    job.run_once()
    assert [b for b, ref in refs.items() if present(fed, ref)] == ["18(2)(a)", "20"]
    for basis in ("18(2)(b)", "18(2)(c)"):
        rule = receipt(fed, refs[basis], start).event.labels["retention_rule"]
        assert rule == f"reg-2024/1358-art29:resettlement:{basis}:36m"

    lifecycle.clock = at(add_months(min(sent.values()), 60) - DAY)
    job.run_once()
    assert present(fed, refs["18(2)(a)"]) and present(fed, refs["20"])
    lifecycle.clock = at(add_months(max(sent.values()), 60))
    job.run_once()
    assert not present(fed, refs["18(2)(a)"]) and not present(fed, refs["20"])
    rule = receipt(fed, refs["20"], start).event.labels["retention_rule"]
    assert rule == "reg-2024/1358-art29:resettlement:20:60m"


# --- early erasure of 603/2013 irregular-crossing records -----------------------------------


def test_603_2013_crossing_with_a_residence_document_is_erased_by_the_job(
    fed: Federation, rng: np.random.Generator, job: LifecycleJob
) -> None:
    """Reg. 603/2013 Art. 16(2)(a): a residence document issued ends the record's storage at
    once. A mark of that kind found on such a record (written before this rule, or restored)
    is erased by the next run, with its receipt; a recast record keeps its mark (Art. 31(4))."""
    it, lifecycle = fed.nodes["IT"], fed.lifecycles["IT"]
    old = f"IT-RD-OLD-{rng.integers(10**9)}"
    new = f"IT-RD-NEW-{rng.integers(10**9)}"
    vectors = unit_vectors(rng, 2, DIM)
    enrol(it, capture(vectors[0], rng, 0.9), old, Category.IRREGULAR_CROSSING,
          dt.date(2026, 3, 2), "Bari")  # fmt: skip
    enrol(it, capture(vectors[1], rng, 0.9), new, Category.IRREGULAR_CROSSING,
          dt.date(2026, 7, 2), "Bari")  # fmt: skip
    when = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
    for ref in (old, new):
        assert it.store.set_marked(it.store.find(ref), MarkKind.RESIDENCE_DOCUMENT, when)
    start = it.audit.log.size
    lifecycle.clock = at(TODAY)
    job.run_once()
    assert not present(fed, old) and present(fed, new)
    entry = receipt(fed, old, start)
    assert entry.event.reason == "residence_document_issued"
    assert entry.event.labels["retention_rule"] == "early:residence_document_issued"
    assert entry.event.labels["category"] == "irregular_crossing"


def reveal_to_de(fed: Federation, probe: np.ndarray) -> str:
    """DE looks the person up, its experts confirm, it resolves: IT reveals the record's
    details and remembers that DE was told (an erasure is passed on). Returns the query id."""
    requester = fed.requester("DE")
    report = requester.lookup(probe, header("DE"))
    assert report.matches, "the enrolled person must hit"
    requester.resolve(report, TODAY.isoformat(), fed.verdicts(report))
    return report.header.query_id


def erased_notice_at_de(fed: Federation, reference: str) -> str:
    """The query id of the record_erased notice DE received about IT's ``reference``."""
    digest = reference_digest("IT", reference)
    (item,) = [
        i
        for i in fed.lifecycles["DE"].box.items()
        if i.notice.reference_digest == digest and i.notice.kind.value == "record_erased"
    ]
    return item.notice.query_id


def test_603_2013_crossing_marked_residence_document_is_erased_at_once(
    fed: Federation, rng: np.random.Generator
) -> None:
    """Reg. 603/2013 Art. 16(2)(a): the data of a person apprehended crossing irregularly
    are erased "as soon as" the state of origin knows a residence document was issued. The
    operator's residence-document mark (Eurodac recast Art. 31(4)) on such a record erases
    it, with its receipt (the operator's header, the reason) and a notice to DE, which got
    its details. A recast record is marked and kept."""
    it = fed.nodes["IT"]
    person, other = unit_vectors(rng, 2, DIM)
    old = f"IT-RDX-OLD-{rng.integers(10**9)}"
    new = f"IT-RDX-NEW-{rng.integers(10**9)}"
    enrol(it, capture(person, rng, 0.9), old, Category.IRREGULAR_CROSSING,
          dt.date(2026, 3, 2), "Bari")  # fmt: skip
    enrol(it, capture(other, rng, 0.9), new, Category.IRREGULAR_CROSSING,
          dt.date(2026, 7, 2), "Bari")  # fmt: skip
    query_id = reveal_to_de(fed, capture(person, rng, 0.9))
    start = it.audit.log.size
    hdr = header_to_pb(header("IT"))

    out = operator(fed).MarkRecord(
        node_pb2.MarkRecordRequest(
            header=hdr, reference=old, marked=True, mark_kind="residence_document"
        )
    )
    assert (out.outcome, out.notices_sent, out.notices_pending) == ("erased", 1, 0)
    assert not present(fed, old)
    entry = receipt(fed, old, start)
    assert entry.event.reason == "residence_document_issued"
    assert entry.event.labels["retention_rule"] == "early:residence_document_issued"
    assert entry.event.operator  # the operator's erasure, not the job's
    assert erased_notice_at_de(fed, old) == query_id
    assert not [e for e in it.audit.log.iter_entries(start) if e.kind is EventKind.RECORD_MARKED]

    kept = operator(fed).MarkRecord(
        node_pb2.MarkRecordRequest(
            header=hdr, reference=new, marked=True, mark_kind="residence_document"
        )
    )
    assert kept.outcome == "marked" and present(fed, new)
    assert it.store.status(it.store.find(new)).mark is MarkKind.RESIDENCE_DOCUMENT


def test_603_2013_crossing_that_left_the_territory_is_erased_at_once(
    fed: Federation, rng: np.random.Generator
) -> None:
    """Reg. 603/2013 Art. 16(2)(b): the person left the territory of the member states.
    Recording the left-territory date erases a 603/2013 irregular-crossing record; the same
    date on a 603/2013 applicant's record (Art. 12) is only recorded."""
    it = fed.nodes["IT"]
    person, other = unit_vectors(rng, 2, DIM)
    crossing = f"IT-LT-X-{rng.integers(10**9)}"
    applicant = f"IT-LT-A-{rng.integers(10**9)}"
    day = dt.date(2026, 3, 2)
    enrol(it, capture(person, rng, 0.9), crossing, Category.IRREGULAR_CROSSING, day, "Bari")
    enrol(it, capture(other, rng, 0.9), applicant, Category.APPLICANT, day, "Bari")
    query_id = reveal_to_de(fed, capture(person, rng, 0.9))
    start = it.audit.log.size
    hdr = header_to_pb(header("IT"))
    left = "2026-04-15"

    out = operator(fed).SetRecordStatus(
        node_pb2.SetRecordStatusRequest(header=hdr, reference=crossing, left_territory_on=left)
    )
    assert (out.outcome, out.notices_sent, out.notices_pending) == ("erased", 1, 0)
    assert not present(fed, crossing)
    entry = receipt(fed, crossing, start)
    assert entry.event.reason == "left_territory"
    assert entry.event.labels["retention_rule"] == "early:left_territory"
    assert erased_notice_at_de(fed, crossing) == query_id

    kept = operator(fed).SetRecordStatus(
        node_pb2.SetRecordStatusRequest(header=hdr, reference=applicant, left_territory_on=left)
    )
    assert kept.outcome == "status_set" and present(fed, applicant)
    assert it.store.status(it.store.find(applicant)).left_territory_on == dt.date(2026, 4, 15)
