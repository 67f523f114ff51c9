"""``fedmatch bench faces``: photos as given, bands by megapixels, refusals by reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fedmatch.bench.faces import BANDS, BASELINE, STAGES, bench_faces, load_photos
from fedmatch.biometrics.models import SFACE_MODEL_ID
from fedmatch.errors import InvalidInput

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
SOME = ("img3.jpg", "img12.jpg", "img26.jpg", "img53.jpg")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four shared photos as given (all < 1 MP), one enlarged to 2,000 px as PNG (3 MP),
    a file that is not an image and a JPEG that does not decode."""
    for name in SOME:
        shutil.copy(FACES / name, tmp_path / name)
    image = cv2.imread(str(FACES / "img3.jpg"))  # 600 wide, 800 high
    assert image is not None
    large = cv2.resize(image, (1500, 2000), interpolation=cv2.INTER_CUBIC)
    assert cv2.imwrite(str(tmp_path / "img3-large.PNG"), large)
    (tmp_path / "notes.txt").write_text("not a photo\n")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return tmp_path


def test_bench_uses_the_photos_as_given_and_counts_them_per_band(folder: Path) -> None:
    result = bench_faces(folder, 12)
    assert result["images"] == 12 and result["distinct_photos"] == 6
    assert result["as_given"] is True and result["enlarge_px"] is None
    assert result["formats"] == {"jpg": 5, "png": 1}
    assert result["worker_processes_seen"] == 2
    assert result["unsized_photos"] == 1  # broken.jpg
    bands = result["bands"]
    assert [b["band"] for b in bands] == [label for label, _, _ in BANDS]
    assert [b["photos"] for b in bands] == [4, 1, 0, 0]
    # 12 runs over the 6 photos in name order: each photo twice.
    assert [b["images"] for b in bands] == [8, 2, 0, 0]
    for band in bands:
        assert set(band["stage_ms"]) == set(STAGES)
        timed = band["images"] - band["refused_images"]
        for spread in band["stage_ms"].values():
            assert (spread is None) == (timed == 0)
            if spread is not None:
                assert set(spread) == {"median", "p90"} and spread["median"] <= spread["p90"]
        assert (band["baseline_decode_ms"] is None) == (band["images"] == 0)
    # The undecodable file is refused by the pipeline with its reason, counted once as a
    # photo and at each of its two runs.
    refused = result["refused"]
    assert refused["by_reason"].get("unreadable_image") == 1
    assert sum(refused["by_reason"].values()) == refused["photos"]
    assert refused["images"] == 2 * refused["photos"]
    assert refused["images"] == 2 + sum(b["refused_images"] for b in bands)
    assert result["baseline"]["what"] == BASELINE
    assert result["baseline"]["photos_per_second"] > 0 and result["photos_per_second"] > 0
    assert result["recognizer_model_id"] == SFACE_MODEL_ID
    assert isinstance(result["cpu_count"], int) and result["machine"]
    assert set(result["load_average_1m"]) == {"before", "after"}


def test_enlarge_resizes_in_memory_and_keeps_the_format(folder: Path) -> None:
    as_given = {p.size for p in load_photos(folder)}
    assert (600, 800) in as_given and (1500, 2000) in as_given and None in as_given
    enlarged = load_photos(folder, 1500)
    assert len(enlarged) == 6
    # The undecodable file is kept as given, for the pipeline to refuse.
    assert [p.size for p in enlarged].count(None) == 1
    photos = [p for p in enlarged if p.size is not None]
    assert all(p.size is not None and max(p.size) == 1500 for p in photos)
    assert {p.band for p in photos} == {"1-4 MP"}
    assert sorted(p.suffix for p in photos) == [".jpg"] * 4 + [".png"]
    for photo in photos:
        decoded = cv2.imdecode(np.frombuffer(photo.data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and max(decoded.shape[:2]) == 1500
    # The folder itself is left as it was.
    kept = cv2.imread(str(folder / "img3.jpg"))
    assert kept is not None and kept.shape[:2] == (800, 600)


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="no image files"):
        load_photos(tmp_path)
