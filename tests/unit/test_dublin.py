"""Table-driven tests of the Dublin "first entry" rule in coordinator.dublin."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from coordinator.dublin import (
    AMMR_START,
    Procedure,
    Regime,
    Rule,
    add_months,
    decide,
    regime_for,
)
from fedmatch.domain import Category, HitDetail
from fedmatch.errors import InvalidInput

D = dt.date
IRR = Category.IRREGULAR_CROSSING
SAR = Category.SAR_DISEMBARKED
APP = Category.APPLICANT


def hit(
    state: str,
    category: Category,
    event: dt.date,
    reference: str | None = None,
    capture: dt.date | None = None,
) -> HitDetail:
    """A hit detail; the reference defaults to STATE-category-date, capture to the event."""
    return HitDetail(
        member_state=state,
        handle=b"h" * 16,
        category=category,
        reference=reference or f"{state}-{category.value}-{event.isoformat()}",
        event_date=event,
        event_place="somewhere",
        capture_date=capture or event,
    )


@dataclass(frozen=True)
class Case:
    application: dt.date
    hits: tuple[HitDetail, ...]
    rule: Rule
    procedure: Procedure
    responsible: str | None
    evidence: tuple[str, ...] = ()
    tie: bool = False
    requester: str = "DE"
    regime: Regime | None = field(default=None)


CASES = [
    # --- Dublin III, 12-month window: crossing 2024-03-10 ends on 2025-03-10 ---
    pytest.param(
        Case(
            D(2025, 3, 9),
            (hit("IT", IRR, D(2024, 3, 10), "IT-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1",),
            regime=Regime.DUBLIN_III,
        ),
        id="dublin3-12m-day-before-end-inside",
    ),
    pytest.param(
        Case(
            D(2025, 3, 10),
            (hit("IT", IRR, D(2024, 3, 10), "IT-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1",),
            regime=Regime.DUBLIN_III,
        ),
        id="dublin3-12m-anniversary-inside-art-42",
    ),
    pytest.param(
        Case(
            D(2025, 3, 11),
            (hit("IT", IRR, D(2024, 3, 10), "IT-1"),),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
            regime=Regime.DUBLIN_III,
        ),
        id="dublin3-12m-day-after-end-outside",
    ),
    pytest.param(
        Case(
            D(2025, 2, 27),
            (hit("IT", IRR, D(2024, 2, 29), "IT-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1",),
        ),
        id="dublin3-leap-day-crossing-ends-feb-28-inside",
    ),
    pytest.param(
        Case(
            D(2025, 3, 1),
            (hit("IT", IRR, D(2024, 2, 29), "IT-1"),),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
        ),
        id="dublin3-leap-day-crossing-ends-feb-28-day-after-outside",
    ),
    # --- AMMR, 20-month window: crossing 2025-01-15 ends on 2026-09-15 ---
    pytest.param(
        Case(
            D(2026, 9, 14),
            (hit("GR", IRR, D(2025, 1, 15), "GR-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "GR",
            ("GR-1",),
            regime=Regime.AMMR,
        ),
        id="ammr-20m-day-before-end-inside",
    ),
    # AMMR Art. 33(1): responsibility ceases only if the application is registered "more
    # than 20 months after" the crossing, so the end date itself is still inside.
    pytest.param(
        Case(
            D(2026, 9, 15),
            (hit("GR", IRR, D(2025, 1, 15), "GR-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "GR",
            ("GR-1",),
            regime=Regime.AMMR,
        ),
        id="ammr-20m-on-end-inside",
    ),
    pytest.param(
        Case(
            D(2026, 9, 16),
            (hit("GR", IRR, D(2025, 1, 15), "GR-1"),),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
            regime=Regime.AMMR,
        ),
        id="ammr-20m-day-after-end-outside",
    ),
    # --- the AMMR switch: same crossing, 15 months before the application ---
    pytest.param(
        Case(
            D(2026, 6, 30),
            (hit("HR", IRR, D(2025, 4, 1), "HR-1"),),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
            regime=Regime.DUBLIN_III,
        ),
        id="switch-2026-06-30-dublin3-15m-outside",
    ),
    pytest.param(
        Case(
            D(2026, 7, 1),
            (hit("HR", IRR, D(2025, 4, 1), "HR-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "HR",
            ("HR-1",),
            regime=Regime.AMMR,
        ),
        id="switch-2026-07-01-ammr-15m-inside",
    ),
    # --- search-and-rescue disembarkation ---
    pytest.param(
        Case(
            D(2026, 7, 10),
            (hit("MT", SAR, D(2026, 1, 10), "MT-1"),),
            Rule.SAR_DISEMBARKATION,
            Procedure.TAKE_CHARGE,
            "MT",
            ("MT-1",),
            regime=Regime.AMMR,
        ),
        id="sar-ammr-counts",
    ),
    pytest.param(
        Case(
            D(2026, 6, 10),
            (hit("MT", SAR, D(2026, 1, 10), "MT-1"),),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
            regime=Regime.DUBLIN_III,
        ),
        id="sar-dublin3-ignored",
    ),
    pytest.param(
        Case(
            D(2026, 6, 10),
            (hit("MT", SAR, D(2026, 1, 10), "MT-1"), hit("FR", APP, D(2026, 2, 1), "FR-1")),
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            "FR",
            ("FR-1",),
        ),
        id="sar-dublin3-ignored-take-back-instead",
    ),
    pytest.param(
        Case(
            D(2027, 1, 9),
            (hit("MT", SAR, D(2026, 1, 10), "MT-1"),),
            Rule.SAR_DISEMBARKATION,
            Procedure.TAKE_CHARGE,
            "MT",
            ("MT-1",),
        ),
        id="sar-ammr-12m-day-before-end-inside",
    ),
    pytest.param(
        Case(
            D(2027, 1, 10),
            (hit("MT", SAR, D(2026, 1, 10), "MT-1"),),
            Rule.SAR_DISEMBARKATION,
            Procedure.TAKE_CHARGE,
            "MT",
            ("MT-1",),
        ),
        id="sar-ammr-12m-on-end-inside",
    ),
    pytest.param(
        Case(
            D(2027, 1, 11),
            (hit("MT", SAR, D(2026, 1, 10), "MT-1"),),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
        ),
        id="sar-ammr-12m-day-after-end-outside",
    ),
    pytest.param(
        Case(
            D(2027, 1, 11),
            (hit("MT", SAR, D(2026, 1, 10), "MT-1"), hit("IT", IRR, D(2026, 1, 20), "IT-1")),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1",),
        ),
        id="sar-expired-later-crossing-still-in-20m",
    ),
    pytest.param(
        Case(
            D(2026, 8, 1),
            (hit("IT", IRR, D(2026, 2, 1), "IT-1"), hit("MT", SAR, D(2026, 1, 10), "MT-1")),
            Rule.SAR_DISEMBARKATION,
            Procedure.TAKE_CHARGE,
            "MT",
            ("MT-1",),
        ),
        id="sar-earlier-than-crossing-decides",
    ),
    pytest.param(
        Case(
            D(2026, 8, 1),
            (
                hit("MT", IRR, D(2026, 2, 1), "MT-2"),
                hit("MT", SAR, D(2026, 1, 10), "MT-1"),
                hit("MT", SAR, D(2024, 1, 10), "MT-0"),
            ),
            Rule.SAR_DISEMBARKATION,
            Procedure.TAKE_CHARGE,
            "MT",
            ("MT-1",),
        ),
        id="sar-and-crossing-same-state-expired-sar-left-out-sar-rule-evidence-only",
    ),
    # --- ties on the deciding date ---
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("IT", IRR, D(2025, 5, 1), "IT-1", capture=D(2025, 5, 3)),
                hit("GR", IRR, D(2025, 5, 1), "GR-1", capture=D(2025, 5, 2)),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "GR",
            ("GR-1",),
            tie=True,
        ),
        id="tie-earlier-capture-wins",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("GR", IRR, D(2025, 5, 1), "GR-1", capture=D(2025, 5, 3)),
                hit("IT", IRR, D(2025, 5, 1), "IT-1", capture=D(2025, 5, 2)),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1",),
            tie=True,
        ),
        id="tie-earlier-capture-beats-alphabet",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("IT", IRR, D(2025, 5, 1), "IT-1", capture=D(2025, 5, 2)),
                hit("GR", IRR, D(2025, 5, 1), "GR-1", capture=D(2025, 5, 2)),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "GR",
            ("GR-1",),
            tie=True,
        ),
        id="tie-same-capture-alphabetical",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("IT", IRR, D(2025, 5, 1), "IT-2"),
                hit("IT", IRR, D(2025, 5, 1), "IT-1"),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1", "IT-2"),
            tie=False,
        ),
        id="same-date-same-state-by-reference-no-tie",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("IT", IRR, D(2025, 5, 2), "IT-1"),
                hit("GR", IRR, D(2025, 5, 1), "GR-1", capture=D(2025, 5, 9)),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "GR",
            ("GR-1",),
            tie=False,
        ),
        id="different-dates-earliest-event-wins-no-tie",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("IT", IRR, D(2024, 5, 1), "IT-OLD"),
                hit("GR", IRR, D(2025, 5, 1), "GR-1"),
                hit("IT", IRR, D(2024, 5, 1), "IT-OLD-2"),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "GR",
            ("GR-1",),
            tie=False,
        ),
        id="out-of-window-same-date-is-no-tie",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("FR", APP, D(2025, 5, 1), "FR-1"),
                hit("ES", APP, D(2025, 5, 1), "ES-1"),
            ),
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            "ES",
            ("ES-1",),
            tie=True,
        ),
        id="tie-take-back-alphabetical",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("DE", IRR, D(2025, 5, 1), "DE-1", capture=D(2025, 5, 1)),
                hit("AT", IRR, D(2025, 5, 1), "AT-1", capture=D(2025, 5, 4)),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.NONE,
            "DE",
            ("DE-1",),
            tie=True,
        ),
        id="tie-with-own-state-own-wins-by-capture",
    ),
    # --- several hits in one state ---
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("IT", IRR, D(2025, 2, 1), "IT-B"),
                hit("GR", IRR, D(2025, 2, 15), "GR-1"),
                hit("IT", IRR, D(2025, 3, 1), "IT-A"),
                hit("DE", APP, D(2025, 1, 5), "DE-APP"),  # the requester's own: no take back
                hit("IT", IRR, D(2024, 1, 1), "IT-OLD"),
                hit("IT", IRR, D(2025, 1, 1), "IT-C"),
            ),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-C", "IT-B", "IT-A"),
        ),
        id="several-in-one-state-earliest-decides-evidence-sorted",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("FR", APP, D(2025, 4, 1), "FR-2"),
                hit("ES", APP, D(2025, 3, 1), "ES-1"),
                hit("FR", APP, D(2025, 2, 1), "FR-1"),
                hit("FR", APP, D(2025, 10, 1), "FR-LATER"),
            ),
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            "FR",
            ("FR-1", "FR-2"),
        ),
        id="several-applications-in-one-state-take-back-evidence",
    ),
    # --- hits only in the requester's own state ---
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("DE", IRR, D(2025, 5, 1), "DE-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.NONE,
            "DE",
            ("DE-1",),
        ),
        id="own-irregular-crossing-own-state-no-transfer",
    ),
    pytest.param(
        Case(
            D(2026, 9, 1),
            (hit("IT", SAR, D(2026, 5, 1), "IT-1"),),
            Rule.SAR_DISEMBARKATION,
            Procedure.NONE,
            "IT",
            ("IT-1",),
            requester="IT",
        ),
        id="own-sar-disembarkation-own-state-no-transfer",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("DE", APP, D(2025, 5, 1), "DE-1"),),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
        ),
        id="own-applicant-only-no-other-state",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("DE", IRR, D(2025, 3, 1), "DE-1"), hit("IT", IRR, D(2025, 5, 1), "IT-1")),
            Rule.IRREGULAR_ENTRY,
            Procedure.NONE,
            "DE",
            ("DE-1",),
        ),
        id="own-crossing-before-other-state-crossing",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("DE", IRR, D(2025, 6, 1), "DE-1"), hit("IT", IRR, D(2025, 5, 1), "IT-1")),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1",),
        ),
        id="other-state-crossing-before-own-crossing",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("DE", APP, D(2025, 1, 1), "DE-1"), hit("NL", APP, D(2025, 5, 1), "NL-1")),
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            "NL",
            ("NL-1",),
        ),
        id="own-earlier-application-ignored-take-back-to-other",
    ),
    # --- take back ---
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("IT", IRR, D(2024, 1, 1), "IT-1"), hit("FR", APP, D(2024, 6, 1), "FR-1")),
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            "FR",
            ("FR-1",),
        ),
        id="crossing-out-of-window-take-back-elsewhere",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("IT", IRR, D(2025, 1, 1), "IT-1"), hit("FR", APP, D(2024, 6, 1), "FR-1")),
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            "FR",
            ("FR-1",),
        ),
        id="earlier-application-beats-crossing-in-window-c-582-17",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("SE", APP, D(2015, 6, 1), "SE-1"),),
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            "SE",
            ("SE-1",),
        ),
        id="take-back-has-no-window",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (
                hit("IT", Category.ILLEGAL_STAY, D(2025, 5, 1), "IT-1"),
                hit("FR", Category.RESETTLEMENT, D(2025, 5, 1), "FR-1"),
                hit("AT", Category.TEMPORARY_PROTECTION, D(2025, 5, 1), "AT-1"),
            ),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
        ),
        id="other-categories-do-not-decide",
    ),
    # --- records after the application date ---
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("IT", IRR, D(2025, 9, 2), "IT-1"), hit("FR", APP, D(2025, 10, 1), "FR-1")),
            Rule.NO_OTHER_STATE,
            Procedure.NONE,
            None,
        ),
        id="records-after-application-ignored",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("IT", IRR, D(2025, 9, 2), "IT-1"), hit("GR", IRR, D(2025, 8, 1), "GR-1")),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "GR",
            ("GR-1",),
        ),
        id="later-crossing-ignored-earlier-one-decides",
    ),
    pytest.param(
        Case(
            D(2025, 9, 1),
            (hit("IT", IRR, D(2025, 9, 1), "IT-1"),),
            Rule.IRREGULAR_ENTRY,
            Procedure.TAKE_CHARGE,
            "IT",
            ("IT-1",),
        ),
        id="crossing-on-application-day-counts",
    ),
    # --- nothing ---
    pytest.param(
        Case(D(2025, 9, 1), (), Rule.NO_OTHER_STATE, Procedure.NONE, None),
        id="no-hits",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_decide(case: Case) -> None:
    decision = decide(case.requester, case.application, case.hits)
    assert decision.rule is case.rule
    assert decision.procedure is case.procedure
    assert decision.responsible_state == case.responsible
    assert tuple(h.reference for h in decision.evidence) == case.evidence
    assert decision.tie is case.tie
    assert decision.considered == len(case.hits)
    assert decision.requesting_state == case.requester
    assert decision.application_date == case.application
    if case.regime is not None:
        assert decision.regime is case.regime


@pytest.mark.parametrize("case", CASES)
def test_decide_does_not_depend_on_hit_order(case: Case) -> None:
    forward = decide(case.requester, case.application, case.hits)
    backward = decide(case.requester, case.application, tuple(reversed(case.hits)))
    assert forward == backward


@pytest.mark.parametrize("case", CASES)
def test_explanation_names_rule_state_reference_and_date_only(case: Case) -> None:
    decision = decide(case.requester, case.application, case.hits)
    text = decision.explanation
    assert text.endswith(".")
    assert "\n" not in text
    assert "somewhere" not in text  # no event place, only what the rule needs
    assert "hhhh" not in text  # never the handle
    assert "Art. " in text
    if decision.evidence:
        deciding = decision.evidence[0]
        assert deciding.reference in text
        assert deciding.event_date.isoformat() in text
        assert deciding.member_state in text
        assert ("AMMR" in text) == (decision.regime is Regime.AMMR)
        assert ("Dublin III" in text) == (decision.regime is Regime.DUBLIN_III)


@pytest.mark.parametrize(
    ("application", "category", "rule", "article"),
    [
        pytest.param(D(2025, 9, 1), IRR, Rule.IRREGULAR_ENTRY, "Art. 13(1)", id="dublin3-13-1"),
        pytest.param(D(2026, 9, 1), IRR, Rule.IRREGULAR_ENTRY, "Art. 33(1)", id="ammr-33-1"),
        pytest.param(D(2026, 9, 1), SAR, Rule.SAR_DISEMBARKATION, "Art. 33(2)", id="ammr-33-2"),
        pytest.param(
            D(2025, 9, 1), APP, Rule.EARLIER_APPLICATION, "Art. 18(1)(b)", id="dublin3-18-1-b"
        ),
        pytest.param(
            D(2026, 9, 1),
            APP,
            Rule.EARLIER_APPLICATION,
            "Art. 38(4)",
            id="ammr-38-4-none-indicated",
        ),
    ],
)
def test_explanation_cites_article(
    application: dt.date, category: Category, rule: Rule, article: str
) -> None:
    event = application - dt.timedelta(days=30)
    decision = decide("DE", application, [hit("IT", category, event, "IT-1")])
    assert decision.rule is rule
    assert article in decision.explanation


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        pytest.param(D(2025, 1, 31), 1, D(2025, 2, 28), id="jan31-plus1-clamped"),
        pytest.param(D(2024, 1, 31), 1, D(2024, 2, 29), id="jan31-plus1-leap-year"),
        pytest.param(D(2024, 2, 29), 12, D(2025, 2, 28), id="leap-day-plus12-clamped"),
        pytest.param(D(2024, 2, 29), 48, D(2028, 2, 29), id="leap-day-plus48-leap-again"),
        pytest.param(D(2025, 3, 31), 1, D(2025, 4, 30), id="mar31-plus1-clamped"),
        pytest.param(D(2025, 8, 31), 20, D(2027, 4, 30), id="aug31-plus20-clamped"),
        pytest.param(D(2025, 1, 15), 20, D(2026, 9, 15), id="plus20-across-years"),
        pytest.param(D(2025, 11, 15), 2, D(2026, 1, 15), id="plus2-across-year-end"),
        pytest.param(D(2025, 3, 31), -1, D(2025, 2, 28), id="minus1-clamped"),
        pytest.param(D(2025, 3, 31), 0, D(2025, 3, 31), id="zero"),
    ],
)
def test_add_months(day: dt.date, months: int, expected: dt.date) -> None:
    assert add_months(day, months) == expected


def test_add_months_out_of_range_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        add_months(D(9999, 12, 1), 1)


@pytest.mark.parametrize(
    ("application", "regime"),
    [
        pytest.param(D(2013, 7, 19), Regime.DUBLIN_III, id="dublin3-early"),
        pytest.param(D(2026, 6, 30), Regime.DUBLIN_III, id="day-before-ammr"),
        pytest.param(AMMR_START, Regime.AMMR, id="ammr-first-day"),
        pytest.param(D(2030, 1, 1), Regime.AMMR, id="ammr-later"),
    ],
)
def test_regime_for(application: dt.date, regime: Regime) -> None:
    assert regime_for(application) is regime


@pytest.mark.parametrize(
    "state",
    [
        pytest.param("XX", id="unknown-code"),
        pytest.param("de", id="lowercase"),
        pytest.param("EL", id="eu-greece-code"),
        pytest.param("GB", id="not-a-member"),
        pytest.param("DEU", id="alpha-3"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_requesting_state_raises_invalid_input(state: str) -> None:
    with pytest.raises(InvalidInput):
        decide(state, D(2025, 9, 1), [hit("IT", IRR, D(2025, 5, 1))])


def test_non_string_requesting_state_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decide(None, D(2025, 9, 1), [])  # type: ignore[arg-type]


def test_datetime_application_date_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decide("DE", dt.datetime(2025, 9, 1, 12, 0), [hit("IT", IRR, D(2025, 5, 1))])


def test_non_hit_detail_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decide("DE", D(2025, 9, 1), ["IT-1"])  # type: ignore[list-item]


def test_invalid_input_is_not_a_bare_value_error() -> None:
    with pytest.raises(InvalidInput) as raised:
        decide("XX", D(2025, 9, 1), [])
    assert type(raised.value) is InvalidInput
