"""Issue 15, attack 5: details only for real matches (fedmatch/protocol/opening.py).

A requester that decrypted no match asked for, and got, the details of three non-matching
records (one of a category it had not asked for), twice, with its own verifiers' verdicts.
Over real servers here: a lookup commits to its probe; a resolve opens the commitment to
the owning node, which recomputes the similarity and releases nothing else, once per query.
Every attack below is a requester of DE with two real verifiers' signatures.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
import pytest

from fedmatch.audit.entry import EventKind
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, Purpose
from fedmatch.protocol.opening import ProbeOpening
from fedmatch.protocol.wire import encode_handle
from fedmatch.requester.client import LookupReport
from tests.federation import DIM, Federation, enrol, federation

APPLICATION = "2026-11-21"
BASIS = "Reg. (EU) 2024/1358 Art. 27"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("release"), ("DE", "IT"), records=40) as f:
        yield f


def _person(fed: Federation, seed: int, category: Category = Category.IRREGULAR_CROSSING) -> Any:
    rng = np.random.default_rng(seed)
    person = unit_vectors(rng, 1, DIM)[0]
    enrol(fed.nodes["IT"], capture(person, rng, 0.9), f"IT-R-{seed}", category, dt.date(2026, 5, 1))
    return capture(person, rng, 0.9)


def _lookup(
    fed: Federation,
    probe: Any,
    case: str,
    purpose: Purpose = Purpose.ASYLUM_DUBLIN,
    **signer: Any,
) -> LookupReport:
    requester = fed.requester("DE", **signer)
    return requester.lookup(probe, requester.header(purpose, BASIS, case))


def _handle_of(fed: Federation, report: LookupReport, reference: str) -> bytes:
    """The handle naming ``reference``'s record in this query: what a hostile requester
    would have to guess (the test reads it from the node's own layout)."""
    node = fed.nodes["IT"]
    record = node.store.find(reference)
    query = node.handles._queries[report.header.query_id]
    assert query.layout is not None
    for block in range(len(query.layout.order)):
        for position in range(2 * query.layout.slots):
            row = query.layout.row(block, position)
            if row is not None and int(query.ids[row]) == record:
                return encode_handle(block, position)
    raise AssertionError("record not in the query's layout")


def _claim(fed: Federation, report: LookupReport, handle: bytes) -> Any:
    """Resolve ``handle`` at IT as a candidate, with two verifiers' confirmations."""
    claimed = replace(report, matches=(("IT", handle),))
    return fed.requester("DE").resolve(claimed, APPLICATION, fed.verdicts(claimed))


def _revealed(fed: Federation, report: LookupReport) -> list[Any]:
    qid = report.header.query_id
    return [
        e
        for e in fed.nodes["IT"].audit.log.iter_entries()
        if e.kind is EventKind.HIT_DETAILS_REVEALED and e.event.query_id == qid
    ]


NOT_A_MATCH = "not a match this search may see"  # one answer, whatever the reason


def _refused(
    fed: Federation,
    report: LookupReport,
    handle: bytes,
    message: str,
    caplog: pytest.LogCaptureFixture | None = None,
    reason: str = "",
) -> None:
    """The claim is refused at IT with ``message`` when the requester asks for its
    verification packet (the first step that needs a proven match); with ``caplog``, the
    node's own log gives ``reason`` (the requester only ever sees the one answer). No
    verdict can then bind its images, so no resolve reaches the node."""
    if caplog is not None:
        caplog.set_level(logging.INFO, logger="fedmatch.node")
        caplog.clear()
    claimed = replace(report, matches=(("IT", handle),))
    fetched = fed.packets(claimed)
    if caplog is not None:
        assert f"reason={reason}" in caplog.text
    assert fetched.packets == ()
    assert fetched.failed["IT"].startswith("refused") and message in fetched.failed["IT"]
    with pytest.raises(grpc.RpcError) as err:
        fed.requester("DE").resolve(claimed, APPLICATION, fed.verdicts(claimed))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "verification packet" in str(err.value.details())
    assert not _revealed(fed, report)
    # On the node's record as a refusal of that query; no packet released.
    entries = [
        e for e in fed.nodes["IT"].audit.log.iter_entries()
        if e.event.query_id == report.header.query_id
    ]  # fmt: skip
    assert any(e.kind is EventKind.REQUEST_REFUSED for e in entries)
    assert not any(e.kind is EventKind.PACKETS_RELEASED for e in entries)


def test_a_real_match_is_released_once(fed: Federation) -> None:
    probe = _person(fed, 1)
    report = _lookup(fed, probe, "R-1")
    assert [s for s, _ in report.matches] == ["IT"]
    first = _claim(fed, report, report.matches[0][1])
    assert [h["reference"] for h in first.hits] == ["IT-R-1"]
    # A second resolve of the same query, with fresh verdicts: refused at the node.
    _again = _claim(fed, report, report.matches[0][1])
    assert _again.hits == ()
    assert "already released" in _again.nodes[0].detail
    assert len(_revealed(fed, report)) == 1


def test_a_position_that_did_not_match_is_refused(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """The requester decrypted nothing for this record and claims it anyway."""
    _person(fed, 2)
    other = unit_vectors(np.random.default_rng(200), 1, DIM)[0]
    report = _lookup(fed, other, "R-2")
    assert report.matches == ()
    _refused(fed, report, _handle_of(fed, report, "IT-R-2"), NOT_A_MATCH, caplog, "below_threshold")


def test_a_record_of_a_category_not_named_is_refused(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe is this applicant, but the search named only irregular crossings and
    illegal stays: the record was excluded inside the search, and its details stay shut
    even for a requester that finds its position."""
    probe = _person(fed, 3, Category.APPLICANT)
    report = _lookup(fed, probe, "R-3", categories=("irregular_crossing", "illegal_stay"))
    assert report.matches == ()
    handle = _handle_of(fed, report, "IT-R-3")
    _refused(fed, report, handle, NOT_A_MATCH, caplog, "category")


def test_a_marked_record_is_refused_to_a_purpose_that_may_not_see_it(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    probe = _person(fed, 4)
    node = fed.nodes["IT"]
    record = node.store.find("IT-R-4")
    node.set_marked(record, True)
    try:
        # Resettlement searches do not see marked records (the default policy).
        report = _lookup(fed, probe, "R-4", Purpose.RESETTLEMENT)
        assert not node.policy.sees_marked(Purpose.RESETTLEMENT.value)
        assert report.matches == ()
        handle = _handle_of(fed, report, "IT-R-4")
        _refused(fed, report, handle, NOT_A_MATCH, caplog, "marked")
    finally:
        node.set_marked(record, False)


def test_an_opening_of_another_template_is_refused(fed: Federation) -> None:
    """Searched with the real probe, then opened with another template (to have the node
    compare a chosen vector with the record): the commitment does not open."""
    probe = _person(fed, 5)
    report = _lookup(fed, probe, "R-5")
    assert report.opening is not None
    forged = replace(
        report, opening=ProbeOpening.new(unit_vectors(np.random.default_rng(5), 1, DIM)[0])
    )
    _refused(fed, forged, report.matches[0][1], "does not match its commitment")


def test_without_the_opening_nothing_is_released(fed: Federation) -> None:
    probe = _person(fed, 6)
    report = _lookup(fed, probe, "R-6")
    _refused(fed, replace(report, opening=None), report.matches[0][1], "probe's opening")


def test_the_opening_is_sealed_to_the_node(fed: Federation) -> None:
    """The coordinator relays the opening: what it sees is not the template (a sealed box
    for one query at one node), and the same box sent for another query does not open."""
    probe = _person(fed, 7)
    report = _lookup(fed, probe, "R-7")
    requester = fed.requester("DE")
    (sealed,) = requester._sealed_openings(report)
    template = np.asarray(report.opening.template, "<f4").tobytes() if report.opening else b""
    assert template and template not in sealed.sealed
    later = _lookup(fed, probe, "R-7b")
    moved = replace(later, opening_keys=report.opening_keys)  # sealed for the first query
    _refused(fed, moved, later.matches[0][1], "does not open with this query's key")


def test_resolves_count_against_the_daily_quota(fed: Federation) -> None:
    guard = fed.nodes["IT"].gate.replay
    probe = _person(fed, 8)
    before = guard.used_today("DE")
    report = _lookup(fed, probe, "R-8")
    assert guard.used_today("DE") == before + 1  # the search
    fed.packets(report)
    assert guard.used_today("DE") == before + 2  # its verification packets
    _claim(fed, report, report.matches[0][1])
    assert guard.used_today("DE") == before + 3  # and its resolve
