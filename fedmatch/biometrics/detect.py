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

__all__ = ["PAD_FRACTION", "PYRAMID", "WORKING_LONG_SIDE", "Face", "FaceDetector"]

# YuNet finds faces from ~10 px to ~300 px across at its input size: a photo is shrunk to
# this long side for detection (area averaging), so that a face filling a 4,000 px photo
# still fits its anchors and every photo is detected at the same scale, whatever its
# camera: the detection score means the same at every resolution. Landmarks are mapped
# back to the photo's own pixels, and alignment cuts the face from those.
WORKING_LONG_SIDE = 640
# Where the working resolution finds no face, finer whole-photo passes at these multiples
# of it (never above the photo's own size): a small face in a large photo (a group, a
# distant subject) that the shrinking made too small.
PYRAMID = (2, 4, 8)
# Where no pass finds a face, a plain border of this fraction of the long side on every
# side: a tight crop (a document-style portrait whose face fills the frame) gives YuNet
# the context its anchors need.
PAD_FRACTION = 0.4

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


def _reaches(faces: list[Face], gate: float) -> bool:
    return any(face.score >= gate for face in faces)


def _mapped(face: Face, sx: float, sy: float, dx: float, dy: float) -> Face:
    """``face`` in the coordinates of an image that is ``(sx, sy)`` times larger and has
    ``(dx, dy)`` fewer pixels before it (the inverse of a shrink or a border)."""
    x, y, w, h = face.bbox

    def at(point: Point) -> Point:
        return (point[0] * sx - dx, point[1] * sy - dy)

    a, b, c, d, e = face.landmarks
    return Face(
        (x * sx - dx, y * sy - dy, w * sx, h * sy), (at(a), at(b), at(c), at(d), at(e)), face.score
    )


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

    def find(self, image_bgr: npt.NDArray[np.uint8], gate: float) -> list[Face]:
        """The faces of a photo of any size, in its own pixel coordinates, best score first.

        First at the working resolution (:data:`WORKING_LONG_SIDE`); if no face reaches
        ``gate``, with a plain border (:data:`PAD_FRACTION`), then at the finer levels of
        :data:`PYRAMID`. The first pass with a face at ``gate`` answers; if none has one,
        the faces of every pass (below the gate) are returned, so that a refusal can say
        how close the best came.
        """
        height, width = image_bgr.shape[:2]
        longest = max(height, width)
        seen = self._scaled(image_bgr, WORKING_LONG_SIDE / longest)
        if _reaches(seen, gate):
            return seen
        padded = self._padded(image_bgr)
        if _reaches(padded, gate):
            return padded
        seen += padded
        for factor in PYRAMID:
            if WORKING_LONG_SIDE >= longest:
                break  # the first pass already ran at the photo's own size
            faces = self._scaled(image_bgr, WORKING_LONG_SIDE * factor / longest)
            if _reaches(faces, gate):
                return faces
            seen += faces
            if WORKING_LONG_SIDE * factor >= longest:
                break
        return sorted(seen, key=lambda f: f.score, reverse=True)

    def _scaled(self, image_bgr: npt.NDArray[np.uint8], scale: float) -> list[Face]:
        """Detect in ``image_bgr`` shrunk by ``scale`` (never enlarged), mapped back."""
        if scale >= 1.0:
            return self.detect(image_bgr)
        height, width = image_bgr.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA), np.uint8)
        return [_mapped(f, width / size[0], height / size[1], 0.0, 0.0) for f in self.detect(small)]

    def _padded(self, image_bgr: npt.NDArray[np.uint8]) -> list[Face]:
        """Detect with a plain border (the mean colour of the photo's edge) around it."""
        height, width = image_bgr.shape[:2]
        border = max(1, round(PAD_FRACTION * max(height, width)))
        edge = np.concatenate(
            [image_bgr[0], image_bgr[-1], image_bgr[:, 0], image_bgr[:, -1]]
        ).reshape(-1, image_bgr.shape[2])
        colour = [float(c) for c in edge.mean(axis=0)]
        framed = np.asarray(
            cv2.copyMakeBorder(
                image_bgr, border, border, border, border, cv2.BORDER_CONSTANT, value=colour
            ),
            dtype=np.uint8,
        )
        scale = WORKING_LONG_SIDE / max(framed.shape[:2])
        shift = float(border)
        return [_mapped(f, 1.0, 1.0, shift, shift) for f in self._scaled(framed, scale)]

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> list[Face]:
        """All faces above the detector's score threshold, best score first: one pass at the
        image's own size (:meth:`find` is the one for photos)."""
        h, w = image_bgr.shape[:2]
        with self._lock:
            self._net.setInputSize((w, h))
            _, rows = self._net.detect(image_bgr)
        if rows is None:
            return []
        faces = [_face(r) for r in np.asarray(rows, dtype=np.float32)]
        return sorted(faces, key=lambda f: f.score, reverse=True)
