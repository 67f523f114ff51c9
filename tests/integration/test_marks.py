"""Marks of both kinds and the record's Dublin status over real servers (issue 17, items 2, 8
and 9): each kind checked against the category (Eurodac recast Art. 31(1), 31(4)), the
status an operator records (Art. 16(1), 28(4)), the hit details the requester receives
through the real lookup -> packets -> verdicts -> resolve flow, and the mark's notices in
both directions (Art. 31(1)). Real gRPC (mTLS), real HE search, real SQLite files and
signed audit logs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from fedmatch.audit.entry import EventKind
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, MarkKind
from fedmatch.protocol.wire import header_to_pb
from fedmatch.rpc.v1 import node_pb2
from fedmatch.rpc.v1 import node_pb2_grpc as npg
from node.inbox import NoticeKind, reference_digest
from tests.federation import DIM, TODAY, Federation, enrol, federation, header

APPLICATION = TODAY.isoformat()
PG, RD = MarkKind.PROTECTION_GRANTED.value, MarkKind.RESIDENCE_DOCUMENT.value
EVENT = dt.date(2026, 8, 3)
HIT_STATUS = (
    "mark", "marked_on", "responsible_state", "responsible_basis", "transferred_on",
    "removed_on", "left_territory_on", "relocated_to", "relocated_on",
)  # fmt: skip


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("marks"), ("DE", "IT", "FR"), records=30) as f:
        yield f


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng()


def stub(fed: Federation, state: str) -> npg.NodeServiceStub:
    return npg.NodeServiceStub(fed.node_channel(state, f"operator-{state}"))


def mark(fed: Federation, state: str, reference: str, kind: str, marked: bool = True) -> str:
    request = node_pb2.MarkRecordRequest(
        header=header_to_pb(header(state)), reference=reference, marked=marked, mark_kind=kind
    )
    return str(stub(fed, state).MarkRecord(request).outcome)


def resolved_hits(
    fed: Federation, state: str, probe: np.ndarray
) -> tuple[str, list[dict[str, str]]]:
    """``state`` looks the person up, its experts confirm, it resolves: (query id, the hit
    details it received)."""
    requester = fed.requester(state)
    report = requester.lookup(probe, header(state))
    assert report.matches, "the enrolled person must hit"
    resolved = requester.resolve(report, APPLICATION, fed.verdicts(report))
    return report.header.query_id, list(resolved.hits)


def test_a_mark_needs_its_kind_and_the_kind_must_fit_the_category(
    fed: Federation, rng: np.random.Generator
) -> None:
    """Art. 31(1): protection granted on applicant data; 31(4): residence document on
    irregular-crossing, illegal-stay and SAR data. A mismatch is refused, nothing written,
    and the refusal logged."""
    it = fed.nodes["IT"]
    applicant, crossing = (f"IT-K{i}-{rng.integers(10**9)}" for i in range(2))
    person, other = unit_vectors(rng, 2, DIM)
    enrol(it, person, applicant, Category.APPLICANT, EVENT, "Roma")
    enrol(it, other, crossing, Category.IRREGULAR_CROSSING, EVENT, "Bari")
    start = it.audit.log.size

    for reference, kind, message in (
        (applicant, "", "a mark needs its kind"),
        (applicant, "protection", "mark_kind must be"),
        (applicant, RD, "applicant records cannot carry a residence_document mark"),
        (crossing, PG, "irregular_crossing records cannot carry a protection_granted mark"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            mark(fed, "IT", reference, kind)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (err.value.details() or "")
    assert "protection_granted" in (err.value.details() or "")
    for reference in (applicant, crossing):
        assert it.store.status(it.store.find(reference)).mark is MarkKind.NONE
    refused = [e for e in it.audit.log.iter_entries(start) if e.kind is EventKind.REQUEST_REFUSED]
    assert len(refused) == 4
    assert not [e for e in it.audit.log.iter_entries(start) if e.kind is EventKind.RECORD_MARKED]

    assert mark(fed, "IT", applicant, PG) == "marked"
    assert mark(fed, "IT", crossing, RD) == "marked"
    assert mark(fed, "IT", crossing, RD) == "unchanged"
    with pytest.raises(grpc.RpcError) as err:
        mark(fed, "IT", crossing, PG, marked=False)  # it carries the other kind
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    kinds = {
        e.event.labels["record_digest"]: e.event.labels["mark_kind"]
        for e in it.audit.log.iter_entries(start)
        if e.kind is EventKind.RECORD_MARKED
    }
    assert kinds == {reference_digest("IT", applicant): PG, reference_digest("IT", crossing): RD}
    assert it.store.marked_flags()[-2:].tolist() == [True, True]
    assert mark(fed, "IT", crossing, "", marked=False) == "unmarked"


def test_record_status_is_checked_and_logged_without_its_values(
    fed: Federation, rng: np.random.Generator
) -> None:
    it = fed.nodes["IT"]
    ref = f"IT-ST-{rng.integers(10**9)}"
    enrol(it, unit_vectors(rng, 1, DIM)[0], ref, Category.APPLICANT, EVENT, "Roma")
    hdr = header_to_pb(header("IT"))
    bad: list[tuple[dict[str, Any], str]] = [
        (dict(transferred_on="2999-01-01"), "transferred_on is in the future"),
        (dict(removed_on="2026-08-02"), "removed_on is before the record's event date"),
        (dict(responsible_state="XX"), "responsible_state"),
        (dict(responsible_basis="AMMR Art. 33(1)"), "responsible_basis goes with"),
        (dict(relocated_to="FR"), "relocated_to and relocated_on go together"),
        (dict(left_territory_on="yesterday"), "left_territory_on"),
        (dict(clear=["everything"]), "clear names one of"),
        (dict(), "nothing to set or clear"),
    ]
    for fields, message in bad:
        request = node_pb2.SetRecordStatusRequest(header=hdr, reference=ref, **fields)
        with pytest.raises(grpc.RpcError) as err:
            stub(fed, "IT").SetRecordStatus(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert message in (err.value.details() or ""), (fields, err.value.details())
    start = it.audit.log.size
    out = stub(fed, "IT").SetRecordStatus(
        node_pb2.SetRecordStatusRequest(
            header=hdr,
            reference=ref,
            responsible_state="DE",
            responsible_basis="AMMR Art. 36",
            transferred_on="2026-10-01",
        )
    )
    assert out.outcome == "status_set"
    (entry,) = [
        e for e in it.audit.log.iter_entries(start) if e.kind is EventKind.RECORD_STATUS_SET
    ]
    assert entry.event.labels["set"] == "responsible,transferred_on"
    assert b"2026-10-01" not in entry.raw and b"AMMR" not in entry.raw
    cleared = stub(fed, "IT").SetRecordStatus(
        node_pb2.SetRecordStatusRequest(header=hdr, reference=ref, clear=["transferred_on"])
    )
    assert cleared.outcome == "status_set"
    status = it.store.status(it.store.find(ref))
    assert (status.responsible_state, status.transferred_on) == ("DE", None)


def test_hit_details_carry_the_mark_and_the_dublin_status(
    fed: Federation, rng: np.random.Generator
) -> None:
    """What the requesting state receives for each verified hit: the mark and its kind and
    day, the state indicated as responsible and its basis (AMMR take back goes there, Art.
    36(1)(b)), the day transmitted, transfer / removal / left-territory, relocation."""
    it = fed.nodes["IT"]
    applicant, crossing, plain = unit_vectors(rng, 3, DIM)
    refs = [f"IT-HD{i}-{rng.integers(10**9)}" for i in range(3)]
    enrol(it, applicant, refs[0], Category.APPLICANT, EVENT, "Roma")
    enrol(it, crossing, refs[1], Category.IRREGULAR_CROSSING, EVENT, "Bari")
    enrol(it, plain, refs[2], Category.ILLEGAL_STAY, EVENT, "Milano")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert mark(fed, "IT", refs[0], PG) == "marked"
    assert mark(fed, "IT", refs[1], RD) == "marked"
    hdr = header_to_pb(header("IT"))
    stub(fed, "IT").SetRecordStatus(
        node_pb2.SetRecordStatusRequest(
            header=hdr,
            reference=refs[1],
            responsible_state="IT",
            responsible_basis="AMMR Art. 33(1)",
            transferred_on="2026-09-01",
            removed_on="2026-09-02",
            left_territory_on="2026-09-03",
            relocated_to="FR",
            relocated_on="2026-09-04",
        )
    )

    found = {}
    for person, ref in zip((applicant, crossing, plain), refs, strict=True):
        _, hits = resolved_hits(fed, "DE", capture(person, rng, 0.9))
        found[ref] = next(h for h in hits if h["reference"] == ref)
    assert {k: found[refs[0]][k] for k in HIT_STATUS} == {
        "mark": PG, "marked_on": today, "responsible_state": "", "responsible_basis": "",
        "transferred_on": "", "removed_on": "", "left_territory_on": "", "relocated_to": "",
        "relocated_on": "",
    }  # fmt: skip
    assert {k: found[refs[1]][k] for k in HIT_STATUS} == {
        "mark": RD, "marked_on": today, "responsible_state": "IT",
        "responsible_basis": "AMMR Art. 33(1)", "transferred_on": "2026-09-01",
        "removed_on": "2026-09-02", "left_territory_on": "2026-09-03", "relocated_to": "FR",
        "relocated_on": "2026-09-04",
    }  # fmt: skip
    # A record with no mark and no status says so.
    assert {k: found[refs[2]][k] for k in HIT_STATUS} == dict.fromkeys(HIT_STATUS, "")
    for ref in refs:  # transmitted: the day the record was enrolled
        assert found[ref]["transmitted_on"] == today


def test_a_mark_is_told_in_both_directions(fed: Federation, rng: np.random.Generator) -> None:
    """Art. 31(1): every state whose data produced a hit with the marked record is told.
    IT marks its record: DE, which received its details, gets a notice with the kind. FR
    searches with its own record's capture, hits IT's record, and tells its node so
    (LinkOwnHit); when FR marks its record, IT gets a notice naming IT's record by digest."""
    it, fr = fed.nodes["IT"], fed.nodes["FR"]
    person = unit_vectors(rng, 1, DIM)[0]
    it_ref, fr_ref = f"IT-BD-{rng.integers(10**9)}", f"FR-BD-{rng.integers(10**9)}"
    enrol(it, capture(person, rng, 0.9), it_ref, Category.IRREGULAR_CROSSING, EVENT, "Bari")
    enrol(fr, capture(person, rng, 0.9), fr_ref, Category.APPLICANT, EVENT, "Paris")

    # One direction: DE received IT's record; IT marks it.
    de_query, _ = resolved_hits(fed, "DE", capture(person, rng, 0.9))
    assert mark(fed, "IT", it_ref, RD) == "marked"
    it_digest = reference_digest("IT", it_ref)
    (told,) = [
        i.notice for i in fed.lifecycles["DE"].box.items() if i.notice.reference_digest == it_digest
    ]
    assert (told.kind, told.mark_kind, told.query_id) == (
        NoticeKind.RECORD_MARKED, MarkKind.RESIDENCE_DOCUMENT, de_query,
    )  # fmt: skip
    assert told.hit_record_digest == ""

    # The other: FR's own record hit IT's; FR's authority tells its node after the resolve.
    fr_query, hits = resolved_hits(fed, "FR", capture(person, rng, 0.9))
    (hit,) = [h for h in hits if h["reference"] == it_ref]
    link = node_pb2.LinkOwnHitRequest(
        header=header_to_pb(header("FR")), reference=fr_ref, other_state="IT",
        other_digest=reference_digest("IT", hit["reference"]), query_id=fr_query,
    )  # fmt: skip
    assert stub(fed, "FR").LinkOwnHit(link).outcome == "linked"
    assert stub(fed, "FR").LinkOwnHit(link).outcome == "unchanged"
    start = fr.audit.log.size
    assert mark(fed, "FR", fr_ref, PG) == "marked"
    fr_digest = reference_digest("FR", fr_ref)
    (back,) = [
        i.notice for i in fed.lifecycles["IT"].box.items() if i.notice.reference_digest == fr_digest
    ]
    assert (back.kind, back.mark_kind, back.from_state) == (
        NoticeKind.RECORD_MARKED, MarkKind.PROTECTION_GRANTED, "FR",
    )  # fmt: skip
    assert back.hit_record_digest == it_digest and back.query_id == fr_query
    sent = [e for e in fr.audit.log.iter_entries(start) if e.kind is EventKind.NOTICE_SENT]
    assert any(
        e.event.labels.get("hit_record_digest") == it_digest
        and e.event.labels["mark_kind"] == PG
        and e.event.outcome == "delivered"
        for e in sent
    )
    # And the unmark goes the same way.
    assert mark(fed, "FR", fr_ref, "", marked=False) == "unmarked"
    assert any(
        i.notice.kind is NoticeKind.RECORD_UNMARKED and i.notice.hit_record_digest == it_digest
        for i in fed.lifecycles["IT"].box.items()
    )
