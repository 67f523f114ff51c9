"""Quality gates: which face of a photo to use, and whether it may become a template.

Every refusal is one of the :mod:`fedmatch.biometrics.errors` classes, with a message that
names the file (never its directory) and the measured value against its threshold.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.config import QualityConfig
from fedmatch.biometrics.detect import Face
from fedmatch.biometrics.errors import FaceTooSmall, NoFace, SeveralFaces, TooBlurred, TooDark
from fedmatch.errors import InvalidInput

__all__ = ["Pick", "brightness", "check_face", "select_face", "sharpness"]

Pick = int | Literal["largest"] | None
"""Which face of a photo with several: an index into the faces ordered by detection score
(0 = best), ``"largest"`` (largest box), or ``None``: the photo must show one subject."""


def _grey(crop_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


def sharpness(crop_bgr: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey crop: low when edges are soft."""
    return float(cv2.Laplacian(_grey(crop_bgr), cv2.CV_64F).var())


def brightness(crop_bgr: npt.NDArray[np.uint8]) -> float:
    """Mean grey level (0..255) of the crop."""
    return float(_grey(crop_bgr).mean())


def select_face(faces: list[Face], pick: Pick, config: QualityConfig, name: str) -> Face:
    """The face to enrol, from the detector's faces ordered best score first.

    Only detections scoring at least ``min_detection_score`` count. Without ``pick``, the
    largest face is the subject; another face makes the photo ambiguous only if it could
    itself be enrolled (eyes at least ``min_inter_eye_px`` apart) and its box is at least
    ``rival_area_ratio`` of the subject's. Small or partial faces in the background of a
    portrait are thereby ignored, while two comparable faces are refused.
    """
    floor = config.min_detection_score
    candidates = [f for f in faces if f.score >= floor]
    if not candidates:
        if faces:
            raise NoFace(
                f"{name}: no face: best detection score {faces[0].score:.2f}, minimum {floor:.2f}"
            )
        raise NoFace(f"{name}: no face detected (minimum detection score {floor:.2f})")
    if isinstance(pick, bool) or not (
        pick is None or pick == "largest" or (isinstance(pick, int) and pick >= 0)
    ):
        raise InvalidInput(f"pick must be a face index >= 0, 'largest' or None, not {pick!r}")
    if isinstance(pick, int):
        if pick >= len(candidates):
            raise NoFace(
                f"{name}: no face number {pick}: {len(candidates)} face(s) with detection "
                f"score >= {floor:.2f}"
            )
        return candidates[pick]
    largest = max(candidates, key=lambda f: f.area)
    if pick == "largest":
        return largest
    rivals = [
        f
        for f in candidates
        if f is not largest
        and f.inter_eye_px >= config.min_inter_eye_px
        and f.area >= config.rival_area_ratio * largest.area
    ]
    if rivals:
        ratio = max(f.area for f in rivals) / largest.area
        raise SeveralFaces(
            f"{name}: {len(rivals) + 1} faces of comparable size (second face's box is "
            f"{ratio:.2f} of the largest, limit {config.rival_area_ratio:.2f}); "
            "choose one with pick (an index, 0 = best score, or 'largest')"
        )
    return largest


def check_face(
    face: Face, crop_bgr: npt.NDArray[np.uint8], config: QualityConfig, name: str
) -> None:
    """Raise the first quality gate that ``face`` (and its aligned crop) fails."""
    eyes = face.inter_eye_px
    if eyes < config.min_inter_eye_px:
        raise FaceTooSmall(
            f"{name}: face too small: eyes {eyes:.1f} px apart, minimum "
            f"{config.min_inter_eye_px:g} px"
        )
    # Brightness before sharpness: darkening scales the Laplacian down with the contrast,
    # so a dark but sharp photo would otherwise be reported as blurred.
    level = brightness(crop_bgr)
    if level < config.min_brightness:
        raise TooDark(
            f"{name}: face too dark: mean grey level {level:.1f}, minimum {config.min_brightness:g}"
        )
    sharp = sharpness(crop_bgr)
    if sharp < config.min_sharpness:
        raise TooBlurred(
            f"{name}: face too blurred: Laplacian variance {sharp:.1f}, minimum "
            f"{config.min_sharpness:g}"
        )
