"""The Dublin case engine: which state examines an application, by which procedure, by when.

This module owns the whole criteria order of ``shared/docs/DOMAIN.md`` section 3 as the
coordinator proposes it for one application, the procedure that follows (take charge or take
back), the deadline clocks with their due dates, and the recording of the official who confirms
the proposal. It is pure: no clock, no I/O, no gRPC; the coordinator calls :func:`propose` and
:func:`confirm`.

Inputs are what the requesting authority supplies (:class:`ApplicantSituation`: unaccompanied
minor, family links, residence documents and visas, visa-waived entry, airport transit) and the
human-verified hits with the day each was received (:class:`ReceivedHit`). The hit-based rules
(irregular entry, search-and-rescue disembarkation, earlier application) are not re-implemented
here: :func:`coordinator.dublin.decide` applies them, with its windows and tie-breaks.

Rules, in order; the first that applies names the responsible state (:class:`Criterion`):

- before any criterion, a record marked "protection granted" (Eurodac recast Art. 31(1)) in
  another state: no Dublin case, no state, a checklist flag (inadmissibility or readmission);
- unaccompanied minor (criterion 1: Dublin III Art. 8, AMMR Art. 25);
- take back, before any other criterion: an earlier application in another state
  (``decide``) sends the applicant back (Dublin III Art. 18(1)(b)-(d), 20(5); CJEU C-582/17
  *H. and R.*; AMMR Art. 36, 38); :class:`Criterion` calls it FIRST_APPLICATION (6);
- family member who is a beneficiary of international protection or an applicant (Dublin III
  Art. 9 and 10, AMMR Art. 26 and 27; criterion 2);
- residence document or visa (Dublin III Art. 12, AMMR Art. 29; criterion 3), with Dublin III
  Art. 12(4)'s conditions (entry enabled, not left since) and its second subparagraph;
- criteria 4 and 5 in each regime's order: Dublin III irregular entry (Art. 13, ``decide``),
  then visa-waived entry and airport transit (Art. 14, 15); the AMMR visa-waived entry and
  airport transit (Art. 31, 32) first, then entry and search-and-rescue disembarkation
  (Art. 33, ``decide``);
- default: the requesting state itself (Dublin III Art. 3(2), AMMR Art. 16(2); criterion 6).

An unaccompanied minor is decided by criterion 1 before take back: Dublin III Art. 8(4) (CJEU
C-648/11 *M.A.*: the state where the minor is present) and AMMR Art. 25(5) (the state of
first registration, itself a take back) name the state for the minor.

Dates. A case carries the registration date and the lodging date of the application. The
regime follows the registration date (AMMR from :data:`coordinator.dublin.AMMR_START`). The
situation the criteria look at (documents still valid, hit windows, hits that came before) is
the one on the registration date, for both regimes: the AMMR says so (Art. 33(1) "registered
more than 20 months after"), ``decide`` takes that date, and under Dublin III an application
counts as lodged (Art. 20(2)) once an authority's written record of the request reaches the
competent authority (CJEU C-670/16 *Mengesteab*), which in the usual case is the registration.
Where the two dates differ under Dublin III, the official checks what changed in between. The
lodging date starts the Dublin III take-charge clock of 3 months (Art. 21(1)).

Periods follow Dublin III's own Art. 42 (the AMMR counts the same way): the day of the event
that starts a period is not counted; a period in weeks ends on the same weekday, a period in
months or years on the same date in the last month, or on that month's last day when it has
no such date (:func:`coordinator.dublin.add_months`); a period ends at the end of its last
day, so that day is still inside (the anniversary day of a 12-month window, Art. 13(1), is in it). A
postponement to the next working day when a period ends on a Saturday, Sunday or public
holiday is *not* applied: holidays are national, and the calendar date is the earlier, safe,
answer.

The result is a :class:`CaseProposal`, for an official to confirm (:func:`confirm`), with its
evidence and one-sentence explanation. It holds record metadata only, never a biometric
template or a comparison score. Conditions that no input here can show remain the official's to
check in every case (the proposal's checklist): the best interests of a child, the written
wish of Art. 9 and 10, visas issued under representation (give the represented state as
issuer). Each deadline carries what follows once the request is sent (the reply, the day
silence counts as acceptance or confirmation, a re-examination, the transfer decision and the
transfer), dated for a request sent on the deadline's last day.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from coordinator.dublin import (
    Decision,
    Procedure,
    Regime,
    Rule,
    add_months,
    decide,
    hit_order,
    next_step,
    regime_for,
)
from fedmatch.domain import Category, HitDetail, MarkKind, check_member_state
from fedmatch.errors import AlreadyExists, InvalidInput, PreconditionFailed

__all__ = [
    "AMMR_TAKE_CHARGE_MONTHS_FROM_REGISTRATION",
    "DUBLIN_III_TAKE_CHARGE_MONTHS_FROM_LODGING",
    "EXPIRED_RESIDENCE_DOCUMENT_MONTHS",
    "EXPIRED_VISA_MONTHS",
    "ApplicantSituation",
    "CaseProposal",
    "CheckItem",
    "Confirmation",
    "ConfirmedDecision",
    "Criterion",
    "Deadline",
    "DocumentKind",
    "DublinCase",
    "EarlierApplication",
    "Evidence",
    "Fact",
    "FamilyMember",
    "FamilyStatus",
    "FollowOn",
    "PeriodUnit",
    "ReceivedHit",
    "Relation",
    "StartEvent",
    "TravelDocument",
    "confirm",
    "period_end",
    "propose",
]


class Criterion(enum.IntEnum):
    """The criterion that named the responsible state, numbered in the order applied."""

    UNACCOMPANIED_MINOR = 1
    FAMILY = 2
    DOCUMENTS = 3
    IRREGULAR_ENTRY = 4
    VISA_WAIVER_OR_TRANSIT = 5
    FIRST_APPLICATION = 6
    # Not a criterion: protection granted in another state ends the Dublin question before
    # any criterion is asked (numbered last to keep the criteria's own numbers).
    PROTECTION_GRANTED = 7


class Relation(enum.StrEnum):
    """How a family member is related to the applicant."""

    SPOUSE_OR_PARTNER = "spouse_or_partner"
    CHILD = "child"
    PARENT = "parent"  # father, mother or other adult responsible for a minor
    SIBLING = "sibling"
    RELATIVE = "relative"  # adult aunt, uncle or grandparent (Dublin III Art. 2(h))


class FamilyStatus(enum.StrEnum):
    """A family member's status in the state where they are, as the authority reports it."""

    LEGALLY_PRESENT = "legally_present"
    BENEFICIARY_OF_PROTECTION = "beneficiary_of_protection"
    APPLICANT = "applicant"  # no first decision on the substance yet


class DocumentKind(enum.StrEnum):
    """A residence document or one of the visas of Dublin III Art. 2(m)."""

    RESIDENCE_DOCUMENT = "residence_document"
    LONG_STAY_VISA = "long_stay_visa"
    SHORT_STAY_VISA = "short_stay_visa"
    AIRPORT_TRANSIT_VISA = "airport_transit_visa"

    @property
    def is_visa(self) -> bool:
        return self is not DocumentKind.RESIDENCE_DOCUMENT


class EarlierApplication(enum.StrEnum):
    """Where the applicant's earlier application in the other state stands, as the authority
    knows it (a Eurodac hit does not say): it gives the exact basis of a Dublin III take back
    request."""

    UNKNOWN = ""
    UNDER_EXAMINATION = "under_examination"  # Art. 18(1)(b)
    WITHDRAWN = "withdrawn"  # Art. 18(1)(c)
    REJECTED = "rejected"  # Art. 18(1)(d)
    WITHDRAWN_DURING_DETERMINATION = "withdrawn_during_determination"  # Art. 20(5)


_TAKE_BACK_ARTICLES: dict[EarlierApplication, str] = {
    EarlierApplication.UNKNOWN: "Art. 18(1)(b), (c) or (d)",
    EarlierApplication.UNDER_EXAMINATION: "Art. 18(1)(b)",
    EarlierApplication.WITHDRAWN: "Art. 18(1)(c)",
    EarlierApplication.REJECTED: "Art. 18(1)(d)",
    EarlierApplication.WITHDRAWN_DURING_DETERMINATION: "Art. 20(5)",
}


class StartEvent(enum.StrEnum):
    """The event that starts a deadline clock."""

    HIT_RECEIVED = "hit_received"
    APPLICATION_LODGED = "application_lodged"
    APPLICATION_REGISTERED = "application_registered"


class PeriodUnit(enum.StrEnum):
    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"


# --- time limits -------------------------------------------------------------------------

# How long an expired document still counts. Dublin III Art. 12(4) (DOMAIN.md section 3):
# a residence document expired "less than 2 years", a visa "less than 6 months" before the
# application was lodged. The AMMR lengthens both: Art. 29(4), a residence document expired
# "less than three years", a visa "less than 18 months" before the application was
# registered (text of Reg. 2024/1351 Art. 29(4), checked).
EXPIRED_RESIDENCE_DOCUMENT_MONTHS: dict[Regime, int] = {Regime.DUBLIN_III: 24, Regime.AMMR: 36}
EXPIRED_VISA_MONTHS: dict[Regime, int] = {Regime.DUBLIN_III: 6, Regime.AMMR: 18}

# DOMAIN.md section 3 gives only the clocks that start at a hit. These two clocks start at the
# application and are not in DOMAIN.md: Dublin III Art. 21(1) first subparagraph, 3 months
# from lodging "within the meaning of Article 20(2)"; AMMR Art. 39(1) first subparagraph,
# 2 months from registration.
DUBLIN_III_TAKE_CHARGE_MONTHS_FROM_LODGING = 3
AMMR_TAKE_CHARGE_MONTHS_FROM_REGISTRATION = 2


@dataclass(frozen=True)
class _Clock:
    name: str
    start: StartEvent
    length: int
    unit: PeriodUnit
    basis: str
    # What missing the deadline means ({requesting} is the requesting state), and what
    # follows once the step is taken: the requested state's reply and what its silence
    # counts as, the transfer decision and the transfer deadline (DOMAIN.md section 3).
    consequence: str = ""
    then: str = ""


# What follows a request or notification in each regime, once it is sent.
_DIII_TRANSFER = (
    "after acceptance, the transfer within 6 months (Art. 29(1); up to 1 year after "
    "imprisonment, 18 months if the person absconds, Art. 29(2))"
)
_AMMR_TRANSFER = (
    "after acceptance or confirmation, the transfer decision within 2 weeks (Art. 42(1)) and "
    "the transfer within 6 months (up to 1 year or 3 years, Art. 46(2))"
)
_DIII_TAKE_CHARGE_THEN = (
    "the requested state replies within 2 months of the request (Art. 22(1)); its silence "
    f"is acceptance (Art. 22(7)); {_DIII_TRANSFER}"
)
_DIII_TAKE_BACK_THEN = (
    "the requested state replies within 2 weeks of a request based on a Eurodac hit "
    "(1 month otherwise, Art. 25(1)); its silence is acceptance (Art. 25(2)); "
    f"{_DIII_TRANSFER}"
)
_AMMR_TAKE_CHARGE_THEN = (
    "the requested state replies within 1 month (Art. 40(1)), 2 weeks where the request rests "
    "on a Eurodac hit (Art. 40(2)); its silence is acceptance; " + _AMMR_TRANSFER
)
_AMMR_TAKE_BACK_THEN = (
    "the notified state confirms receipt within 2 weeks (Art. 41(3)); its silence is "
    f"confirmation; {_AMMR_TRANSFER}"
)
_MAKES_RESPONSIBLE = "missing it makes {requesting} responsible ({article})"


_TAKE_CHARGE_AFTER_HIT: dict[Regime, _Clock] = {
    Regime.DUBLIN_III: _Clock(
        "take_charge_request_after_hit",
        StartEvent.HIT_RECEIVED,
        2,
        PeriodUnit.MONTHS,
        "Dublin III (Reg. 604/2013) Art. 21(1) second subparagraph",
        _MAKES_RESPONSIBLE.format(requesting="{requesting}", article="Art. 21(1)"),
        _DIII_TAKE_CHARGE_THEN,
    ),
    Regime.AMMR: _Clock(
        "take_charge_request_after_hit",
        StartEvent.HIT_RECEIVED,
        1,
        PeriodUnit.MONTHS,
        "the AMMR (Reg. 2024/1351) Art. 39(1) second subparagraph",
        _MAKES_RESPONSIBLE.format(requesting="{requesting}", article="Art. 39(1)"),
        _AMMR_TAKE_CHARGE_THEN,
    ),
}
_TAKE_CHARGE_AFTER_APPLICATION: dict[Regime, _Clock] = {
    Regime.DUBLIN_III: _Clock(
        "take_charge_request_after_application",
        StartEvent.APPLICATION_LODGED,
        DUBLIN_III_TAKE_CHARGE_MONTHS_FROM_LODGING,
        PeriodUnit.MONTHS,
        "Dublin III (Reg. 604/2013) Art. 21(1) first subparagraph",
        _MAKES_RESPONSIBLE.format(requesting="{requesting}", article="Art. 21(1)"),
        _DIII_TAKE_CHARGE_THEN,
    ),
    Regime.AMMR: _Clock(
        "take_charge_request_after_application",
        StartEvent.APPLICATION_REGISTERED,
        AMMR_TAKE_CHARGE_MONTHS_FROM_REGISTRATION,
        PeriodUnit.MONTHS,
        "the AMMR (Reg. 2024/1351) Art. 39(1) first subparagraph",
        _MAKES_RESPONSIBLE.format(requesting="{requesting}", article="Art. 39(1)"),
        _AMMR_TAKE_CHARGE_THEN,
    ),
}
_TAKE_BACK: dict[Regime, _Clock] = {
    Regime.DUBLIN_III: _Clock(
        "take_back_request_after_hit",
        StartEvent.HIT_RECEIVED,
        2,
        PeriodUnit.MONTHS,
        "Dublin III (Reg. 604/2013) Art. 23(2)",
        _MAKES_RESPONSIBLE.format(requesting="{requesting}", article="Art. 23(3)"),
        _DIII_TAKE_BACK_THEN,
    ),
    Regime.AMMR: _Clock(
        "take_back_notification_after_hit",
        StartEvent.HIT_RECEIVED,
        2,
        PeriodUnit.WEEKS,
        "the AMMR (Reg. 2024/1351) Art. 41(1)",
        "a late notification does not end the notified state's obligation to take the "
        "person back (Art. 41(1))",
        _AMMR_TAKE_BACK_THEN,
    ),
}


@dataclass(frozen=True)
class _Step:
    """A follow-on clock (see :class:`FollowOn`), counted from an earlier step's date."""

    name: str
    after: str  # request_sent or the name of an earlier step
    length: int
    unit: PeriodUnit
    basis: str
    meaning: str


# Reg. 1560/2003 Art. 5(2): a re-examination is asked within 3 weeks of a negative reply,
# answered within 2 weeks (CJEU C-47/17 and C-48/17 *X and X*: its silence ends the procedure
# and the requesting state is responsible unless its own time limits still run). The AMMR's
# implementing act had not replaced it in the text checked: confirm for AMMR cases.
_REEXAMINATION = _Step(
    "reexamination_request_due", "reply_due", 3, PeriodUnit.WEEKS,
    "Reg. 1560/2003 Art. 5(2)",
    "a negative reply may be contested within 3 weeks of its receipt (dated here for a reply "
    "on its last day); the requested state answers within 2 weeks",
)  # fmt: skip


def _reply_steps(
    reply: _Step, silence_basis: str, transfer: tuple[_Step, ...]
) -> tuple[_Step, ...]:
    silence = _Step(
        "silence_is_acceptance", reply.name, 1, PeriodUnit.DAYS, silence_basis,
        "no reply by the due date: the request counts as accepted from this day",
    )  # fmt: skip
    return (reply, silence, _REEXAMINATION, *transfer)


_DIII_TRANSFER_STEP = _Step(
    "transfer_due", "silence_is_acceptance", 6, PeriodUnit.MONTHS,
    "Dublin III (Reg. 604/2013) Art. 29(1)",
    "the transfer within 6 months of the acceptance (dated for an acceptance by silence; up "
    "to 1 year after imprisonment, 18 months if the person absconds, Art. 29(2)); after it, "
    "the requesting state is responsible",
)  # fmt: skip


def _ammr_transfer(after: str) -> tuple[_Step, ...]:
    return (
        _Step(
            "transfer_decision_due", after, 2, PeriodUnit.WEEKS,
            "the AMMR (Reg. 2024/1351) Art. 42(1)",
            "the transfer decision is notified within 2 weeks of the acceptance or "
            "confirmation",
        ),
        _Step(
            "transfer_due", after, 6, PeriodUnit.MONTHS,
            "the AMMR (Reg. 2024/1351) Art. 46(1)",
            "the transfer within 6 months of the acceptance or confirmation (up to 1 year or "
            "3 years, Art. 46(2)); after it, the requesting state becomes responsible "
            "(Art. 37(1))",
        ),
    )  # fmt: skip


def _follow_steps(regime: Regime, procedure: Procedure, hit_based: bool) -> tuple[_Step, ...]:
    """What follows a request or notification sent under ``regime`` by ``procedure``."""
    if regime is Regime.DUBLIN_III and procedure is Procedure.TAKE_CHARGE:
        reply = _Step("reply_due", "request_sent", 2, PeriodUnit.MONTHS,
                      "Dublin III (Reg. 604/2013) Art. 22(1)",
                      "the requested state replies within 2 months of the request")  # fmt: skip
        return _reply_steps(reply, "Dublin III Art. 22(7)", (_DIII_TRANSFER_STEP,))
    if regime is Regime.DUBLIN_III:
        reply = _Step("reply_due", "request_sent", 2, PeriodUnit.WEEKS,
                      "Dublin III (Reg. 604/2013) Art. 25(1)",
                      "the requested state replies within 2 weeks of a request based on a "
                      "Eurodac hit")  # fmt: skip
        return _reply_steps(reply, "Dublin III Art. 25(2)", (_DIII_TRANSFER_STEP,))
    if procedure is Procedure.TAKE_CHARGE:
        reply = (
            _Step("reply_due", "request_sent", 2, PeriodUnit.WEEKS,
                  "the AMMR (Reg. 2024/1351) Art. 40(2)",
                  "the requested state replies within 2 weeks of a request based on a "
                  "Eurodac hit")
            if hit_based
            else _Step("reply_due", "request_sent", 1, PeriodUnit.MONTHS,
                       "the AMMR (Reg. 2024/1351) Art. 40(1)",
                       "the requested state replies within 1 month of the request")
        )  # fmt: skip
        return _reply_steps(reply, "the AMMR Art. 40", _ammr_transfer("silence_is_acceptance"))
    confirm = _Step("confirmation_due", "request_sent", 2, PeriodUnit.WEEKS,
                    "the AMMR (Reg. 2024/1351) Art. 41(3)",
                    "the notified state confirms receipt within 2 weeks")  # fmt: skip
    silence = _Step("silence_is_confirmation", "confirmation_due", 1, PeriodUnit.DAYS,
                    "the AMMR (Reg. 2024/1351) Art. 41(3)",
                    "no confirmation by the due date: the notification counts as "
                    "confirmed from this day")  # fmt: skip
    return (confirm, silence, *_ammr_transfer("silence_is_confirmation"))


def _follow_on(steps: tuple[_Step, ...], sent: dt.date) -> tuple[FollowOn, ...]:
    days = {"request_sent": sent}
    out = []
    for step in steps:
        latest = period_end(days[step.after], step.length, step.unit)
        days[step.name] = latest
        out.append(
            FollowOn(
                step.name, step.after, step.length, step.unit, step.basis, step.meaning, latest
            )
        )
    return tuple(out)


def period_end(start: dt.date, length: int, unit: PeriodUnit) -> dt.date:
    """Return the last day of a period of ``length`` weeks or months that runs from ``start``.

    Dublin III Art. 42: the start day itself is not counted; the period ends with the
    end of the same weekday (weeks) or the same date (months) in the last week or month, or
    with the end of the last day of a month that has no such date. An act done on the returned
    day is in time. 2027-01-31 + 1 month is 2027-02-28, 2027-12-31 + 2 months is 2028-02-29,
    2026-12-24 + 2 weeks is 2027-01-07.
    """
    _check_date(start, "start")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise InvalidInput("a period length must be a non-negative integer")
    if unit is PeriodUnit.DAYS:
        return start + dt.timedelta(days=length)
    if unit is PeriodUnit.WEEKS:
        return start + dt.timedelta(weeks=length)
    if unit is PeriodUnit.MONTHS:
        return add_months(start, length)
    raise InvalidInput("a period unit must be days, weeks or months")


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyMember:
    """A family member, sibling or relative of the applicant, as the authority reports them."""

    state: str
    relation: Relation
    status: FamilyStatus

    def __post_init__(self) -> None:
        _check_state(self.state, "family member state")
        if not isinstance(self.relation, Relation):
            raise InvalidInput("family member relation must be a Relation")
        if not isinstance(self.status, FamilyStatus):
            raise InvalidInput("family member status must be a FamilyStatus")


@dataclass(frozen=True)
class TravelDocument:
    """A residence document or visa issued by a member state.

    Valid from ``valid_from`` through ``valid_until``, both days included; ``valid_until`` is
    the expiry date printed on the document. For a visa issued under a representation
    arrangement, ``issuing_state`` is the state represented (Dublin III Art. 12(2)).
    """

    issuing_state: str
    kind: DocumentKind
    valid_from: dt.date
    valid_until: dt.date

    def __post_init__(self) -> None:
        _check_state(self.issuing_state, "document issuing_state")
        if not isinstance(self.kind, DocumentKind):
            raise InvalidInput("document kind must be a DocumentKind")
        _check_date(self.valid_from, "document valid_from")
        _check_date(self.valid_until, "document valid_until")
        if self.valid_until < self.valid_from:
            raise InvalidInput("document valid_until is before valid_from")


@dataclass(frozen=True)
class ApplicantSituation:
    """What the requesting authority supplies about the applicant for criteria 1-3 and 5."""

    unaccompanied_minor: bool = False
    family: tuple[FamilyMember, ...] = ()
    documents: tuple[TravelDocument, ...] = ()
    visa_waived_entry_state: str | None = None  # entered here without needing a visa
    # The applicant needs no visa in the requesting state either: visa-waived entry does not
    # apply, the requesting state is responsible (Dublin III Art. 14(2)).
    visa_waived_in_requesting_state: bool = False
    airport_transit_state: str | None = None  # applied in this state's airport transit area
    # Where an earlier application elsewhere stands: the exact take back basis.
    earlier_application: EarlierApplication = EarlierApplication.UNKNOWN
    # Dublin III Art. 12(4): whether the expired documents "enabled him or her actually to
    # enter" and whether the applicant has left the member states' territory since; None is
    # not known (a checklist item asks the official).
    expired_document_enabled_entry: bool | None = None
    left_territory_since: bool | None = None

    def __post_init__(self) -> None:
        for flag in ("unaccompanied_minor", "visa_waived_in_requesting_state"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidInput(f"{flag} must be true or false")
        for flag in ("expired_document_enabled_entry", "left_territory_since"):
            if getattr(self, flag) not in (None, True, False):
                raise InvalidInput(f"{flag} must be true, false or not given")
        if not isinstance(self.earlier_application, EarlierApplication):
            raise InvalidInput("earlier_application must be an EarlierApplication")
        _check_tuple(self.family, FamilyMember, "family")
        _check_tuple(self.documents, TravelDocument, "documents")
        for name in ("visa_waived_entry_state", "airport_transit_state"):
            value: str | None = getattr(self, name)
            if value is not None:
                _check_state(value, name)


@dataclass(frozen=True)
class ReceivedHit:
    """A human-verified hit and the day the requesting state received it (its clocks start
    then). Only hits that two trained experts verified may be put here (Eurodac Art. 38(4),
    AI Act Art. 14(5))."""

    hit: HitDetail
    received_on: dt.date

    def __post_init__(self) -> None:
        if not isinstance(self.hit, HitDetail):
            raise InvalidInput("a received hit must hold a hit detail")
        _check_date(self.hit.event_date, "hit event_date")
        _check_date(self.hit.capture_date, "hit capture_date")
        _check_date(self.received_on, "hit received_on")
        # A search cannot find a record before it was captured, nor an event still to come.
        if self.received_on < max(self.hit.capture_date, self.hit.event_date):
            raise InvalidInput(
                f"hit {self.hit.reference} is received before its record's event or capture date"
            )


@dataclass(frozen=True)
class DublinCase:
    """One application for which the requesting state asks who is responsible.

    ``registration_date`` decides the regime and the situation the criteria look at;
    ``lodging_date`` (Dublin III Art. 20(2)) starts the Dublin III take-charge clock. An
    application is registered before, or on the day, it is lodged (Directive 2013/32 Art. 6,
    Regulation 2024/1348 Art. 27 and 28).
    """

    requesting_state: str
    lodging_date: dt.date
    registration_date: dt.date
    situation: ApplicantSituation = field(default_factory=ApplicantSituation)
    hits: tuple[ReceivedHit, ...] = ()

    def __post_init__(self) -> None:
        _check_state(self.requesting_state, "requesting_state")
        _check_date(self.lodging_date, "lodging_date")
        _check_date(self.registration_date, "registration_date")
        if self.lodging_date < self.registration_date:
            raise InvalidInput("lodging_date is before registration_date")
        if not isinstance(self.situation, ApplicantSituation):
            raise InvalidInput("situation must be an ApplicantSituation")
        _check_tuple(self.hits, ReceivedHit, "hits")

    @property
    def regime(self) -> Regime:
        return regime_for(self.registration_date)


# --- output ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A scalar input that supports a proposal: the name of the input field and its value."""

    field: str
    value: str


Evidence: TypeAlias = FamilyMember | TravelDocument | ReceivedHit | Fact


@dataclass(frozen=True)
class FollowOn:
    """A clock that runs once the request or notification is sent: the requested state's
    reply, the day its silence starts to count, a re-examination, the transfer decision and
    the transfer. ``latest`` dates it for a request sent on the deadline's last day and an
    acceptance by silence: the latest the chain can run (an earlier request moves every
    date earlier by as much)."""

    name: str
    after: str  # the event it counts from: request_sent, reply_due, acceptance
    length: int
    unit: PeriodUnit
    basis: str
    meaning: str
    latest: dt.date


@dataclass(frozen=True)
class Deadline:
    """A time limit for the requesting state's next step; ``due`` is its last day."""

    name: str
    due: dt.date
    start_event: StartEvent
    start_date: dt.date
    length: int
    unit: PeriodUnit
    basis: str
    consequence: str = ""  # what missing it means
    then: str = ""  # what follows once the step is taken: reply, silence, transfer
    follow_on: tuple[FollowOn, ...] = ()  # the same, as dated clocks


@dataclass(frozen=True)
class CheckItem:
    """Something the engine cannot decide and an official must check on every proposal."""

    code: str
    text: str


# DOMAIN.md section 3: what no input here can show, on every proposal. Articles cited are
# those of the regime's text; the AMMR's own numbers are given where checked (Art. 30 and
# 33(3)), its other ones follow Dublin III's structure and are named by their subject.
_CHECKLIST: dict[Regime, tuple[CheckItem, ...]] = {
    Regime.DUBLIN_III: (
        CheckItem("best_interests", "the best interests of any child concerned (Art. 6)"),
        CheckItem("consent", "the written wish of the persons concerned for a family "
                  "criterion (Art. 9, 10)"),
        CheckItem("dependent_persons", "dependent persons (Art. 16)"),
        CheckItem("discretionary_clauses", "the discretionary clauses (Art. 17)"),
        CheckItem("systemic_flaws", "systemic flaws in the procedure or reception of the "
                  "responsible state (Art. 3(2) second subparagraph)"),
        CheckItem("five_month_stay", "a continuous stay of at least 5 months in a state after "
                  "an irregular entry whose 12 months have ended (Art. 13(2))"),
        CheckItem("cessation", "cessation: the person left the member states' territory for "
                  "at least 3 months, or was removed (Art. 19(2), (3))"),
        CheckItem("detention", "detention: shorter time limits apply (Art. 28(3))"),
    ),
    Regime.AMMR: (
        CheckItem("best_interests", "the best interests of any child concerned"),
        CheckItem("consent", "the written wish of the persons concerned for a family "
                  "criterion (Art. 26, 27)"),
        CheckItem("dependent_persons", "dependent persons"),
        CheckItem("discretionary_clauses", "the discretionary clauses"),
        CheckItem("systemic_flaws", "systemic flaws in the procedure or reception of the "
                  "responsible state"),
        CheckItem("diplomas", "diplomas or other qualifications issued by a state (Art. 30): "
                  "no input here"),
        CheckItem("cessation", "cessation of responsibility (the person left the member "
                  "states' territory, or was removed)"),
        CheckItem("relocation", "relocation: Art. 33(2) does not apply after a relocation "
                  "(Art. 33(3))"),
        CheckItem("detention", "detention: shorter time limits apply"),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class CaseProposal:
    """A proposed responsible state with its evidence, for an official to confirm."""

    requesting_state: str
    lodging_date: dt.date
    registration_date: dt.date
    regime: Regime
    criterion: Criterion
    responsible_state: str
    procedure: Procedure
    basis: str  # the regulation and article that named the state
    evidence: tuple[Evidence, ...]  # deciding input first, then its state's other support
    explanation: str
    deadlines: tuple[Deadline, ...]  # empty when no transfer is needed
    hit_rule: Rule | None = None  # the rule of coordinator.dublin.decide, when it decided
    # What the engine cannot decide: on every proposal, for the official to check.
    checklist: tuple[CheckItem, ...] = ()
    # When no state is proposed (``responsible_state`` is ""): the states an official must
    # choose among (an override), never ranked by code.
    candidates: tuple[str, ...] = ()
    proposal: bool = True
    confirmed_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A proposal never claims to be more than a proposal: confirmation is ConfirmedDecision.
        if self.proposal is not True:
            raise InvalidInput("a case proposal is always a proposal; confirm() records officials")
        if len(set(self.confirmed_by)) != len(self.confirmed_by):
            raise InvalidInput("an official appears twice in confirmed_by")

    @property
    def due_dates(self) -> dict[str, dt.date]:
        """Deadline name to due date."""
        return {deadline.name: deadline.due for deadline in self.deadlines}

    @property
    def earliest_due(self) -> dt.date | None:
        """The first due date: the one the requesting state must meet, or None."""
        return min((deadline.due for deadline in self.deadlines), default=None)


@dataclass(frozen=True)
class Confirmation:
    """One official's confirmation of a proposal, with the moment (timezone-aware)."""

    official_id: str
    at: dt.datetime


@dataclass(frozen=True)
class ConfirmedDecision:
    """A proposal confirmed by one or more officials, in the order they confirmed it."""

    proposal: CaseProposal
    confirmations: tuple[Confirmation, ...]

    def __post_init__(self) -> None:
        if not self.confirmations:
            raise InvalidInput("a confirmed decision needs at least one confirmation")
        if self.proposal.confirmed_by != self.confirmed_by:
            raise InvalidInput("the proposal's confirmed_by does not match the confirmations")

    @property
    def confirmed_by(self) -> tuple[str, ...]:
        return tuple(confirmation.official_id for confirmation in self.confirmations)

    @property
    def responsible_state(self) -> str:
        return self.proposal.responsible_state


# --- the engine --------------------------------------------------------------------------

_REGIME_NAMES: dict[Regime, str] = {
    Regime.DUBLIN_III: "Dublin III (Reg. 604/2013)",
    Regime.AMMR: "the AMMR (Reg. 2024/1351)",
}

_LABELS: dict[Criterion, str] = {
    Criterion.UNACCOMPANIED_MINOR: "unaccompanied minor",
    Criterion.FAMILY: "family member",
    Criterion.DOCUMENTS: "residence document or visa",
    Criterion.IRREGULAR_ENTRY: "irregular entry",
    Criterion.VISA_WAIVER_OR_TRANSIT: "visa-waived entry or airport transit",
    Criterion.FIRST_APPLICATION: "first application",
    Criterion.PROTECTION_GRANTED: "protection granted elsewhere",
}


class _Basis(enum.Enum):
    MINOR_FAMILY = enum.auto()
    MINOR_RELATIVE = enum.auto()
    MINOR_NO_FAMILY = enum.auto()
    FAMILY_BENEFICIARY = enum.auto()
    FAMILY_APPLICANT = enum.auto()
    VALID_RESIDENCE_DOCUMENT = enum.auto()
    VALID_VISA = enum.auto()
    EXPIRED_DOCUMENT = enum.auto()
    EXPIRED_NOT_LEFT = enum.auto()
    VISA_WAIVED_ENTRY = enum.auto()
    VISA_WAIVED_HERE_TOO = enum.auto()
    AIRPORT_TRANSIT = enum.auto()
    DEFAULT = enum.auto()


# Articles per regime. The AMMR articles checked against its text (a public copy of the
# Regulation) are Art. 16(2) (no criterion applies: the first state where the application was
# registered), 25(1)-(3), 28 (family procedure, Dublin III Art. 11), 29(1), (2) and (4),
# 33(1) and (2), 39(1) and 41(1). Art. 25(5), 26, 27, 31 and 32 follow
# the AMMR's structure (Dublin III Art. 8 to 10, 14 and 15 renumbered; Art. 30, diplomas and
# qualifications, is a criterion this engine has no input for) and were not checked against
# the text: confirm them before an official relies on the citation. The AMMR applies its
# criteria in the order of its articles: visa-waived entry and airport transit (Art. 31, 32)
# before entry (Art. 33), unlike Dublin III (Art. 13 before 14 and 15); see propose().
_ARTICLES: dict[tuple[Regime, _Basis], str] = {
    (Regime.DUBLIN_III, _Basis.MINOR_FAMILY): "Art. 8(1)",
    (Regime.DUBLIN_III, _Basis.MINOR_RELATIVE): "Art. 8(2)",
    (Regime.DUBLIN_III, _Basis.MINOR_NO_FAMILY): "Art. 8(4)",
    (Regime.DUBLIN_III, _Basis.FAMILY_BENEFICIARY): "Art. 9",
    (Regime.DUBLIN_III, _Basis.FAMILY_APPLICANT): "Art. 10",
    (Regime.DUBLIN_III, _Basis.VALID_RESIDENCE_DOCUMENT): "Art. 12(1)",
    (Regime.DUBLIN_III, _Basis.VALID_VISA): "Art. 12(2)",
    (Regime.DUBLIN_III, _Basis.EXPIRED_DOCUMENT): "Art. 12(4)",
    (Regime.DUBLIN_III, _Basis.EXPIRED_NOT_LEFT): "Art. 12(4) second subparagraph",
    (Regime.DUBLIN_III, _Basis.VISA_WAIVED_ENTRY): "Art. 14(1)",
    (Regime.DUBLIN_III, _Basis.VISA_WAIVED_HERE_TOO): "Art. 14(2)",
    (Regime.DUBLIN_III, _Basis.AIRPORT_TRANSIT): "Art. 15",
    (Regime.DUBLIN_III, _Basis.DEFAULT): "Art. 3(2)",
    (Regime.AMMR, _Basis.MINOR_FAMILY): "Art. 25(2)",
    (Regime.AMMR, _Basis.MINOR_RELATIVE): "Art. 25(3)",
    (Regime.AMMR, _Basis.MINOR_NO_FAMILY): "Art. 25(5)",
    (Regime.AMMR, _Basis.FAMILY_BENEFICIARY): "Art. 26",
    (Regime.AMMR, _Basis.FAMILY_APPLICANT): "Art. 27",
    (Regime.AMMR, _Basis.VALID_RESIDENCE_DOCUMENT): "Art. 29(1)",
    (Regime.AMMR, _Basis.VALID_VISA): "Art. 29(2)",
    (Regime.AMMR, _Basis.EXPIRED_DOCUMENT): "Art. 29(4)",
    (Regime.AMMR, _Basis.VISA_WAIVED_ENTRY): "Art. 31",
    (Regime.AMMR, _Basis.VISA_WAIVED_HERE_TOO): "Art. 31",
    (Regime.AMMR, _Basis.AIRPORT_TRANSIT): "Art. 32",
    (Regime.AMMR, _Basis.DEFAULT): "Art. 16(2)",
}

_RELATIONS: dict[Relation, str] = {
    Relation.SPOUSE_OR_PARTNER: "spouse or partner",
    Relation.CHILD: "child",
    Relation.PARENT: "parent or responsible adult",
    Relation.SIBLING: "sibling",
    Relation.RELATIVE: "relative",
}

_STATUSES: dict[FamilyStatus, str] = {
    FamilyStatus.LEGALLY_PRESENT: "legally present",
    FamilyStatus.BENEFICIARY_OF_PROTECTION: "a beneficiary of international protection",
    FamilyStatus.APPLICANT: "an applicant",
}

_KINDS: dict[DocumentKind, str] = {
    DocumentKind.RESIDENCE_DOCUMENT: "residence document",
    DocumentKind.LONG_STAY_VISA: "long-stay visa",
    DocumentKind.SHORT_STAY_VISA: "short-stay visa",
    DocumentKind.AIRPORT_TRANSIT_VISA: "airport transit visa",
}

# Criterion 2 counts the family members of Dublin III Art. 2(g): spouse or partner and minor
# children; a parent only of a minor applicant, and an unaccompanied minor is decided by
# criterion 1 before criterion 2 is reached. Siblings and other relatives count only there.
_CORE_FAMILY = frozenset({Relation.SPOUSE_OR_PARTNER, Relation.CHILD})


@dataclass(frozen=True)
class _Outcome:
    """What a criterion found, before the procedure, deadlines and explanation are added."""

    criterion: Criterion
    state: str
    basis: _Basis | None  # None when decide() named the state
    reason: str
    evidence: tuple[Evidence, ...]
    decision: Decision | None = None
    deciding_hit: ReceivedHit | None = None  # the hit whose receipt starts the clock
    take_back: bool = False  # an AMMR unaccompanied minor first registered elsewhere
    # Several states qualify equally and an official must choose (state is then ""):
    # same-day ties, an unaccompanied minor's family in several states.
    candidates: tuple[str, ...] = ()
    why_undecided: str = ""


def propose(case: DublinCase) -> CaseProposal:
    """Propose the state responsible for ``case``, with procedure, evidence and deadlines.

    Criteria, in order (the first that applies decides):

    1. Unaccompanied minor (Dublin III Art. 8, AMMR Art. 25). A family member, sibling or
       relative counts when legally present; a beneficiary of protection holds a residence
       permit and an applicant may remain pending the examination, so all three
       :class:`FamilyStatus` values count. Family members and siblings come before relatives
       (Art. 8(1) before 8(2)). For an unaccompanied minor this criterion always decides: the
       AMMR says only its minors' article applies (Art. 25(1)), and Dublin III Art. 8(4) names
       a state when no family is present, so criteria 2 to 6 are never reached. Without family,
       Dublin III names the state where the minor lodged, which is the requesting state (CJEU
       C-648/11 *M.A.*); the AMMR names the state where the application was first registered
       (Art. 25(5)): an earlier ``applicant`` hit in another state gives a take back, found by
       ``decide`` on the applicant hits alone.
    Then take back, before any other criterion: ``decide``'s earlier application in another
       state (C-582/17 *H. and R.*; AMMR Art. 36, 38).
    2. Family (Dublin III Art. 9 and 10, AMMR Art. 26 and 27): a spouse or partner or child who
       is a beneficiary of protection (first) or an applicant (then) in a state.
    3. Residence documents and visas (Dublin III Art. 12, AMMR Art. 29), on the registration
       date. Valid means ``valid_from <= date <= valid_until``. Valid documents come before
       expired ones (Art. 12(4) applies to an applicant with "only" expired ones). An expired
       document counts while its grace period runs: the period of
       :data:`EXPIRED_RESIDENCE_DOCUMENT_MONTHS` (24; AMMR 36) or :data:`EXPIRED_VISA_MONTHS`
       (6; AMMR 18) months
       runs from the expiry date ``valid_until`` and ends, by Dublin III Art. 42, at the end of
       ``add_months(valid_until, months)``; the document still counts on that day ("expired
       less than two years previously" is still true while the period runs) and no longer on
       the next. Among several candidates, Art. 12(3): residence documents before visas; the
       residence document with the longest validity, then the latest expiry; visas of one kind
       by the latest expiry, visas of different kinds by the longest validity then the latest
       expiry; then the state code alphabetically.
    4. Irregular entry and (AMMR) search-and-rescue disembarkation: ``decide`` on the
       registration date, with its windows (Dublin III 12 months, AMMR 20 or 12 months, the
       end day inside under both) and tie-breaks.
    5. Visa-waived entry (Dublin III Art. 14(1), AMMR Art. 31), then an application made in
       an airport's international transit area (Art. 15, AMMR Art. 32). Under the AMMR
       criterion 5 comes before criterion 4 (the order of its articles).
    6. Default: the requesting state itself (Dublin III Art. 3(2), AMMR Art. 16(2)).

    Several qualifying states under criteria 2 and 3 are ordered as above and then by state
    code; the explanation names the others, for the official to weigh. Where the law leaves
    the choice to an official, no state is proposed, only ``candidates``: an unaccompanied
    minor's family in several states (Dublin III Art. 8(3), the child's best interests) and
    a same-day tie of hit records (take back or criterion 4); such a proposal is confirmed
    by an override naming the state.

    Procedure: NONE when the responsible state is the requesting state; TAKE_BACK for an
    earlier application; TAKE_CHARGE otherwise. Deadlines (none for NONE): a take charge based
    on a hit (criterion 4) runs from that hit's receipt, 2 months (Dublin III Art. 21(1)) or
    1 month (AMMR Art. 39(1)), and is also bounded by the clock from the application, 3 months
    from lodging (Dublin III; C-670/16 *Mengesteab*: the hit does not extend it) or 2 months from
    registration (AMMR, same structure); a take charge on criteria 1 to 3 or 5 has only the
    clock from the application; a take back runs from the deciding hit's receipt, 2 months for
    the request (Dublin III Art. 23(2)) or 2 weeks for the notification (AMMR Art. 41(1)).

    Raises InvalidInput if ``case`` is not a :class:`DublinCase`.
    """
    if not isinstance(case, DublinCase):
        raise InvalidInput("propose needs a DublinCase")
    regime = case.regime
    received = _unique_hits(case.hits)
    # decide() is pure and cheap; run it once and let criteria 4 and 6 each read what it found.
    decision = decide(case.requesting_state, case.registration_date, list(received))

    entry = _hit_rules(decision, received, Criterion.IRREGULAR_ENTRY)
    waiver = _visa_waiver_or_transit(case)
    # One order per regime: the AMMR applies visa-waived entry (Art. 31) and airport transit
    # (Art. 32) before entry (Art. 33); Dublin III entry (Art. 13) before Art. 14 and 15.
    later = (waiver or entry) if regime is Regime.AMMR else (entry or waiver)
    outcome = (
        # Protection granted elsewhere: no Dublin case, before any criterion.
        _hit_rules(decision, received, Criterion.PROTECTION_GRANTED)
        or _unaccompanied_minor(case, regime, received)
        # First, take back: an earlier application in another state is no criterion, the
        # requesting state does not apply the criteria itself (C-582/17 H. and R.).
        or _hit_rules(decision, received, Criterion.FIRST_APPLICATION)
        or _family(case)
        or _documents(case, regime)
        or later
        or _default(case)
    )
    return _proposal(case, regime, outcome)


def confirm(
    subject: CaseProposal | ConfirmedDecision, official_id: str, at: dt.datetime
) -> ConfirmedDecision:
    """Record that official ``official_id`` confirmed the proposal at ``at``.

    Give a :class:`CaseProposal` for the first confirmation and the :class:`ConfirmedDecision`
    for each further one (a second person, where policy asks for two). The same official
    cannot confirm twice (AlreadyExists). ``official_id`` must be 1 to 64 printable characters
    without surrounding blanks, and ``at`` a timezone-aware moment not before the previous
    confirmation (InvalidInput). A proposal that already carries confirmations must be
    confirmed through its ConfirmedDecision, so that no confirmation loses its time
    (PreconditionFailed).
    """
    official = _check_official(official_id)
    if not isinstance(at, dt.datetime) or at.utcoffset() is None:
        raise InvalidInput("the confirmation time must be a timezone-aware datetime")
    if isinstance(subject, ConfirmedDecision):
        proposal, earlier = subject.proposal, subject.confirmations
    elif isinstance(subject, CaseProposal):
        proposal, earlier = subject, ()
    else:
        raise InvalidInput("confirm needs a CaseProposal or a ConfirmedDecision")
    if official in proposal.confirmed_by:
        raise AlreadyExists(f"official {official!r} has already confirmed this proposal")
    if not earlier and proposal.confirmed_by:
        raise PreconditionFailed(
            "this proposal already carries confirmations; confirm its ConfirmedDecision"
        )
    if earlier and at < earlier[-1].at:
        raise InvalidInput("the confirmation time is before the previous confirmation")
    return ConfirmedDecision(
        proposal=replace(proposal, confirmed_by=(*proposal.confirmed_by, official)),
        confirmations=(*earlier, Confirmation(official_id=official, at=at)),
    )


# --- criteria ----------------------------------------------------------------------------


def _unaccompanied_minor(
    case: DublinCase, regime: Regime, received: dict[HitDetail, ReceivedHit]
) -> _Outcome | None:
    if not case.situation.unaccompanied_minor:
        return None
    members = case.situation.family
    groups = (
        (_Basis.MINOR_FAMILY, [m for m in members if m.relation is not Relation.RELATIVE]),
        (_Basis.MINOR_RELATIVE, [m for m in members if m.relation is Relation.RELATIVE]),
    )
    for basis, group in groups:
        if group:
            return _family_outcome(Criterion.UNACCOMPANIED_MINOR, basis, group, "minor's")

    minor = Fact("unaccompanied_minor", "true")
    if regime is Regime.AMMR:
        # Art. 25(5): the state of first registration, which an earlier applicant hit shows.
        # (Not the state Eurodac indicates: Art. 25(5) names the first registration.)
        applications = sorted(
            (
                hit
                for hit in received
                if hit.category is Category.APPLICANT
                and hit.member_state != case.requesting_state
                and hit.event_date <= case.registration_date
            ),
            key=hit_order,
        )
        if applications:
            state = applications[0].member_state
            hits = tuple(received[hit] for hit in applications if hit.member_state == state)
            return _Outcome(
                criterion=Criterion.UNACCOMPANIED_MINOR,
                state=state,
                basis=_Basis.MINOR_NO_FAMILY,
                reason=(
                    "no family member, sibling or relative is present, and the minor's "
                    f"application was first registered in {state} "
                    f"(application record {hits[0].hit.reference} dated "
                    f"{hits[0].hit.event_date.isoformat()})"
                ),
                evidence=(minor, *hits),
                deciding_hit=hits[0],
                take_back=True,
            )
        where = "first registered"
    else:
        where = "lodged"
    return _Outcome(
        criterion=Criterion.UNACCOMPANIED_MINOR,
        state=case.requesting_state,
        basis=_Basis.MINOR_NO_FAMILY,
        reason=(
            "no family member, sibling or relative is present, so the state where the minor's "
            f"application was {where} examines it"
        ),
        evidence=(minor,),
    )


def _family(case: DublinCase) -> _Outcome | None:
    members = [m for m in case.situation.family if m.relation in _CORE_FAMILY]
    groups = (
        (
            _Basis.FAMILY_BENEFICIARY,
            [m for m in members if m.status is FamilyStatus.BENEFICIARY_OF_PROTECTION],
        ),
        (_Basis.FAMILY_APPLICANT, [m for m in members if m.status is FamilyStatus.APPLICANT]),
    )
    for basis, group in groups:
        if group:
            return _family_outcome(Criterion.FAMILY, basis, group, "applicant's")
    return None


def _family_outcome(
    criterion: Criterion, basis: _Basis, group: list[FamilyMember], whose: str
) -> _Outcome:
    ordered = sorted(group, key=_member_order)
    chosen = ordered[0]
    states = tuple(sorted({m.state for m in ordered}))
    if criterion is Criterion.UNACCOMPANIED_MINOR and len(states) > 1:
        # Dublin III Art. 8(3): family in several states, the child's best interests decide,
        # an official's judgment that no order of codes may replace.
        return _Outcome(
            criterion, "", basis, "", tuple(ordered), candidates=states,
            why_undecided=(
                f"the minor's family, siblings or relatives are in {', '.join(states)}: the "
                "child's best interests decide (Dublin III Art. 8(3))"
            ),
        )  # fmt: skip
    evidence = tuple(m for m in ordered if m.state == chosen.state)
    reason = (
        f"the {whose} {_RELATIONS[chosen.relation]} is {_STATUSES[chosen.status]} in "
        f"{chosen.state}{_others_note(chosen.state, (m.state for m in ordered))}"
    )
    return _Outcome(criterion, chosen.state, basis, reason, evidence)


def _documents(case: DublinCase, regime: Regime) -> _Outcome | None:
    day = case.registration_date
    situation = case.situation
    documents = situation.documents
    valid = [d for d in documents if d.valid_from <= day <= d.valid_until]
    expired = [d for d in documents if d.valid_until < day <= _grace_end(d, regime)]
    if not valid and expired and regime is Regime.DUBLIN_III and not _may_count(situation):
        # Dublin III Art. 12(4): only documents that enabled entry, while the applicant has
        # not left the member states' territory.
        expired = []
    candidates = valid or expired
    if not candidates:
        return _expired_not_left(case, regime)
    order = _document_order(candidates)
    ordered = sorted(candidates, key=order)
    chosen = ordered[0]
    evidence = tuple(d for d in ordered if d.issuing_state == chosen.issuing_state)
    kind = _KINDS[chosen.kind]
    if valid:
        basis = _valid_basis(chosen)
        reason = (
            f"a {kind} issued by {chosen.issuing_state} valid from "
            f"{chosen.valid_from.isoformat()} until {chosen.valid_until.isoformat()}, valid on "
            f"the registration date {day.isoformat()}"
        )
    else:
        basis = _Basis.EXPIRED_DOCUMENT
        months = _grace_months(chosen, regime)
        reason = (
            f"a {kind} issued by {chosen.issuing_state} that expired on "
            f"{chosen.valid_until.isoformat()}, within {months} months before the registration "
            f"date {day.isoformat()}"
        )
    reason += _others_note(chosen.issuing_state, (d.issuing_state for d in ordered))
    return _Outcome(Criterion.DOCUMENTS, chosen.issuing_state, basis, reason, evidence)


_HIT_RULES: dict[Criterion, frozenset[Rule]] = {
    Criterion.IRREGULAR_ENTRY: frozenset({Rule.IRREGULAR_ENTRY, Rule.SAR_DISEMBARKATION}),
    Criterion.FIRST_APPLICATION: frozenset({Rule.EARLIER_APPLICATION}),
    Criterion.PROTECTION_GRANTED: frozenset({Rule.PROTECTION_GRANTED}),
}


def _hit_rules(
    decision: Decision, received: dict[HitDetail, ReceivedHit], criterion: Criterion
) -> _Outcome | None:
    """Criterion 4, the take back of criterion 6, or protection granted elsewhere, as
    decide() found them."""
    if decision.rule not in _HIT_RULES[criterion]:
        return None
    hits = tuple(received[hit] for hit in decision.evidence)
    if decision.rule is Rule.PROTECTION_GRANTED:
        return _Outcome(criterion, "", None, "", hits, decision=decision)
    if decision.responsible_state is None:
        return None
    if decision.tie:
        # Records of several states carry the deciding date, or indicate different
        # responsible states: no code order decides.
        first = hits[0].hit
        why = (
            f"records of {', '.join(decision.rivals)} carry the same date "
            f"({first.event_date.isoformat()})"
            if decision.rule is not Rule.EARLIER_APPLICATION or decision.regime is not Regime.AMMR
            else f"the records indicate different responsible states ({decision.explanation})"
        )
        return _Outcome(
            criterion=criterion,
            state="",
            basis=None,
            reason="",
            evidence=tuple(received[hit] for hit in decision.tied),
            decision=decision,
            deciding_hit=hits[0],
            candidates=decision.rivals,
            why_undecided=why,
        )
    return _Outcome(
        criterion=criterion,
        state=decision.responsible_state,
        basis=None,
        reason="",
        evidence=hits,
        decision=decision,
        deciding_hit=hits[0],
    )


def _may_count(situation: ApplicantSituation) -> bool:
    # Unknown (None) counts, with a checklist item: the official confirms both conditions.
    return (
        situation.expired_document_enabled_entry is not False
        and situation.left_territory_since is not True
    )


def _expired_not_left(case: DublinCase, regime: Regime) -> _Outcome | None:
    """Dublin III Art. 12(4) second subparagraph: documents expired beyond the grace period
    that enabled entry, and the applicant has not left: the state where the application was
    lodged is responsible. The AMMR has no such rule (Art. 29(4))."""
    situation = case.situation
    day = case.registration_date
    older = [d for d in situation.documents if _grace_end(d, regime) < day]
    if (
        regime is not Regime.DUBLIN_III
        or not older
        or situation.expired_document_enabled_entry is not True
        or situation.left_territory_since is not False
    ):
        return None
    state = case.requesting_state
    latest = max(older, key=lambda d: (d.valid_until, d.issuing_state))
    return _Outcome(
        Criterion.DOCUMENTS,
        state,
        _Basis.EXPIRED_NOT_LEFT,
        (
            f"the applicant holds only documents expired beyond the grace period (the latest, "
            f"a {_KINDS[latest.kind]} of {latest.issuing_state}, on "
            f"{latest.valid_until.isoformat()}) that enabled entry, and has not left the "
            f"member states' territory since, so the state where the application was lodged "
            f"examines it"
        ),
        (
            *older,
            Fact("expired_document_enabled_entry", "true"),
            Fact("left_territory_since", "false"),
        ),
    )


def _visa_waiver_or_transit(case: DublinCase) -> _Outcome | None:
    situation = case.situation
    if situation.visa_waived_entry_state is not None and situation.visa_waived_in_requesting_state:
        state = case.requesting_state
        return _Outcome(
            Criterion.VISA_WAIVER_OR_TRANSIT,
            state,
            _Basis.VISA_WAIVED_HERE_TOO,
            f"the applicant entered {situation.visa_waived_entry_state} without a visa, but "
            f"needs none in {state} either, where the application was lodged",
            (
                Fact("visa_waived_entry_state", situation.visa_waived_entry_state),
                Fact("visa_waived_in_requesting_state", "true"),
            ),
        )
    if situation.visa_waived_entry_state is not None:
        state = situation.visa_waived_entry_state
        return _Outcome(
            Criterion.VISA_WAIVER_OR_TRANSIT,
            state,
            _Basis.VISA_WAIVED_ENTRY,
            f"the applicant entered {state}, where they need no visa",
            (Fact("visa_waived_entry_state", state),),
        )
    if situation.airport_transit_state is not None:
        state = situation.airport_transit_state
        return _Outcome(
            Criterion.VISA_WAIVER_OR_TRANSIT,
            state,
            _Basis.AIRPORT_TRANSIT,
            f"the application was made in the international transit area of an airport of {state}",
            (Fact("airport_transit_state", state),),
        )
    return None


def _default(case: DublinCase) -> _Outcome:
    state = case.requesting_state
    return _Outcome(
        Criterion.FIRST_APPLICATION,
        state,
        _Basis.DEFAULT,
        (
            "no earlier criterion applies and no verified hit shows an earlier application in "
            f"another state before the registration of {case.registration_date.isoformat()}"
        ),
        (Fact("requesting_state", state),),
    )


# --- assembling the proposal -------------------------------------------------------------


def _proposal(case: DublinCase, regime: Regime, outcome: _Outcome) -> CaseProposal:
    decision = outcome.decision
    prefix = f"Criterion {int(outcome.criterion)} ({_LABELS[outcome.criterion]}): "
    if decision is not None and decision.rule is Rule.PROTECTION_GRANTED:
        # No Dublin case: no state, no procedure's clocks, the flag on the checklist.
        procedure = decision.procedure
        basis = f"Eurodac recast (Reg. 2024/1358) {decision.article}"
        body = decision.explanation
        prefix = ""
    elif outcome.candidates:
        procedure = decision.procedure if decision is not None else Procedure.TAKE_CHARGE
        basis = (
            _decision_basis(decision, case.situation.earlier_application)
            if decision is not None
            else f"{_REGIME_NAMES[regime]} {_ARTICLES[(regime, outcome.basis)]}"  # type: ignore[index]
        )
        body = (
            f"no state is proposed under {basis}: {outcome.why_undecided}; an official "
            f"chooses among {', '.join(outcome.candidates)} (confirm by override)"
        )
    elif decision is not None:
        procedure = decision.procedure
        basis = _decision_basis(decision, case.situation.earlier_application)
        # decide() cites a take back as 18(1)(b); the case knows (or says it does not) which.
        cited = f"{_REGIME_NAMES[decision.regime]} {decision.article}"
        body = (
            decision.explanation.replace(cited, basis)
            if decision.rule is Rule.EARLIER_APPLICATION
            else decision.explanation
        )
    else:
        assert outcome.basis is not None  # every criterion but decide()'s sets its basis
        basis = f"{_REGIME_NAMES[regime]} {_ARTICLES[(regime, outcome.basis)]}"
        if outcome.state == case.requesting_state:
            procedure = Procedure.NONE
        elif outcome.take_back:
            procedure = Procedure.TAKE_BACK
        else:
            procedure = Procedure.TAKE_CHARGE
        body = (
            f"{outcome.state} is responsible under {basis} ({outcome.reason}); "
            f"{next_step(case.requesting_state, outcome.state, procedure, regime)}."
        )
    return CaseProposal(
        requesting_state=case.requesting_state,
        lodging_date=case.lodging_date,
        registration_date=case.registration_date,
        regime=regime,
        criterion=outcome.criterion,
        responsible_state=outcome.state,
        procedure=procedure,
        basis=basis,
        evidence=outcome.evidence,
        explanation=f"{prefix}{body}",
        deadlines=_deadlines(case, regime, procedure, outcome.deciding_hit),
        hit_rule=decision.rule if decision is not None else None,
        checklist=_CHECKLIST[regime] + _case_checks(case, regime, decision, outcome),
        candidates=outcome.candidates,
    )


def _case_checks(
    case: DublinCase, regime: Regime, decision: Decision | None, outcome: _Outcome
) -> tuple[CheckItem, ...]:
    """What this case in particular leaves open."""
    checks: list[CheckItem] = []
    if decision is not None and decision.rule is Rule.PROTECTION_GRANTED:
        checks.append(CheckItem(
            "protection_granted",
            "international protection granted by another state (Eurodac recast Art. 31(1) "
            "mark): no Dublin request; decide on inadmissibility or readmission, and check "
            "the protection has not ceased",
        ))  # fmt: skip
    if (
        regime is Regime.DUBLIN_III
        and decision is not None
        and decision.rule is Rule.EARLIER_APPLICATION
        and case.situation.earlier_application is EarlierApplication.UNKNOWN
    ):
        checks.append(CheckItem(
            "earlier_application_status",
            "the status of the earlier application (under examination, withdrawn, rejected, "
            "or withdrawn during the determination) gives the exact basis: Art. 18(1)(b), "
            "(c), (d) or 20(5)",
        ))  # fmt: skip
    if any(hit.mark is MarkKind.RESIDENCE_DOCUMENT for hit in _hits(case)):
        checks.append(CheckItem(
            "residence_document_mark",
            "a record is marked: a state issued a residence document after it (Eurodac "
            "recast Art. 31(4)); ask that state for the document, which may decide under "
            "the documents criterion",
        ))  # fmt: skip
    if _expired_conditions_unknown(case, regime, outcome):
        checks.append(CheckItem(
            "expired_document_conditions",
            "whether the expired documents enabled entry and whether the applicant has left "
            "the member states' territory since (Dublin III Art. 12(4), both subparagraphs)",
        ))  # fmt: skip
    return tuple(checks)


def _hits(case: DublinCase) -> Iterable[HitDetail]:
    return (received.hit for received in case.hits)


def _expired_conditions_unknown(case: DublinCase, regime: Regime, outcome: _Outcome) -> bool:
    """Dublin III Art. 12(4) turns on two facts the authority did not give, and it matters:
    the only documents are expired (within the grace period, deciding now; or beyond it,
    where the second subparagraph could name the requesting state)."""
    situation = case.situation
    if regime is not Regime.DUBLIN_III or not situation.documents:
        return False
    if None not in (situation.expired_document_enabled_entry, situation.left_territory_since):
        return False
    day = case.registration_date
    if any(d.valid_from <= day <= d.valid_until for d in situation.documents):
        return False
    # Expired documents counting now, or older ones whose second subparagraph could apply.
    return outcome.basis is _Basis.EXPIRED_DOCUMENT or any(
        _grace_end(d, regime) < day for d in situation.documents
    )


def _deadlines(
    case: DublinCase, regime: Regime, procedure: Procedure, deciding_hit: ReceivedHit | None
) -> tuple[Deadline, ...]:
    if procedure in (Procedure.NONE, Procedure.PROTECTION_ELSEWHERE):
        return ()
    requesting = case.requesting_state
    steps = _follow_steps(regime, procedure, deciding_hit is not None)
    if procedure is Procedure.TAKE_BACK:
        assert deciding_hit is not None  # a take back always rests on an applicant hit
        return (_deadline(_TAKE_BACK[regime], deciding_hit.received_on, requesting, steps),)
    after_application = _TAKE_CHARGE_AFTER_APPLICATION[regime]
    application_day = (
        case.lodging_date
        if after_application.start is StartEvent.APPLICATION_LODGED
        else case.registration_date
    )
    from_application = _deadline(after_application, application_day, requesting, steps)
    if deciding_hit is None:
        return (from_application,)
    after_hit = _deadline(
        _TAKE_CHARGE_AFTER_HIT[regime], deciding_hit.received_on, requesting, steps
    )
    return (after_hit, from_application)


def _deadline(clock: _Clock, start: dt.date, requesting: str, steps: tuple[_Step, ...]) -> Deadline:
    due = period_end(start, clock.length, clock.unit)
    return Deadline(
        name=clock.name,
        due=due,
        start_event=clock.start,
        start_date=start,
        length=clock.length,
        unit=clock.unit,
        basis=clock.basis,
        consequence=clock.consequence.format(requesting=requesting),
        then=clock.then,
        follow_on=_follow_on(steps, due),
    )


def _decision_basis(decision: Decision, earlier: EarlierApplication) -> str:
    # decide()'s explanation names the article; the proposal states it once more on its own,
    # a Dublin III take back exactly, by the status of the earlier application.
    if decision.regime is Regime.DUBLIN_III and decision.rule is Rule.EARLIER_APPLICATION:
        article = _TAKE_BACK_ARTICLES[earlier]
    elif decision.rule is Rule.IRREGULAR_ENTRY and decision.regime is Regime.DUBLIN_III:
        article = "Art. 13(1)"  # the explanation adds "(period under Art. 42)"
    else:
        article = decision.article
    return f"{_REGIME_NAMES[decision.regime]} {article}"


def _others_note(chosen: str, states: Iterable[str]) -> str:
    # Several states can qualify under one criterion (family in two states, two visas); the
    # order above picks one, and the official sees the others to weigh them.
    others = sorted({state for state in states if state != chosen})
    if not others:
        return ""
    verb = "qualifies" if len(others) == 1 else "qualify"
    return f"; {', '.join(others)} also {verb} and {'ranks' if len(others) == 1 else 'rank'} after"


# --- orderings and small checks ----------------------------------------------------------


def _member_order(member: FamilyMember) -> tuple[str, str, str]:
    return (member.state, member.relation.value, member.status.value)


def _document_order(
    candidates: list[TravelDocument],
) -> Callable[[TravelDocument], tuple[int, int, int, str, str, int]]:
    """Art. 12(3) order as a sort key; smaller sorts first."""
    visa_kinds = {d.kind for d in candidates if d.kind.is_visa}
    by_validity_first = len(visa_kinds) > 1  # 12(3)(c); same kind: 12(3)(b), latest expiry

    def key(document: TravelDocument) -> tuple[int, int, int, str, str, int]:
        validity = (document.valid_until - document.valid_from).days
        expiry = document.valid_until.toordinal()
        if not document.kind.is_visa or by_validity_first:
            first, second = -validity, -expiry
        else:
            first, second = -expiry, -validity
        return (
            int(document.kind.is_visa),
            first,
            second,
            document.issuing_state,
            document.kind.value,
            document.valid_from.toordinal(),
        )

    return key


def _valid_basis(document: TravelDocument) -> _Basis:
    return _Basis.VALID_VISA if document.kind.is_visa else _Basis.VALID_RESIDENCE_DOCUMENT


def _grace_months(document: TravelDocument, regime: Regime) -> int:
    if document.kind.is_visa:
        return EXPIRED_VISA_MONTHS[regime]
    return EXPIRED_RESIDENCE_DOCUMENT_MONTHS[regime]


def _grace_end(document: TravelDocument, regime: Regime) -> dt.date:
    return period_end(document.valid_until, _grace_months(document, regime), PeriodUnit.MONTHS)


def _unique_hits(hits: tuple[ReceivedHit, ...]) -> dict[HitDetail, ReceivedHit]:
    # The same record may be received twice (two searches); its clocks start at the first.
    first: dict[HitDetail, ReceivedHit] = {}
    for received in hits:
        known = first.get(received.hit)
        if known is None or received.received_on < known.received_on:
            first[received.hit] = received
    return first


def _check_state(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an ISO 3166-1 alpha-2 code such as 'DE'")
    check_member_state(value, name)


def _check_date(value: object, name: str) -> None:
    # datetime is a subclass of date but cannot be compared with one.
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise InvalidInput(f"{name} must be a calendar date")


def _check_tuple(value: object, kind: type, name: str) -> None:
    if not isinstance(value, tuple) or not all(isinstance(item, kind) for item in value):
        raise InvalidInput(f"{name} must be a tuple of {kind.__name__}")


def _check_official(official_id: object) -> str:
    if not isinstance(official_id, str) or not official_id.strip():
        raise InvalidInput("official_id is required")
    if official_id != official_id.strip():
        raise InvalidInput("official_id must not start or end with blanks")
    if len(official_id) > 64 or not official_id.isprintable():
        raise InvalidInput("official_id must be at most 64 printable characters")
    return official_id
