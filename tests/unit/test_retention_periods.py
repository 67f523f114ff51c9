"""Retention periods by regime, category and resettlement basis, the day each period counts
from, and the early erasure of 603/2013 irregular-crossing records (DOMAIN.md section 1;
Eurodac recast Reg. 2024/1358 Art. 29; Reg. 603/2013 Art. 12, 16). Pure rules, exact days."""

from __future__ import annotations

import datetime as dt

import pytest

from fedmatch.domain import RESETTLEMENT_BASES, Category
from fedmatch.errors import InvalidInput
from node.retention import (
    LEFT_TERRITORY,
    RECAST_APPLIES_FROM,
    RESETTLEMENT_MONTHS,
    RESIDENCE_DOCUMENT_ISSUED,
    Regime,
    RetentionFacts,
    RetentionPolicy,
    check_resettlement_basis,
    early_erasure_reason,
)

D = dt.date
DAY = dt.timedelta(days=1)


def facts(
    category: Category, captured: dt.date, transmitted: dt.date, basis: str = ""
) -> RetentionFacts:
    return RetentionFacts(category, captured, transmitted, basis)


def assert_boundary(record: RetentionFacts, expires: dt.date) -> None:
    """Kept the day before the anniversary, erased on it and after (the module's convention)."""
    policy = RetentionPolicy()
    assert policy.rule(record).expires == expires
    assert not policy.expired(record, expires - DAY)
    assert policy.expired(record, expires)
    assert policy.expired(record, expires + DAY)


# --- the day a period counts from -----------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "captured", "transmitted", "expires"),
    [
        # The recast (captured from 2026-06-12) counts from transmission (Art. 29: "from the
        # date on which the biometric data were transmitted"): the enrolment day.
        pytest.param(Category.APPLICANT, D(2026, 7, 1), D(2026, 7, 3), D(2036, 7, 3),
                     id="recast-29(1)-applicant-10y"),
        pytest.param(Category.IRREGULAR_CROSSING, D(2026, 6, 12), D(2026, 6, 20),
                     D(2031, 6, 20), id="recast-29(6)-crossing-5y"),
        pytest.param(Category.ILLEGAL_STAY, D(2026, 7, 1), D(2026, 12, 5), D(2031, 12, 5),
                     id="recast-29(7)-illegal-stay-5y"),
        pytest.param(Category.SAR_DISEMBARKED, D(2026, 8, 30), D(2026, 8, 31),
                     D(2031, 8, 31), id="recast-29(8)-sar-5y"),
        pytest.param(Category.TEMPORARY_PROTECTION, D(2028, 2, 28), D(2028, 2, 29),
                     D(2029, 2, 28), id="recast-leap-day-clamps"),
        # 603/2013 (captured before 2026-06-12) counts from the date taken (Art. 12(1),
        # 16(1)), whenever the record was transmitted.
        pytest.param(Category.IRREGULAR_CROSSING, D(2026, 6, 11), D(2026, 6, 25),
                     D(2027, 12, 11), id="603-16(1)-crossing-18m-from-capture"),
        pytest.param(Category.IRREGULAR_CROSSING, D(2024, 2, 29), D(2024, 3, 4),
                     D(2025, 8, 29), id="603-16(1)-crossing-leap-capture"),
        pytest.param(Category.APPLICANT, D(2024, 2, 29), D(2024, 3, 1), D(2034, 2, 28),
                     id="603-12(1)-applicant-10y-clamps"),
        pytest.param(Category.IRREGULAR_CROSSING, D(2025, 8, 31), D(2025, 9, 1),
                     D(2027, 2, 28), id="603-16(1)-month-end-clamps"),
    ],
)  # fmt: skip
def test_recast_counts_from_transmission_603_2013_from_capture(
    category: Category, captured: dt.date, transmitted: dt.date, expires: dt.date
) -> None:
    assert_boundary(facts(category, captured, transmitted), expires)


def test_the_rule_says_its_regime_and_the_day_it_counts_from() -> None:
    policy = RetentionPolicy()
    before = RECAST_APPLIES_FROM - DAY
    old = policy.rule(facts(Category.IRREGULAR_CROSSING, before, RECAST_APPLIES_FROM))
    assert (old.regime, old.months, old.counted_from) == (Regime.EURODAC_2013, 18, before)
    assert old.name == "reg-603/2013:irregular_crossing:18m"
    new = policy.rule(facts(Category.APPLICANT, RECAST_APPLIES_FROM, D(2026, 6, 13)))
    assert (new.regime, new.counted_from) == (Regime.EURODAC_2024, D(2026, 6, 13))
    assert new.name == "reg-2024/1358-art29:applicant:120m"


def test_regime_is_chosen_by_capture_date() -> None:
    """DOMAIN.md section 1: 603/2013 governs records captured before 2026-06-12 (the recast
    applies from then, Art. 63), as does its minimum age (node.retention.minimum_age)."""
    policy = RetentionPolicy()
    assert policy.regime(RECAST_APPLIES_FROM - DAY) is Regime.EURODAC_2013
    assert policy.regime(RECAST_APPLIES_FROM) is Regime.EURODAC_2024


def test_illegal_stay_was_never_stored_under_603_2013() -> None:
    day = D(2025, 3, 3)
    assert RetentionPolicy().expired(facts(Category.ILLEGAL_STAY, day, day), day)


# --- resettlement by the article the data were taken under ----------------------------------


def test_every_resettlement_basis_has_a_period() -> None:
    assert set(RESETTLEMENT_MONTHS) == RESETTLEMENT_BASES


@pytest.mark.parametrize(
    ("basis", "months", "expires"),
    [
        pytest.param("18(2)(a)", 60, D(2031, 7, 2), id="art-29(3)-5y"),
        pytest.param("18(2)(b)", 36, D(2029, 7, 2), id="art-29(4)-3y"),
        pytest.param("18(2)(c)", 36, D(2029, 7, 2), id="art-29(4)-3y-c"),
        pytest.param("20", 60, D(2031, 7, 2), id="art-29(5)-5y"),
        # Art. 29(2): not recorded. Were one in a register, it is gone at the first run.
        pytest.param("18(1)", 0, D(2026, 7, 2), id="art-29(2)-not-recorded"),
    ],
)
def test_resettlement_retention_follows_its_basis(basis: str, months: int, expires: D) -> None:
    """Eurodac recast Art. 29(2)-(5), counted from transmission (2026-07-02)."""
    record = facts(Category.RESETTLEMENT, D(2026, 7, 1), D(2026, 7, 2), basis)
    rule = RetentionPolicy().rule(record)
    assert rule.months == months
    assert rule.name == f"reg-2024/1358-art29:resettlement:{basis}:{months}m"
    if months:
        assert_boundary(record, expires)
    else:
        assert RetentionPolicy().expired(record, D(2026, 7, 2))


def test_resettlement_under_603_2013_counts_its_basis_from_capture() -> None:
    """603/2013 had no resettlement category: the recast's period for the basis applies,
    counted from capture like every record of that regime."""
    record = facts(Category.RESETTLEMENT, D(2025, 1, 10), D(2026, 7, 1), "18(2)(b)")
    assert RetentionPolicy().rule(record).name == "reg-603/2013:resettlement:18(2)(b):36m"
    assert_boundary(record, D(2028, 1, 10))


def test_resettlement_without_a_basis_keeps_the_category_period() -> None:
    """A record enrolled before the basis was kept (register schema 3): the configured
    period of its category (5 years under the recast)."""
    record = facts(Category.RESETTLEMENT, D(2026, 7, 1), D(2026, 7, 2))
    assert RetentionPolicy().rule(record).name == "reg-2024/1358-art29:resettlement:60m"
    assert_boundary(record, D(2031, 7, 2))


def test_retention_facts_check_the_basis() -> None:
    with pytest.raises(InvalidInput, match="unknown resettlement_basis"):
        facts(Category.RESETTLEMENT, D(2026, 7, 1), D(2026, 7, 1), "18(3)")
    with pytest.raises(InvalidInput, match="only for resettlement"):
        facts(Category.APPLICANT, D(2026, 7, 1), D(2026, 7, 1), "20")


@pytest.mark.parametrize("basis", ["18(2)(a)", "18(2)(b)", "18(2)(c)", "20"])
def test_a_resettlement_record_with_a_recorded_basis_is_enrolled(basis: str) -> None:
    check_resettlement_basis(Category.RESETTLEMENT, basis)


def test_enrolment_refuses_18_1_and_a_missing_or_misplaced_basis() -> None:
    """Eurodac recast Art. 29(2): Art. 18(1) data are not recorded; the others' retention
    depends on their basis (29(3)-(5)), so a resettlement record must state it."""
    with pytest.raises(InvalidInput, match=r"not recorded: Art\. 29\(2\)"):
        check_resettlement_basis(Category.RESETTLEMENT, "18(1)")
    with pytest.raises(InvalidInput, match="resettlement_basis is required"):
        check_resettlement_basis(Category.RESETTLEMENT, "")
    with pytest.raises(InvalidInput, match="must be one of"):
        check_resettlement_basis(Category.RESETTLEMENT, "18(2)")
    with pytest.raises(InvalidInput, match="only for resettlement"):
        check_resettlement_basis(Category.IRREGULAR_CROSSING, "18(2)(a)")
    check_resettlement_basis(Category.APPLICANT, "")


# --- early erasure of 603/2013 irregular-crossing records -----------------------------------

TODAY = D(2026, 12, 5)


@pytest.mark.parametrize(
    ("regime", "category", "residence", "left", "reason"),
    [
        # Reg. 603/2013 Art. 16(2)(a): a residence document was issued.
        pytest.param(Regime.EURODAC_2013, Category.IRREGULAR_CROSSING, D(2026, 12, 1), None,
                     RESIDENCE_DOCUMENT_ISSUED, id="603-16(2)(a)-residence-document"),
        # Art. 16(2)(b): the person left the territory of the member states (today counts).
        pytest.param(Regime.EURODAC_2013, Category.IRREGULAR_CROSSING, None, TODAY,
                     LEFT_TERRITORY, id="603-16(2)(b)-left-territory"),
        pytest.param(Regime.EURODAC_2013, Category.IRREGULAR_CROSSING, None, TODAY + DAY,
                     None, id="603-left-tomorrow-not-yet"),
        pytest.param(Regime.EURODAC_2013, Category.IRREGULAR_CROSSING, None, None, None,
                     id="603-neither"),
        # Only irregular-crossing data (Art. 14) are erased so; applicants are not.
        pytest.param(Regime.EURODAC_2013, Category.APPLICANT, D(2026, 12, 1), TODAY, None,
                     id="603-applicant-kept"),
        # The recast marks a residence document (Art. 31(4)) instead of erasing.
        pytest.param(Regime.EURODAC_2024, Category.IRREGULAR_CROSSING, D(2026, 12, 1), TODAY,
                     None, id="recast-31(4)-marked-not-erased"),
    ],
)  # fmt: skip
def test_early_erasure_reason(
    regime: Regime,
    category: Category,
    residence: dt.date | None,
    left: dt.date | None,
    reason: str | None,
) -> None:
    got = early_erasure_reason(
        regime, category, residence_document_on=residence, left_territory_on=left, today=TODAY
    )
    assert got == reason
