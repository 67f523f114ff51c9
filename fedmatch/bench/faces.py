"""``fedmatch bench faces``: the face path on the photos as given, per megapixel band.

Every image file of a folder is read as it is (its own size, its own bytes, no re-encoding)
and sent through :meth:`FacePipeline.template_timed` (decode, detect, align with the quality
checks, embed) in worker processes with a pipeline each (the models run single-threaded, so
a process per core is how the path scales); workers are warm before the clock starts. With
``enlarge_px`` each photo is first resized in memory to that many pixels on its long side
and re-encoded in its own format, to measure how the path behaves on large captures.

Stage times are reported per megapixel band (median and 90th percentile), with photos per
second end to end, the photos a quality gate refused (counts per reason, never image data),
and, as every benchmark here does, the fastest plain baseline on the same data in the same
run: decoding the same bytes with ``cv2.imdecode`` alone (after the pipeline's header check,
:mod:`fedmatch.biometrics.photofile`) on the same workers, a floor that no face pipeline can
beat. Only the formats the pipeline accepts are read (JPEG, PNG, JPEG 2000).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import platform
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fedmatch.biometrics.errors import FaceQualityError, UnreadableImage
from fedmatch.biometrics.photofile import SUFFIXES, check_photo, decode_photo
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.errors import InvalidInput

__all__ = [
    "BANDS",
    "BASELINE",
    "IMAGE_SUFFIXES",
    "STAGES",
    "WORKERS",
    "Photo",
    "bench_faces",
    "load_photos",
]

WORKERS = 2
# At least this many photos are timed (the folder is cycled through), and every photo of
# the folder at least once.
MIN_IMAGES = 200
# File name suffixes of the formats the pipeline accepts (JPEG, PNG, JPEG 2000). A file
# with one of these that does not decode is still benchmarked: the pipeline refuses it as
# ``unreadable_image``, as it would refuse it at enrolment.
IMAGE_SUFFIXES = SUFFIXES
# Megapixel bands as (label, lower bound inclusive, upper bound exclusive).
BANDS: tuple[tuple[str, float, float], ...] = (
    ("<1 MP", 0.0, 1.0),
    ("1-4 MP", 1.0, 4.0),
    ("4-12 MP", 4.0, 12.0),
    (">=12 MP", 12.0, math.inf),
)
STAGES = ("decode", "detect", "align", "embed")
BASELINE = (
    "cv2.imdecode(IMREAD_COLOR) of the same bytes after the same header check and nothing "
    "else, on the same worker processes in the same run: the decode floor no face pipeline "
    "can beat"
)
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class Photo:
    """One benchmarked photo: its encoded bytes, format suffix and pixel size (None when
    its header cannot be read; the pipeline will then refuse it)."""

    data: bytes
    suffix: str
    size: tuple[int, int] | None

    @property
    def megapixels(self) -> float | None:
        return None if self.size is None else self.size[0] * self.size[1] / 1e6

    @property
    def band(self) -> str | None:
        mp = self.megapixels
        if mp is None:
            return None
        return next(label for label, low, high in BANDS if low <= mp < high)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header (no pixels decoded); None when the pipeline would
    refuse the photo unread."""
    try:
        header = check_photo(data, "bench")
    except UnreadableImage:
        return None
    return header.width, header.height


def _imdecode(data: bytes) -> np.ndarray[Any, Any] | None:
    # Decoded as the pipeline decodes (after its header check), never past its bounds.
    try:
        return decode_photo(data, "bench")
    except UnreadableImage:
        return None


def _resized(name: str, data: bytes, suffix: str, long_side: int) -> Photo:
    image = _imdecode(data)
    if image is None:
        # Kept as given: the pipeline refuses it as unreadable, and the report says so.
        return Photo(data, suffix, None)
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # INTER_AREA when shrinking (no aliasing), cubic when enlarging.
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, size, interpolation=interp)
    # Re-encoded in the photo's own format (JPEG at quality 95), so that decoding is measured
    # on what a camera of that resolution would deliver.
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
    try:
        ok, encoded = cv2.imencode(suffix, resized, params)
    except cv2.error:
        ok = False
    if not ok:
        suffix = ".png"
        ok, encoded = cv2.imencode(suffix, resized)
        if not ok:
            raise InvalidInput(f"bench photo {name} cannot be re-encoded after enlarging")
    return Photo(encoded.tobytes(), suffix, size)


def load_photos(folder: Path, enlarge_px: int | None = None) -> list[Photo]:
    """The image files of ``folder`` (by suffix, sorted by name), as given or, with
    ``enlarge_px``, resized to that many pixels on the long side and re-encoded (a file
    that does not decode is kept as given, for the pipeline to refuse)."""
    if not folder.is_dir():
        raise InvalidInput(f"bench photos: {folder.name} is not a folder")
    if enlarge_px is not None and enlarge_px < 16:
        raise InvalidInput(f"--enlarge must be at least 16 px, not {enlarge_px}")
    photos: list[Photo] = []
    for file in sorted(folder.iterdir()):
        suffix = file.suffix.lower()
        if suffix not in IMAGE_SUFFIXES or not file.is_file():
            continue
        data = file.read_bytes()
        if enlarge_px is None:
            photos.append(Photo(data, suffix, _header_size(data)))
        else:
            photos.append(_resized(file.name, data, suffix, enlarge_px))
    if not photos:
        raise InvalidInput(f"no image files in {folder.name}")
    return photos


# Per worker process: its pipeline and the photos (sent once, so tasks are just indices and
# the timed region does not pickle megabytes of JPEG per photo).
_pipeline: FacePipeline | None = None
_photos: list[bytes] = []


def _init_worker(photos: list[bytes], warm: list[int]) -> None:
    global _pipeline, _photos
    # One OpenCV thread per worker, for the same reason onnxruntime gets one.
    cv2.setNumThreads(1)
    _photos = photos
    _pipeline = FacePipeline()
    _pipeline.load()
    # One photo of each size band, so that no first-call allocation is timed; a refusal is
    # as good a warm-up as a template.
    for index in warm:
        try:
            _pipeline.template_timed(photos[index], pick=None, name="warm-up")
        except FaceQualityError:
            pass
        _imdecode(photos[index])


def _ready(_: int) -> int:
    # Long enough that a worker which is still warming up gets some of these tasks too.
    time.sleep(0.05)
    return os.getpid()


def _one(index: int) -> tuple[int, tuple[float, float, float, float] | str]:
    """Stage times of one photo, or the code of the quality gate that refused it."""
    assert _pipeline is not None
    try:
        _, t = _pipeline.template_timed(_photos[index], pick=None, name="bench")
    except FaceQualityError as exc:
        return index, exc.code
    return index, (t.decode_ms, t.detect_ms, t.align_ms, t.embed_ms)


def _decode_only(index: int) -> tuple[int, float]:
    start = time.perf_counter()
    _imdecode(_photos[index])
    return index, (time.perf_counter() - start) * 1e3


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "median": round(float(np.median(array)), 2),
        "p90": round(float(np.percentile(array, 90)), 2),
    }


def _stage_spread(rows: list[tuple[float, float, float, float]]) -> dict[str, Any]:
    return {name: _spread([row[i] for row in rows]) for i, name in enumerate(STAGES)}


def bench_faces(
    photos: Path,
    images: int | None = None,
    workers: int = WORKERS,
    *,
    enlarge_px: int | None = None,
) -> dict[str, Any]:
    """Time ``images`` photos (cycling through the folder; default: at least 200 and every
    photo once) on ``workers`` processes, then the decode-only baseline on the same photos.

    Returns a JSON-able dict; ``bands`` has one entry per :data:`BANDS` band, always in
    that order, with ``photos`` (distinct photos of that size), ``images`` (timed runs),
    ``refused_images`` and the median and p90 per stage in milliseconds.
    """
    loaded = load_photos(photos, enlarge_px)
    if images is None:
        images = max(MIN_IMAGES, len(loaded))
    if images < 1 or workers < 1:
        raise InvalidInput("images and workers must be at least 1")
    batch = [i % len(loaded) for i in range(images)]
    # Other work on the machine slows every stage; the report says how busy it was.
    load_before = os.getloadavg()[0]
    warm = list({p.band: i for i, p in reversed(list(enumerate(loaded)))}.values())
    pipeline = FacePipeline()
    chunksize = max(1, min(8, images // (4 * workers)))
    # Spawned, not forked: every worker loads its models itself, as a deployment would.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=([p.data for p in loaded], warm),
    ) as pool:
        # A worker answers only after its initializer (model load and warm-up) has run, so
        # once every worker has answered, all are warm.
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < workers and time.monotonic() < deadline:
            pids.update(pool.map(_ready, range(workers * 4)))
        start = time.perf_counter()
        results = list(pool.map(_one, batch, chunksize=chunksize))
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        decoded = list(pool.map(_decode_only, batch, chunksize=chunksize))
        baseline_seconds = time.perf_counter() - start

    refused_by_photo: dict[int, str] = {}
    timed: dict[str | None, list[tuple[float, float, float, float]]] = {}
    refused_images: Counter[str | None] = Counter()
    for index, outcome in results:
        band = loaded[index].band
        if isinstance(outcome, str):
            refused_by_photo.setdefault(index, outcome)
            refused_images[band] += 1
        else:
            timed.setdefault(band, []).append(outcome)
    decode_floor: dict[str | None, list[float]] = {}
    for index, ms in decoded:
        decode_floor.setdefault(loaded[index].band, []).append(ms)
    photos_per_band = Counter(p.band for p in loaded)
    runs_per_band = Counter(loaded[i].band for i in batch)
    sizes = [p.megapixels for p in loaded if p.megapixels is not None]
    return {
        "bench": "faces",
        "photos_per_second": round(images / seconds, 2),
        "seconds": round(seconds, 3),
        "images": images,
        "distinct_photos": len(loaded),
        "formats": dict(sorted(Counter(p.suffix.lstrip(".") for p in loaded).items())),
        "as_given": enlarge_px is None,
        "enlarge_px": enlarge_px,
        "megapixels": {
            "min": round(min(sizes), 2) if sizes else None,
            "median": round(float(np.median(sizes)), 2) if sizes else None,
            "max": round(max(sizes), 2) if sizes else None,
        },
        "unsized_photos": photos_per_band[None],
        "stage_ms": _stage_spread([row for rows in timed.values() for row in rows]),
        "bands": [
            {
                "band": label,
                "photos": photos_per_band[label],
                "images": runs_per_band[label],
                "refused_images": refused_images[label],
                "stage_ms": _stage_spread(timed.get(label, [])),
                "baseline_decode_ms": _spread(decode_floor.get(label, [])),
            }
            for label, _, _ in BANDS
        ],
        "refused": {
            "photos": len(refused_by_photo),
            "images": sum(refused_images.values()),
            "by_reason": dict(sorted(Counter(refused_by_photo.values()).items())),
        },
        "baseline": {
            "what": BASELINE,
            "photos_per_second": round(images / baseline_seconds, 2),
            "seconds": round(baseline_seconds, 3),
            "decode_ms": _spread([ms for _, ms in decoded]),
        },
        "pipeline_over_baseline": round(seconds / baseline_seconds, 1),
        "workers": workers,
        "worker_processes_seen": len(pids),
        "cpu_count": os.cpu_count(),
        "load_average_1m": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "machine": platform.machine(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "recognizer_model_id": pipeline.model_id,
        "detector_model_id": pipeline.detector_id,
        "dimension": pipeline.dimension,
    }
