"""Records of a node's register, as services see them (frozen, self-validating)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmatch.domain import (
    MAX_BASIS_TEXT,
    RESETTLEMENT_BASES,
    Category,
    MarkKind,
    Sex,
    check_member_state,
)
from fedmatch.errors import InvalidInput
from fedmatch.protocol.limits import MAX_TEXT_FIELD
from node.retention import check_enrolment_age

__all__ = [
    "MAX_FACE_IMAGE_BYTES",
    "UNIT_NORM_TOLERANCE",
    "NewRecord",
    "RecordMeta",
    "RecordStatus",
]

# Templates are L2-normalized by the model pipeline; float32 storage keeps ~1e-7 relative
# error, so anything further than this from 1 is a caller bug, not rounding.
UNIT_NORM_TOLERANCE = 1e-3
# A 480 px face crop at JPEG quality 90 is ~30-80 KB.
MAX_FACE_IMAGE_BYTES = 512 * 1024


@dataclass(frozen=True)
class RecordMeta:
    """Metadata of one record (DOMAIN.md section 1). Never holds the template."""

    reference: str
    category: Category
    event_date: dt.date
    event_place: str
    capture_date: dt.date
    sex: Sex = Sex.UNSPECIFIED
    operator_id: str = ""
    # Required to enrol (minimum age 6, :func:`node.retention.check_enrolment_age`); None
    # only for records enrolled before birth dates were kept (register schema 1).
    birth_date: dt.date | None = None
    birth_date_estimated: bool = False
    # Resettlement records only: the Eurodac recast article the data were taken under
    # (fedmatch.domain.RESETTLEMENT_BASES), which decides their retention; "" when not given.
    resettlement_basis: str = ""

    def __post_init__(self) -> None:
        if self.resettlement_basis:
            if self.resettlement_basis not in RESETTLEMENT_BASES:
                names = ", ".join(sorted(RESETTLEMENT_BASES))
                raise InvalidInput(f"resettlement_basis must be '' or one of: {names}")
            if self.category is not Category.RESETTLEMENT:
                raise InvalidInput("resettlement_basis is only for resettlement records")
        if not self.reference.strip():
            raise InvalidInput("reference is required")
        for name in ("reference", "event_place", "operator_id"):
            if len(getattr(self, name)) > MAX_TEXT_FIELD:
                raise InvalidInput(f"{name} is longer than {MAX_TEXT_FIELD} characters")
        if not self.event_place.strip():
            raise InvalidInput("event_place is required")
        if self.capture_date < self.event_date - dt.timedelta(days=1):
            # Capture happens at the event (application, apprehension); a day's slack
            # allows for time zones. A capture long before the event is a data-entry error.
            raise InvalidInput("capture_date is before event_date")
        if self.birth_date is not None and self.birth_date > self.capture_date:
            raise InvalidInput("birth_date is after capture_date")


@dataclass(frozen=True)
class NewRecord:
    """A record to enrol: metadata, template and the id of the model that produced it."""

    meta: RecordMeta
    template: npt.NDArray[np.float32] = field(repr=False)
    model_id: str
    # The facial image kept for the expert who checks a hit (JPEG, the face with a margin,
    # fedmatch.biometrics.portrait); None for a record enrolled from a template alone, which
    # is then not verifiable by image. Its quality figure: the detector's score of the face.
    image: bytes | None = field(default=None, repr=False)
    image_quality: float | None = None

    def __post_init__(self) -> None:
        t = self.template
        if t.ndim != 1 or t.shape[0] == 0:
            raise InvalidInput("template must be a non-empty one-dimensional vector")
        if not np.all(np.isfinite(t)):
            raise InvalidInput("template has non-finite values")
        norm = float(np.linalg.norm(t.astype(np.float64)))
        if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
            raise InvalidInput("template is not unit-norm (L2-normalize it first)")
        if not self.model_id.strip():
            raise InvalidInput("model_id is required")
        if self.image is not None and (
            not self.image.startswith(b"\xff\xd8") or len(self.image) > MAX_FACE_IMAGE_BYTES
        ):
            raise InvalidInput(
                f"facial image must be a JPEG of at most {MAX_FACE_IMAGE_BYTES} bytes"
            )
        m = self.meta
        check_enrolment_age(m.birth_date, m.birth_date_estimated, m.capture_date)


@dataclass(frozen=True)
class RecordStatus:
    """What a register keeps about a record's Dublin status besides its event, released in
    its hit details (Eurodac recast Art. 16, 28(4), 31; DOMAIN.md section 1).

    The mark (Art. 31(1) protection granted, 31(4) residence document issued) with the time
    it was set; the member state indicated as responsible and on what basis (Art. 16(1), "",
    while none is); the transfer, removal and left-territory dates and the relocation (Art.
    28(4)) the node's own authority recorded (None: none recorded).
    """

    mark: MarkKind = MarkKind.NONE
    marked_at: dt.datetime | None = None
    responsible_state: str = ""
    responsible_basis: str = ""
    transferred_on: dt.date | None = None
    removed_on: dt.date | None = None
    left_territory_on: dt.date | None = None
    relocated_to: str = ""
    relocated_on: dt.date | None = None

    def __post_init__(self) -> None:
        if (self.mark is MarkKind.NONE) != (self.marked_at is None):
            raise InvalidInput("a mark has a time, and only a mark has one")
        for name in ("responsible_state", "relocated_to"):
            if getattr(self, name):
                check_member_state(getattr(self, name), name)
        if len(self.responsible_basis) > MAX_BASIS_TEXT:
            raise InvalidInput(f"responsible_basis is longer than {MAX_BASIS_TEXT} characters")
        if self.responsible_basis and not self.responsible_state:
            raise InvalidInput("responsible_basis needs responsible_state")
        if bool(self.relocated_to) != (self.relocated_on is not None):
            raise InvalidInput("relocated_to and relocated_on go together")
