"""Case inputs on the wire -> DublinCase -> proposal on the wire, the proposal's digest, the
confirmation's checks, and the case store (a real SQLite file, reopened as after a restart)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from coordinator.case import Criterion, propose
from coordinator.casestore import CaseStore, StoredProposal
from coordinator.casework import (
    CaseFacts,
    ConfirmationRequest,
    confirmation_from_pb,
    facts_from_pb,
    proposal_digest,
    proposal_json,
    proposal_to_pb,
    received_hits,
)
from coordinator.config import CoordinatorConfig
from fedmatch.domain import Category, HitDetail
from fedmatch.errors import (
    AlreadyExists,
    ConfigError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from fedmatch.protocol.casefile import (
    case_inputs_from_json,
    confirmation_digest,
    load_case_file,
    proposal_summary,
)
from fedmatch.rpc.v1 import coordinator_pb2 as cpb

QUERY = "0123456789abcdef0123456789abcdef"
D = dt.date


def _hit(state: str, category: Category, event: dt.date, ref: str, handle: bytes) -> HitDetail:
    return HitDetail(state, handle, category, ref, event, "Somewhere", event)


CROSSING = _hit("IT", Category.IRREGULAR_CROSSING, D(2026, 3, 10), "IT-1", b"\x00" * 8)
APPLICATION = _hit("FR", Category.APPLICANT, D(2026, 5, 2), "FR-1", b"\x01" * 8)

CASE_FILE: dict[str, Any] = {
    "lodging_date": "2026-11-23",
    "family": [
        {"member_state": "AT", "relation": "spouse_or_partner", "status": "applicant"},
    ],
    "documents": [
        {
            "issuing_state": "NL",
            "kind": "short_stay_visa",
            "valid_from": "2026-09-01",
            "valid_until": "2026-09-30",
        }
    ],
}


def test_case_file_to_proposal_on_the_wire() -> None:
    facts = facts_from_pb(case_inputs_from_json(CASE_FILE))
    assert facts.lodging_date == D(2026, 11, 23)
    case = facts.case("DE", D(2026, 11, 21), received_hits([CROSSING], D(2026, 11, 21)))
    proposal = propose(case)
    # The spouse who is an applicant in AT (criterion 2) outranks the visa and the crossing.
    assert proposal.criterion is Criterion.FAMILY
    assert proposal.responsible_state == "AT"
    document = proposal_json(QUERY, proposal, complete=True)
    digest = proposal_digest(document)
    summary = proposal_summary(proposal_to_pb(proposal, digest, True))
    assert summary["criterion"] == "family"
    assert summary["criterion_number"] == 2
    assert summary["procedure"] == "take_charge"
    assert summary["regime"] == "ammr"
    assert summary["digest"] == digest
    assert summary["evidence"] == [
        {
            "kind": "family_member",
            "member_state": "AT",
            "relation": "spouse_or_partner",
            "status": "applicant",
        }
    ]
    # AMMR take charge on a criterion before irregular entry: 2 months from registration
    # (Art. 39(1)); 2026-11-21 + 2 months = 2027-01-21.
    (deadline,) = summary["deadlines"]
    assert {k: v for k, v in deadline.items() if k not in ("consequence", "then", "follow_on")} == {
        "name": "take_charge_request_after_application",
        "due": "2027-01-21",
        "start_event": "application_registered",
        "start_date": "2026-11-21",
        "period": "2 months",
        "basis": "the AMMR (Reg. 2024/1351) Art. 39(1) first subparagraph",
    }
    # With what missing it means and what follows, on the wire as well.
    assert deadline["consequence"] == "missing it makes DE responsible (Art. 39(1))"
    assert "Art. 40(1)" in deadline["then"] and "Art. 42(1)" in deadline["then"]
    # And the checklist of what the engine cannot decide.
    assert {"best_interests", "diplomas", "relocation"} <= {c["code"] for c in summary["checklist"]}


def test_hit_cases_carry_the_receipt_day_and_due_dates() -> None:
    # Dublin III (registered before 2026-07-01): the IT crossing decides, take charge; the
    # hit arrived on 2026-06-30, so the request is due 2 months later, 2026-08-30, and the
    # 3 months from lodging end on 2026-09-29.
    case = CaseFacts().case("DE", D(2026, 6, 29), received_hits([CROSSING], D(2026, 6, 30)))
    summary = proposal_summary(proposal_to_pb(propose(case), "d" * 64, True))
    assert (summary["criterion"], summary["responsible_state"]) == ("irregular_entry", "IT")
    assert summary["regime"] == "dublin_iii"
    assert {d["name"]: d["due"] for d in summary["deadlines"]} == {
        "take_charge_request_after_hit": "2026-08-30",
        "take_charge_request_after_application": "2026-09-29",
    }
    assert summary["evidence"][0]["kind"] == "hit"
    assert summary["evidence"][0]["received_on"] == "2026-06-30"
    assert summary["evidence"][0]["reference"] == "IT-1"


def test_take_back_under_the_ammr_is_a_two_week_notification() -> None:
    late = _hit("FR", Category.APPLICANT, D(2025, 1, 5), "FR-9", b"\x02" * 8)
    case = CaseFacts().case("DE", D(2026, 12, 24), received_hits([late], D(2026, 12, 24)))
    summary = proposal_summary(proposal_to_pb(propose(case), "d" * 64, True))
    assert (summary["criterion"], summary["procedure"]) == ("first_application", "take_back")
    assert summary["deadlines"][0]["due"] == "2027-01-07"  # across the year end
    assert summary["deadlines"][0]["period"] == "2 weeks"


def test_a_one_month_period_reads_in_the_singular() -> None:
    case = CaseFacts().case("DE", D(2026, 11, 21), received_hits([CROSSING], D(2026, 11, 21)))
    summary = proposal_summary(proposal_to_pb(propose(case), "d" * 64, True))
    assert summary["regime"] == "ammr"
    assert sorted(d["period"] for d in summary["deadlines"]) == ["1 month", "2 months"]


def test_a_record_dated_after_the_lookup_counts_as_received_on_its_own_date() -> None:
    (received,) = received_hits([APPLICATION], D(2026, 5, 1))
    assert received.received_on == D(2026, 5, 2)


def test_digest_is_stable_and_binds_every_field() -> None:
    case = CaseFacts().case("DE", D(2026, 11, 21), received_hits([CROSSING], D(2026, 11, 21)))
    first = proposal_digest(proposal_json(QUERY, propose(case), True))
    again = proposal_digest(proposal_json(QUERY, propose(case), True))
    assert first == again
    assert proposal_digest(proposal_json(QUERY, propose(case), False)) != first
    assert proposal_digest(proposal_json("f" * 32, propose(case), True)) != first
    # The handle is a per-query position: another handle, same record, same proposal.
    moved = HitDetail(**{**CROSSING.__dict__, "handle": b"\x09" * 8})
    other = CaseFacts().case("DE", D(2026, 11, 21), received_hits([moved], D(2026, 11, 21)))
    assert proposal_digest(proposal_json(QUERY, propose(other), True)) == first
    assert "handle" not in json.dumps(proposal_json(QUERY, propose(case), True))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": [{"member_state": "AT", "relation": "cousin", "status": "applicant"}]},
         "relation"),
        ({"documents": [{"issuing_state": "XX", "kind": "short_stay_visa",
                         "valid_from": "2026-01-01", "valid_until": "2026-02-01"}]},
         "issuing_state"),
        ({"documents": [{"issuing_state": "NL", "kind": "short_stay_visa",
                         "valid_from": "2026-01-01", "valid_until": "2026-13-01"}]},
         "valid_until"),
        ({"unaccompanied_minor": "yes"}, "unaccompanied_minor"),
        ({"family": [{"member_state": "AT", "relation": "child", "status": "applicant"}] * 17},
         "at most 16"),
        ({"visa_waived_entry_state": "EL"}, "visa_waived_entry_state"),
        ({"color": "blue"}, "unknown key"),
    ],
)  # fmt: skip
def test_bad_case_files_are_refused_naming_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        case_inputs_from_json({**CASE_FILE, **change})


def test_bad_wire_inputs_are_refused_by_the_coordinator() -> None:
    no_relation = cpb.CaseInputs(
        family=[cpb.FamilyMember(member_state="AT", status=cpb.FAMILY_STATUS_APPLICANT)]
    )
    with pytest.raises(InvalidInput, match=r"family\[0\].relation"):
        facts_from_pb(no_relation)
    reversed_visa = cpb.CaseInputs(
        documents=[
            cpb.TravelDocument(
                issuing_state="NL",
                kind=cpb.DOCUMENT_KIND_SHORT_STAY_VISA,
                valid_from="2026-02-01",
                valid_until="2026-01-01",
            )
        ]
    )
    with pytest.raises(InvalidInput, match="valid_until is before valid_from"):
        facts_from_pb(reversed_visa)
    early = facts_from_pb(cpb.CaseInputs(lodging_date="2026-11-01"))
    with pytest.raises(InvalidInput, match="lodging_date is before registration_date"):
        early.case("DE", D(2026, 11, 21))


def test_case_file_is_read_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "case.json"
    path.write_text(json.dumps(CASE_FILE))
    assert load_case_file(path) == case_inputs_from_json(CASE_FILE)
    path.write_text("{not json")
    with pytest.raises(InvalidInput, match="not JSON"):
        load_case_file(path)


def test_confirmation_checks_and_digest_agree_with_the_client() -> None:
    accept = ConfirmationRequest(QUERY, "a" * 64, "accept")
    assert accept.digest() == confirmation_digest(QUERY, "a" * 64, "accept")
    override = confirmation_from_pb(
        QUERY,
        cpb.ConfirmDecisionRequest(
            proposal_digest="a" * 64,
            action=cpb.CONFIRM_ACTION_OVERRIDE,
            override_state="AT",
            override_criterion=cpb.CRITERION_FAMILY,
            reason="spouse's protection status confirmed by AT on 2026-11-20",
        ),
    )
    assert override.override_criterion is Criterion.FAMILY
    assert override.digest() == confirmation_digest(
        QUERY,
        "a" * 64,
        "override",
        "AT",
        "family",
        "spouse's protection status confirmed by AT on 2026-11-20",
    )
    assert override.digest() != accept.digest()
    for bad, message in (
        (dict(action="override", override_state="AT", override_criterion=Criterion.FAMILY),
         "needs a reason"),
        (dict(action="override", override_criterion=Criterion.FAMILY, reason="r"),
         "override_state"),
        (dict(action="override", override_state="AT", reason="r"), "override_criterion"),
        (dict(action="accept", override_state="AT"), "takes no override"),
        (dict(action="maybe"), "accept or override"),
        (dict(action="accept", reason="line\nbreak"), "printable"),
    ):  # fmt: skip
        with pytest.raises(InvalidInput, match=message):
            ConfirmationRequest(QUERY, "a" * 64, **bad)
    with pytest.raises(InvalidInput, match="64 lowercase hex"):
        ConfirmationRequest(QUERY, "A" * 64, "accept")
    with pytest.raises(InvalidInput, match="action"):
        confirmation_from_pb(QUERY, cpb.ConfirmDecisionRequest(proposal_digest="a" * 64))


def _record(log: list[str], fail: bool = False) -> Any:
    def record(stored: StoredProposal) -> tuple[dict[str, Any], str]:
        if fail:
            raise OSError("the audit log is full")
        log.append(stored.digest)
        return {"official": "official-3"}, stored.responsible_state

    return record


def test_case_store_confirms_once_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "cases.sqlite"
    case = CaseFacts().case("DE", D(2026, 11, 21), received_hits([CROSSING], D(2026, 11, 21)))
    document = proposal_json(QUERY, propose(case), True)
    digest = proposal_digest(document)
    store = CaseStore(path)
    store.put(QUERY, "DE", digest, document, "2026-11-21T10:00:00+00:00")
    store.close()

    store = CaseStore(path)  # a restart
    logged: list[str] = []
    with pytest.raises(NotFound):
        store.confirm(QUERY, "FR", digest, _record(logged))  # another state's case
    with pytest.raises(NotFound):
        store.confirm("e" * 32, "DE", digest, _record(logged))
    with pytest.raises(PreconditionFailed):
        store.confirm(QUERY, "DE", "b" * 64, _record(logged))
    with pytest.raises(OSError):
        store.confirm(QUERY, "DE", digest, _record(logged, fail=True))
    stored = store.get(QUERY)
    assert stored is not None and stored.confirmation is None  # the failed one left nothing
    assert logged == []
    assert store.confirm(QUERY, "DE", digest, _record(logged)) == "IT"
    with pytest.raises(AlreadyExists):
        store.confirm(QUERY, "DE", digest, _record(logged))
    with pytest.raises(AlreadyExists):
        store.put(QUERY, "DE", "c" * 64, document, "2026-11-22T10:00:00+00:00")
    with pytest.raises(AlreadyExists):
        store.check_open(QUERY)
    store.close()

    store = CaseStore(path)
    stored = store.get(QUERY)
    assert stored is not None
    assert stored.confirmation == {"official": "official-3"}
    assert stored.digest == digest and stored.proposal == document
    assert logged == [digest]
    store.close()


def test_the_case_file_forgets_proposals_past_their_retention(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases.sqlite")
    document = {"responsible_state": "IT", "criterion": 4}
    store.put(QUERY, "DE", "a" * 64, document, "2026-01-10T09:00:00+00:00")
    store.confirm(QUERY, "DE", "a" * 64, _record([]))  # confirmed ones expire too
    store.put("f" * 32, "DE", "b" * 64, document, "2026-01-10T09:00:01+00:00")
    cutoff = dt.datetime(2026, 1, 10, 10, 0, 0, 500_000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert store.purge(cutoff) == 1  # 09:00:00.5 UTC: the first one only
    assert store.get(QUERY) is None and store.get("f" * 32) is not None
    with pytest.raises(NotFound):  # nothing left to confirm or reveal
        store.confirm(QUERY, "DE", "a" * 64, _record([]))
    assert store.purge(cutoff) == 0
    with pytest.raises(ValueError, match="timezone"):
        store.purge(dt.datetime(2026, 1, 10))
    store.close()
    with pytest.raises(ConfigError, match="case_retention_days"):
        CoordinatorConfig(case_retention_days=0)
    assert CoordinatorConfig().case_retention_days == 548  # 18 months, the longest time limit


def test_a_confirmation_names_the_case_reference_of_its_resolve(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases.sqlite")
    document = {"responsible_state": "IT", "criterion": 4}
    store.put(QUERY, "DE", "a" * 64, document, "t1", case_reference="DE-2026-5512")
    with pytest.raises(PreconditionFailed, match="case reference"):
        store.confirm(QUERY, "DE", "a" * 64, _record([]), case_reference="DE-2026-9999")
    assert store.confirm(QUERY, "DE", "a" * 64, _record([]), case_reference="DE-2026-5512") == "IT"
    store.close()


def test_a_new_resolve_replaces_an_unconfirmed_proposal(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases.sqlite")
    store.put(QUERY, "DE", "a" * 64, {"responsible_state": "IT", "criterion": 4}, "t1")
    store.put(QUERY, "DE", "b" * 64, {"responsible_state": "FR", "criterion": 6}, "t2")
    with pytest.raises(PreconditionFailed):
        store.confirm(QUERY, "DE", "a" * 64, _record([]))
    assert store.confirm(QUERY, "DE", "b" * 64, _record([])) == "FR"
    store.close()
