"""Photo -> template: decode, detect, pick a face, align, check quality, embed.

:class:`FacePipeline` is what the rest of fedmatch uses. Models are loaded lazily, once per
process, and shared by every pipeline of that process that names the same model; a forked
child loads its own copies rather than reuse sessions whose threads did not survive the fork.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.align import align_face, load_aligner
from fedmatch.biometrics.config import QualityConfig
from fedmatch.biometrics.detect import Face, FaceDetector
from fedmatch.biometrics.embed import Recognizer
from fedmatch.biometrics.errors import UnreadableImage
from fedmatch.biometrics.models import DetectorSpec, ModelSpec, builtin_detector, builtin_recognizer
from fedmatch.biometrics.photofile import MAX_DECODE_BYTES, decode_photo
from fedmatch.biometrics.portrait import portrait
from fedmatch.biometrics.quality import Pick, check_face, select_face

__all__ = ["Enrolment", "FacePipeline", "ImageInput", "StageTimings"]

Image = npt.NDArray[np.uint8]
# Arrays of any dtype are accepted by the signatures and checked at run time (uint8 only),
# so that OpenCV's loosely typed results can be passed without casts.
ImageInput = Path | npt.NDArray[Any]

# The detector reports faces down to this score, below the default gate, so that a NoFace
# message can say how close the best candidate came.
_DETECTOR_FLOOR = 0.5

_lock = threading.Lock()
_recognizers: dict[ModelSpec, Recognizer] = {}
_detectors: dict[tuple[DetectorSpec, float], FaceDetector] = {}


def _forget_models() -> None:
    global _lock
    # The parent's lock may have been held at the fork, and its sessions' thread pools did
    # not survive it: the child starts with nothing loaded.
    _lock = threading.Lock()
    _recognizers.clear()
    _detectors.clear()


os.register_at_fork(after_in_child=_forget_models)


def _recognizer(spec: ModelSpec) -> Recognizer:
    with _lock:
        model = _recognizers.get(spec)
        if model is None:
            model = _recognizers[spec] = Recognizer(spec)
        return model


def _detector(spec: DetectorSpec, floor: float) -> FaceDetector:
    with _lock:
        model = _detectors.get((spec, floor))
        if model is None:
            model = _detectors[(spec, floor)] = FaceDetector(spec, score_threshold=floor)
        return model


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds spent per stage on one photo (align includes the quality checks)."""

    decode_ms: float
    detect_ms: float
    align_ms: float
    embed_ms: float


_UNSAFE = re.compile(r"[^\w.\- ()+,=@]")


def _display_name(name: str) -> str:
    # Names may come from the wire: keep the last path component only, without control
    # or markup characters, so a message cannot leak a directory or forge log lines.
    base = re.split(r"[\\/]", name)[-1]
    return _UNSAFE.sub("_", base)[:100] or "image"


def _read(path: Path) -> Image:
    name = _display_name(path.name)
    if not path.is_file():
        raise UnreadableImage(f"{name}: not a file")
    try:
        # A file larger than any decode may be is not read into memory either.
        if path.stat().st_size > MAX_DECODE_BYTES:
            raise UnreadableImage(f"{name}: more than {MAX_DECODE_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{name}: cannot be read ({exc.strerror})") from None
    return decode_photo(data, name)


def _from_array(given: npt.NDArray[Any], name: str) -> Image:
    if given.dtype == np.uint16:
        # 16-bit scans and camera exports: the top byte, rounded, as 8-bit decoding does.
        given = np.asarray((given.astype(np.uint32) + 128) // 257, dtype=np.uint8)
    if given.dtype != np.uint8:
        raise UnreadableImage(
            f"{name}: unsupported pixel type {given.dtype}, need uint8 or uint16 BGR"
        )
    array: Image = np.asarray(given, dtype=np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    channels = array.shape[2] if array.ndim == 3 else 1
    if array.ndim not in (2, 3) or channels not in (1, 3, 4) or 0 in array.shape[:2]:
        raise UnreadableImage(f"{name}: unsupported array shape {array.shape}, need HxWx3 BGR")
    if channels == 1:
        return np.asarray(cv2.cvtColor(array, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if channels == 4:
        return np.asarray(cv2.cvtColor(array, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class Enrolment:
    """What a node keeps of an enrolment photo: the template and the facial image (the
    face with its margin, :mod:`fedmatch.biometrics.portrait`), and the detector's score of
    the face as its image-quality figure. Never printed: both are biometric data."""

    template: npt.NDArray[np.float32]
    image: bytes
    quality: float

    def __repr__(self) -> str:
        return f"Enrolment(image_bytes={len(self.image)}, quality={self.quality:.2f})"


class FacePipeline:
    """Detect (YuNet), align (ArcFace template), gate on quality, embed (default SFace).

    Images are files or encoded bytes in JPEG, PNG or JPEG 2000 (their header is checked
    before any pixel is decoded: :mod:`fedmatch.biometrics.photofile`), or ``uint8`` /
    ``uint16`` arrays in OpenCV's BGR order (grey and BGRA arrays are accepted too). Photos
    of any size: faces are found at a fixed working resolution (:meth:`FaceDetector.find`:
    a finer pass for small faces, a border for tight crops) and cut from the photo's own
    pixels; a JPEG's EXIF orientation is applied by the decoder. Templates are unit-norm
    ``float32`` vectors of :attr:`dimension` values, comparable by dot product with
    templates of the same :attr:`model_id` only.
    """

    def __init__(
        self,
        recognizer: ModelSpec | None = None,
        quality: QualityConfig | None = None,
        *,
        detector: DetectorSpec | None = None,
    ) -> None:
        self._spec = recognizer or builtin_recognizer()
        self._quality = quality or QualityConfig()
        self._detector_spec = detector or builtin_detector()
        self._floor = min(_DETECTOR_FLOOR, self._quality.min_detection_score)

    @classmethod
    def for_model(cls, model: Path | None) -> FacePipeline:
        """The pipeline of an ArcFace-style recognizer file, or of the shipped SFace."""
        return cls(recognizer=ModelSpec.from_path(model) if model else None)

    @property
    def model_id(self) -> str:
        """The recognizer's id: templates carry it, and only equal ids are compared."""
        return self._spec.model_id

    @property
    def dimension(self) -> int:
        """Template length; loads the recognizer if its spec does not state it."""
        if self._spec.dimension is not None:
            return self._spec.dimension
        return _recognizer(self._spec).dimension

    @property
    def detector_id(self) -> str:
        return self._detector_spec.model_id

    @property
    def quality(self) -> QualityConfig:
        return self._quality

    def load(self) -> None:
        """Load (and checksum) both models now rather than on the first photo."""
        self._models()
        load_aligner()

    def faces(self, image: ImageInput, *, name: str | None = None) -> list[Face]:
        """The faces that pass the detection-score gate, best first: what ``pick`` indexes."""
        detector, _ = self._models()
        img, _ = self._image(image, name)
        floor = self._quality.min_detection_score
        return [f for f in detector.find(img, floor) if f.score >= floor]

    def template(
        self, image: ImageInput, pick: Pick = None, *, name: str | None = None
    ) -> npt.NDArray[np.float32]:
        """The unit-norm template of the photo's face, or a quality error.

        ``name`` labels an array in error messages (a file is labelled by its file name).
        """
        return self.template_timed(image, pick, name=name)[0]

    def template_bytes(self, data: bytes, name: str, pick: Pick = None) -> npt.NDArray[np.float32]:
        """The template of an encoded image received over the wire; ``name`` labels it."""
        return self.template_timed(data, pick, name=name)[0]

    def enrolment_bytes(self, data: bytes, name: str, pick: Pick = None) -> Enrolment:
        """Template and facial image of an encoded photo, from one detection of its face
        (every quality gate of :meth:`template` applies)."""
        img, face, template, _ = self._analyse(data, pick, name)
        return Enrolment(template, portrait(img, face), round(face.score, 3))

    def template_timed(
        self, image: ImageInput | bytes, pick: Pick = None, *, name: str | None = None
    ) -> tuple[npt.NDArray[np.float32], StageTimings]:
        """:meth:`template` plus the time spent in each stage (decoding included)."""
        _, _, template, timings = self._analyse(image, pick, name)
        return template, timings

    def _analyse(
        self, image: ImageInput | bytes, pick: Pick, name: str | None
    ) -> tuple[Image, Face, npt.NDArray[np.float32], StageTimings]:
        """Decode, detect, gate, align and embed: the decoded image, its chosen face, the
        template, and the time of each stage."""
        # Models first, so that a first call's loading is not timed as decoding.
        detector, recognizer = self._models()
        start = time.perf_counter()
        if isinstance(image, bytes | bytearray | memoryview):
            label = _display_name(name or "image")
            img = decode_photo(bytes(image), label)
        else:
            img, label = self._image(image, name)
        t_decoded = time.perf_counter()
        gate = self._quality.min_detection_score
        face = select_face(detector.find(img, gate), pick, self._quality, label)
        t_detected = time.perf_counter()
        crop = align_face(img, face)
        check_face(face, crop, self._quality, label)
        t_aligned = time.perf_counter()
        template = recognizer.embed(crop)
        t_embedded = time.perf_counter()
        return (
            img,
            face,
            template,
            StageTimings(
                decode_ms=(t_decoded - start) * 1e3,
                detect_ms=(t_detected - t_decoded) * 1e3,
                align_ms=(t_aligned - t_detected) * 1e3,
                embed_ms=(t_embedded - t_aligned) * 1e3,
            ),
        )

    def _models(self) -> tuple[FaceDetector, Recognizer]:
        return _detector(self._detector_spec, self._floor), _recognizer(self._spec)

    def _image(self, image: ImageInput, name: str | None) -> tuple[Image, str]:
        if isinstance(image, Path):
            return _read(image), _display_name(image.name)
        if isinstance(image, np.ndarray):
            label = _display_name(name or "image")
            return _from_array(image, label), label
        raise UnreadableImage(
            f"{_display_name(name or 'image')}: unsupported input type {type(image).__name__}"
        )
