"""Records of a node's register, as services see them (frozen, self-validating)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmatch.domain import Category, Sex
from fedmatch.errors import InvalidInput
from fedmatch.protocol.limits import MAX_TEXT_FIELD
from node.retention import check_enrolment_age

__all__ = ["MAX_FACE_IMAGE_BYTES", "UNIT_NORM_TOLERANCE", "NewRecord", "RecordMeta"]

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

    def __post_init__(self) -> None:
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
