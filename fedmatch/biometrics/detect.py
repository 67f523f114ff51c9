"""Face detection with YuNet, run by OpenCV's ``cv2.FaceDetectorYN``.

The int8 block-quantized YuNet file does not load in onnxruntime 1.31 ("block_size must be 0
for per-tensor quantization"), while OpenCV's own DNN engine runs it; hence OpenCV here and
onnxruntime for the recognizer. The detector is created from the checksum-verified bytes,
never from the path, so the file that was checked is the file that runs.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.errors import ModelError
from fedmatch.biometrics.models import DetectorSpec, builtin_detector

__all__ = ["Face", "FaceDetector"]

Point = tuple[float, float]


@dataclass(frozen=True)
class Face:
    """One detected face, in pixel coordinates of the image it was found in.

    ``landmarks`` are five points in YuNet's order: right eye, left eye, nose tip, right
    mouth corner, left mouth corner, where "right" is the subject's right, i.e. the point
    with the smaller x in an upright, unmirrored photo.
    """

    bbox: tuple[float, float, float, float]  # x, y, width, height
    landmarks: tuple[Point, Point, Point, Point, Point]
    score: float

    @property
    def inter_eye_px(self) -> float:
        """Distance between the eye centres: the face-size measure of ISO/IEC 19794-5."""
        (rx, ry), (lx, ly) = self.landmarks[0], self.landmarks[1]
        return math.hypot(lx - rx, ly - ry)

    @property
    def area(self) -> float:
        return self.bbox[2] * self.bbox[3]

    def landmarks_array(self) -> npt.NDArray[np.float32]:
        """The landmarks as a (5, 2) array, the form the aligner takes."""
        return np.asarray(self.landmarks, dtype=np.float32)


def _face(row: npt.NDArray[np.float32]) -> Face:
    # A YuNet row: x, y, w, h, then (x, y) of the five landmarks, then the score.
    v = [float(x) for x in row[:15]]
    points = ((v[4], v[5]), (v[6], v[7]), (v[8], v[9]), (v[10], v[11]), (v[12], v[13]))
    return Face((v[0], v[1], v[2], v[3]), points, v[14])


class FaceDetector:
    """YuNet with the input size set per image.

    One OpenCV detector object is stateful (its input size), so calls are serialized by a
    lock; processes, not threads, are the way to detect in parallel.
    """

    def __init__(
        self,
        spec: DetectorSpec | None = None,
        *,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        top_k: int = 50,
    ) -> None:
        self.spec = spec or builtin_detector()
        buffer = np.frombuffer(self.spec.read_verified(), dtype=np.uint8)
        # OpenCV warns once, on stderr, that its new DNN engine ignores target selection;
        # it concerns GPU targets, which are not used, so it is silenced for this call only.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net = cv2.FaceDetectorYN.create(
                "onnx",
                buffer,
                np.empty(0, np.uint8),
                (320, 320),
                score_threshold,
                nms_threshold,
                top_k,
            )
        except cv2.error as exc:
            raise ModelError(
                f"model file {self.spec.path.name} does not load in OpenCV: {exc.err}"
            ) from None
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> list[Face]:
        """All faces above the detector's score threshold, best score first."""
        h, w = image_bgr.shape[:2]
        with self._lock:
            self._net.setInputSize((w, h))
            _, rows = self._net.detect(image_bgr)
        if rows is None:
            return []
        faces = [_face(r) for r in np.asarray(rows, dtype=np.float32)]
        return sorted(faces, key=lambda f: f.score, reverse=True)
