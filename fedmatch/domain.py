"""Domain vocabulary shared by nodes, coordinator and requesters.

Member states, record categories (Eurodac recast, Regulation (EU) 2024/1358, see
``shared/docs/DOMAIN.md`` section 1), purposes of a search, and the frozen dataclasses that
services exchange. Each dataclass checks its own invariants when built, so that code past the
protobuf edge can trust what it holds.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from fedmatch.errors import InvalidInput

__all__ = [
    "FEDERATION_STATES",
    "MARKABLE_CATEGORIES",
    "MAX_BASIS_TEXT",
    "MAX_PROBE_BYTES",
    "PROBE_NORM_TOLERANCE",
    "RESETTLEMENT_BASES",
    "Category",
    "EncryptedProbe",
    "HitDetail",
    "MarkKind",
    "Purpose",
    "QueryHeader",
    "Sex",
    "check_member_state",
    "parse_date",
    "reference_digest",
    "reference_digests",
]

# EU-27 plus the associated Dublin states (Iceland, Liechtenstein, Norway, Switzerland), by
# ISO 3166-1 alpha-2. Greece is "GR" in ISO 3166-1 (the EU's own "EL" is not accepted, so
# that every code means the same thing everywhere).
FEDERATION_STATES: frozenset[str] = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        "IS", "LI", "NO", "CH",
    }
)  # fmt: skip

_CODE = re.compile(r"^[A-Z]{2}$")


def check_member_state(code: str, field: str = "member_state") -> str:
    """Return ``code`` if it names a federation member state, else raise InvalidInput."""
    if not _CODE.match(code):
        raise InvalidInput(f"{field} must be an ISO 3166-1 alpha-2 code such as 'DE'")
    if code not in FEDERATION_STATES:
        raise InvalidInput(f"{field} {code!r} is not a member state of this federation")
    return code


def parse_date(value: str, field: str) -> dt.date:
    """Parse an ISO 8601 calendar date (YYYY-MM-DD) or raise InvalidInput naming the field."""
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field} must be a date in YYYY-MM-DD form") from None


class Category(enum.StrEnum):
    """The six categories of person of the Eurodac recast; each record has exactly one."""

    APPLICANT = "applicant"
    IRREGULAR_CROSSING = "irregular_crossing"
    ILLEGAL_STAY = "illegal_stay"
    SAR_DISEMBARKED = "sar_disembarked"
    RESETTLEMENT = "resettlement"
    TEMPORARY_PROTECTION = "temporary_protection"

    @classmethod
    def parse(cls, value: str) -> Category:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(c.value for c in cls)
            raise InvalidInput(f"unknown category; expected one of: {names}") from None


class Sex(enum.StrEnum):
    """Sex as recorded at capture; optional on a record."""

    UNSPECIFIED = ""
    FEMALE = "F"
    MALE = "M"
    OTHER = "X"

    @classmethod
    def parse(cls, value: str) -> Sex:
        try:
            return cls(value)
        except ValueError:
            raise InvalidInput("sex must be one of F, M, X or empty") from None


class Purpose(enum.StrEnum):
    """Why a search is made (DOMAIN.md section 4). Purposes differ in what they may search;
    the enforcement of that lands with the policy issue, the vocabulary lands here."""

    ASYLUM_DUBLIN = "asylum_dublin"
    BORDER_CONTROL = "border_control"
    ILLEGAL_STAY_CHECK = "illegal_stay_check"
    RESETTLEMENT = "resettlement"
    LAW_ENFORCEMENT = "law_enforcement"
    DATA_SUBJECT_REQUEST = "data_subject_request"

    @classmethod
    def parse(cls, value: str) -> Purpose:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise InvalidInput(f"unknown purpose; expected one of: {names}") from None


_QUERY_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class QueryHeader:
    """What every request carries: who asks, why, on which legal basis, for which case."""

    query_id: str
    requesting_state: str
    purpose: Purpose
    legal_basis: str
    case_reference: str
    # The requesting unit and the operator, for the logs (DOMAIN.md section 5). Optional
    # on the wire; the coordinator requires both for searches and hit requests.
    unit: str = ""
    operator: str = ""

    def __post_init__(self) -> None:
        if not _QUERY_ID.match(self.query_id):
            raise InvalidInput("query_id must be 32 lowercase hex digits (128 random bits)")
        check_member_state(self.requesting_state, "requesting_state")
        for name in ("legal_basis", "case_reference"):
            value: str = getattr(self, name)
            if not value.strip():
                raise InvalidInput(f"{name} is required")
            if len(value) > 256:
                raise InvalidInput(f"{name} is longer than 256 characters")
            # It is logged: a control character would make the log entry (and so the
            # request) impossible to record.
            if not value.isprintable():
                raise InvalidInput(f"{name} must be printable text")
        for name in ("unit", "operator"):
            value = getattr(self, name)
            if len(value) > 64 or not value.isprintable():
                raise InvalidInput(f"{name} must be at most 64 printable characters")


class MarkKind(enum.StrEnum):
    """The two marks of the Eurodac recast (DOMAIN.md section 1)."""

    NONE = ""
    # Art. 31(1): international protection granted (applicant data); unmarked on withdrawal.
    PROTECTION_GRANTED = "protection_granted"
    # Art. 31(4): a residence document issued (irregular-crossing, illegal-stay, SAR data).
    RESIDENCE_DOCUMENT = "residence_document"


# Which categories each mark may be set on (Eurodac recast Art. 31(1) and 31(4)).
MARKABLE_CATEGORIES: dict[MarkKind, frozenset[Category]] = {
    MarkKind.PROTECTION_GRANTED: frozenset({Category.APPLICANT}),
    MarkKind.RESIDENCE_DOCUMENT: frozenset(
        {Category.IRREGULAR_CROSSING, Category.ILLEGAL_STAY, Category.SAR_DISEMBARKED}
    ),
}

# Longest free-text basis a node states for the state indicated as responsible.
MAX_BASIS_TEXT = 128

# The Eurodac recast article under which a resettlement record's data were taken: it decides
# their retention (Art. 18(1): not recorded; 18(2)(a) and Art. 20: 5 years; 18(2)(b), (c):
# 3 years; DOMAIN.md section 1). "" on every other category, and where it was not given.
RESETTLEMENT_BASES = frozenset({"18(1)", "18(2)(a)", "18(2)(b)", "18(2)(c)", "20"})


@dataclass(frozen=True)
class HitDetail:
    """The record metadata a node reveals for a matched handle in the second step.

    Never holds the template: hit details are metadata only. Besides the event, a hit carries
    what Eurodac keeps about the record's Dublin status (recast Art. 16, 28(4), 31): its mark,
    the member state indicated as responsible and on what basis ("" while none is indicated),
    the day the data were transmitted (enrolled), and the transfer, removal, left-territory
    and relocation dates the origin state recorded (None when it recorded none).
    """

    member_state: str
    handle: bytes
    category: Category
    reference: str
    event_date: dt.date
    event_place: str
    capture_date: dt.date
    sex: Sex = Sex.UNSPECIFIED
    mark: MarkKind = MarkKind.NONE
    marked_on: dt.date | None = None
    responsible_state: str = ""  # indicated as responsible (Eurodac recast Art. 16(1))
    responsible_basis: str = ""  # e.g. "AMMR Art. 33(1)"
    transmitted_on: dt.date | None = None
    transferred_on: dt.date | None = None
    removed_on: dt.date | None = None
    left_territory_on: dt.date | None = None
    relocated_to: str = ""  # member state of relocation (Eurodac recast Art. 28(4))
    relocated_on: dt.date | None = None

    def __post_init__(self) -> None:
        check_member_state(self.member_state)
        if not self.reference:
            raise InvalidInput("hit detail has no reference number")
        if not isinstance(self.mark, MarkKind):
            raise InvalidInput("hit detail mark must be a MarkKind")
        if self.mark is not MarkKind.NONE and self.category not in MARKABLE_CATEGORIES[self.mark]:
            raise InvalidInput(f"a {self.category.value} record cannot carry a {self.mark} mark")
        if (self.mark is MarkKind.NONE) != (self.marked_on is None):
            raise InvalidInput("hit detail marked_on goes with a mark, and only with one")
        for name in ("responsible_state", "relocated_to"):
            value = getattr(self, name)
            if value:
                check_member_state(value, name)
        if self.relocated_to and self.relocated_on is None:
            raise InvalidInput("hit detail relocated_to needs relocated_on")
        if len(self.responsible_basis) > MAX_BASIS_TEXT:
            raise InvalidInput(f"responsible_basis is longer than {MAX_BASIS_TEXT} characters")
        if self.responsible_basis and not self.responsible_state:
            raise InvalidInput("hit detail responsible_basis needs responsible_state")

    def record_json(self) -> dict[str, str]:
        """The record as JSON text values, without the handle (a per-query position, not
        part of the record): the event, then Eurodac's status of it ("" where none)."""

        def day(value: dt.date | None) -> str:
            return value.isoformat() if value is not None else ""

        return {
            "member_state": self.member_state,
            "category": self.category.value,
            "reference": self.reference,
            "event_date": self.event_date.isoformat(),
            "event_place": self.event_place,
            "capture_date": self.capture_date.isoformat(),
            "sex": self.sex.value,
            "mark": self.mark.value,
            "marked_on": day(self.marked_on),
            "responsible_state": self.responsible_state,
            "responsible_basis": self.responsible_basis,
            "transmitted_on": day(self.transmitted_on),
            "transferred_on": day(self.transferred_on),
            "removed_on": day(self.removed_on),
            "left_territory_on": day(self.left_territory_on),
            "relocated_to": self.relocated_to,
            "relocated_on": day(self.relocated_on),
        }


def reference_digest(member_state: str, reference: str) -> str:
    """How a record's reference appears in notices and logs: SHA-256 (hex) of
    ``"fedmatch/record-reference/v1\\0" + state + "\\0" + reference``. The receiver of a
    notification computes it from the hit detail it got (state and reference)."""
    return reference_digests(member_state, (reference,))[0].hex()


def reference_digests(member_state: str, references: Iterable[str]) -> list[bytes]:
    """The raw 32-byte :func:`reference_digest` of each reference (a whole register's at
    once: the register's reconciliation with its log, node/reconcile.py)."""
    prefix = f"fedmatch/record-reference/v1\0{member_state}\0".encode()
    sha256 = hashlib.sha256
    return [sha256(prefix + r.encode()).digest() for r in references]


_KEY_ID = re.compile(r"^[0-9a-f]{64}$")

# A seeded probe of the default parameter set is ~126 KB; 512 KiB leaves room for other sets.
MAX_PROBE_BYTES = 512 * 1024

# How far a probe's norm may be from 1: float32 templates normalized by their producer are
# within 1e-6; 1e-3 leaves room for any rounding of an honest template and scales every score
# by at most 1.001 (at t = 0.45 a record needs 0.4496 instead of 0.45 to match).
PROBE_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class EncryptedProbe:
    """An encrypted probe as it travels: ciphertext plus what it claims to be. Validated
    for shape here; the ciphertext itself is validated by the HE engine that opens it."""

    param_set: str
    ciphertext: bytes = field(repr=False)
    model_id: str
    dimension: int
    key_id: str

    def __post_init__(self) -> None:
        if not self.ciphertext:
            raise InvalidInput("probe ciphertext is empty")
        if len(self.ciphertext) > MAX_PROBE_BYTES:
            raise InvalidInput(f"probe ciphertext exceeds {MAX_PROBE_BYTES} bytes")
        if not _KEY_ID.match(self.key_id):
            raise InvalidInput("probe key_id must be the 64-hex-digit id of registered keys")
        if not self.param_set:
            raise InvalidInput("probe he_param_set is required")
