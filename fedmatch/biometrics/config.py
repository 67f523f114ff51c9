"""Quality-gate thresholds for turning a photo into a template.

The defaults were chosen on the 28 photos in ``shared/data/faces`` (all must pass) and on
degraded copies of them (which must fail), and re-measured (issue 18) on the same photos
from 640 to 6,000 px on the long side: every gate means the same at every resolution, because
detection runs at a fixed working resolution (the score is YuNet's at that size) and the
sharpness and brightness figures are those of the aligned 112x112 crop, which is cut from the
face shrunk by area averaging (no aliasing) and warped at twice its size. Only a face smaller
than the crop (eyes under ~35 px) depends on the photo, through its upsampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from fedmatch.errors import ConfigError

__all__ = ["QualityConfig"]


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the face quality gates; a bad value raises :class:`ConfigError`."""

    min_inter_eye_px: float = 24.0
    """Smallest distance between the eye centres, in pixels of the photo. Below it the
    aligned crop is mostly interpolation (the crop's own eye distance is ~35 px)."""

    min_sharpness: float = 15.0
    """Smallest variance of the Laplacian of the grey aligned crop. Shared photos as taken:
    275 to 1174; at 640 px 231 to 948, at 4,000 px 299 to 1302, at JPEG quality 30 265 to
    1093. Gaussian blur of sigma s in crop pixels (s = 35 / inter-eye px of the photo) gives
    medians of 62 (s=1), 26 (1.5), 15 (2), 8 (3) (the same as before the crop was averaged:
    66, 27, 14, 8), while the template's cosine to the sharp one falls to 0.95, 0.89, 0.82,
    0.65: a face this blurred no longer matches itself reliably. The demo's synthetic
    second captures (sigma 0.8 at 29 px between the eyes, JPEG 70) measure ~25."""

    min_brightness: float = 50.0
    """Smallest mean grey level (0..255) of the aligned crop. Shared photos: 84 to 177;
    at a quarter of their brightness: <= 44."""

    min_detection_score: float = 0.8
    """Smallest YuNet score for a detection to count as a face. Subjects of the shared
    photos score 0.921 to 0.955 at the working resolution whatever the photo's size (640 to
    6,000 px) or JPEG quality, also when blurred, darkened or shrunk. (Detected at the
    photo's own size, as before issue 18, the same faces scored 0.55 to 0.78 at 3,000 px.)"""

    rival_area_ratio: float = 0.5
    """A second face makes the photo ambiguous (:class:`SeveralFaces`) only if its box is
    at least this fraction of the largest face's box, and it is large enough to enrol
    (``min_inter_eye_px``). Bystanders in the shared photos are at most 0.38 of the
    subject's box or have eyes <= 20 px apart; two portraits side by side are ~1."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{f.name} must be a number, not {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{f.name} must be a finite number >= 0, not {value}")
        if self.min_brightness > 255:
            raise ConfigError(f"min_brightness must be <= 255, not {self.min_brightness}")
        if self.min_detection_score > 1:
            raise ConfigError(f"min_detection_score must be <= 1, not {self.min_detection_score}")
        if not 0 < self.rival_area_ratio <= 1:
            raise ConfigError(f"rival_area_ratio must be in (0, 1], not {self.rival_area_ratio}")
