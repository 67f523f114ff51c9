"""Face alignment: five landmarks -> the 112x112 ArcFace-template crop.

Uses insightface's ``face_align.norm_crop``: a similarity transform (rotation, uniform
scale, translation) that maps the five landmarks onto the ArcFace reference points, then
``cv2.warpAffine``. That is the crop both SFace and the insightface recognizers were
trained on.

Channel order: the transform only moves pixels, so the crop has the channel order of the
image given. fedmatch keeps images in OpenCV's BGR order from decoding to this point and
converts to RGB only when building the recognizer input (:mod:`fedmatch.biometrics.embed`).

Landmark order: insightface's reference points are right eye, left eye, nose, right mouth
corner, left mouth corner (subject's right = image left), which is YuNet's order, so
detector landmarks are passed through unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.detect import Face

__all__ = ["align_face", "load_aligner"]

# insightface 2.1 calls skimage's SimilarityTransform.estimate, which scikit-image 0.26
# deprecates with a FutureWarning on every call. The filter is narrowed to that message
# from that module, so no other warning is hidden. (It will stop working with scikit-image
# 2.2, which removes the method; insightface must be updated before then.)
warnings.filterwarnings(
    "ignore",
    message=r"`estimate` is deprecated",
    category=FutureWarning,
    module=r"insightface\.utils\.face_align",
)


def _face_align() -> Any:
    # Imported on first use: insightface's package import takes ~0.7 s, which a process
    # that only handles templates should not pay.
    from insightface.utils import face_align

    return face_align


def load_aligner() -> None:
    """Import insightface now rather than during the first alignment."""
    _face_align()


def _norm_crop(image: npt.NDArray[np.uint8], landmarks: npt.NDArray[np.float32]) -> Any:
    # Warped at twice the template's size, then averaged down: every crop pixel is the mean
    # of four bilinear samples, not one, so a sub-pixel shift of the landmarks or a
    # resampled photo moves the crop (and the template) less.
    big = _face_align().norm_crop(image, landmarks, image_size=2 * _CROP_PX)
    return cv2.resize(big, (_CROP_PX, _CROP_PX), interpolation=cv2.INTER_AREA)


# The ArcFace template puts the eye centres 35.2 px apart in its 112 px square. A face much
# larger than that is first shrunk by area averaging to about twice this, so that the warp
# (bilinear, one sample per output pixel) does not alias: the crop, and so the template and
# the sharpness gate, then mean the same whether the photo is 600 or 6,000 px.
_CROP_PX = 112
_TEMPLATE_EYES_PX = 35.2
_PRESHRINK_EYES_PX = 2.0 * _TEMPLATE_EYES_PX
# The template square spans ~3.2 inter-eye distances; the neighbourhood cut around the face
# spans this many on every side of the landmarks' centre (room for any rotation).
_REGION_EYES = 2.6


def align_face(image_bgr: npt.NDArray[np.uint8], face: Face) -> npt.NDArray[np.uint8]:
    """The 112x112x3 aligned crop of ``face`` (same channel order as ``image_bgr``).

    Works on the face's neighbourhood only: cut from the photo at its own resolution,
    shrunk first when the face is large (no aliasing), and filled with black where the
    template square leaves the photo (as the recognizers' training crops were).
    """
    landmarks = face.landmarks_array().astype(np.float64)
    centre = landmarks.mean(axis=0)
    eyes = max(face.inter_eye_px, 1.0)
    reach = _REGION_EYES * max(eyes, 0.5 * max(face.bbox[2], face.bbox[3]))
    height, width = image_bgr.shape[:2]
    left = int(max(0, np.floor(centre[0] - reach)))
    top = int(max(0, np.floor(centre[1] - reach)))
    right = int(min(width, np.ceil(centre[0] + reach)))
    bottom = int(min(height, np.ceil(centre[1] + reach)))
    if right - left < 2 or bottom - top < 2:
        # The face lies (almost) outside the photo: the template square is all border.
        region, landmarks = image_bgr, landmarks
    else:
        region = image_bgr[top:bottom, left:right]
        landmarks = landmarks - np.array([left, top], dtype=np.float64)
    scale = _PRESHRINK_EYES_PX / eyes
    if scale < 1.0:
        size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
        sx, sy = size[0] / region.shape[1], size[1] / region.shape[0]
        region = np.asarray(cv2.resize(region, size, interpolation=cv2.INTER_AREA), np.uint8)
        landmarks = landmarks * np.array([sx, sy], dtype=np.float64)
    return np.asarray(_norm_crop(region, landmarks.astype(np.float32)), dtype=np.uint8)
