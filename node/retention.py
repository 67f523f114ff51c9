"""How long a node keeps each record (DOMAIN.md section 1), and the minimum age at enrolment.

Two regimes, chosen by the record's event date: Regulation (EU) No 603/2013 (Eurodac, with
Dublin III) for events before the recast applies, Regulation (EU) 2024/1358 (the recast) from
then on. Each gives a storage period per category in months, counted from the capture date
(the regulations count "from the date on which the biometric data were taken / transmitted").

Boundary convention: a record captured on day D with a period of M months expires on
``add_months(D, M)`` (clamped to the end of a shorter month, so 2024-02-29 + 12 months is
2025-02-28). It is kept on every day before that date and erased by the first erasure run on
or after it: on the anniversary the full period has elapsed. A period of 0 months means the
regime does not store that category at all (the record expires the day it is captured).

Values checked against the regulation text (search of EUR-Lex copies, 2026-11-22):
2024/1358 Art. 29(1) applicants 10 years; Art. 29(3) resettlement (Art. 18(2)(a)) 5 years,
Art. 29(4) (Art. 18(2)(b), (c)) 3 years; Art. 29(2) data under Art. 18(1) are not recorded.
Everything else below is marked "to confirm" and is configurable in ``[retention]``.
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
    "MIN_AGE_YEARS",
    "MIN_AGE_YEARS_2013",
    "RECAST_APPLIES_FROM",
    "Regime",
    "RetentionPolicy",
    "RetentionRule",
    "add_months",
    "check_enrolment_age",
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
# 2024/1358 Art. 29: applicants 10 years (verified), resettlement 5 years (verified; 3 in
# the Art. 18(2)(b), (c) sub-cases, not distinguished here), irregular crossing, illegal
# stay and search-and-rescue 5 years (to confirm), temporary protection 1 year (to confirm).
_EURODAC_2024: dict[str, int] = {
    Category.APPLICANT.value: 120,
    Category.IRREGULAR_CROSSING.value: 60,
    Category.ILLEGAL_STAY.value: 60,
    Category.SAR_DISEMBARKED.value: 60,
    Category.RESETTLEMENT.value: 60,
    Category.TEMPORARY_PROTECTION.value: 12,
}
_LEGAL = {
    Regime.EURODAC_2013: "reg-603/2013",
    Regime.EURODAC_2024: "reg-2024/1358-art29",
}


@dataclass(frozen=True)
class RetentionRule:
    """The rule that applies to one record: its regime, period and expiry date."""

    regime: Regime
    category: Category
    months: int
    expires: dt.date

    @property
    def name(self) -> str:
        """How the rule appears in a receipt: ``reg-2024/1358-art29:applicant:120m``."""
        return f"{_LEGAL[self.regime]}:{self.category.value}:{self.months}m"


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

    def regime(self, event_date: dt.date) -> Regime:
        return Regime.EURODAC_2024 if event_date >= self.recast_from else Regime.EURODAC_2013

    def rule(self, category: Category, event_date: dt.date, capture_date: dt.date) -> RetentionRule:
        regime = self.regime(event_date)
        table = self.eurodac_2024 if regime is Regime.EURODAC_2024 else self.eurodac_2013
        months = table[category.value]
        return RetentionRule(regime, category, months, add_months(capture_date, months))

    def expired(
        self, category: Category, event_date: dt.date, capture_date: dt.date, today: dt.date
    ) -> bool:
        """Whether the record must be gone by ``today`` (see the module's boundary rule)."""
        return today >= self.rule(category, event_date, capture_date).expires


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
