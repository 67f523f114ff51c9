"""The facial image a node keeps of each record: for the expert who checks a hit.

Face-only matching needs every hit checked by a trained person comparing the two faces
(Eurodac recast Art. 38(4), recital 54; DOMAIN.md section 2). A node therefore keeps, next
to the template, a crop of the enrolment photo: the face with a margin (hair line, ears,
chin, as an examiner compares them), at most 480 px on its long side (enough for expert
comparison at ISO/IEC 19794-5 face sizes, and data minimisation: not the whole photograph
with its background and bystanders), JPEG-encoded. The crop is cut from the photo's own
pixels at their resolution, never upscaled.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.detect import Face
from fedmatch.biometrics.errors import UnreadableImage

__all__ = ["PORTRAIT_LONG_SIDE", "PORTRAIT_QUALITY", "portrait"]

PORTRAIT_LONG_SIDE = 480
PORTRAIT_QUALITY = 90
# Margin around the detector's box, as fractions of its width (sides) and height (above:
# the box stops at the brows, so more for forehead and hair; below: chin and neck).
_MARGIN_SIDE = 0.35
_MARGIN_TOP = 0.6
_MARGIN_BOTTOM = 0.3


def portrait(image: npt.NDArray[np.uint8], face: Face) -> bytes:
    """The JPEG crop of ``face`` (in ``image``'s pixel coordinates) with its margin."""
    height, width = image.shape[:2]
    x, y, w, h = face.bbox
    left = int(max(0.0, np.floor(x - _MARGIN_SIDE * w)))
    right = int(min(float(width), np.ceil(x + w + _MARGIN_SIDE * w)))
    top = int(max(0.0, np.floor(y - _MARGIN_TOP * h)))
    bottom = int(min(float(height), np.ceil(y + h + _MARGIN_BOTTOM * h)))
    if right - left < 2 or bottom - top < 2:
        raise UnreadableImage("the face box lies outside the photo")
    crop = image[top:bottom, left:right]
    scale = PORTRAIT_LONG_SIDE / max(crop.shape[:2])
    if scale < 1.0:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, PORTRAIT_QUALITY])
    if not ok:
        raise UnreadableImage("the face crop could not be encoded")
    return bytes(encoded.tobytes())
