"""Issue 18, item 4: an evaluation that cannot be fooled.

Copies of a picture are counted once (by bytes, pixels, thumbnails, same-person templates)
and reported per reason with the pairs they would have added; a picture under two labels is
refused naming both files; the summary names the software version, model, detector and a
digest of the input list; the DET figure draws measured points only; "no ratio above 2" is
said only when every ratio could be computed. The face model is the fake of
``test_evaluation`` (named orthogonal axes), the photos real PNGs drawn here, except where a
test says it uses the shared photos and the real face pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from fedmatch import __version__
from fedmatch.errors import InvalidInput
from fedmatch.evaluation import evaluate
from fedmatch.evaluation.figures import operating_points
from fedmatch.evaluation.integrity import Screening, file_facts, screen_files, screen_templates
from tests.unit.test_evaluation import FakeModel, write_dataset

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
MODEL = "fake-model-v3"
SMALL_GALLERY = 2_000


def run(images: Path, identities: Path, out: Path, model: Any, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("gallery_size", SMALL_GALLERY)
    result: dict[str, Any] = evaluate(images, identities, out, model, 0.6, MODEL, **kwargs)
    return result


def people(model: FakeModel, persons: str, photos: int) -> list[tuple[str, str]]:
    rows = []
    for person in persons:
        for k in range(photos):
            file = f"{person}{k}.jpg"
            model.add(file, {person: 0.9})
            rows.append((file, person))
    return rows


def noise_png(path: Path, seed: int, shift: int = 0) -> None:
    """A 512 x 512 picture of smooth noise (a thumbnail of it has shape); ``shift`` moves it
    right by that many pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    image = cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC)
    if shift:
        image = np.concatenate([image[:, :shift], image[:, :-shift]], axis=1)
    cv2.imwrite(str(path), image)


# --- copies ------------------------------------------------------------------------------


def test_identical_files_are_counted_once_and_reported(tmp_path: Path) -> None:
    model = FakeModel()
    rows = people(model, "PQRS", 2)  # 4 genuine, 24 impostor pairs
    images, identities, _ = write_dataset(tmp_path, rows)
    # Five byte copies of each of P0 and Q1, under the same person.
    extra = []
    for original, person in (("P0.jpg", "P"), ("Q1.jpg", "Q")):
        for k in range(5):
            copy = f"copy{k}_{original}"
            shutil.copy(images / original, images / copy)
            extra.append((copy, person))
    with identities.open("a", newline="") as fh:
        csv.writer(fh).writerows(extra)
    summary = run(images, identities, tmp_path / "out", model)
    dedup = summary["deduplication"]
    assert dedup["images_listed"] == 18
    assert dedup["images_dropped"] == 10
    assert dedup["dropped_by_reason"] == {
        "identical_file": 10,
        "identical_pixels": 0,
        "near_identical_pixels": 0,
        "near_identical_template": 0,
    }
    assert dedup["pairs_counted"] == {"genuine": 4, "impostor": 24}
    # With the copies: P and Q have 7 photos each, R and S 2: 21 + 21 + 1 + 1 genuine, and
    # C(18, 2) - 44 impostor.
    assert dedup["pairs_with_copies"] == {"genuine": 44, "impostor": 153 - 44}
    assert (summary["dataset"]["genuine_pairs"], summary["dataset"]["impostor_pairs"]) == (4, 24)
    # The copies were never embedded and do not count in failure to enrol.
    assert not [c for c in model.calls if c.startswith("copy")]
    assert summary["failure_to_enrol"]["trials"] == 8
    report = (tmp_path / "out" / "report.md").read_text()
    assert "10 of 18 listed images were copies" in report
    assert "| identical_file | SHA-256 of the file bytes | 10 |" in report
    assert "With the copies they would have been 44 genuine and 109 impostor." in report


def test_the_same_picture_under_two_identities_is_refused_naming_the_files(
    tmp_path: Path,
) -> None:
    model = FakeModel()
    rows = people(model, "PQ", 2)
    images, identities, _ = write_dataset(tmp_path, rows)
    shutil.copy(images / "P1.jpg", images / "Q9.jpg")
    with identities.open("a", newline="") as fh:
        csv.writer(fh).writerow(["Q9.jpg", "Q"])
    with pytest.raises(InvalidInput, match=r"labelled as two different people") as caught:
        run(images, identities, tmp_path / "out", model)
    assert "'P1.jpg' (P) and 'Q9.jpg' (Q): identical file" in str(caught.value)
    assert model.calls == []  # refused before any photo is embedded


def test_identical_pixels_in_another_file_format_are_caught(tmp_path: Path) -> None:
    noise_png(tmp_path / "a.png", 1)
    pixels = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    assert pixels is not None
    # The same pixels, stored another way: a different PNG compression level, and lossless
    # JPEG 2000.
    cv2.imwrite(str(tmp_path / "b.png"), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    cv2.imwrite(str(tmp_path / "c.jp2"), pixels, [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 1000])
    noise_png(tmp_path / "d.png", 2)
    files = ["a.png", "b.png", "c.jp2", "d.png"]
    facts = file_facts([tmp_path / f for f in files])
    assert len({f.sha256 for f in facts}) == 4
    screening = screen_files(files, ["P"] * 4, facts)
    assert screening.kept == [0, 3]
    assert screening.dropped == {1: ("identical_pixels", 0), 2: ("identical_pixels", 0)}
    with pytest.raises(InvalidInput, match=r"'a.png' \(P\) and 'b.png' \(Q\): identical pixels"):
        screen_files(files, ["P", "Q", "Q", "R"], facts)


def test_a_shifted_or_re_encoded_picture_is_caught_by_its_thumbnail(tmp_path: Path) -> None:
    noise_png(tmp_path / "a.png", 1)
    noise_png(tmp_path / "shifted.png", 1, shift=1)
    pixels = cv2.imread(str(tmp_path / "a.png"))
    assert pixels is not None
    cv2.imwrite(str(tmp_path / "q95.jpg"), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    noise_png(tmp_path / "other.png", 7)
    files = ["a.png", "shifted.png", "q95.jpg", "other.png"]
    facts = file_facts([tmp_path / f for f in files])
    assert len({f.pixels_sha256 for f in facts}) == 4
    a, shifted, q95, other = (f.thumbnail for f in facts)
    assert a is not None and shifted is not None and q95 is not None and other is not None
    assert float(a @ shifted) > 0.99 and float(a @ q95) > 0.99 and float(a @ other) < 0.9
    screening = screen_files(files, ["P"] * 4, facts)
    assert screening.by_reason()["near_identical_pixels"] == 2
    assert screening.kept == [0, 3]
    with pytest.raises(InvalidInput, match=r"'a.png' \(P\) and 'q95.jpg' \(Q\): thumbnail"):
        screen_files(files, ["P", "P", "Q", "P"], facts)


def test_near_identical_templates_of_one_person_are_counted_once(tmp_path: Path) -> None:
    model = FakeModel()
    rows = people(model, "PQR", 2)
    # P2 is P0 again, as the face model sees it (cosine 0.998 with P0): a copy the pixel
    # rules cannot read (these dummy files are no images). P3 is an ordinary third photo.
    model.vectors["P2.jpg"] = model.vectors["P0.jpg"].copy()
    model.vectors["P2.jpg"][model._axis("P2-noise")] = 0.063
    model.add("P3.jpg", {"P": 0.9})
    rows += [("P2.jpg", "P"), ("P3.jpg", "P")]
    images, identities, _ = write_dataset(tmp_path, rows)
    summary = run(images, identities, tmp_path / "out", model)
    dedup = summary["deduplication"]
    assert dedup["dropped_by_reason"]["near_identical_template"] == 1
    assert dedup["images_dropped"] == 1
    # P keeps 3 photos: 3 + 1 + 1 genuine pairs; 7 images: 21 - 5 impostor.
    assert dedup["pairs_counted"] == {"genuine": 5, "impostor": 16}
    assert dedup["pairs_with_copies"] == {"genuine": 8, "impostor": 20}
    assert summary["dataset"]["images_enrolled"] == 7
    # With a limit of 0.999 the copy (0.998) is kept.
    lenient = run(images, identities, tmp_path / "out2", model, near_identical=0.999)
    assert lenient["deduplication"]["images_dropped"] == 0


def test_near_identical_templates_under_two_identities_are_refused(tmp_path: Path) -> None:
    model = FakeModel()
    rows = people(model, "PQ", 2)
    model.vectors["Q1.jpg"] = model.vectors["P0.jpg"]
    images, identities, _ = write_dataset(tmp_path, rows)
    with pytest.raises(InvalidInput, match=r"'P0.jpg' \(P\) and 'Q1.jpg' \(Q\): template"):
        run(images, identities, tmp_path / "out", model)


def test_refuse_duplicates_names_the_copies(tmp_path: Path) -> None:
    model = FakeModel()
    rows = people(model, "PQ", 2)
    images, identities, _ = write_dataset(tmp_path, rows)
    shutil.copy(images / "P0.jpg", images / "P7.jpg")
    with identities.open("a", newline="") as fh:
        csv.writer(fh).writerow(["P7.jpg", "P"])
    with pytest.raises(InvalidInput, match=r"'P7.jpg' is a copy of 'P0.jpg' \(identical file\)"):
        run(images, identities, tmp_path / "out", model, refuse_duplicates=True)


def test_screen_templates_keeps_the_first_of_a_chain() -> None:
    # Rows 0 and 1 are near-identical, 1 and 2 too, 0 and 2 not: 1 is dropped for 0, and 2
    # stays (it is near no image still kept).
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.1), np.sin(0.1), 0.0])
    c = np.array([np.cos(0.2), np.sin(0.2), 0.0])
    d = np.array([0.0, 0.0, 1.0])
    screening = Screening(kept=[0, 1, 2, 3])
    keep = screen_templates(
        screening, [0, 1, 2, 3], np.stack([a, b, c, d]), list("abcd"), ["P"] * 4, 0.99
    )
    assert keep == [0, 2, 3]
    assert screening.dropped == {1: ("near_identical_template", 0)}


# --- provenance ---------------------------------------------------------------------------


def test_the_summary_names_version_model_detector_and_input_digest(tmp_path: Path) -> None:
    model = FakeModel()
    rows = people(model, "PQ", 2)
    images, identities, _ = write_dataset(tmp_path, rows)
    summary = run(images, identities, tmp_path / "out", model, detector_id="fake-detector-v1")
    prov = summary["provenance"]
    assert prov["software_version"] == __version__ == "0.1.0"
    assert (prov["model_id"], prov["detector_id"]) == (MODEL, "fake-detector-v1")
    lines = sorted(
        f"{f}\t{hashlib.sha256((images / f).read_bytes()).hexdigest()}\t{p}\n" for f, p in rows
    )
    assert prov["input_digest"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    report = (tmp_path / "out" / "report.md").read_text()
    assert prov["input_digest"] in report and "fedmatch 0.1.0" in report
    assert "`fake-detector-v1`" in report
    # Altering one photo's bytes, or relabelling it, changes the digest.
    (images / "P1.jpg").write_bytes(b"another photo")
    assert (
        run(images, identities, tmp_path / "o2", model)["provenance"]["input_digest"]
        != (prov["input_digest"])
    )


# --- DET ---------------------------------------------------------------------------------


def test_det_points_are_measured_operating_points() -> None:
    genuine = np.sort(np.array([0.3, 0.5, 0.7, 0.9]))
    impostor = np.sort(np.array([0.0, 0.1, 0.2, 0.4, 0.6]))
    points = operating_points(genuine, impostor)
    # (false matches, false non-matches) as the threshold rises through every score.
    assert points == [(5, 0), (4, 0), (3, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2), (0, 3),
                      (0, 4)]  # fmt: skip


def det_pixels(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path))
    assert image is not None
    return np.asarray(image)


def test_det_never_draws_a_line_along_the_zero_floor(tmp_path: Path) -> None:
    """Perfect separation: every operating point has a zero rate, so the figure holds no
    curve, only bound markers; and the DET module has no code path drawing at a floor."""
    from fedmatch.evaluation import figures

    model = FakeModel()
    rows = people(model, "PQRS", 3)
    images, identities, _ = write_dataset(tmp_path, rows)
    run(images, identities, tmp_path / "out", model)
    source = Path(figures.__file__).read_text()
    assert "axhline" not in source and "floor" not in source.split("def draw_scores")[0]
    drawn: list[tuple[str, Any]] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            def record(*args: Any, **kwargs: Any) -> None:
                drawn.append((name, args))

            return record

    genuine = np.sort(np.array([0.7, 0.8, 0.9]))
    impostor = np.sort(np.array([0.0, 0.1, 0.2, 0.3]))
    figures._plot_det(Spy(), genuine, impostor, "C0", "x", 10)  # type: ignore[arg-type]
    kinds = [name for name, _ in drawn]
    assert "errorbar" not in kinds  # no point has both rates above 0
    (marker,) = [args for name, args in drawn if name == "plot"]
    # One bound marker at FMR <= Wilson upper bound of 0 of 4, FNMR <= that of 0 of 3.
    assert marker[0] == [pytest.approx(3.8415 / (4 + 3.8415), abs=1e-4)]
    assert marker[1] == [pytest.approx(3.8415 / (3 + 3.8415), abs=1e-4)]
    (label,) = [args[0] for name, args in drawn if name == "annotate"]
    assert label == "FMR 0 of 4 (<= 0.49 at 95%), FNMR 0 of 3 (<= 0.56)"


def test_det_draws_errorbars_for_points_with_errors() -> None:
    from fedmatch.evaluation import figures

    drawn: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            def record(*args: Any, **kwargs: Any) -> None:
                drawn.append((name, args, kwargs))

            return record

    genuine = np.sort(np.array([0.3, 0.5, 0.7, 0.9]))
    impostor = np.sort(np.array([0.0, 0.1, 0.2, 0.4, 0.6]))
    figures._plot_det(Spy(), genuine, impostor, "C0", "x", 10)  # type: ignore[arg-type]
    ((_, (x, y), kwargs),) = [d for d in drawn if d[0] == "errorbar"]
    # The points with both rates above 0: (2, 1), (1, 1), (1, 2) of 5 impostor, 4 genuine.
    assert list(x) == pytest.approx([0.4, 0.2, 0.2])
    assert list(y) == pytest.approx([0.25, 0.25, 0.5])
    assert kwargs["yerr"][1][0] > 0 and kwargs["xerr"][0][0] > 0
    # Bound markers: best FNMR at FMR 0 (2 of 4 at FMR <= 0.43) and best FMR at FNMR 0.
    markers = [args for name, args, _ in drawn if name == "plot"]
    assert markers[0][1] == [0.5]
    assert markers[1][0] == [pytest.approx(0.4)]


# --- fairness statement -------------------------------------------------------------------


def grouped_rows(
    model: FakeModel, weak: set[str]
) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    rows: list[tuple[str, str]] = []
    groups: list[dict[str, str]] = []
    for sex in "FM":
        for k in range(8):
            person = f"{sex}{k}"
            for j in range(3):
                file = f"{person}_{j}.jpg"
                model.add(file, {person: 0.5 if j == 2 and person in weak else 0.9})
                rows.append((file, person))
                groups.append({"file": file, "sex": sex})
    return rows, groups


def test_no_ratio_above_2_is_not_said_when_a_ratio_cannot_be_computed(tmp_path: Path) -> None:
    # Both sexes have some false non-matches, nobody a false match: the FNMR ratio is
    # computed (2 / 1 = 2, not above 2), the FMR ratio is 0 / 0.
    model = FakeModel()
    rows, groups = grouped_rows(model, {"F0", "F1", "M0"})
    images, identities, groups_csv = write_dataset(tmp_path, rows, groups)
    summary = run(images, identities, tmp_path / "out", model, groups=groups_csv)
    fair = summary["fairness"]
    assert fair["computed"] == ["sex FNMR"]
    assert fair["not_computed"] == [
        {"ratio": "sex FMR", "reason": "no errors observed in any group compared; ratio "
         "undefined (0/0)"}
    ]  # fmt: skip
    assert fair["no_ratio_above_2"] is False
    report = (tmp_path / "out" / "report.md").read_text()
    assert "No worst-to-best ratio above 2" not in report
    assert "Only 1 of 2 worst-to-best ratios could be computed" in report
    assert "- Not computed: sex FMR: no errors observed" in report


def test_no_ratio_above_2_is_not_said_when_a_group_is_left_out(tmp_path: Path) -> None:
    model = FakeModel()
    rows, groups = grouped_rows(model, {"F0", "F1", "M0"})
    # Lookalikes give both sexes false matches, so the FMR ratio is computed too.
    for file, a, b in (("F2_0.jpg", "F2", "F3"), ("M2_0.jpg", "M2", "M3")):
        model.add(file, {a: 0.7, b: 0.7})
    # A third group with one person: 3 genuine pairs, below the minimum of 10.
    for j in range(3):
        file = f"X0_{j}.jpg"
        model.add(file, {"X0": 0.9})
        rows.append((file, "X0"))
        groups.append({"file": file, "sex": "X"})
    images, identities, groups_csv = write_dataset(tmp_path, rows, groups)
    summary = run(images, identities, tmp_path / "out", model, groups=groups_csv)
    sex = summary["groups"][0]
    assert sex["fnmr_ratio"]["ratio"] == pytest.approx(2.0)
    assert sex["fmr_ratio"]["ratio"] == pytest.approx(1.0)
    assert sex["fnmr_ratio"]["left_out"] == [{"group": "X", "reason": "3 pairs < 10"}]
    fair = summary["fairness"]
    assert fair["computed"] == [] and len(fair["not_computed"]) == 2
    assert fair["no_ratio_above_2"] is False
    assert "left out: 'X' (3 pairs < 10)" in fair["not_computed"][0]["reason"]


def test_no_ratio_above_2_is_said_when_every_ratio_is_computed(tmp_path: Path) -> None:
    model = FakeModel()
    rows, groups = grouped_rows(model, {"F0", "F1", "M0"})
    for file, a, b in (("F2_0.jpg", "F2", "F3"), ("M2_0.jpg", "M2", "M3")):
        model.add(file, {a: 0.7, b: 0.7})
    images, identities, groups_csv = write_dataset(tmp_path, rows, groups)
    summary = run(images, identities, tmp_path / "out", model, groups=groups_csv)
    fair = summary["fairness"]
    assert fair["computed"] == ["sex FNMR", "sex FMR"]
    assert fair["no_ratio_above_2"] is True
    assert (
        "No worst-to-best ratio above 2 (all 2 computed over every group)."
        in (tmp_path / "out" / "report.md").read_text()
    )
    assert summary["files"]["det_by_attribute"] == {"sex": "det-1-sex.png"}
    assert (tmp_path / "out" / "det-1-sex.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
