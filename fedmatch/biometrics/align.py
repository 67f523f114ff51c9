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
    return _face_align().norm_crop(image, landmarks, image_size=112)


def align_face(image_bgr: npt.NDArray[np.uint8], face: Face) -> npt.NDArray[np.uint8]:
    """The 112x112x3 aligned crop of ``face`` (same channel order as ``image_bgr``).

    Parts of the template square outside the photo are filled with black.
    """
    return np.asarray(_norm_crop(image_bgr, face.landmarks_array()), dtype=np.uint8)
