"""Issue 17: the order in which the Dublin rules apply, one row per rule, each citing its
article (``shared/docs/DOMAIN.md`` section 3).

- take back comes before every criterion (Dublin III Art. 18(1)(b)-(d), 20(5); CJEU C-582/17
  *H. and R.*; AMMR Art. 36, 38);
- one criteria order per regime: the AMMR puts visa-waived entry (Art. 31) and airport transit
  (Art. 32) before entry (Art. 33); Dublin III keeps entry (Art. 13) before Art. 14 and 15;
- the Dublin III 12-month window includes its anniversary day (Art. 42);
- AMMR Art. 33(2) applies notwithstanding 33(1): a search-and-rescue disembarkation decides
  before an irregular crossing, whatever their dates;
- the application date is always given, never defaulted (the command line and the desk).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from coordinator.case import (
    ApplicantSituation,
    Criterion,
    DocumentKind,
    DublinCase,
    EarlierApplication,
    FamilyMember,
    FamilyStatus,
    ReceivedHit,
    Relation,
    TravelDocument,
    propose,
)
from coordinator.dublin import Procedure, Rule, decide
from fedmatch.cli.main import build_parser
from fedmatch.domain import Category, HitDetail

D = dt.date
IRR = Category.IRREGULAR_CROSSING
SAR = Category.SAR_DISEMBARKED
APP = Category.APPLICANT
DIII = D(2025, 9, 1)  # a Dublin III registration
AMMR = D(2026, 9, 1)  # an AMMR registration


def detail(state: str, category: Category, event: dt.date) -> HitDetail:
    return HitDetail(
        member_state=state,
        handle=b"h" * 8,
        category=category,
        reference=f"{state}-{category.value}-{event.isoformat()}",
        event_date=event,
        event_place="somewhere",
        capture_date=event,
    )


@dataclass(frozen=True)
class Row:
    article: str
    application: dt.date
    hits: tuple[HitDetail, ...]
    rule: Rule
    procedure: Procedure
    responsible: str | None


DECIDE = [
    pytest.param(
        Row("Dublin III Art. 18(1)(b)-(d), 20(5); C-582/17", DIII,
            (detail("IT", IRR, D(2025, 3, 1)), detail("FR", APP, D(2025, 5, 1))),
            Rule.EARLIER_APPLICATION, Procedure.TAKE_BACK, "FR"),
        id="dublin3-take-back-before-irregular-entry",
    ),
    pytest.param(
        Row("AMMR Art. 36(1)(b), 38", AMMR,
            (detail("IT", IRR, D(2026, 3, 1)), detail("FR", APP, D(2026, 5, 1))),
            Rule.EARLIER_APPLICATION, Procedure.TAKE_BACK, "FR"),
        id="ammr-take-back-before-irregular-entry",
    ),
    pytest.param(
        Row("Dublin III Art. 18(1)(b): an application earlier than the crossing", DIII,
            (detail("FR", APP, D(2025, 1, 1)), detail("IT", IRR, D(2025, 3, 1))),
            Rule.EARLIER_APPLICATION, Procedure.TAKE_BACK, "FR"),
        id="dublin3-take-back-whatever-the-dates",
    ),
    pytest.param(
        Row("an earlier application in the requesting state itself is no take back", DIII,
            (detail("DE", APP, D(2025, 5, 1)), detail("IT", IRR, D(2025, 3, 1))),
            Rule.IRREGULAR_ENTRY, Procedure.TAKE_CHARGE, "IT"),
        id="own-earlier-application-no-take-back",
    ),
    pytest.param(
        Row("Dublin III Art. 13(1) with Art. 42: the anniversary day is inside", D(2025, 3, 10),
            (detail("IT", IRR, D(2024, 3, 10)),),
            Rule.IRREGULAR_ENTRY, Procedure.TAKE_CHARGE, "IT"),
        id="dublin3-anniversary-day-inside",
    ),
    pytest.param(
        Row("Dublin III Art. 13(1) with Art. 42: the day after is outside", D(2025, 3, 11),
            (detail("IT", IRR, D(2024, 3, 10)),),
            Rule.NO_OTHER_STATE, Procedure.NONE, None),
        id="dublin3-day-after-anniversary-outside",
    ),
    pytest.param(
        Row("Dublin III Art. 42: a crossing on 29 February ends on 28 February", D(2025, 2, 28),
            (detail("IT", IRR, D(2024, 2, 29)),),
            Rule.IRREGULAR_ENTRY, Procedure.TAKE_CHARGE, "IT"),
        id="dublin3-leap-day-end-inside",
    ),
    pytest.param(
        Row("AMMR Art. 33(2), notwithstanding 33(1): disembarkation before crossing", AMMR,
            (detail("IT", IRR, D(2026, 1, 10)), detail("MT", SAR, D(2026, 3, 1))),
            Rule.SAR_DISEMBARKATION, Procedure.TAKE_CHARGE, "MT"),
        id="ammr-sar-notwithstanding-irregular-entry",
    ),
    pytest.param(
        Row("AMMR Art. 33(1): after the 12 months of 33(2), the crossing decides", AMMR,
            (detail("IT", IRR, D(2025, 6, 10)), detail("MT", SAR, D(2025, 8, 1))),
            Rule.IRREGULAR_ENTRY, Procedure.TAKE_CHARGE, "IT"),
        id="ammr-sar-window-over-crossing-decides",
    ),
]  # fmt: skip


@pytest.mark.parametrize("row", DECIDE)
def test_the_hit_rules_in_their_order(row: Row) -> None:
    decision = decide("DE", row.application, list(row.hits))
    assert (decision.rule, decision.procedure, decision.responsible_state) == (
        row.rule,
        row.procedure,
        row.responsible,
    ), row.article


def test_the_anniversary_rule_is_cited_from_dublin_iii_itself() -> None:
    """Dublin III computes its periods under its own Art. 42, not Reg. 1182/71."""
    decision = decide("DE", D(2025, 3, 10), [detail("IT", IRR, D(2024, 3, 10))])
    assert "Art. 42" in decision.explanation


def received(state: str, category: Category, event: dt.date) -> ReceivedHit:
    return ReceivedHit(detail(state, category, event), event + dt.timedelta(days=200))


def situation(**kw: object) -> ApplicantSituation:
    return ApplicantSituation(**kw)  # type: ignore[arg-type]


VISA = TravelDocument("ES", DocumentKind.SHORT_STAY_VISA, D(2025, 1, 1), D(2026, 12, 31))

PROPOSE = [
    pytest.param(
        ("Dublin III: take back before documents and visas (C-582/17)", DIII,
         situation(documents=(VISA,)), (received("FR", APP, D(2025, 5, 1)),),
         Criterion.FIRST_APPLICATION, Procedure.TAKE_BACK, "FR"),
        id="dublin3-take-back-before-visa",
    ),
    pytest.param(
        ("AMMR Art. 36: take back before documents and visas", AMMR,
         situation(documents=(VISA,)), (received("FR", APP, D(2026, 5, 1)),),
         Criterion.FIRST_APPLICATION, Procedure.TAKE_BACK, "FR"),
        id="ammr-take-back-before-visa",
    ),
    pytest.param(
        ("AMMR Art. 31 before Art. 33: visa-waived entry first", AMMR,
         situation(visa_waived_entry_state="AT"), (received("IT", IRR, D(2026, 3, 1)),),
         Criterion.VISA_WAIVER_OR_TRANSIT, Procedure.TAKE_CHARGE, "AT"),
        id="ammr-visa-waiver-before-entry",
    ),
    pytest.param(
        ("AMMR Art. 32 before Art. 33: airport transit first", AMMR,
         situation(airport_transit_state="NL"), (received("IT", IRR, D(2026, 3, 1)),),
         Criterion.VISA_WAIVER_OR_TRANSIT, Procedure.TAKE_CHARGE, "NL"),
        id="ammr-transit-before-entry",
    ),
    pytest.param(
        ("Dublin III Art. 13 before Art. 14: entry first", DIII,
         situation(visa_waived_entry_state="AT"), (received("IT", IRR, D(2025, 3, 1)),),
         Criterion.IRREGULAR_ENTRY, Procedure.TAKE_CHARGE, "IT"),
        id="dublin3-entry-before-visa-waiver",
    ),
    pytest.param(
        ("AMMR Art. 29 before Art. 31", AMMR,
         situation(documents=(VISA,), visa_waived_entry_state="AT"), (),
         Criterion.DOCUMENTS, Procedure.TAKE_CHARGE, "ES"),
        id="ammr-documents-before-visa-waiver",
    ),
]  # fmt: skip


@pytest.mark.parametrize("row", PROPOSE)
def test_one_criteria_order_per_regime(row: tuple[object, ...]) -> None:
    article, date, facts, hits, criterion, procedure, state = row
    assert isinstance(date, dt.date) and isinstance(facts, ApplicantSituation)
    case = DublinCase("DE", date, date, facts, hits)  # type: ignore[arg-type]
    proposal = propose(case)
    assert (proposal.criterion, proposal.procedure, proposal.responsible_state) == (
        criterion,
        procedure,
        state,
    ), article


@pytest.mark.parametrize(
    "argv",
    [
        ["resolve", "--coordinator", "h:1", "--config", "x.toml", "--candidates", "c.json",
         "--verdicts", "v.json"],
        ["lookup", "--coordinator", "h:1", "--config", "x.toml", "--state", "DE",
         "--unit", "u", "--operator", "o", "--legal-basis", "b", "--case-reference", "r",
         "--template", "t.npy"],
    ],
    ids=["resolve", "lookup"],
)  # fmt: skip
def test_the_application_date_is_never_defaulted(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """DOMAIN.md section 3: the application date is always given, never assumed."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "--application-date" in capsys.readouterr().err


CONSEQUENCES = [
    pytest.param(
        DIII, (received("IT", IRR, D(2025, 3, 1)),), "take_charge_request_after_application",
        ("makes DE responsible", "Art. 21(1)"), ("2 months", "Art. 22(1)", "acceptance",
                                                 "Art. 22(7)", "6 months", "Art. 29(1)"),
        id="dublin3-take-charge",
    ),
    pytest.param(
        DIII, (received("FR", APP, D(2025, 5, 1)),), "take_back_request_after_hit",
        ("makes DE responsible", "Art. 23(3)"), ("2 weeks", "Art. 25(1)", "acceptance",
                                                 "Art. 25(2)", "6 months", "Art. 29(1)"),
        id="dublin3-take-back",
    ),
    pytest.param(
        AMMR, (received("IT", IRR, D(2026, 3, 1)),), "take_charge_request_after_hit",
        ("makes DE responsible", "Art. 39(1)"), ("2 weeks", "Art. 40(2)", "acceptance",
                                                 "Art. 42(1)", "6 months"),
        id="ammr-take-charge",
    ),
    pytest.param(
        AMMR, (received("FR", APP, D(2026, 5, 1)),), "take_back_notification_after_hit",
        ("does not end", "Art. 41(1)"), ("2 weeks", "Art. 41(3)", "confirmation",
                                         "Art. 42(1)", "6 months"),
        id="ammr-take-back",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("date", "hits", "name", "consequence", "then"), CONSEQUENCES)
def test_each_deadline_says_what_missing_it_means_and_what_follows(
    date: dt.date,
    hits: tuple[ReceivedHit, ...],
    name: str,
    consequence: tuple[str, ...],
    then: tuple[str, ...],
) -> None:
    """DOMAIN.md section 3: each clock with its consequence (a missed take charge or take
    back request makes the requesting state responsible; a late AMMR take back notification
    does not end the other state's obligation), then the requested state's reply deadline,
    what its silence counts as, the transfer decision and the transfer deadline."""
    proposal = propose(DublinCase("DE", date, date, ApplicantSituation(), hits))
    (deadline,) = [d for d in proposal.deadlines if d.name == name]
    for words in consequence:
        assert words in deadline.consequence, deadline.consequence
    for words in then:
        assert words in deadline.then, deadline.then


@pytest.mark.parametrize(
    ("date", "present", "absent"),
    [
        (DIII, {"five_month_stay"}, {"diplomas", "relocation"}),
        (AMMR, {"diplomas", "relocation"}, {"five_month_stay"}),
    ],
    ids=["dublin3", "ammr"],
)
def test_every_proposal_carries_the_checklist_of_what_the_engine_cannot_decide(
    date: dt.date, present: set[str], absent: set[str]
) -> None:
    """DOMAIN.md section 3: best interests, consent, dependent persons, discretionary
    clauses, systemic flaws, Dublin III 13(2) five-month stay, diplomas (AMMR Art. 30),
    cessation, relocation (AMMR Art. 33(3)), detention: on every proposal, whatever decided."""
    common = {
        "best_interests", "consent", "dependent_persons", "discretionary_clauses",
        "systemic_flaws", "cessation", "detention",
    }  # fmt: skip
    for hits in ((), (received("IT", IRR, date - dt.timedelta(days=100)),)):
        proposal = propose(DublinCase("DE", date, date, ApplicantSituation(), hits))
        codes = {item.code for item in proposal.checklist}
        assert common | present <= codes and not codes & absent
        assert all(item.text for item in proposal.checklist)


def _member(state: str) -> FamilyMember:
    return FamilyMember(state, Relation.SIBLING, FamilyStatus.LEGALLY_PRESENT)


UNDECIDED = [
    pytest.param(
        ("Dublin III Art. 13(1): two crossings on the same day", DIII, situation(),
         (received("IT", IRR, D(2025, 3, 1)), received("GR", IRR, D(2025, 3, 1))),
         Criterion.IRREGULAR_ENTRY, ("GR", "IT")),
        id="same-day-crossings-no-state",
    ),
    pytest.param(
        ("AMMR Art. 36: two earlier applications on the same day", AMMR, situation(),
         (received("FR", APP, D(2026, 5, 1)), received("BE", APP, D(2026, 5, 1))),
         Criterion.FIRST_APPLICATION, ("BE", "FR")),
        id="same-day-applications-no-state",
    ),
    pytest.param(
        ("Dublin III Art. 8(3): siblings in two states, the child's best interests decide",
         DIII, situation(unaccompanied_minor=True, family=(_member("BE"), _member("AT"))), (),
         Criterion.UNACCOMPANIED_MINOR, ("AT", "BE")),
        id="minor-family-in-two-states-best-interests",
    ),
]  # fmt: skip


@pytest.mark.parametrize("row", UNDECIDED)
def test_no_state_is_proposed_where_an_official_must_choose(row: tuple[object, ...]) -> None:
    """Same-day ties name no state, only the candidates; an unaccompanied minor's family in
    several states is the child's best interests, decided by an official, never an
    alphabetical order (DOMAIN.md section 3)."""
    article, date, facts, hits, criterion, candidates = row
    assert isinstance(date, dt.date) and isinstance(facts, ApplicantSituation)
    proposal = propose(DublinCase("DE", date, date, facts, hits))  # type: ignore[arg-type]
    assert proposal.criterion == criterion, article
    assert proposal.responsible_state == "" and proposal.candidates == candidates, article
    assert "official" in proposal.explanation and all(c in proposal.explanation for c in candidates)


def test_minor_family_in_one_state_still_names_it() -> None:
    facts = situation(unaccompanied_minor=True, family=(_member("AT"), _member("AT")))
    proposal = propose(DublinCase("DE", DIII, DIII, facts, ()))
    assert (proposal.responsible_state, proposal.candidates) == ("AT", ())


@pytest.mark.parametrize(
    ("waived_here", "state", "procedure"),
    [(False, "AT", Procedure.TAKE_CHARGE), (True, "DE", Procedure.NONE)],
    ids=["art-14-1", "art-14-2-visa-also-waived-here"],
)
def test_visa_waived_entry_does_not_apply_when_also_waived_here(
    waived_here: bool, state: str, procedure: Procedure
) -> None:
    """Dublin III Art. 14(2): a person who needs no visa in the requesting state either is
    that state's responsibility, not the state of visa-waived entry's."""
    facts = situation(visa_waived_entry_state="AT", visa_waived_in_requesting_state=waived_here)
    proposal = propose(DublinCase("DE", DIII, DIII, facts, ()))
    assert (proposal.responsible_state, proposal.procedure) == (state, procedure)
    if waived_here:
        assert "Art. 14(2)" in proposal.basis


@pytest.mark.parametrize(
    ("born", "captured", "enrolled"),
    [
        (D(2012, 1, 1), D(2026, 1, 1), True),  # 14 under 603/2013 (Art. 9(1), 14(1))
        (D(2012, 1, 2), D(2026, 1, 1), False),  # 13: refused under 603/2013
        (D(2015, 1, 1), D(2026, 6, 12), True),  # 11 under the recast (minimum 6)
        (D(2015, 1, 1), D(2026, 6, 11), False),  # the same child a day before the recast
    ],
    ids=["603-14", "603-13-refused", "recast-11", "603-11-refused"],
)
def test_the_minimum_age_follows_the_regime_of_the_capture(
    born: dt.date, captured: dt.date, enrolled: bool
) -> None:
    """DOMAIN.md section 1: minimum age 6 under the recast, 14 under Reg. 603/2013."""
    from fedmatch.errors import InvalidInput
    from node.retention import check_enrolment_age

    if enrolled:
        check_enrolment_age(born, False, captured)
    else:
        with pytest.raises(InvalidInput, match="under 14"):
            check_enrolment_age(born, False, captured)


@pytest.mark.parametrize(
    ("status", "basis"),
    [
        (EarlierApplication.UNDER_EXAMINATION, "Art. 18(1)(b)"),
        (EarlierApplication.WITHDRAWN, "Art. 18(1)(c)"),
        (EarlierApplication.REJECTED, "Art. 18(1)(d)"),
        (EarlierApplication.WITHDRAWN_DURING_DETERMINATION, "Art. 20(5)"),
        (EarlierApplication.UNKNOWN, "Art. 18(1)(b), (c) or (d)"),
    ],
    ids=lambda v: str(v),
)
def test_the_take_back_basis_is_exact(status: EarlierApplication, basis: str) -> None:
    """Dublin III: the status of the earlier application gives the exact basis of the take
    back request; when it is not given, the basis says so and the checklist asks for it."""
    facts = situation(earlier_application=status)
    hits = (received("FR", APP, D(2025, 5, 1)),)
    proposal = propose(DublinCase("DE", DIII, DIII, facts, hits))
    assert proposal.procedure is Procedure.TAKE_BACK
    assert proposal.basis.endswith(basis), proposal.basis
    asked = "earlier_application_status" in {c.code for c in proposal.checklist}
    assert asked == (status is EarlierApplication.UNKNOWN)


def test_the_case_file_carries_the_new_inputs_to_the_case() -> None:
    """The case file's earlier_application and visa_waived_in_requesting_state reach the
    coordinator's case; a wrong value is refused before anything is sent, and again there."""
    from coordinator.casework import facts_from_pb
    from fedmatch.errors import InvalidInput
    from fedmatch.protocol.casefile import case_inputs_from_json
    from fedmatch.rpc.v1 import coordinator_pb2 as cpb

    inputs = case_inputs_from_json(
        {"earlier_application": "rejected", "visa_waived_in_requesting_state": True}
    )
    facts = facts_from_pb(inputs)
    assert facts.situation.earlier_application is EarlierApplication.REJECTED
    assert facts.situation.visa_waived_in_requesting_state is True
    with pytest.raises(InvalidInput, match="earlier_application"):
        case_inputs_from_json({"earlier_application": "lost"})
    with pytest.raises(InvalidInput, match="earlier_application"):
        facts_from_pb(cpb.CaseInputs(earlier_application="lost"))
    with pytest.raises(InvalidInput, match="visa_waived_in_requesting_state"):
        case_inputs_from_json({"visa_waived_in_requesting_state": "yes"})
