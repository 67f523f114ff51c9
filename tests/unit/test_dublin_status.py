"""Issue 17: what Eurodac's status of a record and the authority's inputs change in the Dublin
answer, one row per rule, each citing its article (``shared/docs/DOMAIN.md`` section 3).

- AMMR take back goes to the state indicated as responsible in Eurodac (AMMR Art. 36(1)(b),
  Eurodac recast Art. 16(1)); while none is indicated, to the state where the application
  was first registered, which conducts the determination (AMMR Art. 38(4));
- a record marked "protection granted" (Eurodac recast Art. 31(1)) elsewhere is no Dublin case:
  no state, no procedure, a flag (inadmissibility / readmission);
- AMMR Art. 33(3): no entry or disembarkation responsibility after a relocation;
- Dublin III Art. 12(4): expired documents count only where they enabled entry and the person
  has not left; beyond the grace period, the state where the application was lodged (second
  subparagraph); an unknown input gives a flag;
- after the request: the requested state's reply, the day its silence counts as acceptance or
  confirmation, the re-examination window (Reg. 1560/2003 Art. 5(2)), the transfer decision
  (AMMR Art. 42(1)) and the transfer (Dublin III Art. 29(1), AMMR Art. 46) as dated clocks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from coordinator.case import (
    ApplicantSituation,
    Criterion,
    DocumentKind,
    DublinCase,
    ReceivedHit,
    TravelDocument,
    propose,
)
from coordinator.dublin import Procedure, Rule, decide
from fedmatch.domain import Category, HitDetail, MarkKind

D = dt.date
IRR = Category.IRREGULAR_CROSSING
SAR = Category.SAR_DISEMBARKED
APP = Category.APPLICANT
DIII = D(2025, 9, 1)  # a Dublin III registration
AMMR = D(2026, 9, 1)  # an AMMR registration


def detail(state: str, category: Category, event: dt.date, **status: object) -> HitDetail:
    return HitDetail(
        member_state=state,
        handle=b"h" * 8,
        category=category,
        reference=f"{state}-{category.value}-{event.isoformat()}",
        event_date=event,
        event_place="somewhere",
        capture_date=event,
        transmitted_on=event,
        **status,  # type: ignore[arg-type]
    )


def case(date: dt.date, *hits: HitDetail, **situation: object) -> DublinCase:
    received = tuple(ReceivedHit(h, date) for h in hits)
    return DublinCase("DE", date, date, ApplicantSituation(**situation), received)  # type: ignore[arg-type]


# --- AMMR take back: to the state indicated as responsible -------------------------------


ADDRESSEE = [
    pytest.param(
        "AMMR Art. 36(1)(b), Eurodac recast Art. 16(1): the indicated state, not the applicant's",
        AMMR, (detail("FR", APP, D(2026, 5, 1), responsible_state="IT",
                      responsible_basis="AMMR Art. 33(1)"),),
        Procedure.TAKE_BACK, "IT", "Art. 36(1)(b)", "IT is indicated as responsible",
        id="ammr-indicated-state",
    ),
    pytest.param(
        "AMMR Art. 38(4): none indicated, the state of first registration determines",
        AMMR, (detail("FR", APP, D(2026, 5, 1)), detail("NL", APP, D(2026, 6, 1))),
        Procedure.TAKE_BACK, "FR", "Art. 38(4)", "no state is indicated as responsible",
        id="ammr-none-indicated",
    ),
    pytest.param(
        "AMMR Art. 36(1)(b): the requesting state itself indicated: no transfer",
        AMMR, (detail("FR", APP, D(2026, 5, 1), responsible_state="DE",
                      responsible_basis="AMMR Art. 16(2)"),),
        Procedure.NONE, "DE", "Art. 36(1)(b)", "DE is indicated as responsible",
        id="ammr-indicated-requesting-state",
    ),
    pytest.param(
        "Dublin III Art. 18(1): the earlier application's state (Eurodac 603/2013 indicates none)",
        DIII, (detail("FR", APP, D(2025, 5, 1)),),
        Procedure.TAKE_BACK, "FR", "Art. 18(1)", "",
        id="dublin3-earlier-application-state",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("article", "date", "hits", "procedure", "state", "basis", "says"), ADDRESSEE
)
def test_ammr_take_back_goes_to_the_state_indicated_in_eurodac(
    article: str,
    date: dt.date,
    hits: tuple[HitDetail, ...],
    procedure: Procedure,
    state: str,
    basis: str,
    says: str,
) -> None:
    proposal = propose(case(date, *hits))
    assert proposal.criterion is Criterion.FIRST_APPLICATION, article
    assert (proposal.procedure, proposal.responsible_state) == (procedure, state), article
    assert basis in proposal.basis, (article, proposal.basis)
    assert says in proposal.explanation, (article, proposal.explanation)


def test_conflicting_indications_name_no_state_only_candidates() -> None:
    """Two records indicating different responsible states: an official checks Eurodac; no
    order of codes decides."""
    proposal = propose(
        case(
            AMMR,
            detail("FR", APP, D(2026, 5, 1), responsible_state="IT"),
            detail("NL", APP, D(2026, 6, 1), responsible_state="ES"),
        )
    )
    assert proposal.responsible_state == ""
    assert proposal.candidates == ("ES", "IT")
    assert proposal.procedure is Procedure.TAKE_BACK


# --- protection granted elsewhere: no Dublin case ----------------------------------------


@pytest.mark.parametrize("date", [DIII, AMMR], ids=["dublin3", "ammr"])
def test_a_protection_marked_record_elsewhere_gives_no_dublin_proposal(date: dt.date) -> None:
    """Eurodac recast Art. 31(1): protection granted by FR; DOMAIN.md section 3: no Dublin
    case at all (inadmissibility / readmission), whatever else the hits show."""
    marked = detail(
        "FR", APP, date - dt.timedelta(days=400),
        mark=MarkKind.PROTECTION_GRANTED, marked_on=date - dt.timedelta(days=200),
    )  # fmt: skip
    entry = detail("IT", IRR, date - dt.timedelta(days=30))
    for situation in ({}, {"unaccompanied_minor": True}):
        proposal = propose(case(date, marked, entry, **situation))
        assert proposal.procedure is Procedure.PROTECTION_ELSEWHERE
        assert proposal.responsible_state == "" and proposal.candidates == ()
        assert proposal.deadlines == ()
        assert proposal.criterion is Criterion.PROTECTION_GRANTED
        codes = {item.code for item in proposal.checklist}
        assert "protection_granted" in codes
        assert "FR" in proposal.explanation and "inadmissib" in proposal.explanation
        assert marked in [e.hit for e in proposal.evidence if isinstance(e, ReceivedHit)]
    assert decide("DE", date, [marked, entry]).rule is Rule.PROTECTION_GRANTED


def test_a_residence_document_mark_is_no_protection() -> None:
    """Eurodac recast Art. 31(4): a residence document issued after an irregular crossing is
    not protection: the crossing still decides (the official weighs the document)."""
    crossing = detail(
        "IT", IRR, D(2026, 3, 1),
        mark=MarkKind.RESIDENCE_DOCUMENT, marked_on=D(2026, 4, 1),
    )  # fmt: skip
    proposal = propose(case(AMMR, crossing))
    assert (proposal.procedure, proposal.responsible_state) == (Procedure.TAKE_CHARGE, "IT")
    assert "residence_document_mark" in {item.code for item in proposal.checklist}


# --- AMMR Art. 33(3): relocation --------------------------------------------------------


@pytest.mark.parametrize("category", [IRR, SAR], ids=["entry", "disembarkation"])
def test_no_entry_responsibility_after_a_relocation(category: Category) -> None:
    """AMMR Art. 33(3) (and Art. 68(2)): 33(1) and 33(2) do not apply to a relocated person."""
    hit = detail("MT", category, D(2026, 5, 1), relocated_to="DE", relocated_on=D(2026, 6, 1))
    assert decide("DE", AMMR, [hit]).rule is Rule.NO_OTHER_STATE
    not_moved = replace(hit, relocated_to="", relocated_on=None)
    assert decide("DE", AMMR, [not_moved]).responsible_state == "MT"


# --- Dublin III Art. 12(4) ----------------------------------------------------------------


def _visa(expired: dt.date) -> TravelDocument:
    return TravelDocument(
        "IT", DocumentKind.SHORT_STAY_VISA, expired - dt.timedelta(days=30), expired
    )


WITHIN = D(2025, 5, 1)  # expired 4 months before DIII: within the 6-month grace
BEYOND = D(2024, 11, 1)  # expired 10 months before: beyond it

EXPIRED = [
    pytest.param(WITHIN, True, False, "IT", "Art. 12(4)", set(),
                 id="within-grace-entered-not-left"),
    pytest.param(WITHIN, None, None, "IT", "Art. 12(4)", {"expired_document_conditions"},
                 id="within-grace-unknown-flag"),
    pytest.param(WITHIN, True, True, "DE", "Art. 3(2)", set(),
                 id="within-grace-but-left"),
    pytest.param(WITHIN, False, False, "DE", "Art. 3(2)", set(),
                 id="within-grace-did-not-enable-entry"),
    pytest.param(BEYOND, True, False, "DE", "Art. 12(4) second subparagraph", set(),
                 id="beyond-grace-second-subparagraph"),
    pytest.param(BEYOND, None, False, "DE", "Art. 3(2)", {"expired_document_conditions"},
                 id="beyond-grace-unknown-flag"),
    pytest.param(BEYOND, True, True, "DE", "Art. 3(2)", set(),
                 id="beyond-grace-left"),
]  # fmt: skip


@pytest.mark.parametrize(("expired", "entered", "left", "state", "basis", "flags"), EXPIRED)
def test_dublin3_article_12_4_both_subparagraphs(
    expired: dt.date,
    entered: bool | None,
    left: bool | None,
    state: str,
    basis: str,
    flags: set[str],
) -> None:
    """Dublin III Art. 12(4): expired documents that "enabled him or her actually to enter"
    count "for such time as the applicant has not left"; expired beyond the grace period, the
    state where the application was lodged is responsible (second subparagraph)."""
    proposal = propose(
        case(
            DIII,
            documents=(_visa(expired),),
            expired_document_enabled_entry=entered,
            left_territory_since=left,
        )
    )
    assert proposal.responsible_state == state
    assert proposal.basis.endswith(basis), proposal.basis
    codes = {item.code for item in proposal.checklist}
    assert flags <= codes
    if not flags:
        assert "expired_document_conditions" not in codes
    if basis.endswith("second subparagraph"):
        assert proposal.criterion is Criterion.DOCUMENTS
        assert proposal.procedure is Procedure.NONE


def test_the_ammr_has_no_second_subparagraph() -> None:
    """AMMR Art. 29(4) counts expired documents for 3 years / 18 months, with no rule for
    older ones: a visa expired 2 years before an AMMR registration decides nothing."""
    proposal = propose(
        case(
            AMMR,
            documents=(_visa(D(2024, 8, 1)),),
            expired_document_enabled_entry=True,
            left_territory_since=False,
        )
    )
    assert proposal.basis.endswith("Art. 16(2)")


# --- after the request: replies, silence, re-examination, transfer ----------------------


FOLLOW = [
    pytest.param(
        DIII, (detail("IT", IRR, D(2025, 3, 1)),), "take_charge_request_after_hit",
        {"reply_due": D(2026, 1, 1), "silence_is_acceptance": D(2026, 1, 2),
         "reexamination_request_due": D(2026, 1, 22), "transfer_due": D(2026, 7, 2)},
        id="dublin3-take-charge",
    ),
    pytest.param(
        DIII, (detail("FR", APP, D(2025, 5, 1)),), "take_back_request_after_hit",
        {"reply_due": D(2025, 11, 15), "silence_is_acceptance": D(2025, 11, 16),
         "reexamination_request_due": D(2025, 12, 6), "transfer_due": D(2026, 5, 16)},
        id="dublin3-take-back",
    ),
    pytest.param(
        AMMR, (detail("IT", IRR, D(2026, 3, 1)),), "take_charge_request_after_hit",
        {"reply_due": D(2026, 10, 15), "silence_is_acceptance": D(2026, 10, 16),
         "transfer_decision_due": D(2026, 10, 30), "transfer_due": D(2027, 4, 16)},
        id="ammr-take-charge",
    ),
    pytest.param(
        AMMR, (detail("FR", APP, D(2026, 5, 1)),), "take_back_notification_after_hit",
        {"confirmation_due": D(2026, 9, 29), "silence_is_confirmation": D(2026, 9, 30),
         "transfer_decision_due": D(2026, 10, 14), "transfer_due": D(2027, 3, 30)},
        id="ammr-take-back",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("date", "hits", "name", "expected"), FOLLOW)
def test_what_follows_a_request_sent_on_its_last_day_is_dated(
    date: dt.date, hits: tuple[HitDetail, ...], name: str, expected: dict[str, dt.date]
) -> None:
    """Dublin III Art. 22(1), 22(7), 25(1), 25(2), 29(1); AMMR Art. 40, 41(3), 42(1), 46(1);
    Reg. 1560/2003 Art. 5(2): each follow-on clock, dated for a request sent on the deadline's
    last day (the latest the chain can run), with its basis and what it means."""
    proposal = propose(case(date, *hits))
    (deadline,) = [d for d in proposal.deadlines if d.name == name]
    steps = {step.name: step for step in deadline.follow_on}
    assert {name: steps[name].latest for name in expected} == expected
    assert all(step.basis and step.meaning for step in deadline.follow_on)
