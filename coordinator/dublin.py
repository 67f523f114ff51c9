"""The Dublin "first entry" responsibility rule, as the coordinator applies it to hit details.

This module owns the one piece of the Dublin criteria hierarchy that the federation's hits can
speak to (``shared/docs/DOMAIN.md`` section 3):

* irregular entry: the state whose external border was crossed irregularly is responsible for
  12 months after the crossing under Dublin III (Regulation (EU) No 604/2013, Art. 13(1)), for
  20 months under the AMMR (Regulation (EU) 2024/1351, Art. 33(1)), which applies to
  applications registered on or after 2026-07-01;
* search-and-rescue disembarkation (AMMR only, Art. 33(2)): the state of disembarkation is
  responsible for 12 months;
* take back: an earlier application in another state (Dublin III Art. 18(1)(b); under the
  AMMR a take back notification (Art. 41) to the state indicated as responsible in Eurodac,
  Art. 36(1)(b) with Eurodac recast Art. 16(1), or while none is indicated to the state that
  first registered the application and conducts the determination, Art. 38(4));
* before all of them, a record marked "protection granted" (Eurodac recast Art. 31(1)) in
  another state: no Dublin case at all (inadmissibility or readmission, DOMAIN.md section 3).

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
from fedmatch.domain import Category, HitDetail, MarkKind, check_member_state
from fedmatch.errors import InvalidInput

__all__ = [
    "AMMR_START",
    "Decision",
    "Procedure",
    "Regime",
    "Rule",
    "add_months",
    "decide",
    "hit_order",
    "next_step",
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
    # Protection granted in another state: no Dublin request; the application may be
    # inadmissible, or the person readmitted (DOMAIN.md section 3).
    PROTECTION_ELSEWHERE = "protection_elsewhere"


class Rule(enum.StrEnum):
    """The criterion that named the responsible state."""

    IRREGULAR_ENTRY = "irregular_entry"  # Dublin III Art. 13(1) / AMMR Art. 33(1)
    SAR_DISEMBARKATION = "sar_disembarkation"  # AMMR only, Art. 33(2): 12 months
    EARLIER_APPLICATION = "earlier_application"  # take back: earlier application elsewhere
    PROTECTION_GRANTED = "protection_granted"  # Eurodac recast Art. 31(1) mark elsewhere
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

# AMMR take back: to the state Eurodac indicates as responsible (Art. 36(1)(b), Eurodac recast
# Art. 16(1)); while none is indicated, to the state that first registered the application and
# conducts the determination, which must take the applicant back (Art. 38(4)).
AMMR_INDICATED = "Art. 36(1)(b) (indicated in Eurodac, Reg. 2024/1358 Art. 16(1))"
AMMR_DETERMINING = "Art. 38(4)"

# Where the mark of protection granted elsewhere leads instead of a Dublin request.
_PROTECTION_TEXT: dict[Regime, str] = {
    Regime.DUBLIN_III: "Directive 2013/32/EU Art. 33(2)(a)",
    Regime.AMMR: "Reg. (EU) 2024/1348, inadmissibility where another member state granted "
    "protection",
}

_LABELS: dict[Rule, str] = {
    Rule.IRREGULAR_ENTRY: "irregular entry",
    Rule.SAR_DISEMBARKATION: "search-and-rescue disembarkation",
    Rule.EARLIER_APPLICATION: "earlier application",
    Rule.PROTECTION_GRANTED: "protection granted",
}

_EVENTS: dict[Rule, str] = {
    Rule.IRREGULAR_ENTRY: "irregular border crossing",
    Rule.SAR_DISEMBARKATION: "disembarkation",
    Rule.EARLIER_APPLICATION: "application",
    Rule.PROTECTION_GRANTED: "application",
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
    responsible_state: str | None  # None for NO_OTHER_STATE and PROTECTION_GRANTED
    evidence: tuple[HitDetail, ...]  # deciding record first, then its state's other support
    considered: int  # how many hits were given
    tie: bool  # another state had a qualifying record of the same deciding date
    explanation: str
    # On a tie, every state with a qualifying record of the deciding date, or (AMMR take
    # back) every state indicated as responsible when the records disagree: the official
    # chooses among them, no order of codes decides; empty otherwise.
    rivals: tuple[str, ...] = ()
    # The records behind the rivals (all of them, in order), for the official to weigh.
    tied: tuple[HitDetail, ...] = ()
    # The article that named the state, within its regime (e.g. "Art. 38(4)").
    article: str = ""


def decide(requesting_state: str, application_date: dt.date, hits: Sequence[HitDetail]) -> Decision:
    """Propose the state responsible for an application from verified hit details.

    Rules, in order:

    1. Regime: an application registered on or after 2026-07-01 (:data:`AMMR_START`) is under
       the AMMR (Reg. 2024/1351), an earlier one under Dublin III (Reg. 604/2013).
    2. Hits whose ``event_date`` is after ``application_date`` are ignored: they cannot be a
       prior entry or application. They still count in ``considered``.
    2a. Before anything else, a record of another state marked "protection granted"
       (Eurodac recast Art. 31(1), whatever its date: the status holds now) gives rule
       PROTECTION_GRANTED, procedure PROTECTION_ELSEWHERE and no responsible state: no
       Dublin case, the application may be inadmissible or the person readmitted.
    3. First, take back: the earliest ``applicant`` hit in a state other than the requesting
       state (no window) gives rule EARLIER_APPLICATION, procedure TAKE_BACK. An earlier
       application is not a criterion: it comes before every one, entry included (Dublin
       III Art. 18(1)(b)-(d), 20(5); CJEU C-582/17 *H. and R.*: the second state does not
       apply the criteria itself; AMMR Art. 36(1)(b) and 38, by take back notification).
       Under the AMMR the notification goes to the state indicated as responsible in Eurodac
       on those records (Art. 36(1)(b), Eurodac recast Art. 16(1); the requesting state
       itself: procedure NONE); while none is indicated, to the state of the earliest
       application, which conducts the determination (Art. 38(4)); records indicating
       different states: a tie among the indicated states, for an official.
    4. Otherwise irregular entry (take charge): an ``irregular_crossing`` hit in any state,
       the requesting state included, qualifies while the application is inside its window
       of 12 months (Dublin III Art. 13(1)) or 20 months (AMMR Art. 33(1)). Under the AMMR a
       ``sar_disembarked`` hit also qualifies, with a 12-month window, and it applies
       *notwithstanding* 33(1) (Art. 33(2)): a qualifying disembarkation decides before any
       crossing, whatever the dates; under Dublin III it does not qualify. Under the AMMR a
       record showing a relocation qualifies for neither (Art. 33(3)). The window ends
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

    # Protection granted in another state: no Dublin case, whatever else the hits show.
    protected = sorted(
        (
            hit
            for hit in hits
            if hit.mark is MarkKind.PROTECTION_GRANTED and hit.member_state != requesting_state
        ),
        key=hit_order,
    )
    if protected:
        return _protection(requesting_state, application_date, regime, protected, len(hits))

    # First, take back: an earlier application in another state is no criterion; it sends
    # the applicant back whatever an entry record says (Dublin III Art. 18(1)(b)-(d), 20(5);
    # CJEU C-582/17 H. and R.; AMMR Art. 36, 38).
    earlier = sorted(
        (
            hit
            for hit in prior
            if hit.category == Category.APPLICANT and hit.member_state != requesting_state
        ),
        key=hit_order,
    )
    if earlier and regime is Regime.AMMR:
        return _ammr_take_back(requesting_state, application_date, earlier, len(hits))
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
            # AMMR Art. 33(3): neither 33(1) nor 33(2) applies to a relocated person.
            and not (regime is Regime.AMMR and hit.relocated_to)
        ),
        key=lambda hit: (_PRECEDENCE.get(hit.category, 1), *hit_order(hit)),
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


def hit_order(hit: HitDetail) -> tuple[dt.date, dt.date, str, str, bytes]:
    """The tie-break order of hit records: event date, capture date, state code, reference,
    handle (never the order they were given in)."""
    return (hit.event_date, hit.capture_date, hit.member_state, hit.reference, hit.handle)


def _decision(
    requesting_state: str,
    application_date: dt.date,
    regime: Regime,
    rule: Rule,
    procedure: Procedure,
    qualifying: list[HitDetail],
    considered: int,
    article: str = "",
) -> Decision:
    """Build the decision for the first of ``qualifying`` (already in tie-break order);
    ``article`` overrides the rule's usual article."""
    article = article or _ARTICLES[(regime, rule)]
    winner = qualifying[0]
    state = winner.member_state
    evidence = (winner, *(hit for hit in qualifying[1:] if hit.member_state == state))
    same_day = sorted({h.member_state for h in qualifying if h.event_date == winner.event_date})
    tie = len(same_day) > 1
    basis = f"{_REGIME_NAMES[regime]} {article}"
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
    action = next_step(requesting_state, state, procedure, regime)
    tie_note = (
        "; a record of another state has the same date and was ranked after this one by "
        "capture date, state code and reference"
        if tie
        else ""
    )
    explanation = f"{state} is responsible under {basis} ({reason}); {action}{tie_note}."
    tied = tuple(
        hit
        for hit in sorted(qualifying, key=lambda h: (h.member_state, h.reference))
        if hit.event_date == winner.event_date and hit.category == winner.category
    )
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
        tied=tied if tie else (),
        article=article,
    )


def next_step(requesting_state: str, state: str, procedure: Procedure, regime: Regime) -> str:
    """What the requesting state does next, in words, for a proposal's explanation."""
    if procedure is Procedure.NONE:
        return "no transfer is needed"
    if procedure is Procedure.TAKE_CHARGE:
        return f"{requesting_state} should request {state} to take charge"
    if regime is Regime.AMMR:
        return f"{requesting_state} should send {state} a take back notification (Art. 41)"
    return f"{requesting_state} should request {state} to take the applicant back"


def _record(hit: HitDetail) -> str:
    return f"{hit.member_state}'s application record {hit.reference} dated {hit.event_date}"


def _ammr_take_back(
    requesting_state: str, application_date: dt.date, earlier: list[HitDetail], considered: int
) -> Decision:
    """The AMMR take back notification's addressee: the state Eurodac indicates as
    responsible on the earlier application records (Art. 36(1)(b), Eurodac recast Art.
    16(1)); while none is indicated, the state of first registration (Art. 38(4))."""
    regime = Regime.AMMR
    indicated = sorted({hit.responsible_state for hit in earlier if hit.responsible_state})

    def made(state: str, procedure: Procedure, evidence: tuple[HitDetail, ...], article: str,
             explanation: str, rivals: tuple[str, ...] = ()) -> Decision:  # fmt: skip
        return Decision(
            requesting_state=requesting_state,
            application_date=application_date,
            regime=regime,
            rule=Rule.EARLIER_APPLICATION,
            procedure=procedure,
            responsible_state=state,
            evidence=evidence,
            considered=considered,
            tie=bool(rivals),
            explanation=explanation,
            rivals=rivals,
            tied=evidence if rivals else (),
            article=article,
        )

    if len(indicated) > 1:
        tied = tuple(hit for hit in earlier if hit.responsible_state)
        records = "; ".join(f"{_record(hit)} indicates {hit.responsible_state}" for hit in tied)
        explanation = f"The records indicate different responsible states ({records})."
        return made(
            indicated[0], Procedure.TAKE_BACK, tied, AMMR_INDICATED, explanation, tuple(indicated)
        )
    if (
        not indicated
        and len({h.member_state for h in earlier if h.event_date == earlier[0].event_date}) > 1
    ):
        # First registered in several states on one day: no order of codes decides.
        return _decision(
            requesting_state, application_date, regime, Rule.EARLIER_APPLICATION,
            Procedure.TAKE_BACK, earlier, considered, article=AMMR_DETERMINING,
        )  # fmt: skip
    if indicated:
        state = indicated[0]
        support = tuple(hit for hit in earlier if hit.responsible_state == state)
        first = support[0]
        stated = f" on the basis of {first.responsible_basis}" if first.responsible_basis else ""
        reason = f"{state} is indicated as responsible in Eurodac{stated} on {_record(first)}"
        article = AMMR_INDICATED
        procedure = Procedure.NONE if state == requesting_state else Procedure.TAKE_BACK
    else:
        first = earlier[0]
        state = first.member_state
        support = tuple(hit for hit in earlier if hit.member_state == state)
        reason = (
            f"no state is indicated as responsible in Eurodac yet: the application was first "
            f"registered in {state} ({_record(first)}), which conducts the determination and "
            "takes the applicant back"
        )
        article = AMMR_DETERMINING
        procedure = Procedure.TAKE_BACK
    action = next_step(requesting_state, state, procedure, regime)
    explanation = (
        f"{state} is responsible under {_REGIME_NAMES[regime]} {article} ({reason}); {action}."
    )
    return made(state, procedure, support, article, explanation)


def _protection(
    requesting_state: str,
    application_date: dt.date,
    regime: Regime,
    protected: list[HitDetail],
    considered: int,
) -> Decision:
    """A record marked "protection granted" in another state: no Dublin case."""
    first = protected[0]
    states = sorted({hit.member_state for hit in protected})
    when = f", marked on {first.marked_on}" if first.marked_on is not None else ""
    explanation = (
        f"No Dublin case: {', '.join(states)} granted international protection "
        f"({_record(first)}{when}, Eurodac recast Art. 31(1)). No take charge or take back "
        f"request follows: {requesting_state} examines whether the application is "
        f"inadmissible ({_PROTECTION_TEXT[regime]}) or the person is to be readmitted to "
        f"{first.member_state}."
    )
    return Decision(
        requesting_state=requesting_state,
        application_date=application_date,
        regime=regime,
        rule=Rule.PROTECTION_GRANTED,
        procedure=Procedure.PROTECTION_ELSEWHERE,
        responsible_state=None,
        evidence=tuple(protected),
        considered=considered,
        tie=False,
        explanation=explanation,
        article="Art. 31(1)",
    )
