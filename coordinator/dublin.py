"""The Dublin "first entry" responsibility rule, as the coordinator applies it to hit details.

This module owns the one piece of the Dublin criteria hierarchy that the federation's hits can
speak to (``shared/docs/DOMAIN.md`` section 3):

* irregular entry: the state whose external border was crossed irregularly is responsible for
  12 months after the crossing under Dublin III (Regulation (EU) No 604/2013, Art. 13(1)), for
  20 months under the AMMR (Regulation (EU) 2024/1351, Art. 33(1)), which applies to
  applications registered on or after 2026-07-01;
* search-and-rescue disembarkation (AMMR only, Art. 33(2)): the state of disembarkation is
  responsible for 12 months;
* take back: an earlier application in another state (Dublin III Art. 18(1)(b); AMMR
  Art. 36(1)(b) with a take back notification under Art. 41).

The criteria that come before irregular entry (family, residence documents and visas) cannot
be read from biometric hits, so they are not decided here: :mod:`coordinator.case` applies the
whole criteria order, with the requesting authority's inputs, and calls :func:`decide` for the
hit-based rules. :func:`decide` is pure: it only
proposes a responsible state with its evidence, for an official to confirm, and it must only
be given hits that trained experts have verified (Eurodac Art. 38(4), AI Act Art. 14(5)).
The :class:`Decision` it returns holds record metadata only, never templates or scores.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from fedmatch.dates import add_months
from fedmatch.domain import Category, HitDetail, check_member_state
from fedmatch.errors import InvalidInput

__all__ = [
    "AMMR_START",
    "Decision",
    "Procedure",
    "Regime",
    "Rule",
    "add_months",
    "decide",
    "regime_for",
]


class Regime(enum.StrEnum):
    """The regulation that governs an application, by its registration date."""

    DUBLIN_III = "dublin_iii"  # Regulation (EU) No 604/2013
    AMMR = "ammr"  # Regulation (EU) 2024/1351


class Procedure(enum.StrEnum):
    """What the requesting state has to do next."""

    TAKE_CHARGE = "take_charge"
    TAKE_BACK = "take_back"
    NONE = "none"


class Rule(enum.StrEnum):
    """The criterion that named the responsible state."""

    IRREGULAR_ENTRY = "irregular_entry"  # Dublin III Art. 13(1) / AMMR Art. 33(1)
    SAR_DISEMBARKATION = "sar_disembarkation"  # AMMR only, Art. 33(2): 12 months
    EARLIER_APPLICATION = "earlier_application"  # take back: earlier application elsewhere
    NO_OTHER_STATE = "no_other_state"


AMMR_START: dt.date = dt.date(2026, 7, 1)
"""Applications registered on or after this day are under the AMMR."""

# Responsibility windows in calendar months, per regime and category of the deciding record.
_WINDOWS: dict[Regime, dict[Category, int]] = {
    Regime.DUBLIN_III: {Category.IRREGULAR_CROSSING: 12},
    Regime.AMMR: {Category.IRREGULAR_CROSSING: 20, Category.SAR_DISEMBARKED: 12},
}

# AMMR Art. 33(2) applies "notwithstanding paragraph 1": a qualifying disembarkation decides
# before any irregular crossing, whatever their dates (lower ranks first).
_PRECEDENCE: dict[Category, int] = {Category.SAR_DISEMBARKED: 0, Category.IRREGULAR_CROSSING: 1}

_ENTRY_RULES: dict[Category, Rule] = {
    Category.IRREGULAR_CROSSING: Rule.IRREGULAR_ENTRY,
    Category.SAR_DISEMBARKED: Rule.SAR_DISEMBARKATION,
}

_REGIME_NAMES: dict[Regime, str] = {
    Regime.DUBLIN_III: "Dublin III (Reg. 604/2013)",
    Regime.AMMR: "the AMMR (Reg. 2024/1351)",
}

_ARTICLES: dict[tuple[Regime, Rule], str] = {
    (Regime.DUBLIN_III, Rule.IRREGULAR_ENTRY): "Art. 13(1) (period under Art. 42)",
    (Regime.AMMR, Rule.IRREGULAR_ENTRY): "Art. 33(1)",
    (Regime.AMMR, Rule.SAR_DISEMBARKATION): "Art. 33(2)",
    (Regime.DUBLIN_III, Rule.EARLIER_APPLICATION): "Art. 18(1)(b)",
    (Regime.AMMR, Rule.EARLIER_APPLICATION): "Art. 36(1)(b)",
}

_LABELS: dict[Rule, str] = {
    Rule.IRREGULAR_ENTRY: "irregular entry",
    Rule.SAR_DISEMBARKATION: "search-and-rescue disembarkation",
    Rule.EARLIER_APPLICATION: "earlier application",
}

_EVENTS: dict[Rule, str] = {
    Rule.IRREGULAR_ENTRY: "irregular border crossing",
    Rule.SAR_DISEMBARKATION: "disembarkation",
    Rule.EARLIER_APPLICATION: "application",
}


def regime_for(application_date: dt.date) -> Regime:
    """Return the regime of an application registered on ``application_date``."""
    _check_date(application_date, "application_date")
    return Regime.AMMR if application_date >= AMMR_START else Regime.DUBLIN_III


@dataclass(frozen=True)
class Decision:
    """A proposed responsible state with its evidence, for an official to confirm."""

    requesting_state: str
    application_date: dt.date
    regime: Regime
    rule: Rule
    procedure: Procedure
    responsible_state: str | None  # None only for NO_OTHER_STATE
    evidence: tuple[HitDetail, ...]  # deciding record first, then its state's other support
    considered: int  # how many hits were given
    tie: bool  # another state had a qualifying record of the same deciding date
    explanation: str
    # On a tie, every state with a qualifying record of the deciding date (the official
    # chooses among them: no order of codes decides); empty otherwise.
    rivals: tuple[str, ...] = ()


def decide(requesting_state: str, application_date: dt.date, hits: Sequence[HitDetail]) -> Decision:
    """Propose the state responsible for an application from verified hit details.

    Rules, in order:

    1. Regime: an application registered on or after 2026-07-01 (:data:`AMMR_START`) is under
       the AMMR (Reg. 2024/1351), an earlier one under Dublin III (Reg. 604/2013).
    2. Hits whose ``event_date`` is after ``application_date`` are ignored: they cannot be a
       prior entry or application. They still count in ``considered``.
    3. First, take back: the earliest ``applicant`` hit in a state other than the requesting
       state (no window) gives rule EARLIER_APPLICATION, procedure TAKE_BACK. An earlier
       application is not a criterion: it comes before every one, entry included (Dublin
       III Art. 18(1)(b)-(d), 20(5); CJEU C-582/17 *H. and R.*: the second state does not
       apply the criteria itself; AMMR Art. 36(1)(b) and 38, by take back notification).
    4. Otherwise irregular entry (take charge): an ``irregular_crossing`` hit in any state,
       the requesting state included, qualifies while the application is inside its window
       of 12 months (Dublin III Art. 13(1)) or 20 months (AMMR Art. 33(1)). Under the AMMR a
       ``sar_disembarked`` hit also qualifies, with a 12-month window, and it applies
       *notwithstanding* 33(1) (Art. 33(2)): a qualifying disembarkation decides before any
       crossing, whatever the dates; under Dublin III it does not qualify. The window ends
       on ``end = add_months(event_date, window)`` and ``end`` itself is still inside under
       both regimes: Dublin III computes periods under its own Art. 42 (a period in months
       ends at the end of the day with the same date as the event, the anniversary), the
       AMMR ceases responsibility for an application registered "more than 20 (12) months
       after". The earliest qualifying hit of the deciding rule decides: rule
       IRREGULAR_ENTRY or SAR_DISEMBARKATION, procedure TAKE_CHARGE, responsible state its
       member state. If that is the requesting state itself, the procedure is NONE (no
       transfer) and the rule stays as it is.
    5. Otherwise NO_OTHER_STATE: procedure NONE, no responsible state, no evidence. The
       criteria that biometric hits cannot show (family, documents, visas) remain for the
       official to check in every case.

    Ties: qualifying hits are ordered by event date, then earlier capture date, then member
    state code alphabetically, then reference number (then handle, so that the order never
    depends on the order of ``hits``); the first decides. ``tie`` is True when a qualifying
    hit of a different state has the same event date as the deciding hit.

    Evidence: the deciding hit first, then the other qualifying hits of the responsible state
    (same rule) in the order above.

    Only hits that trained experts have verified may be passed in (Eurodac Art. 38(4), AI Act
    Art. 14(5)); the result is a proposal for an official to confirm.

    Raises InvalidInput if ``requesting_state`` is not a member state, ``application_date`` is
    not a calendar date, or a hit is not a HitDetail with calendar dates.
    """
    if not isinstance(requesting_state, str):
        raise InvalidInput("requesting_state must be an ISO 3166-1 alpha-2 code such as 'DE'")
    check_member_state(requesting_state, "requesting_state")
    regime = regime_for(application_date)
    for hit in hits:
        if not isinstance(hit, HitDetail):
            raise InvalidInput("hits must be hit details")
        _check_date(hit.event_date, "hit event_date")
        _check_date(hit.capture_date, "hit capture_date")

    prior = [hit for hit in hits if hit.event_date <= application_date]

    # First, take back: an earlier application in another state is no criterion; it sends
    # the applicant back whatever an entry record says (Dublin III Art. 18(1)(b)-(d), 20(5);
    # CJEU C-582/17 H. and R.; AMMR Art. 36, 38).
    earlier = sorted(
        (
            hit
            for hit in prior
            if hit.category == Category.APPLICANT and hit.member_state != requesting_state
        ),
        key=_order,
    )
    if earlier:
        return _decision(
            requesting_state,
            application_date,
            regime,
            Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK,
            earlier,
            len(hits),
        )

    windows = _WINDOWS[regime]
    entries = sorted(
        (
            hit
            for hit in prior
            if hit.category in windows
            and add_months(hit.event_date, windows[hit.category]) >= application_date
        ),
        key=lambda hit: (_PRECEDENCE.get(hit.category, 1), *_order(hit)),
    )
    if entries:
        winner = entries[0]
        rule = _ENTRY_RULES[winner.category]
        own = winner.member_state == requesting_state
        procedure = Procedure.NONE if own else Procedure.TAKE_CHARGE
        # Only records of the deciding rule are its evidence and its rivals in a tie.
        same = [hit for hit in entries if hit.category == winner.category]
        return _decision(
            requesting_state, application_date, regime, rule, procedure, same, len(hits)
        )

    regime_name = _REGIME_NAMES[regime]
    entry_article = _ARTICLES[(regime, Rule.IRREGULAR_ENTRY)]
    back_article = _ARTICLES[(regime, Rule.EARLIER_APPLICATION)]
    explanation = (
        f"No other state is responsible on the {len(hits)} hit(s) given: none shows an "
        f"irregular entry within the window of {regime_name} {entry_article} or an earlier "
        f"application in another state ({back_article}) before {requesting_state}'s "
        f"application of {application_date.isoformat()}."
    )
    return Decision(
        requesting_state=requesting_state,
        application_date=application_date,
        regime=regime,
        rule=Rule.NO_OTHER_STATE,
        procedure=Procedure.NONE,
        responsible_state=None,
        evidence=(),
        considered=len(hits),
        tie=False,
        explanation=explanation,
    )


def _check_date(value: object, field: str) -> None:
    # datetime is a subclass of date but cannot be compared with one.
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise InvalidInput(f"{field} must be a calendar date")


def _order(hit: HitDetail) -> tuple[dt.date, dt.date, str, str, bytes]:
    return (hit.event_date, hit.capture_date, hit.member_state, hit.reference, hit.handle)


def _decision(
    requesting_state: str,
    application_date: dt.date,
    regime: Regime,
    rule: Rule,
    procedure: Procedure,
    qualifying: list[HitDetail],
    considered: int,
) -> Decision:
    """Build the decision for the first of ``qualifying`` (already in tie-break order)."""
    winner = qualifying[0]
    state = winner.member_state
    evidence = (winner, *(hit for hit in qualifying[1:] if hit.member_state == state))
    same_day = sorted({h.member_state for h in qualifying if h.event_date == winner.event_date})
    tie = len(same_day) > 1
    basis = f"{_REGIME_NAMES[regime]} {_ARTICLES[(regime, rule)]}"
    record = (
        f"{_EVENTS[rule]} record {winner.reference} of {state} "
        f"dated {winner.event_date.isoformat()}"
    )
    if rule is Rule.EARLIER_APPLICATION:
        reason = f"{_LABELS[rule]}: {record}"
    else:
        months = _WINDOWS[regime][winner.category]
        reason = (
            f"{_LABELS[rule]}: {record}, within {months} months before the "
            f"application of {application_date.isoformat()}"
        )
    if procedure is Procedure.NONE:
        action = "no transfer is needed"
    elif procedure is Procedure.TAKE_CHARGE:
        action = f"{requesting_state} should request {state} to take charge"
    elif regime is Regime.AMMR:
        action = f"{requesting_state} should send {state} a take back notification (Art. 41)"
    else:
        action = f"{requesting_state} should request {state} to take the applicant back"
    tie_note = (
        "; a record of another state has the same date and was ranked after this one by "
        "capture date, state code and reference"
        if tie
        else ""
    )
    explanation = f"{state} is responsible under {basis} ({reason}); {action}{tie_note}."
    return Decision(
        requesting_state=requesting_state,
        application_date=application_date,
        regime=regime,
        rule=rule,
        procedure=procedure,
        responsible_state=state,
        evidence=evidence,
        considered=considered,
        tie=tie,
        explanation=explanation,
        rivals=tuple(same_day) if tie else (),
    )
