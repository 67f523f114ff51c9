"""Issue 18: faces from real cameras. The shared photos under capture conditions they were not
taken in, through the real face path (YuNet, ArcFace alignment, SFace), at the federation's
threshold:

- the long side at 320, 640, 1,000, 2,000, 4,000 and 6,000 px (detection runs at a fixed
  working resolution, alignment from the photo's own pixels);
- rotated and stored with an EXIF orientation tag (3, 6, 8), which the decoder applies;
- re-encoded at JPEG quality 30; converted to greyscale; as a 16-bit PNG;
- pasted small into a large background (a finer detection pass finds them);
- cropped tightly to the detector's face box and reduced to 150 px (a border is added
  before detection when no face is found).

Each condition: every photo enrols, except where a gate must refuse (at 320 px some faces
have their eyes closer than the 24 px of ``min_inter_eye_px``: FaceTooSmall, measured); no
different-person pair matches; and every same-person pair that matches clearly at the
photos' own size (by 0.08 or more) still matches. A pair within 0.08 of the threshold at
its own size moves across it with resampling and is not held to it: one pair of the shared
photos, img12/img55, measures 0.519 as given and 0.445 to 0.456 at 640 and 1,000 px and in
greyscale (the model's own jitter on a hard pair, not a detection failure). Tight 150 px crops
lose the forehead and chin, and measurably some matches: at most 3 of the 63 same-person
pairs fall below the threshold there (measured 3), written down as the limit.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from fedmatch.biometrics.errors import FaceQualityError, FaceTooSmall
from fedmatch.biometrics.pipeline import FacePipeline

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
THRESHOLD = 0.45  # node and coordinator default (node/config.py)
# A same-person pair this far above the threshold at its own size must keep matching. The
# largest change of one pair's score across these conditions, measured: 0.074 (img12/img55,
# 0.519 as given, 0.445 in greyscale); no other pair comes within 0.08 of the threshold.
CLEAR = 0.08
TIGHT_MISSES = 3

Photo = npt.NDArray[np.uint8]


def _jpeg(image: Photo, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(data.tobytes())


def _long_side(image: Photo, side: int) -> Photo:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(image, size, interpolation=method), dtype=np.uint8)


_STORE = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_COUNTERCLOCKWISE, 8: cv2.ROTATE_90_CLOCKWISE}


def _exif_rotated(image: Photo, index: int) -> bytes:
    """Pixels stored turned, with the EXIF tag that turns them upright (as phones do)."""
    tag = (3, 6, 8)[index % 3]
    stored = cv2.cvtColor(cv2.rotate(image, _STORE[tag]), cv2.COLOR_BGR2RGB)
    exif = Image.Exif()
    exif[0x0112] = tag
    out = io.BytesIO()
    Image.fromarray(stored).save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _in_background(image: Photo, index: int) -> bytes:
    h, w = image.shape[:2]
    rng = np.random.default_rng(index)
    noise = rng.integers(60, 200, (3 * h, 4 * w, 3)).astype(np.uint8)
    canvas = np.asarray(cv2.GaussianBlur(noise, (0, 0), 3), dtype=np.uint8)
    y, x = int(rng.integers(0, 2 * h)), int(rng.integers(0, 3 * w))
    canvas[y : y + h, x : x + w] = image
    return _jpeg(canvas)


def _png16(image: Photo) -> bytes:
    ok, data = cv2.imencode(".png", image.astype(np.uint16) * 257)
    assert ok
    return bytes(data.tobytes())


Condition = Callable[[Photo, int, FacePipeline], bytes]


def _tight(image: Photo, _: int, pipeline: FacePipeline) -> bytes:
    face = max(pipeline.faces(image), key=lambda f: f.area)
    x, y, w, h = face.bbox
    top, left = int(max(0, y)), int(max(0, x))
    crop = image[top : int(min(image.shape[0], y + h)), left : int(min(image.shape[1], x + w))]
    return _jpeg(_long_side(np.ascontiguousarray(crop), 150))


def _resized(side: int) -> Condition:
    return lambda image, index, pipeline: _jpeg(_long_side(image, side))


CONDITIONS: dict[str, Condition] = {
    **{f"long_side_{side}": _resized(side) for side in (320, 640, 1000, 2000, 4000, 6000)},
    "exif_orientation": lambda im, i, p: _exif_rotated(im, i),
    "jpeg_quality_30": lambda im, i, p: _jpeg(im, 30),
    "greyscale": lambda im, i, p: _jpeg(np.asarray(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), np.uint8)),
    "png_16_bit": lambda im, i, p: _png16(im),
    "small_in_large_background": lambda im, i, p: _in_background(im, i),
    "tight_crop_150px": _tight,
}


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, str, Photo]]:
    with (FACES / "identities.csv").open() as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        image = cv2.imread(str(FACES / row["file"]), cv2.IMREAD_COLOR)
        assert image is not None
        out.append((row["file"], row["identity"], np.asarray(image, dtype=np.uint8)))
    return out


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="module")
def own(
    photos: list[tuple[str, str, Photo]], pipeline: FacePipeline
) -> dict[str, npt.NDArray[np.float32]]:
    """Templates of the photos as given."""
    return {name: pipeline.template_bytes(_jpeg(image), name) for name, _, image in photos}


def _pairs(names: list[str], ids: dict[str, str]) -> list[tuple[str, str, bool]]:
    return [(a, b, ids[a] == ids[b]) for a, b in itertools.combinations(names, 2)]


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_photos_enrol_and_match_under_capture_conditions(
    condition: str,
    photos: list[tuple[str, str, Photo]],
    pipeline: FacePipeline,
    own: dict[str, npt.NDArray[np.float32]],
) -> None:
    ids = {name: identity for name, identity, _ in photos}
    templates: dict[str, npt.NDArray[np.float32]] = {}
    for index, (name, _, image) in enumerate(photos):
        data = CONDITIONS[condition](image, index, pipeline)
        try:
            templates[name] = pipeline.template_bytes(data, name)
        except FaceQualityError as refused:
            # Only the size gate may refuse, only for a face measured under it, only when the
            # photo was made smaller than the shared one.
            assert condition == "long_side_320", f"{condition}: {refused}"
            assert isinstance(refused, FaceTooSmall), str(refused)
            eyes = float(str(refused).split("eyes ")[1].split(" px")[0])
            assert eyes < pipeline.quality.min_inter_eye_px
    if condition != "long_side_320":
        assert len(templates) == len(photos)
    else:
        assert len(templates) >= len(photos) - 6  # measured: 4 faces under 24 px

    misses, clear_misses, false_matches = [], [], []
    for a, b, same in _pairs(sorted(templates), ids):
        score = float(templates[a] @ templates[b])
        if not same:
            if score >= THRESHOLD:
                false_matches.append((a, b, round(score, 3)))
            continue
        if score < THRESHOLD:
            misses.append((a, b, round(score, 3)))
            if float(own[a] @ own[b]) >= THRESHOLD + CLEAR:
                clear_misses.append((a, b, round(score, 3)))
    assert false_matches == [], f"{condition}: different people match: {false_matches}"
    if condition == "tight_crop_150px":
        assert len(misses) <= TIGHT_MISSES, f"{condition}: {misses}"
    else:
        assert clear_misses == [], f"{condition}: same-person pairs lost: {clear_misses}"


def test_the_photos_at_their_own_size_all_match(
    photos: list[tuple[str, str, Photo]], own: dict[str, npt.NDArray[np.float32]]
) -> None:
    """The reference the conditions are compared with: at their own size every same-person
    pair matches and no different-person pair does."""
    ids = {name: identity for name, identity, _ in photos}
    for a, b, same in _pairs(sorted(own), ids):
        assert (float(own[a] @ own[b]) >= THRESHOLD) is same, (a, b)


def test_sixteen_bit_and_grey_arrays_are_accepted(
    photos: list[tuple[str, str, Photo]],
    pipeline: FacePipeline,
    own: dict[str, npt.NDArray[np.float32]],
) -> None:
    name, _, image = photos[0]
    deep = pipeline.template(image.astype(np.uint16) * 257, name=name)
    assert float(deep @ own[name]) > 0.95
    grey = pipeline.template(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), name=name)
    assert float(grey @ own[name]) > 0.8
