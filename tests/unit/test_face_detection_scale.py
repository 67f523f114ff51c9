"""Issue 18 item 1: detection at a fixed working resolution (fedmatch/biometrics/detect.py
``FaceDetector.find``), with the real YuNet on the shared photos. Each test first shows the
single pass at the photo's own size failing, then ``find`` succeeding."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.biometrics.detect import WORKING_LONG_SIDE, Face, FaceDetector

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
GATE = 0.8  # QualityConfig.min_detection_score

Photo = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(score_threshold=0.5)


@pytest.fixture(scope="module")
def photos() -> list[Photo]:
    with (FACES / "identities.csv").open() as f:
        files = [row["file"] for row in csv.DictReader(f)]
    return [np.asarray(cv2.imread(str(FACES / name)), dtype=np.uint8) for name in files]


def _best(faces: list[Face]) -> float:
    return max((f.score for f in faces), default=0.0)


def _long_side(image: Photo, side: int) -> Photo:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (round(w * scale), round(h * scale))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(image, size, interpolation=method), dtype=np.uint8)


def test_a_large_face_in_a_large_photo_is_found_at_the_working_resolution(
    detector: FaceDetector, photos: list[Photo]
) -> None:
    """At 4,000 px a face no longer fits YuNet's anchors at the photo's own size (the issue
    measured 26 of 28 refused); shrunk to the working size, every one is found."""
    own_size = found = 0
    for photo in photos[::3]:  # 10 photos: each 4,000 px pass at own size takes ~0.3 s
        large = _long_side(photo, 4000)
        own_size += _best(detector.detect(large)) >= GATE
        found += _best(detector.find(large, GATE)) >= GATE
    assert found == len(photos[::3])
    assert own_size < found


def test_landmarks_are_mapped_back_to_the_photos_own_pixels(
    detector: FaceDetector, photos: list[Photo]
) -> None:
    for photo in photos[:5]:
        small = max(detector.find(photo, GATE), key=lambda f: f.area)
        large = max(
            detector.find(_long_side(photo, 3 * max(photo.shape[:2])), GATE), key=lambda f: f.area
        )
        expected = 3 * small.landmarks_array()
        error = np.abs(large.landmarks_array() - expected).max()
        assert error < 0.1 * large.inter_eye_px, error
        assert max(large.bbox[2], large.bbox[3]) > WORKING_LONG_SIDE / 4


def test_a_small_face_in_a_large_photo_is_found_by_a_finer_pass(
    detector: FaceDetector, photos: list[Photo]
) -> None:
    """A photo pasted into a corner of a canvas 8 times its size: shrunk to the working size
    the face is a few pixels; the finer passes of PYRAMID find it, in the canvas's own
    coordinates."""
    only_finer = 0
    for photo in photos:
        h, w = photo.shape[:2]
        canvas = np.full((8 * h, 8 * w, 3), 128, dtype=np.uint8)
        canvas[h : 2 * h, w : 2 * w] = photo
        faces = [f for f in detector.find(canvas, GATE) if f.score >= GATE]
        assert faces, "a face in a large photo was not found"
        face = max(faces, key=lambda f: f.area)
        x, y = face.bbox[:2]
        assert w <= x < 2 * w and h <= y < 2 * h  # where the photo was pasted
        only_finer += _best(detector.detect(_long_side(canvas, WORKING_LONG_SIDE))) < GATE
    assert only_finer > 0  # the first pass alone misses some (measured: 3 of 28)


def test_a_tight_crop_is_found_with_a_border(detector: FaceDetector, photos: list[Photo]) -> None:
    """Cropped inside the face box (the face fills the frame and more): the pass at its own
    size misses some; with a plain border every one is found, in the crop's coordinates."""
    own_size = 0
    for photo in photos:
        face = max(detector.find(photo, GATE), key=lambda f: f.area)
        x, y, w, h = face.bbox
        crop = np.ascontiguousarray(
            photo[int(y + 0.2 * h) : int(y + 0.8 * h), int(x + 0.2 * w) : int(x + 0.8 * w)]
        )
        crop = _long_side(crop, 400)
        own_size += _best(detector.detect(crop)) >= GATE
        found = [f for f in detector.find(crop, GATE) if f.score >= GATE]
        assert found, "a tight crop was not found"
        cx = found[0].bbox[0] + found[0].bbox[2] / 2
        assert 0 <= cx <= crop.shape[1]
    assert own_size < len(photos)
