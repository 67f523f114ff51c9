"""Table-driven tests of the Dublin case engine in coordinator.case."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from coordinator.case import (
    EXPIRED_RESIDENCE_DOCUMENT_MONTHS,
    EXPIRED_VISA_MONTHS,
    ApplicantSituation,
    CaseProposal,
    ConfirmedDecision,
    Criterion,
    DocumentKind,
    DublinCase,
    Evidence,
    Fact,
    FamilyMember,
    FamilyStatus,
    PeriodUnit,
    ReceivedHit,
    Relation,
    StartEvent,
    TravelDocument,
    confirm,
    period_end,
    propose,
)
from coordinator.dublin import Procedure, Regime, Rule
from fedmatch.domain import Category, HitDetail
from fedmatch.errors import AlreadyExists, InvalidInput, PreconditionFailed

D = dt.date
IRR = Category.IRREGULAR_CROSSING
SAR = Category.SAR_DISEMBARKED
APP = Category.APPLICANT

RES = DocumentKind.RESIDENCE_DOCUMENT
LONG = DocumentKind.LONG_STAY_VISA
SHORT = DocumentKind.SHORT_STAY_VISA

SPOUSE = Relation.SPOUSE_OR_PARTNER
CHILD = Relation.CHILD
PARENT = Relation.PARENT
SIBLING = Relation.SIBLING
RELATIVE = Relation.RELATIVE

PRESENT = FamilyStatus.LEGALLY_PRESENT
BENEFICIARY = FamilyStatus.BENEFICIARY_OF_PROTECTION
APPLYING = FamilyStatus.APPLICANT

TAKE_CHARGE = Procedure.TAKE_CHARGE
TAKE_BACK = Procedure.TAKE_BACK
NONE = Procedure.NONE

# Deadline names.
AFTER_HIT = "take_charge_request_after_hit"
AFTER_APPLICATION = "take_charge_request_after_application"
TAKE_BACK_REQUEST = "take_back_request_after_hit"
TAKE_BACK_NOTIFICATION = "take_back_notification_after_hit"

# The usual dates: a Dublin III application registered 2025-09-01 and lodged two days later
# (take charge from lodging due 2025-12-03), an AMMR one registered 2026-09-01 (take charge
# from registration due 2026-11-01).
DIII = D(2025, 9, 1)
DIII_LODGED = D(2025, 9, 3)
AMMR = D(2026, 9, 1)


def hit(
    state: str,
    category: Category,
    event: dt.date,
    reference: str | None = None,
    received: dt.date | None = None,
    capture: dt.date | None = None,
) -> ReceivedHit:
    """A received hit; reference defaults to STATE-category-date, capture to the event and
    receipt to the capture."""
    detail = HitDetail(
        member_state=state,
        handle=b"h" * 16,
        category=category,
        reference=reference or f"{state}-{category.value}-{event.isoformat()}",
        event_date=event,
        event_place="somewhere",
        capture_date=capture or event,
    )
    return ReceivedHit(detail, received or capture or event)


def fam(state: str, relation: Relation, status: FamilyStatus) -> FamilyMember:
    return FamilyMember(state, relation, status)


def doc(
    state: str, kind: DocumentKind, valid_from: dt.date, valid_until: dt.date
) -> TravelDocument:
    return TravelDocument(state, kind, valid_from, valid_until)


def label(item: Evidence) -> str:
    """A short, readable name for an evidence item."""
    if isinstance(item, FamilyMember):
        return f"family:{item.state}:{item.relation.value}"
    if isinstance(item, TravelDocument):
        return f"{item.kind.value}:{item.issuing_state}"
    if isinstance(item, ReceivedHit):
        return item.hit.reference
    return f"{item.field}={item.value}"


@dataclass(frozen=True)
class Case:
    registered: dt.date
    criterion: Criterion
    responsible: str
    procedure: Procedure
    evidence: tuple[str, ...]
    deadlines: dict[str, dt.date]
    minor: bool = False
    family: tuple[FamilyMember, ...] = ()
    documents: tuple[TravelDocument, ...] = ()
    visa_waived: str | None = None
    transit: str | None = None
    hits: tuple[ReceivedHit, ...] = ()
    lodged: dt.date | None = None  # defaults to the registration date
    hit_rule: Rule | None = None
    requester: str = "DE"

    def build(self) -> DublinCase:
        return DublinCase(
            requesting_state=self.requester,
            lodging_date=self.lodged or self.registered,
            registration_date=self.registered,
            situation=ApplicantSituation(
                unaccompanied_minor=self.minor,
                family=self.family,
                documents=self.documents,
                visa_waived_entry_state=self.visa_waived,
                airport_transit_state=self.transit,
            ),
            hits=self.hits,
        )


CASES = [
    # --- 1. unaccompanied minor --------------------------------------------------------
    pytest.param(
        Case(
            DIII,
            Criterion.UNACCOMPANIED_MINOR,
            "FR",
            TAKE_CHARGE,
            ("family:FR:parent",),
            {AFTER_APPLICATION: D(2025, 12, 3)},
            minor=True,
            family=(fam("FR", PARENT, PRESENT),),
            lodged=DIII_LODGED,
        ),
        id="c1-minor-parent-legally-present-take-charge",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.UNACCOMPANIED_MINOR,
            "BE",
            TAKE_CHARGE,
            ("family:BE:relative",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            minor=True,
            family=(fam("BE", RELATIVE, PRESENT),),
        ),
        id="c1-minor-relative-only",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.UNACCOMPANIED_MINOR,
            "NL",
            TAKE_CHARGE,
            ("family:NL:sibling",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            minor=True,
            family=(fam("AT", RELATIVE, PRESENT), fam("NL", SIBLING, PRESENT)),
        ),
        id="c1-minor-sibling-beats-relative",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.UNACCOMPANIED_MINOR,
            "FR",
            TAKE_CHARGE,
            ("family:FR:parent",),
            {AFTER_APPLICATION: D(2026, 11, 1)},
            minor=True,
            family=(fam("FR", PARENT, BENEFICIARY),),
            documents=(doc("IT", SHORT, D(2026, 8, 1), D(2026, 9, 30)),),
            hits=(hit("GR", IRR, D(2026, 8, 10), "GR-1", received=AMMR),),
        ),
        id="c1-minor-family-beats-visa-and-crossing",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.UNACCOMPANIED_MINOR,
            "SE",
            TAKE_CHARGE,
            ("family:SE:parent",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            minor=True,
            family=(fam("SE", PARENT, APPLYING),),
        ),
        id="c1-minor-parent-applicant-counts-as-present",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.UNACCOMPANIED_MINOR,
            "DE",
            NONE,
            ("family:DE:sibling",),
            {},
            minor=True,
            family=(fam("DE", SIBLING, PRESENT),),
        ),
        id="c1-minor-family-in-requesting-state-no-transfer",
    ),
    # Without family, Dublin III Art. 8(4) (C-648/11 M.A.) keeps the minor where they lodged,
    # and criteria 3 and 4 are never reached.
    pytest.param(
        Case(
            DIII,
            Criterion.UNACCOMPANIED_MINOR,
            "DE",
            NONE,
            ("unaccompanied_minor=true",),
            {},
            minor=True,
            documents=(doc("IT", SHORT, D(2025, 8, 1), D(2025, 9, 30)),),
            hits=(hit("GR", IRR, D(2025, 8, 1), "GR-1", received=DIII),),
        ),
        id="c1-minor-no-family-dublin3-stays-despite-visa-and-crossing",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.UNACCOMPANIED_MINOR,
            "AT",
            TAKE_BACK,
            ("unaccompanied_minor=true", "AT-APP"),
            {TAKE_BACK_NOTIFICATION: D(2026, 9, 15)},
            minor=True,
            hits=(
                hit("AT", APP, D(2026, 8, 1), "AT-APP", received=AMMR),
                hit("GR", IRR, D(2026, 7, 20), "GR-1", received=AMMR),
            ),
        ),
        id="c1-minor-no-family-ammr-first-registered-elsewhere-take-back",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.UNACCOMPANIED_MINOR,
            "DE",
            NONE,
            ("unaccompanied_minor=true",),
            {},
            minor=True,
            hits=(hit("GR", IRR, D(2026, 7, 20), "GR-1", received=AMMR),),
        ),
        id="c1-minor-no-family-ammr-first-registered-here",
    ),
    # --- 2. family member beneficiary / applicant --------------------------------------
    pytest.param(
        Case(
            AMMR,
            Criterion.FAMILY,
            "SE",
            TAKE_CHARGE,
            ("family:SE:spouse_or_partner",),
            {AFTER_APPLICATION: D(2026, 11, 1)},
            family=(fam("SE", SPOUSE, BENEFICIARY),),
        ),
        id="c2-ammr-spouse-beneficiary",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FAMILY,
            "NL",
            TAKE_CHARGE,
            ("family:NL:child",),
            {AFTER_APPLICATION: D(2025, 12, 3)},
            family=(fam("NL", CHILD, APPLYING),),
            lodged=DIII_LODGED,
        ),
        id="c2-dublin3-child-applicant",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FAMILY,
            "BE",
            TAKE_CHARGE,
            ("family:BE:child",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            family=(fam("AT", SPOUSE, APPLYING), fam("BE", CHILD, BENEFICIARY)),
        ),
        id="c2-beneficiary-beats-applicant",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FAMILY,
            "SE",
            TAKE_CHARGE,
            ("family:SE:spouse_or_partner",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            family=(fam("SE", SPOUSE, BENEFICIARY),),
            documents=(doc("IT", SHORT, D(2025, 8, 1), D(2025, 9, 30)),),
        ),
        id="c2-family-beats-visa",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            family=(fam("FR", SPOUSE, PRESENT),),
        ),
        id="c2-adult-with-spouse-only-legally-present-not-family-criterion",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            family=(
                fam("FR", SIBLING, BENEFICIARY),
                fam("BE", PARENT, APPLYING),
                fam("AT", RELATIVE, BENEFICIARY),
            ),
        ),
        id="c2-adult-sibling-parent-relative-do-not-count",
    ),
    # --- 3. residence documents and visas ----------------------------------------------
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "IT",
            TAKE_CHARGE,
            ("residence_document:IT",),
            {AFTER_APPLICATION: D(2025, 12, 3)},
            documents=(doc("IT", RES, D(2024, 1, 1), D(2026, 1, 1)),),
            lodged=DIII_LODGED,
        ),
        id="c3-valid-residence-document",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "FR",
            TAKE_CHARGE,
            ("short_stay_visa:FR",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(doc("FR", SHORT, D(2025, 8, 1), D(2025, 9, 1)),),
        ),
        id="c3-visa-valid-through-its-last-day",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "PL",
            TAKE_CHARGE,
            ("residence_document:PL",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(
                doc("AT", LONG, D(2025, 1, 1), D(2026, 12, 31)),
                doc("PL", RES, D(2025, 1, 1), D(2025, 12, 31)),
            ),
        ),
        id="c3-residence-document-beats-visa",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "FR",
            TAKE_CHARGE,
            ("short_stay_visa:FR",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(
                doc("IT", RES, D(2023, 1, 1), D(2025, 1, 1)),
                doc("FR", SHORT, D(2025, 8, 1), D(2025, 9, 30)),
            ),
        ),
        id="c3-valid-visa-beats-expired-residence-document",
    ),
    # Residence document expired on 2023-05-10: its 2 years end with 2025-05-10.
    pytest.param(
        Case(
            D(2025, 5, 9),
            Criterion.DOCUMENTS,
            "IT",
            TAKE_CHARGE,
            ("residence_document:IT",),
            {AFTER_APPLICATION: D(2025, 8, 9)},
            documents=(doc("IT", RES, D(2020, 5, 11), D(2023, 5, 10)),),
        ),
        id="c3-residence-expired-2y-minus-1-day-counts",
    ),
    pytest.param(
        Case(
            D(2025, 5, 10),
            Criterion.DOCUMENTS,
            "IT",
            TAKE_CHARGE,
            ("residence_document:IT",),
            {AFTER_APPLICATION: D(2025, 8, 10)},
            documents=(doc("IT", RES, D(2020, 5, 11), D(2023, 5, 10)),),
        ),
        id="c3-residence-expired-exactly-2y-still-counts",
    ),
    pytest.param(
        Case(
            D(2025, 5, 11),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("IT", RES, D(2020, 5, 11), D(2023, 5, 10)),),
        ),
        id="c3-residence-expired-2y-plus-1-day-does-not-count",
    ),
    # Visa expired on 2025-01-15: its 6 months end with 2025-07-15.
    pytest.param(
        Case(
            D(2025, 7, 14),
            Criterion.DOCUMENTS,
            "ES",
            TAKE_CHARGE,
            ("short_stay_visa:ES",),
            {AFTER_APPLICATION: D(2025, 10, 14)},
            documents=(doc("ES", SHORT, D(2024, 12, 1), D(2025, 1, 15)),),
        ),
        id="c3-visa-expired-6m-minus-1-day-counts",
    ),
    pytest.param(
        Case(
            D(2025, 7, 15),
            Criterion.DOCUMENTS,
            "ES",
            TAKE_CHARGE,
            ("short_stay_visa:ES",),
            {AFTER_APPLICATION: D(2025, 10, 15)},
            documents=(doc("ES", SHORT, D(2024, 12, 1), D(2025, 1, 15)),),
        ),
        id="c3-visa-expired-exactly-6m-still-counts",
    ),
    pytest.param(
        Case(
            D(2025, 7, 16),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("ES", SHORT, D(2024, 12, 1), D(2025, 1, 15)),),
        ),
        id="c3-visa-expired-6m-plus-1-day-does-not-count",
    ),
    # A visa that expired on 2025-08-31: 6 months end with 2026-02-28 (no 31 February).
    pytest.param(
        Case(
            D(2026, 2, 28),
            Criterion.DOCUMENTS,
            "HU",
            TAKE_CHARGE,
            ("short_stay_visa:HU",),
            {AFTER_APPLICATION: D(2026, 5, 28)},
            documents=(doc("HU", SHORT, D(2025, 8, 1), D(2025, 8, 31)),),
        ),
        id="c3-visa-expired-aug31-grace-ends-feb28-inside",
    ),
    pytest.param(
        Case(
            D(2026, 3, 1),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("HU", SHORT, D(2025, 8, 1), D(2025, 8, 31)),),
        ),
        id="c3-visa-expired-aug31-grace-ends-feb28-mar1-outside",
    ),
    # A residence document that expired on leap day 2024-02-29: 2 years end with 2026-02-28.
    pytest.param(
        Case(
            D(2026, 2, 28),
            Criterion.DOCUMENTS,
            "CZ",
            TAKE_CHARGE,
            ("residence_document:CZ",),
            {AFTER_APPLICATION: D(2026, 5, 28)},
            documents=(doc("CZ", RES, D(2023, 3, 1), D(2024, 2, 29)),),
        ),
        id="c3-residence-expired-leap-day-grace-ends-feb28-inside",
    ),
    pytest.param(
        Case(
            D(2026, 3, 1),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("CZ", RES, D(2023, 3, 1), D(2024, 2, 29)),),
        ),
        id="c3-residence-expired-leap-day-grace-ends-feb28-mar1-outside",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "ES",
            TAKE_CHARGE,
            ("residence_document:ES",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(
                doc("IT", RES, D(2025, 1, 1), D(2025, 12, 31)),
                doc("ES", RES, D(2024, 6, 1), D(2026, 6, 1)),
            ),
        ),
        id="c3-longest-residence-validity-wins-art-12-3-a",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "FR",
            TAKE_CHARGE,
            ("short_stay_visa:FR",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(
                doc("NL", SHORT, D(2025, 1, 1), D(2025, 9, 30)),
                doc("FR", SHORT, D(2025, 8, 25), D(2025, 10, 31)),
            ),
        ),
        id="c3-visas-of-one-kind-latest-expiry-wins-art-12-3-b",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "NL",
            TAKE_CHARGE,
            ("long_stay_visa:NL",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(
                doc("NL", LONG, D(2025, 1, 1), D(2025, 9, 30)),
                doc("FR", SHORT, D(2025, 8, 25), D(2025, 10, 31)),
            ),
        ),
        id="c3-visas-of-two-kinds-longest-validity-wins-art-12-3-c",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("IT", RES, D(2025, 10, 1), D(2027, 10, 1)),),
        ),
        id="c3-document-not-yet-valid-ignored",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "FR",
            TAKE_CHARGE,
            ("short_stay_visa:FR",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(doc("FR", SHORT, D(2025, 8, 1), D(2025, 9, 30)),),
            hits=(hit("GR", IRR, D(2025, 8, 5), "GR-1", received=DIII),),
        ),
        id="c3-visa-beats-irregular-entry",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.DOCUMENTS,
            "DE",
            NONE,
            ("long_stay_visa:DE",),
            {},
            documents=(doc("DE", LONG, D(2025, 1, 1), D(2025, 12, 31)),),
            hits=(hit("GR", IRR, D(2025, 8, 5), "GR-1", received=DIII),),
        ),
        id="c3-own-visa-no-transfer",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.DOCUMENTS,
            "IT",
            TAKE_CHARGE,
            ("short_stay_visa:IT",),
            {AFTER_APPLICATION: D(2026, 11, 1)},
            documents=(doc("IT", SHORT, D(2026, 4, 1), D(2026, 5, 1)),),
        ),
        id="c3-ammr-expired-visa-counts",
    ),
    # --- 4. irregular entry, SAR disembarkation ------------------------------------------
    pytest.param(
        Case(
            DIII,
            Criterion.IRREGULAR_ENTRY,
            "IT",
            TAKE_CHARGE,
            ("IT-1",),
            {AFTER_HIT: D(2025, 11, 1), AFTER_APPLICATION: D(2025, 12, 3)},
            hits=(hit("IT", IRR, D(2024, 9, 2), "IT-1", received=DIII),),
            lodged=DIII_LODGED,
            hit_rule=Rule.IRREGULAR_ENTRY,
        ),
        id="c4-dublin3-12m-minus-1-day-take-charge",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.IRREGULAR_ENTRY,
            "IT",
            TAKE_CHARGE,
            ("IT-1",),
            {AFTER_HIT: D(2025, 11, 1), AFTER_APPLICATION: D(2025, 12, 1)},
            hits=(hit("IT", IRR, D(2024, 9, 1), "IT-1", received=DIII),),
            hit_rule=Rule.IRREGULAR_ENTRY,
        ),
        id="c4-dublin3-12m-anniversary-inside-art-42",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.IRREGULAR_ENTRY,
            "GR",
            TAKE_CHARGE,
            ("GR-1",),
            {AFTER_HIT: D(2026, 10, 1), AFTER_APPLICATION: D(2026, 11, 1)},
            hits=(hit("GR", IRR, D(2025, 1, 2), "GR-1", received=AMMR),),
            hit_rule=Rule.IRREGULAR_ENTRY,
        ),
        id="c4-ammr-20m-minus-1-day-take-charge-1-month",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            hits=(hit("GR", IRR, D(2024, 12, 31), "GR-1", received=AMMR),),
        ),
        id="c4-ammr-20m-plus-1-day-outside",
    ),
    pytest.param(
        Case(
            D(2026, 6, 30),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            hits=(hit("HR", IRR, D(2025, 3, 30), "HR-1", received=D(2026, 6, 30)),),
        ),
        id="c4-crossing-15m-before-dublin3-12m-outside",
    ),
    pytest.param(
        Case(
            D(2026, 7, 1),
            Criterion.IRREGULAR_ENTRY,
            "HR",
            TAKE_CHARGE,
            ("HR-1",),
            {AFTER_HIT: D(2026, 8, 1), AFTER_APPLICATION: D(2026, 9, 1)},
            hits=(hit("HR", IRR, D(2025, 4, 1), "HR-1", received=D(2026, 7, 1)),),
            hit_rule=Rule.IRREGULAR_ENTRY,
        ),
        id="c4-crossing-15m-before-ammr-20m-inside",
    ),
    # The regime follows the registration date, not the lodging date.
    pytest.param(
        Case(
            D(2026, 6, 30),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            hits=(hit("HR", IRR, D(2025, 4, 1), "HR-1", received=D(2026, 6, 30)),),
            lodged=D(2026, 7, 3),
        ),
        id="c4-registered-before-switch-lodged-after-is-dublin3",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.IRREGULAR_ENTRY,
            "MT",
            TAKE_CHARGE,
            ("MT-1",),
            {AFTER_HIT: D(2026, 10, 5), AFTER_APPLICATION: D(2026, 11, 1)},
            hits=(hit("MT", SAR, D(2026, 3, 1), "MT-1", received=D(2026, 9, 5)),),
            hit_rule=Rule.SAR_DISEMBARKATION,
        ),
        id="c4-ammr-sar-disembarkation",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.IRREGULAR_ENTRY,
            "GR",
            TAKE_CHARGE,
            ("GR-1",),
            {AFTER_HIT: D(2025, 11, 1), AFTER_APPLICATION: D(2025, 12, 1)},
            visa_waived="FR",
            hits=(hit("GR", IRR, D(2025, 6, 1), "GR-1", received=DIII),),
            hit_rule=Rule.IRREGULAR_ENTRY,
        ),
        id="c4-irregular-entry-beats-visa-waiver",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "FR",
            TAKE_BACK,
            ("FR-1",),
            {TAKE_BACK_REQUEST: D(2025, 11, 1)},
            hits=(
                hit("IT", IRR, D(2025, 1, 1), "IT-1", received=DIII),
                hit("FR", APP, D(2024, 6, 1), "FR-1", received=DIII),
            ),
            hit_rule=Rule.EARLIER_APPLICATION,
        ),
        id="take-back-beats-irregular-entry-c-582-17",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.IRREGULAR_ENTRY,
            "DE",
            NONE,
            ("DE-1",),
            {},
            hits=(hit("DE", IRR, D(2025, 5, 1), "DE-1", received=DIII),),
            hit_rule=Rule.IRREGULAR_ENTRY,
        ),
        id="c4-own-irregular-entry-no-transfer",
    ),
    # --- 5. visa-waived entry, airport transit -------------------------------------------
    pytest.param(
        Case(
            DIII,
            Criterion.VISA_WAIVER_OR_TRANSIT,
            "FR",
            TAKE_CHARGE,
            ("visa_waived_entry_state=FR",),
            {AFTER_APPLICATION: D(2025, 12, 3)},
            visa_waived="FR",
            lodged=DIII_LODGED,
        ),
        id="c5-visa-waived-entry-take-charge",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.VISA_WAIVER_OR_TRANSIT,
            "DE",
            NONE,
            ("airport_transit_state=DE",),
            {},
            transit="DE",
        ),
        id="c5-airport-transit-in-requesting-state",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.VISA_WAIVER_OR_TRANSIT,
            "FR",
            TAKE_CHARGE,
            ("visa_waived_entry_state=FR",),
            {AFTER_APPLICATION: D(2026, 11, 1)},
            visa_waived="FR",
            transit="NL",
        ),
        id="c5-visa-waived-entry-beats-airport-transit",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "AT",
            TAKE_BACK,
            ("AT-1",),
            {TAKE_BACK_REQUEST: D(2025, 11, 1)},
            visa_waived="FR",
            hits=(hit("AT", APP, D(2025, 3, 1), "AT-1", received=DIII),),
            hit_rule=Rule.EARLIER_APPLICATION,
        ),
        id="take-back-beats-visa-waiver-c-582-17",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.VISA_WAIVER_OR_TRANSIT,
            "ES",
            TAKE_CHARGE,
            ("visa_waived_entry_state=ES",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            documents=(doc("IT", SHORT, D(2024, 12, 1), D(2025, 1, 15)),),
            visa_waived="ES",
        ),
        id="c5-visa-past-its-grace-falls-through-to-visa-waiver",
    ),
    # --- 6. first application ------------------------------------------------------------
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "AT",
            TAKE_BACK,
            ("AT-1",),
            {TAKE_BACK_REQUEST: D(2025, 11, 1)},
            hits=(hit("AT", APP, D(2025, 3, 1), "AT-1", received=DIII),),
            hit_rule=Rule.EARLIER_APPLICATION,
        ),
        id="c6-dublin3-take-back-request-2-months",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.FIRST_APPLICATION,
            "AT",
            TAKE_BACK,
            ("AT-1",),
            {TAKE_BACK_NOTIFICATION: D(2026, 9, 15)},
            hits=(hit("AT", APP, D(2026, 3, 1), "AT-1", received=AMMR),),
            hit_rule=Rule.EARLIER_APPLICATION,
        ),
        id="c6-ammr-take-back-notification-2-weeks",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "FR",
            TAKE_BACK,
            ("FR-1",),
            {TAKE_BACK_REQUEST: D(2025, 11, 1)},
            hits=(
                hit("IT", IRR, D(2024, 1, 1), "IT-1", received=DIII),
                hit("FR", APP, D(2024, 6, 1), "FR-1", received=DIII),
            ),
            hit_rule=Rule.EARLIER_APPLICATION,
        ),
        id="c6-crossing-out-of-window-then-take-back",
    ),
    pytest.param(
        Case(DIII, Criterion.FIRST_APPLICATION, "DE", NONE, ("requesting_state=DE",), {}),
        id="c6-default-no-inputs-requesting-state",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            hits=(hit("DE", APP, D(2026, 1, 1), "DE-1", received=AMMR),),
        ),
        id="c6-own-earlier-application-default",
    ),
    # --- added with the coordinator wiring: the AMMR's own time limits and articles --------
    # AMMR Art. 29(4): an expired residence document counts for 3 years, a visa for 18 months
    # (Dublin III: 2 years, 6 months), up to and including the period's last day.
    pytest.param(
        Case(
            AMMR,
            Criterion.DOCUMENTS,
            "NL",
            TAKE_CHARGE,
            ("residence_document:NL",),
            {AFTER_APPLICATION: D(2026, 11, 1)},
            documents=(doc("NL", RES, D(2021, 1, 1), D(2023, 9, 1)),),
        ),
        id="c3-ammr-residence-expired-exactly-3y-still-counts",
    ),
    pytest.param(
        Case(
            D(2026, 9, 2),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("NL", RES, D(2021, 1, 1), D(2023, 9, 1)),),
        ),
        id="c3-ammr-residence-expired-3y-plus-1-day-does-not-count",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.DOCUMENTS,
            "ES",
            TAKE_CHARGE,
            ("short_stay_visa:ES",),
            {AFTER_APPLICATION: D(2026, 11, 1)},
            documents=(doc("ES", SHORT, D(2025, 2, 1), D(2025, 3, 1)),),
        ),
        id="c3-ammr-visa-expired-exactly-18m-still-counts",
    ),
    pytest.param(
        Case(
            D(2026, 9, 2),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("ES", SHORT, D(2025, 2, 1), D(2025, 3, 1)),),
        ),
        id="c3-ammr-visa-expired-18m-plus-1-day-does-not-count",
    ),
    # A visa that expired on 2025-08-31: its 18 months end with 2027-02-28 (no 31 February).
    pytest.param(
        Case(
            D(2027, 2, 28),
            Criterion.DOCUMENTS,
            "PL",
            TAKE_CHARGE,
            ("long_stay_visa:PL",),
            {AFTER_APPLICATION: D(2027, 4, 28)},
            documents=(doc("PL", LONG, D(2025, 3, 1), D(2025, 8, 31)),),
        ),
        id="c3-ammr-visa-expired-aug31-18m-grace-ends-feb28-inside",
    ),
    pytest.param(
        Case(
            D(2027, 3, 1),
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            documents=(doc("PL", LONG, D(2025, 3, 1), D(2025, 8, 31)),),
        ),
        id="c3-ammr-visa-expired-aug31-18m-grace-ends-feb28-mar1-outside",
    ),
    # AMMR Art. 33(1) and (2): "registered more than 20 (12) months after": the end day is in.
    pytest.param(
        Case(
            AMMR,
            Criterion.IRREGULAR_ENTRY,
            "GR",
            TAKE_CHARGE,
            ("GR-1",),
            {AFTER_HIT: D(2026, 10, 1), AFTER_APPLICATION: D(2026, 11, 1)},
            hits=(hit("GR", IRR, D(2025, 1, 1), "GR-1", received=AMMR),),
            hit_rule=Rule.IRREGULAR_ENTRY,
        ),
        id="c4-ammr-20m-on-end-inside",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.IRREGULAR_ENTRY,
            "MT",
            TAKE_CHARGE,
            ("MT-1",),
            {AFTER_HIT: D(2026, 10, 1), AFTER_APPLICATION: D(2026, 11, 1)},
            hits=(hit("MT", SAR, D(2025, 9, 1), "MT-1", received=AMMR),),
            hit_rule=Rule.SAR_DISEMBARKATION,
        ),
        id="c4-ammr-sar-12m-on-end-inside",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            hits=(hit("MT", SAR, D(2025, 8, 31), "MT-1", received=AMMR),),
        ),
        id="c4-ammr-sar-12m-plus-1-day-outside",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.FIRST_APPLICATION,
            "DE",
            NONE,
            ("requesting_state=DE",),
            {},
            hits=(hit("MT", SAR, D(2025, 6, 1), "MT-1", received=DIII),),
        ),
        id="c4-dublin3-sar-disembarkation-is-no-criterion",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.UNACCOMPANIED_MINOR,
            "AT",
            TAKE_CHARGE,
            ("family:AT:relative",),
            {AFTER_APPLICATION: D(2026, 11, 1)},
            minor=True,
            family=(fam("AT", RELATIVE, PRESENT),),
            hits=(hit("IT", IRR, D(2026, 5, 1), "IT-1", received=AMMR),),
        ),
        id="c1-ammr-minor-relative-art-25-3-beats-crossing",
    ),
    pytest.param(
        Case(
            AMMR,
            Criterion.FIRST_APPLICATION,
            "FR",
            TAKE_BACK,
            ("FR-1",),
            {TAKE_BACK_NOTIFICATION: D(2026, 9, 15)},
            family=(fam("SE", CHILD, APPLYING),),
            hits=(hit("FR", APP, D(2026, 2, 1), "FR-1", received=AMMR),),
            hit_rule=Rule.EARLIER_APPLICATION,
        ),
        id="ammr-take-back-beats-family-art-36-c-582-17",
    ),
    pytest.param(
        Case(
            DIII,
            Criterion.VISA_WAIVER_OR_TRANSIT,
            "NL",
            TAKE_CHARGE,
            ("airport_transit_state=NL",),
            {AFTER_APPLICATION: D(2025, 12, 1)},
            transit="NL",
        ),
        id="c5-dublin3-airport-transit-in-another-state",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_propose(case: Case) -> None:
    proposal = propose(case.build())
    assert proposal.criterion is case.criterion
    assert proposal.responsible_state == case.responsible
    assert proposal.procedure is case.procedure
    assert tuple(label(item) for item in proposal.evidence) == case.evidence
    assert proposal.due_dates == case.deadlines
    assert proposal.hit_rule is case.hit_rule
    expected_regime = Regime.AMMR if case.registered >= D(2026, 7, 1) else Regime.DUBLIN_III
    assert proposal.regime is expected_regime
    assert proposal.requesting_state == case.requester
    assert proposal.registration_date == case.registered
    assert proposal.proposal is True
    assert proposal.confirmed_by == ()


def _reversed(case: DublinCase) -> DublinCase:
    situation = case.situation
    return dataclasses.replace(
        case,
        situation=dataclasses.replace(
            situation,
            family=tuple(reversed(situation.family)),
            documents=tuple(reversed(situation.documents)),
        ),
        hits=tuple(reversed(case.hits)),
    )


@pytest.mark.parametrize("case", CASES)
def test_propose_does_not_depend_on_input_order(case: Case) -> None:
    built = case.build()
    assert propose(built) == propose(_reversed(built))


@pytest.mark.parametrize("case", CASES)
def test_explanation_is_one_sentence_citing_criterion_state_and_article(case: Case) -> None:
    proposal = propose(case.build())
    text = proposal.explanation
    assert text.startswith(f"Criterion {int(proposal.criterion)} (")
    assert text.endswith(".")
    # One sentence: no full stop inside but those of the abbreviations "Reg." and "Art.".
    assert ". " not in text.replace("Reg. ", "").replace("Art. ", "") and "\n" not in text
    assert proposal.responsible_state in text
    assert "Art. " in text and proposal.basis.split(" Art. ")[-1] in text
    assert ("AMMR" in text) == (proposal.regime is Regime.AMMR)
    assert "somewhere" not in text  # never the event place
    assert "hhhh" not in text  # never a handle


@pytest.mark.parametrize(
    ("case", "basis"),
    [
        (Case(AMMR, Criterion.DOCUMENTS, "NL", TAKE_CHARGE, (), {},
              documents=(doc("NL", RES, D(2026, 1, 1), D(2027, 1, 1)),)), "Art. 29(1)"),
        (Case(AMMR, Criterion.DOCUMENTS, "NL", TAKE_CHARGE, (), {},
              documents=(doc("NL", SHORT, D(2026, 8, 1), D(2026, 9, 20)),)), "Art. 29(2)"),
        (Case(AMMR, Criterion.DOCUMENTS, "NL", TAKE_CHARGE, (), {},
              documents=(doc("NL", RES, D(2021, 1, 1), D(2024, 1, 1)),)), "Art. 29(4)"),
        (Case(DIII, Criterion.DOCUMENTS, "NL", TAKE_CHARGE, (), {},
              documents=(doc("NL", RES, D(2021, 1, 1), D(2024, 1, 1)),)), "Art. 12(4)"),
        (Case(AMMR, Criterion.FIRST_APPLICATION, "DE", NONE, (), {}), "Art. 16(2)"),
        (Case(DIII, Criterion.FIRST_APPLICATION, "DE", NONE, (), {}), "Art. 3(2)"),
    ],
)  # fmt: skip
def test_the_basis_cites_the_regimes_article(case: Case, basis: str) -> None:
    proposal = propose(case.build())
    assert proposal.basis.endswith(f" {basis}")
    assert proposal.criterion is case.criterion


def test_the_ammr_keeps_expired_documents_longer() -> None:
    assert EXPIRED_RESIDENCE_DOCUMENT_MONTHS == {Regime.DUBLIN_III: 24, Regime.AMMR: 36}
    assert EXPIRED_VISA_MONTHS == {Regime.DUBLIN_III: 6, Regime.AMMR: 18}


def test_criteria_are_numbered_in_order() -> None:
    # 7 is no criterion: protection granted elsewhere, before all of them.
    assert [int(c) for c in Criterion] == [1, 2, 3, 4, 5, 6, 7]
    assert list(Criterion) == sorted(Criterion)


def test_no_scores_or_templates_in_the_output() -> None:
    names = {f.name for f in dataclasses.fields(CaseProposal)}
    names |= {f.name for f in dataclasses.fields(ConfirmedDecision)}
    assert not any("score" in name or "template" in name for name in names)


# --- deadlines ---------------------------------------------------------------------------


def _entry_case(
    registered: dt.date, received: dt.date, lodged: dt.date | None = None
) -> DublinCase:
    """An irregular crossing in GR a month before ``registered``, received on ``received``."""
    event = registered - dt.timedelta(days=30)
    return DublinCase(
        "DE",
        lodged or registered,
        registered,
        hits=(hit("GR", IRR, event, "GR-1", received=received),),
    )


def _take_back_case(registered: dt.date, received: dt.date) -> DublinCase:
    return DublinCase(
        "DE",
        registered,
        registered,
        hits=(hit("AT", APP, D(2025, 1, 10), "AT-1", received=received),),
    )


def _waiver_case(registered: dt.date, lodged: dt.date | None = None) -> DublinCase:
    return DublinCase(
        "DE",
        lodged or registered,
        registered,
        situation=ApplicantSituation(visa_waived_entry_state="FR"),
    )


HIT = StartEvent.HIT_RECEIVED
LODGED = StartEvent.APPLICATION_LODGED
REGISTERED = StartEvent.APPLICATION_REGISTERED


@pytest.mark.parametrize(
    ("case", "name", "start_event", "start", "due"),
    [
        pytest.param(
            _entry_case(D(2027, 1, 31), D(2027, 1, 31)),
            AFTER_HIT,
            HIT,
            D(2027, 1, 31),
            D(2027, 2, 28),
            id="ammr-take-charge-hit-jan31-plus-1m-is-feb28",
        ),
        pytest.param(
            _entry_case(D(2028, 1, 31), D(2028, 1, 31)),
            AFTER_HIT,
            HIT,
            D(2028, 1, 31),
            D(2028, 2, 29),
            id="ammr-take-charge-hit-jan31-leap-year-plus-1m-is-feb29",
        ),
        pytest.param(
            _entry_case(D(2028, 1, 29), D(2028, 1, 29)),
            AFTER_HIT,
            HIT,
            D(2028, 1, 29),
            D(2028, 2, 29),
            id="ammr-take-charge-hit-jan29-leap-year-plus-1m-is-leap-day",
        ),
        pytest.param(
            _entry_case(D(2028, 2, 29), D(2028, 2, 29)),
            AFTER_HIT,
            HIT,
            D(2028, 2, 29),
            D(2028, 3, 29),
            id="ammr-take-charge-hit-on-leap-day-plus-1m",
        ),
        pytest.param(
            _entry_case(D(2028, 2, 29), D(2028, 2, 29)),
            AFTER_APPLICATION,
            REGISTERED,
            D(2028, 2, 29),
            D(2028, 4, 29),
            id="ammr-take-charge-registered-on-leap-day-plus-2m",
        ),
        pytest.param(
            _waiver_case(D(2027, 12, 31)),
            AFTER_APPLICATION,
            REGISTERED,
            D(2027, 12, 31),
            D(2028, 2, 29),
            id="ammr-take-charge-registered-2027-12-31-plus-2m-is-2028-02-29",
        ),
        pytest.param(
            _waiver_case(D(2026, 12, 31)),
            AFTER_APPLICATION,
            REGISTERED,
            D(2026, 12, 31),
            D(2027, 2, 28),
            id="ammr-take-charge-registered-2026-12-31-plus-2m-is-2027-02-28",
        ),
        pytest.param(
            _entry_case(D(2025, 12, 31), D(2025, 12, 31)),
            AFTER_HIT,
            HIT,
            D(2025, 12, 31),
            D(2026, 2, 28),
            id="dublin3-take-charge-hit-dec31-plus-2m-is-feb28",
        ),
        pytest.param(
            _take_back_case(D(2025, 12, 31), D(2025, 12, 31)),
            TAKE_BACK_REQUEST,
            HIT,
            D(2025, 12, 31),
            D(2026, 2, 28),
            id="dublin3-take-back-hit-dec31-plus-2m-is-feb28",
        ),
        # A Dublin III application (registered before 2026-07-01) with a hit received late.
        pytest.param(
            _take_back_case(D(2026, 6, 15), D(2027, 12, 31)),
            TAKE_BACK_REQUEST,
            HIT,
            D(2027, 12, 31),
            D(2028, 2, 29),
            id="dublin3-take-back-hit-2027-12-31-plus-2m-is-2028-02-29",
        ),
        pytest.param(
            _waiver_case(D(2025, 11, 30)),
            AFTER_APPLICATION,
            LODGED,
            D(2025, 11, 30),
            D(2026, 2, 28),
            id="dublin3-take-charge-lodged-nov30-plus-3m-is-feb28",
        ),
        pytest.param(
            _waiver_case(D(2023, 11, 30)),
            AFTER_APPLICATION,
            LODGED,
            D(2023, 11, 30),
            D(2024, 2, 29),
            id="dublin3-take-charge-lodged-2023-11-30-plus-3m-is-leap-day",
        ),
        pytest.param(
            _waiver_case(D(2025, 8, 29), lodged=D(2025, 8, 31)),
            AFTER_APPLICATION,
            LODGED,
            D(2025, 8, 31),
            D(2025, 11, 30),
            id="dublin3-take-charge-runs-from-lodging-not-registration",
        ),
        pytest.param(
            _take_back_case(D(2026, 12, 24), D(2026, 12, 24)),
            TAKE_BACK_NOTIFICATION,
            HIT,
            D(2026, 12, 24),
            D(2027, 1, 7),
            id="ammr-notification-2-weeks-across-year-end-2026",
        ),
        pytest.param(
            _take_back_case(D(2027, 12, 20), D(2027, 12, 20)),
            TAKE_BACK_NOTIFICATION,
            HIT,
            D(2027, 12, 20),
            D(2028, 1, 3),
            id="ammr-notification-2-weeks-across-year-end-2027",
        ),
        pytest.param(
            _take_back_case(D(2028, 2, 22), D(2028, 2, 22)),
            TAKE_BACK_NOTIFICATION,
            HIT,
            D(2028, 2, 22),
            D(2028, 3, 7),
            id="ammr-notification-2-weeks-over-leap-day",
        ),
        pytest.param(
            _take_back_case(D(2027, 2, 22), D(2027, 2, 22)),
            TAKE_BACK_NOTIFICATION,
            HIT,
            D(2027, 2, 22),
            D(2027, 3, 8),
            id="ammr-notification-2-weeks-non-leap-february",
        ),
    ],
)
def test_deadline(
    case: DublinCase, name: str, start_event: StartEvent, start: dt.date, due: dt.date
) -> None:
    proposal = propose(case)
    deadline = next(d for d in proposal.deadlines if d.name == name)
    assert deadline.due == due
    assert deadline.start_event is start_event
    assert deadline.start_date == start
    assert "Art. " in deadline.basis


def test_hit_take_charge_is_also_bounded_by_the_lodging_clock() -> None:
    # Dublin III Art. 21(1), C-670/16 Mengesteab: a late hit does not extend the 3 months.
    proposal = propose(_entry_case(D(2025, 9, 1), D(2025, 11, 20), lodged=D(2025, 9, 3)))
    assert proposal.due_dates == {AFTER_HIT: D(2026, 1, 20), AFTER_APPLICATION: D(2025, 12, 3)}
    assert proposal.earliest_due == D(2025, 12, 3)


def test_no_transfer_has_no_deadline() -> None:
    proposal = propose(DublinCase("DE", DIII, DIII))
    assert proposal.deadlines == ()
    assert proposal.earliest_due is None


def test_a_hit_received_twice_starts_its_clock_at_the_first_receipt() -> None:
    first = hit("AT", APP, D(2025, 3, 1), "AT-1", received=D(2025, 8, 20))
    again = ReceivedHit(first.hit, D(2025, 9, 1))
    proposal = propose(DublinCase("DE", DIII, DIII, hits=(again, first)))
    assert proposal.due_dates == {TAKE_BACK_REQUEST: D(2025, 10, 20)}
    assert proposal.evidence == (first,)


@pytest.mark.parametrize(
    ("start", "length", "unit", "end"),
    [
        pytest.param(D(2027, 1, 31), 1, PeriodUnit.MONTHS, D(2027, 2, 28), id="jan31-plus-1m"),
        pytest.param(D(2028, 1, 31), 1, PeriodUnit.MONTHS, D(2028, 2, 29), id="jan31-leap"),
        pytest.param(D(2025, 12, 31), 2, PeriodUnit.MONTHS, D(2026, 2, 28), id="dec31-plus-2m"),
        pytest.param(D(2027, 12, 31), 2, PeriodUnit.MONTHS, D(2028, 2, 29), id="dec31-leap"),
        pytest.param(D(2028, 2, 29), 24, PeriodUnit.MONTHS, D(2030, 2, 28), id="leap-day-2y"),
        pytest.param(D(2026, 12, 24), 2, PeriodUnit.WEEKS, D(2027, 1, 7), id="2w-year-end"),
        pytest.param(D(2028, 2, 22), 2, PeriodUnit.WEEKS, D(2028, 3, 7), id="2w-leap-day"),
        pytest.param(D(2025, 5, 1), 0, PeriodUnit.WEEKS, D(2025, 5, 1), id="zero"),
    ],
)
def test_period_end(start: dt.date, length: int, unit: PeriodUnit, end: dt.date) -> None:
    assert period_end(start, length, unit) == end


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: period_end(D(2025, 1, 1), -1, PeriodUnit.MONTHS), id="negative"),
        pytest.param(lambda: period_end(D(9999, 12, 1), 1, PeriodUnit.MONTHS), id="past-9999"),
        pytest.param(
            lambda: period_end(dt.datetime(2025, 1, 1), 1, PeriodUnit.MONTHS), id="datetime"
        ),
    ],
)
def test_period_end_rejects(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidInput):
        call()


# --- confirmation ------------------------------------------------------------------------

AT_NOON = dt.datetime(2025, 9, 2, 12, 0, tzinfo=dt.UTC)
LATER = AT_NOON + dt.timedelta(hours=1)


def _proposal() -> CaseProposal:
    return propose(
        DublinCase("DE", DIII, DIII, hits=(hit("IT", IRR, D(2025, 5, 1), "IT-1", received=DIII),))
    )


def test_confirm_records_the_official_and_the_time() -> None:
    proposal = _proposal()
    decision = confirm(proposal, "DE-official-7", AT_NOON)
    assert decision.confirmed_by == ("DE-official-7",)
    assert decision.proposal.confirmed_by == ("DE-official-7",)
    assert decision.confirmations[0].at == AT_NOON
    assert decision.responsible_state == "IT"
    assert decision.proposal.proposal is True
    assert proposal.confirmed_by == ()  # the proposal itself is unchanged
    assert dataclasses.replace(decision.proposal, confirmed_by=()) == proposal


def test_a_second_official_adds_a_confirmation() -> None:
    first = confirm(_proposal(), "DE-official-7", AT_NOON)
    second = confirm(first, "DE-official-9", LATER)
    assert second.confirmed_by == ("DE-official-7", "DE-official-9")
    assert [c.at for c in second.confirmations] == [AT_NOON, LATER]


@pytest.mark.parametrize(
    "official",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(" DE-official-7", id="leading-blank"),
        pytest.param("DE\nofficial", id="not-printable"),
        pytest.param("x" * 65, id="too-long"),
    ],
)
def test_confirm_refuses_a_bad_official_id(official: str) -> None:
    with pytest.raises(InvalidInput):
        confirm(_proposal(), official, AT_NOON)


def test_confirm_refuses_a_non_string_official_id() -> None:
    with pytest.raises(InvalidInput):
        confirm(_proposal(), None, AT_NOON)  # type: ignore[arg-type]


def test_the_same_official_cannot_confirm_twice() -> None:
    decision = confirm(_proposal(), "DE-official-7", AT_NOON)
    with pytest.raises(AlreadyExists):
        confirm(decision, "DE-official-7", LATER)
    with pytest.raises(AlreadyExists):
        confirm(decision.proposal, "DE-official-7", LATER)


def test_a_confirmed_proposal_is_confirmed_again_through_its_decision() -> None:
    decision = confirm(_proposal(), "DE-official-7", AT_NOON)
    with pytest.raises(PreconditionFailed):
        confirm(decision.proposal, "DE-official-9", LATER)


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(dt.datetime(2025, 9, 2, 12, 0), id="naive-datetime"),
        pytest.param(D(2025, 9, 2), id="date"),
    ],
)
def test_confirm_needs_a_timezone_aware_moment(at: dt.datetime) -> None:
    with pytest.raises(InvalidInput):
        confirm(_proposal(), "DE-official-7", at)


def test_confirmations_cannot_go_back_in_time() -> None:
    decision = confirm(_proposal(), "DE-official-7", LATER)
    with pytest.raises(InvalidInput):
        confirm(decision, "DE-official-9", AT_NOON)


def test_a_proposal_cannot_claim_to_be_more_than_a_proposal() -> None:
    with pytest.raises(InvalidInput):
        dataclasses.replace(_proposal(), proposal=False)


def test_a_confirmed_decision_matches_its_confirmations() -> None:
    decision = confirm(_proposal(), "DE-official-7", AT_NOON)
    with pytest.raises(InvalidInput):
        ConfirmedDecision(decision.proposal, ())
    with pytest.raises(InvalidInput):
        dataclasses.replace(decision, proposal=_proposal())


# --- input validation --------------------------------------------------------------------


def _hit_detail(received: dt.date) -> ReceivedHit:
    return hit("IT", IRR, D(2025, 5, 1), "IT-1", received=received)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: DublinCase("XX", DIII, DIII), id="unknown-requesting-state"),
        pytest.param(lambda: DublinCase("de", DIII, DIII), id="lowercase-state"),
        pytest.param(lambda: DublinCase("DE", D(2025, 8, 31), DIII), id="lodged-before-registered"),
        pytest.param(
            lambda: DublinCase("DE", dt.datetime(2025, 9, 1), DIII), id="datetime-lodging"
        ),
        pytest.param(
            lambda: DublinCase("DE", DIII, DIII, hits=[]),  # type: ignore[arg-type]
            id="hits-not-a-tuple",
        ),
        pytest.param(
            lambda: DublinCase("DE", DIII, DIII, hits=("IT-1",)),  # type: ignore[arg-type]
            id="hit-not-received-hit",
        ),
        pytest.param(lambda: _hit_detail(D(2025, 4, 30)), id="hit-received-before-its-event"),
        pytest.param(
            lambda: hit("IT", IRR, D(2025, 5, 1), capture=D(2025, 5, 3), received=D(2025, 5, 2)),
            id="hit-received-before-capture",
        ),
        pytest.param(
            lambda: ReceivedHit("IT-1", DIII),  # type: ignore[arg-type]
            id="received-hit-not-a-hit-detail",
        ),
        pytest.param(lambda: fam("GB", SPOUSE, PRESENT), id="family-state-not-a-member"),
        pytest.param(
            lambda: FamilyMember("FR", "spouse", PRESENT),  # type: ignore[arg-type]
            id="family-relation-not-an-enum",
        ),
        pytest.param(
            lambda: doc("IT", RES, D(2025, 2, 1), D(2025, 1, 31)), id="document-ends-before-start"
        ),
        pytest.param(
            lambda: TravelDocument("IT", "visa", D(2025, 1, 1), D(2025, 2, 1)),  # type: ignore[arg-type]
            id="document-kind-not-an-enum",
        ),
        pytest.param(
            lambda: ApplicantSituation(visa_waived_entry_state="EL"), id="visa-waiver-state-el"
        ),
        pytest.param(
            lambda: ApplicantSituation(unaccompanied_minor=1),  # type: ignore[arg-type]
            id="minor-flag-not-bool",
        ),
        pytest.param(
            lambda: ApplicantSituation(family=(fam("FR", SPOUSE, PRESENT), "x")),  # type: ignore[arg-type]
            id="family-item-not-a-member",
        ),
        pytest.param(lambda: propose("DE"), id="propose-needs-a-case"),  # type: ignore[arg-type]
    ],
)
def test_invalid_input_raises(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidInput) as raised:
        build()
    assert type(raised.value) is InvalidInput


def test_fact_is_plain_data() -> None:
    assert Fact("visa_waived_entry_state", "FR") == Fact("visa_waived_entry_state", "FR")
