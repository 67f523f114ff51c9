"""From enrolment to a confirmed Dublin decision over real gRPC servers (mTLS, real HE, real
SQLite): the case proposal under the whole criteria order with its due dates, the official's
signed confirmation, its refusals, and a confirmation after a coordinator restart.

The coordinator's wall clock is fixed at 2026-11-21 10:00 UTC, the day the hits are received:
the due dates below are counted by hand from that day (Regulation 1182/71)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from coordinator.service import CoordinatorService
from coordinator.servicer import serve_coordinator
from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, QueryHeader
from fedmatch.protocol.casefile import case_inputs_from_json, confirmation_digest
from fedmatch.protocol.wire import header_to_pb
from fedmatch.requester import Requester
from fedmatch.requester.client import LookupReport, ResolveReport
from fedmatch.rpc.v1 import coordinator_pb2 as cpb
from fedmatch.rpc.v1 import coordinator_pb2_grpc
from tests.federation import (
    DIM,
    OPERATOR,
    OTHER_OFFICER,
    TODAY,
    UNIT,
    Federation,
    coordinator_audit,
    enrol,
    federation,
    gate,
    header,
    request_signer,
    security,
    shared_keys,
)

NOW = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
REGISTERED = TODAY.isoformat()  # 2026-11-21: AMMR
# The official who confirms: another officer of DE than the one who looks up (OPERATOR),
# signing with their own officer certificate's key; they are the official logged.
OFFICIAL = OTHER_OFFICER


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("dublin"), ("DE", "IT", "FR"), now=lambda: NOW) as f:
        yield f


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _person(
    fed: Federation, rng: np.random.Generator, state: str, category: Category, day: dt.date
) -> tuple[np.ndarray, str]:
    person = unit_vectors(rng, 1, DIM)[0]
    reference = f"{state}-{rng.integers(10**9)}"
    enrol(fed.nodes[state], capture(person, rng, 0.85), reference, category, day, "Somewhere")
    return person, reference


def _resolve(
    fed: Federation,
    requester: Requester,
    person: np.ndarray,
    rng: np.random.Generator,
    case: Mapping[str, object] | None = None,
) -> tuple[LookupReport, ResolveReport]:
    report = requester.lookup(capture(person, rng, 0.85), header("DE"))
    assert report.matches
    resolved = requester.resolve(
        report,
        REGISTERED,
        fed.verdicts(report),
        case_inputs=case_inputs_from_json(case) if case is not None else None,
    )
    return report, resolved


def _official(report: LookupReport, operator: str = OFFICIAL) -> QueryHeader:
    return replace(report.header, operator=operator)


def _entries(fed: Federation, kind: EventKind) -> list[SignedEntry]:
    return [e for e in fed.coordinator.audit.log.iter_entries() if e.kind is kind]


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code: grpc.StatusCode = err.value.code()
    return code


def test_irregular_crossing_take_charge_confirmed_once(
    fed: Federation, rng: np.random.Generator
) -> None:
    person, ref_it = _person(fed, rng, "IT", Category.IRREGULAR_CROSSING, dt.date(2026, 3, 10))
    requester = fed.requester("DE")
    report, resolved = _resolve(fed, requester, person, rng)

    proposal = resolved.proposal
    assert proposal is not None
    assert (proposal["criterion"], proposal["responsible_state"], proposal["procedure"]) == (
        "irregular_entry", "IT", "take_charge",
    )  # fmt: skip
    assert proposal["regime"] == "ammr" and proposal["complete"]
    # AMMR Art. 39(1): 1 month from the hit's receipt, 2 months from registration.
    assert {d["name"]: d["due"] for d in proposal["deadlines"]} == {
        "take_charge_request_after_hit": "2026-12-21",
        "take_charge_request_after_application": "2027-01-21",
    }
    evidence = proposal["evidence"][0]
    assert (evidence["kind"], evidence["reference"], evidence["received_on"]) == (
        "hit", ref_it, "2026-11-21",
    )  # fmt: skip
    # The old first-entry decision is still answered, and agrees.
    assert (resolved.responsible_state, resolved.rule) == ("IT", "irregular_entry")

    (proposed,) = [
        e
        for e in _entries(fed, EventKind.DECISION_PROPOSED)
        if e.event.query_id == report.header.query_id
    ]
    assert proposed.event.labels["proposal"] == proposal["digest"]
    assert proposed.event.labels["responsible_state"] == "IT"
    assert proposed.event.labels["earliest_due"] == "2026-12-21"
    # Record metadata stays out of the log: a digest of the proposal, no reference or place.
    assert ref_it not in proposed.raw.decode() and "Somewhere" not in proposed.raw.decode()

    confirmed = fed.requester("DE", OFFICIAL).confirm_decision(
        _official(report), proposal["digest"]
    )
    assert (confirmed.action, confirmed.responsible_state, confirmed.criterion) == (
        "accept", "IT", "irregular_entry",
    )  # fmt: skip
    assert confirmed.official_id == OFFICIAL
    assert confirmed.confirmed_at == NOW.isoformat()
    (entry,) = [
        e
        for e in _entries(fed, EventKind.DECISION_CONFIRMED)
        if e.event.query_id == report.header.query_id
    ]
    assert entry.seq == confirmed.log_index
    assert (entry.event.operator, entry.event.verifiers, entry.event.outcome) == (
        OFFICIAL, (OFFICIAL,), "accept",
    )  # fmt: skip
    assert entry.event.labels["proposal"] == proposal["digest"]
    assert entry.event.labels["signer"] == f"{OFFICIAL}.officer.de.fedmatch.eu"

    # Once per case: a second confirmation, even by another official, and a new resolve of
    # the confirmed case are refused.
    again = _official(report, OPERATOR)
    assert _code(lambda: requester.confirm_decision(again, proposal["digest"])) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert _code(lambda: requester.resolve(report, REGISTERED, fed.verdicts(report))) == (
        grpc.StatusCode.ALREADY_EXISTS
    )


def test_take_back_and_family_outranking_the_hit(fed: Federation, rng: np.random.Generator) -> None:
    requester = fed.requester("DE")
    applicant, _ = _person(fed, rng, "FR", Category.APPLICANT, dt.date(2026, 5, 2))
    _, back = _resolve(fed, requester, applicant, rng)
    assert back.proposal is not None
    assert (back.proposal["criterion"], back.proposal["responsible_state"]) == (
        "first_application", "FR",
    )  # fmt: skip
    assert back.proposal["procedure"] == "take_back"
    # AMMR Art. 41(1): a take back notification within 2 weeks of the hit.
    assert [(d["name"], d["due"]) for d in back.proposal["deadlines"]] == [
        ("take_back_notification_after_hit", "2026-12-05")
    ]

    crossing, ref_it = _person(fed, rng, "IT", Category.IRREGULAR_CROSSING, dt.date(2026, 4, 1))
    family = {
        "lodging_date": "2026-11-23",
        "family": [
            {
                "member_state": "AT",
                "relation": "spouse_or_partner",
                "status": "beneficiary_of_protection",
            }
        ],
    }
    _, outranked = _resolve(fed, requester, crossing, rng, family)
    proposal = outranked.proposal
    assert proposal is not None
    # The spouse protected in AT (criterion 2) comes before the irregular entry into IT.
    assert (proposal["criterion"], proposal["responsible_state"]) == ("family", "AT")
    assert proposal["lodging_date"] == "2026-11-23"
    assert proposal["evidence"][0]["kind"] == "family_member"
    assert [d["due"] for d in proposal["deadlines"]] == ["2027-01-21"]
    assert outranked.responsible_state == "IT"  # the hit-only rule, for older clients
    assert ref_it not in json.dumps(proposal["evidence"])


def test_confirmation_refusals(fed: Federation, rng: np.random.Generator) -> None:
    person, _ = _person(fed, rng, "IT", Category.IRREGULAR_CROSSING, dt.date(2026, 6, 1))
    requester = fed.requester("DE")
    report, resolved = _resolve(fed, requester, person, rng)
    assert resolved.proposal is not None
    digest = resolved.proposal["digest"]
    official = _official(report)

    # Another digest than the case's proposal.
    assert _code(lambda: requester.confirm_decision(official, "0" * 64)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    # An operator of another state: for DE's case (its connection and signature are FR's),
    # and for "its own" case under DE's query id (which it cannot see).
    france = fed.requester("FR")
    assert _code(lambda: france.confirm_decision(official, digest)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    as_france = replace(official, requesting_state="FR")
    assert _code(lambda: france.confirm_decision(as_france, digest)) == grpc.StatusCode.NOT_FOUND
    # Another case reference than the lookup's and resolve's.
    elsewhere = replace(official, case_reference="CASE-2")
    assert _code(lambda: requester.confirm_decision(elsewhere, digest)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    # An override without a reason.
    assert (
        _code(lambda: requester.confirm_decision(official, digest, "override", "FR", "family"))
        == grpc.StatusCode.INVALID_ARGUMENT
    )

    # A signed confirmation sent twice: the replay is refused before the case is looked at.
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(fed.coordinator_channel("operator-DE"))
    body = confirmation_digest(official.query_id, digest, "accept")
    signed = request_signer(fed.tmp, "DE", OFFICIAL).sign(official, "confirm", body)
    request = cpb.ConfirmDecisionRequest(
        header=header_to_pb(official, signed),
        proposal_digest=digest,
        action=cpb.CONFIRM_ACTION_ACCEPT,
    )
    assert stub.ConfirmDecision(request, timeout=10).responsible_state == "IT"
    assert _code(lambda: stub.ConfirmDecision(request, timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # A statement signed for one body cannot carry another (an override to FR).
    report2, resolved2 = _resolve(fed, requester, person, rng)
    assert resolved2.proposal is not None
    official2 = _official(report2)
    signed2 = request_signer(fed.tmp, "DE", OFFICIAL).sign(
        official2,
        "confirm",
        confirmation_digest(official2.query_id, resolved2.proposal["digest"], "accept"),
    )
    forged = cpb.ConfirmDecisionRequest(
        header=header_to_pb(official2, signed2),
        proposal_digest=resolved2.proposal["digest"],
        action=cpb.CONFIRM_ACTION_OVERRIDE,
        override_state="FR",
        override_criterion=cpb.CRITERION_FAMILY,
        reason="not what was signed",
    )
    assert _code(lambda: stub.ConfirmDecision(forged, timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Case inputs the coordinator cannot use are refused before anything is asked of a node.
    unknown_relation = cpb.FamilyMember(
        member_state="AT",
        relation=cpb.FamilyRelation.ValueType(9),
        status=cpb.FAMILY_STATUS_APPLICANT,
    )
    for inputs in (
        cpb.CaseInputs(lodging_date="2026-11-01"),  # lodged before it was registered
        cpb.CaseInputs(family=[unknown_relation]),
        cpb.CaseInputs(visa_waived_entry_state="EL"),
    ):

        def resolve(inputs: cpb.CaseInputs = inputs) -> object:
            return requester.resolve(report2, REGISTERED, fed.verdicts(report2), case_inputs=inputs)

        assert _code(resolve) == grpc.StatusCode.INVALID_ARGUMENT
    refused = [
        e
        for e in fed.coordinator.audit.log.iter_entries()
        if e.kind is EventKind.REQUEST_REFUSED
        and e.event.labels.get("request") == "confirm_decision"
    ]
    assert len(refused) >= 5


def test_confirmation_after_a_coordinator_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    with federation(tmp_path, ("DE", "IT"), now=lambda: NOW) as fed:
        person = unit_vectors(rng, 1, DIM)[0]
        enrol(fed.nodes["IT"], capture(person, rng, 0.85), "IT-77", Category.IRREGULAR_CROSSING,
              dt.date(2026, 8, 30), "Lampedusa")  # fmt: skip
        requester = fed.requester("DE")
        report, resolved = _resolve(fed, requester, person, rng)
        assert resolved.proposal is not None
        digest = resolved.proposal["digest"]

        # The coordinator stops and starts again on the same files (log, replay store, cases).
        fed.coordinator_server.stop(0.2)
        fed.coordinator.close()
        fed.coordinator.audit.close()
        audit = coordinator_audit(tmp_path)
        fed.stack.callback(audit.close)
        restarted_gate = gate(tmp_path, "coordinator")
        fed.stack.callback(restarted_gate.close)
        creds = security(tmp_path, "coordinator")
        service = CoordinatorService(
            fed.coordinator.config, audit, restarted_gate, creds.channel_credentials(),
            now=lambda: NOW + dt.timedelta(days=3),
        )  # fmt: skip
        fed.stack.callback(service.close)
        server = serve_coordinator(service, creds, "127.0.0.1:0")
        fed.stack.callback(server.stop, 0.2)
        official = Requester(
            server.address, "DE", shared_keys("DE"), UNIT, OPERATOR,
            request_signer(tmp_path, "DE"), security(tmp_path, "operator-DE").channel_credentials(),
        )  # fmt: skip
        fed.stack.callback(official.close)

        overridden = official.confirm_decision(
            _official(report),
            digest,
            "override",
            "IT",
            "irregular_entry",
            "crossing confirmed by IT's border police report 2026-08-30",
        )
        assert (overridden.action, overridden.responsible_state) == ("override", "IT")
        assert overridden.confirmed_at == (NOW + dt.timedelta(days=3)).isoformat()
        (entry,) = [e for e in audit.log.iter_entries() if e.kind is EventKind.DECISION_CONFIRMED]
        assert "reason_digest" in entry.event.labels
        assert "border police" not in entry.raw.decode()  # the free text stays out of the log
        assert _code(lambda: official.confirm_decision(_official(report), digest)) == (
            grpc.StatusCode.ALREADY_EXISTS
        )
        # 18 months and a day on, the case file no longer holds the case (the log does).
        assert service.cases.get(report.header.query_id) is not None
        service.purge_cases(NOW + dt.timedelta(days=549))
        assert service.cases.get(report.header.query_id) is None


def test_a_same_day_tie_proposes_no_state_and_needs_an_override(
    fed: Federation, rng: np.random.Generator
) -> None:
    """Two irregular crossings on the same day (IT and FR): no state is proposed, only the
    candidates; accepting such a proposal is refused, an override naming a state is taken
    (DOMAIN.md section 3: ties and best interests are an official's choice, never an order
    of codes)."""
    person = unit_vectors(rng, 1, DIM)[0]
    day = dt.date(2026, 6, 1)
    for state in ("IT", "FR"):
        reference = f"{state}-tie-{rng.integers(10**9)}"
        enrol(fed.nodes[state], capture(person, rng, 0.85), reference, Category.IRREGULAR_CROSSING,
              day, "Border")  # fmt: skip
    requester = fed.requester("DE")
    report, resolved = _resolve(fed, requester, person, rng)
    proposal = resolved.proposal
    assert proposal is not None
    assert proposal["responsible_state"] == "" and proposal["candidates"] == ["FR", "IT"]
    assert {c["code"] for c in proposal["checklist"]} >= {"best_interests", "relocation"}
    accept = lambda: requester.confirm_decision(_official(report), proposal["digest"])  # noqa: E731
    assert _code(accept) == grpc.StatusCode.FAILED_PRECONDITION
    chosen = requester.confirm_decision(
        _official(report), proposal["digest"], "override", "IT", "irregular_entry",
        "entered through IT first, by the travel record",
    )  # fmt: skip
    assert chosen.responsible_state == "IT" and chosen.action == "override"
