"""How long a node keeps each record (DOMAIN.md section 1), when it erases one early, and the
minimum age at enrolment.

Two regimes, chosen by the record's capture date: Regulation (EU) No 603/2013 (Eurodac, with
Dublin III) for data taken before the recast applies, Regulation (EU) 2024/1358 (the recast)
from then on. Each gives a storage period per category in months, and each counts it from a
different day: 603/2013 from "the date on which the fingerprints were taken" (Art. 12(1),
16(1)): the capture date; the recast from "the date on which the biometric data were
transmitted" (Art. 29(1)-(9)): the day the record was enrolled in the node's register
(``enrolled_at``, its UTC date).

Boundary convention: a record whose period of M months starts on day D expires on
``add_months(D, M)`` (clamped to the end of a shorter month, so 2024-02-29 + 12 months is
2025-02-28). It is kept on every day before that date and erased by the first erasure run on
or after it: on the anniversary the full period has elapsed. A period of 0 months means the
regime does not store that record at all (it expires the day its period starts).

Resettlement data are kept by the article they were taken under (recast Art. 29(2)-(5)):
Art. 18(1) data are not recorded (29(2)), so a node refuses to enrol them
(:func:`check_resettlement_basis`); Art. 18(2)(a) 5 years (29(3)), 18(2)(b) and (c) 3 years
(29(4)), Art. 20 5 years (29(5)). A resettlement record enrolled before the basis was kept
(register schema 3 and older, basis "") keeps its category's configured period.

Early erasure (:func:`early_erasure_reason`): under 603/2013 an irregular-crossing record is
erased before its 18 months as soon as the person was issued a residence document or left
the territory of the member states (Art. 16(2)(a), (b); (c), citizenship, is an operator's
early erasure in node/lifecycle.py). The recast marks such data instead (Art. 31(4)).

Values checked against the regulation text (search of EUR-Lex copies, 2026-11-22 and
2026-12-05): 2024/1358 Art. 29(1) applicants 10 years; Art. 29(2)-(5) resettlement as above;
Art. 29(6)-(8) irregular crossing (Art. 22), illegal stay (23) and search and rescue (24)
5 years. Everything else below is marked "to confirm" and is configurable in ``[retention]``.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedmatch.dates import add_months
from fedmatch.domain import Category
from fedmatch.errors import ConfigError, InvalidInput

__all__ = [
    "ESTIMATED_AGE_MARGIN_MONTHS",
    "LEFT_TERRITORY",
    "MIN_AGE_YEARS",
    "MIN_AGE_YEARS_2013",
    "RECAST_APPLIES_FROM",
    "RESETTLEMENT_MONTHS",
    "RESIDENCE_DOCUMENT_ISSUED",
    "Regime",
    "RetentionFacts",
    "RetentionPolicy",
    "RetentionRule",
    "add_months",
    "check_enrolment_age",
    "check_resettlement_basis",
    "early_erasure_reason",
    "load_retention",
    "minimum_age",
]

# Reg. 2024/1358 Art. 63: applies from 12 June 2026.
RECAST_APPLIES_FROM = dt.date(2026, 6, 12)

# Reg. 2024/1358 Art. 15(1), 22(1), ...: biometric data of persons "of at least six years";
# Reg. 603/2013 Art. 9(1), 14(1): "of at least 14 years of age" (captures before the recast).
MIN_AGE_YEARS = 6
MIN_AGE_YEARS_2013 = 14
# How far an estimated birth date may be off, towards a younger age. A child who could be
# under 6 is treated as under 6 (DOMAIN.md section 1), so an estimate must clear 6 years by
# this margin. One year is a placeholder (to confirm with the age-assessment practice).
ESTIMATED_AGE_MARGIN_MONTHS = 12


class Regime(StrEnum):
    EURODAC_2013 = "eurodac_2013"
    EURODAC_2024 = "eurodac_2024"


# Months per category. 603/2013: Art. 12(1) applicants 10 years, Art. 16(1) irregular
# crossing 18 months, Art. 17 illegal stay is compared but never stored (to confirm); the
# other categories did not exist then and take the recast's values (to confirm).
_EURODAC_2013: dict[str, int] = {
    Category.APPLICANT.value: 120,
    Category.IRREGULAR_CROSSING.value: 18,
    Category.ILLEGAL_STAY.value: 0,
    Category.SAR_DISEMBARKED.value: 60,
    Category.RESETTLEMENT.value: 60,
    Category.TEMPORARY_PROTECTION.value: 12,
}
# 2024/1358 Art. 29: applicants 10 years (29(1)), irregular crossing, illegal stay and
# search-and-rescue 5 years (29(6)-(8)), all verified; temporary protection 1 year (to
# confirm). Resettlement: by its basis (RESETTLEMENT_MONTHS); the value here is for records
# enrolled without one (register schema 3 and older).
_EURODAC_2024: dict[str, int] = {
    Category.APPLICANT.value: 120,
    Category.IRREGULAR_CROSSING.value: 60,
    Category.ILLEGAL_STAY.value: 60,
    Category.SAR_DISEMBARKED.value: 60,
    Category.RESETTLEMENT.value: 60,
    Category.TEMPORARY_PROTECTION.value: 12,
}
# 2024/1358 Art. 29(2)-(5): resettlement and admission data by the article they were taken
# under. Art. 18(1) data are not recorded at all (29(2)): 0 months, and refused at enrolment.
# Verified, so not configurable. Applied under both regimes: 603/2013 had no such category.
RESETTLEMENT_MONTHS: Mapping[str, int] = {
    "18(1)": 0,  # Art. 29(2)
    "18(2)(a)": 60,  # Art. 29(3)
    "18(2)(b)": 36,  # Art. 29(4)
    "18(2)(c)": 36,  # Art. 29(4)
    "20": 60,  # Art. 29(5)
}
_NOT_RECORDED = "18(1)"

# Why a 603/2013 irregular-crossing record is erased early (Art. 16(2)(a), (b)); the
# reasons' names as the erasure receipt gives them.
RESIDENCE_DOCUMENT_ISSUED = "residence_document_issued"
LEFT_TERRITORY = "left_territory"

_LEGAL = {
    Regime.EURODAC_2013: "reg-603/2013",
    Regime.EURODAC_2024: "reg-2024/1358-art29",
}


@dataclass(frozen=True)
class RetentionFacts:
    """What a record's retention depends on: its category, the day its data were taken
    (capture), the day they were transmitted (enrolled) and, for resettlement, the article
    they were taken under ("" when not given)."""

    category: Category
    capture_date: dt.date
    transmitted_on: dt.date
    resettlement_basis: str = ""

    def __post_init__(self) -> None:
        basis = self.resettlement_basis
        if basis and basis not in RESETTLEMENT_MONTHS:
            raise InvalidInput(f"unknown resettlement_basis {basis[:16]!r}")
        if basis and self.category is not Category.RESETTLEMENT:
            raise InvalidInput("resettlement_basis is only for resettlement records")


@dataclass(frozen=True)
class RetentionRule:
    """The rule that applies to one record: its regime, period, the day the period counts
    from (capture under 603/2013, transmission under the recast) and its expiry date."""

    regime: Regime
    category: Category
    months: int
    counted_from: dt.date
    expires: dt.date
    resettlement_basis: str = ""

    @property
    def name(self) -> str:
        """How the rule appears in a receipt: ``reg-2024/1358-art29:applicant:120m``, with
        a resettlement record's basis: ``reg-2024/1358-art29:resettlement:18(2)(b):36m``."""
        basis = f"{self.resettlement_basis}:" if self.resettlement_basis else ""
        return f"{_LEGAL[self.regime]}:{self.category.value}:{basis}{self.months}m"


@dataclass(frozen=True)
class RetentionPolicy:
    recast_from: dt.date = RECAST_APPLIES_FROM
    eurodac_2013: Mapping[str, int] = field(default_factory=lambda: dict(_EURODAC_2013))
    eurodac_2024: Mapping[str, int] = field(default_factory=lambda: dict(_EURODAC_2024))
    # How often `node serve` runs the erasure job (it also runs once at start).
    job_interval_seconds: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("eurodac_2013", "eurodac_2024"):
            table: Mapping[str, int] = getattr(self, name)
            for category in Category:
                months = table.get(category.value)
                if months is None:
                    raise ConfigError(f"retention.{name}.{category.value} is required")
                if type(months) is not int or not 0 <= months <= 1200:
                    raise ConfigError(f"retention.{name}.{category.value}: months in 0..1200")
            unknown = set(table) - {c.value for c in Category}
            if unknown:
                raise ConfigError(f"retention.{name}: unknown category {sorted(unknown)[0]}")
        if not self.job_interval_seconds > 0:
            raise ConfigError("retention.job_interval_seconds must be positive")

    def regime(self, capture_date: dt.date) -> Regime:
        """603/2013 for data taken before the recast applies, the recast from then on."""
        return Regime.EURODAC_2024 if capture_date >= self.recast_from else Regime.EURODAC_2013

    def rule(self, record: RetentionFacts) -> RetentionRule:
        regime = self.regime(record.capture_date)
        if regime is Regime.EURODAC_2024:
            table, start = self.eurodac_2024, record.transmitted_on  # recast Art. 29
        else:
            table, start = self.eurodac_2013, record.capture_date  # 603/2013 Art. 12, 16
        basis = record.resettlement_basis
        months = RESETTLEMENT_MONTHS[basis] if basis else table[record.category.value]
        return RetentionRule(
            regime, record.category, months, start, add_months(start, months), basis
        )

    def expired(self, record: RetentionFacts, today: dt.date) -> bool:
        """Whether the record must be gone by ``today`` (see the module's boundary rule)."""
        return today >= self.rule(record).expires


def check_resettlement_basis(category: Category, basis: str) -> None:
    """Refuse to enrol a resettlement record without the article its data were taken under
    (its retention depends on it, recast Art. 29(2)-(5)), or one taken under Art. 18(1),
    which is not recorded (Art. 29(2)); and a basis on any other category."""
    if category is not Category.RESETTLEMENT:
        if basis:
            raise InvalidInput("resettlement_basis is only for resettlement records")
        return
    kept = ", ".join(b for b in sorted(RESETTLEMENT_MONTHS) if b != _NOT_RECORDED)
    if not basis:
        raise InvalidInput(
            f"resettlement_basis is required for a resettlement record ({kept}): it decides "
            "the retention (Eurodac recast Art. 29(3)-(5))"
        )
    if basis == _NOT_RECORDED:
        raise InvalidInput(
            "refused: resettlement data under Art. 18(1) are not recorded: Art. 29(2) "
            "(Eurodac recast)"
        )
    if basis not in RESETTLEMENT_MONTHS:
        raise InvalidInput(f"resettlement_basis must be one of: {kept}")


def early_erasure_reason(
    regime: Regime,
    category: Category,
    *,
    residence_document_on: dt.date | None,
    left_territory_on: dt.date | None,
    today: dt.date,
) -> str | None:
    """Why a record must be erased before its retention ends, or None.

    Reg. 603/2013 Art. 16(2): an irregular-crossing record (Art. 14) is erased as soon as the
    member state of origin knows the person was issued a residence document (a) or left the
    territory of the member states (b). A left-territory date after ``today`` is not a fact
    yet. The recast has no such erasure (only citizenship, as before): a residence document
    is a mark there (Art. 31(4)), and a departure a date the record carries; so recast records
    and other categories give None.
    """
    if regime is not Regime.EURODAC_2013 or category is not Category.IRREGULAR_CROSSING:
        return None
    if residence_document_on is not None and residence_document_on <= today:
        return RESIDENCE_DOCUMENT_ISSUED
    if left_territory_on is not None and left_territory_on <= today:
        return LEFT_TERRITORY
    return None


def minimum_age(capture_date: dt.date) -> int:
    """The minimum age at capture: 6 under the recast, 14 under Reg. 603/2013."""
    return MIN_AGE_YEARS if capture_date >= RECAST_APPLIES_FROM else MIN_AGE_YEARS_2013


def check_enrolment_age(birth_date: dt.date | None, estimated: bool, capture_date: dt.date) -> None:
    """Refuse a person under the minimum age at capture (:func:`minimum_age`), or one whose
    estimated age could be under it."""
    least = minimum_age(capture_date)
    if birth_date is None:
        raise InvalidInput(f"birth_date is required to enrol (minimum age {least} at capture)")
    if birth_date > capture_date:
        raise InvalidInput("birth_date is after capture_date")
    youngest = add_months(birth_date, ESTIMATED_AGE_MARGIN_MONTHS) if estimated else birth_date
    if capture_date < add_months(youngest, 12 * least):
        if estimated:
            raise InvalidInput(
                f"refused: the estimated age could be under {least} at capture "
                f"(a child who may be under {least} is not enrolled)"
            )
        raise InvalidInput(f"refused: the person is under {least} at capture")


def load_retention(path: Path | None) -> RetentionPolicy:
    """The ``[retention]`` table of a node's TOML file (defaults when absent)::

    [retention]
    recast_from = "2026-06-12"
    job_interval_seconds = 3600
    [retention.eurodac_2013]
    irregular_crossing = 18      # months; only the categories to change
    """
    if path is None:
        return RetentionPolicy()
    with path.open("rb") as fh:
        raw: Any = tomllib.load(fh).get("retention", {})
    if not isinstance(raw, dict):
        raise ConfigError("[retention] must be a table")
    known = {"recast_from", "job_interval_seconds", "eurodac_2013", "eurodac_2024"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"retention.{sorted(unknown)[0]}: unknown key")
    values: dict[str, Any] = {}
    if "recast_from" in raw:
        value = raw["recast_from"]
        try:
            if isinstance(value, dt.datetime):  # a TOML datetime is a date too: refuse it
                raise ValueError(value)
            values["recast_from"] = (
                value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
            )
        except ValueError:
            raise ConfigError("retention.recast_from must be a date (YYYY-MM-DD)") from None
    if "job_interval_seconds" in raw:
        try:
            values["job_interval_seconds"] = float(raw["job_interval_seconds"])
        except (TypeError, ValueError):
            raise ConfigError("retention.job_interval_seconds must be a number") from None
    for name, defaults in (("eurodac_2013", _EURODAC_2013), ("eurodac_2024", _EURODAC_2024)):
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"retention.{name} must be a table of months per category")
        values[name] = {**defaults, **table}
    return RetentionPolicy(**values)
