"""Throughput of the face path: photos per second, end to end, on two cores.

Each photo is decoded from JPEG bytes, detected, aligned, quality-checked and embedded in
one of two worker processes with its own pipeline (the models run single-threaded, so a
process per core is how the path scales). The photos are the given ones, reduced to 640 px
on the long side in memory (a typical enrolment-station capture) and re-encoded as JPEG,
so decoding is measured on realistic input. Workers are warm before the clock starts.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from fedmatch.biometrics.errors import FaceQualityError
from fedmatch.biometrics.pipeline import FacePipeline
from fedmatch.errors import InvalidInput

__all__ = ["bench_faces", "prepare_photos"]

LONG_SIDE_PX = 640
WORKERS = 2

_pipeline: FacePipeline | None = None


def prepare_photos(photos: Path, long_side: int = LONG_SIDE_PX) -> list[bytes]:
    """The ``*.jpg`` files of ``photos``, resized to ``long_side`` px, as JPEG bytes."""
    files = sorted(photos.glob("*.jpg"))
    out: list[bytes] = []
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise InvalidInput(f"bench photo {file.name} cannot be decoded")
        h, w = image.shape[:2]
        scale = long_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        # INTER_AREA when shrinking (no aliasing), cubic when enlarging.
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(image, size, interpolation=interp)
        ok, jpeg = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise InvalidInput(f"bench photo {file.name} cannot be re-encoded")
        out.append(jpeg.tobytes())
    if not out:
        raise InvalidInput(f"no *.jpg photos in {photos.name}")
    return out


def _init_worker(warm_photo: bytes) -> None:
    global _pipeline
    # One OpenCV thread per worker, for the same reason onnxruntime gets one.
    cv2.setNumThreads(1)
    _pipeline = FacePipeline()
    _pipeline.template_bytes(warm_photo, "warm-up.jpg", pick="largest")


def _ready(_: int) -> int:
    # Long enough that a worker which is still warming up gets some of these tasks too.
    time.sleep(0.05)
    return os.getpid()


def _one(photo: bytes) -> tuple[float, float, float, float] | None:
    assert _pipeline is not None
    try:
        _, t = _pipeline.template_timed(photo, pick=None, name="bench.jpg")
    except FaceQualityError:
        return None
    return t.decode_ms, t.detect_ms, t.align_ms, t.embed_ms


def bench_faces(photos: Path, images: int, workers: int = WORKERS) -> dict[str, object]:
    """Measure ``images`` photos (cycling through ``photos``) on ``workers`` processes.

    Returns a JSON-able dict: ``photos_per_second`` (wall clock, all workers),
    ``stage_ms`` (mean per photo and stage, in one worker), the model ids, and the setup.
    """
    if images < 1 or workers < 1:
        raise InvalidInput("images and workers must be at least 1")
    data = prepare_photos(photos)
    batch = [data[i % len(data)] for i in range(images)]
    pipeline = FacePipeline()
    # Spawned, not forked: every worker loads its models itself, as a deployment would.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(data[0],)
    ) as pool:
        # A worker answers only after its initializer (model load and one photo) has run,
        # so once every worker has answered, all are warm.
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < workers and time.monotonic() < deadline:
            pids.update(pool.map(_ready, range(workers * 4)))
        start = time.perf_counter()
        results = list(pool.map(_one, batch, chunksize=max(1, min(8, images // (4 * workers)))))
        seconds = time.perf_counter() - start
    done = [r for r in results if r is not None]
    stages = np.asarray(done, dtype=np.float64).reshape(-1, 4)
    names = ("decode", "detect", "align", "embed")
    return {
        "photos_per_second": round(images / seconds, 2),
        "seconds": round(seconds, 3),
        "images": images,
        "rejected": len(results) - len(done),
        "distinct_photos": len(data),
        "long_side_px": LONG_SIDE_PX,
        "workers": workers,
        "worker_processes_seen": len(pids),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "stage_ms": {
            n: round(statistics.fmean(stages[:, i]), 2) if len(stages) else None
            for i, n in enumerate(names)
        },
        "recognizer_model_id": pipeline.model_id,
        "detector_model_id": pipeline.detector_id,
        "dimension": pipeline.dimension,
    }
