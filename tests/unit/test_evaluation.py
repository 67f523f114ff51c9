"""Tests of fedmatch.evaluation: error rates, intervals, group ratios, report files.

The face model is faked: every image is a unit vector built from named orthogonal axes (one
per person, plus a private noise axis per image), so every pair's cosine similarity is known
by hand. Two photos of a person at weight 0.9 on that person's axis score 0.81; a "weak"
photo at 0.5 scores 0.45 with them; photos of different people score 0, unless one is a
lookalike carrying weight on the other person's axis. The image files are dummies.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.biometrics.errors import FaceQualityError, NoFace, TooDark
from fedmatch.errors import InvalidInput
from fedmatch.evaluation import evaluate as evaluate_at_federation_size
from fedmatch.evaluation import fpir, threshold_for_fmr, wilson_interval, worst_to_best

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THRESHOLD = 0.6
MODEL = "fake-model-v3"


def evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``evaluate`` with a small 1:N gallery unless a test names one: the default (the
    federation's size, millions of distractors) is exercised by the command-line test."""
    kwargs.setdefault("gallery_size", 2_000)
    result: dict[str, Any] = evaluate_at_federation_size(*args, **kwargs)
    return result


class FakeModel:
    """An ``embed`` whose templates are unit vectors over named orthogonal axes."""

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.axes: dict[str, int] = {}
        self.vectors: dict[str, npt.NDArray[np.float32]] = {}
        self.failures: dict[str, type[FaceQualityError]] = {}
        self.calls: list[str] = []

    def _axis(self, name: str) -> int:
        return self.axes.setdefault(name, len(self.axes))

    def add(self, file: str, weights: dict[str, float]) -> None:
        v = np.zeros(self.dimension)
        for axis, w in weights.items():
            v[self._axis(axis)] = w
        v[self._axis("noise:" + file)] = math.sqrt(1.0 - sum(w * w for w in weights.values()))
        self.vectors[file] = v.astype(np.float32)

    def fail(self, file: str, error: type[FaceQualityError]) -> None:
        self.failures[file] = error

    def __call__(self, path: Path) -> npt.NDArray[np.float32]:
        self.calls.append(path.name)
        if path.name in self.failures:
            raise self.failures[path.name](f"{path.name}: refused")
        return self.vectors[path.name]


def write_dataset(
    root: Path, rows: list[tuple[str, str]], groups: list[dict[str, str]] | None = None
) -> tuple[Path, Path, Path | None]:
    """Dummy image files plus identities.csv (and groups.csv) under ``root``."""
    images = root / "images"
    images.mkdir(parents=True)
    for file, _ in rows:
        # Distinct bytes: identical files would be counted once, as copies of one picture.
        (images / file).write_bytes(b"not really a photo: " + file.encode())
    identities = root / "identities.csv"
    with identities.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "identity"])
        writer.writerows(rows)
    if groups is None:
        return images, identities, None
    groups_csv = root / "groups.csv"
    with groups_csv.open("w", newline="") as fh:
        dict_writer = csv.DictWriter(fh, fieldnames=list(groups[0]))
        dict_writer.writeheader()
        dict_writer.writerows(groups)
    return images, identities, groups_csv


# --- A small data set whose every score is known -----------------------------------------
#
# A1..A3 and B1, B2 at 0.9 on their person's axis; B3 is weak (0.5). C1 at 0.9; C2 is a
# lookalike of A (0.7 on A, 0.7 on C). D1 is the only photo of D.
# Genuine pairs (7): A 3 x 0.81; B1-B2 0.81, B1-B3 0.45, B2-B3 0.45; C1-C2 0.63.
# Impostor pairs (36 - 7 = 29): C2 with A1..A3 score 0.63, the other 26 score 0.
SMALL = {
    "A1.jpg": ("A", {"A": 0.9}),
    "A2.jpg": ("A", {"A": 0.9}),
    "A3.jpg": ("A", {"A": 0.9}),
    "B1.jpg": ("B", {"B": 0.9}),
    "B2.jpg": ("B", {"B": 0.9}),
    "B3.jpg": ("B", {"B": 0.5}),
    "C1.jpg": ("C", {"C": 0.9}),
    "C2.jpg": ("C", {"A": 0.7, "C": 0.7}),
    "D1.jpg": ("D", {"D": 0.9}),
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, FakeModel]:
    root = tmp_path_factory.mktemp("small")
    model = FakeModel()
    for file, (_, weights) in SMALL.items():
        model.add(file, weights)
    images, identities, _ = write_dataset(root, [(f, who) for f, (who, _) in SMALL.items()])
    out = root / "out"
    summary = evaluate(
        images, identities, out, model, THRESHOLD, MODEL, target_fmr=0.05, federation_records=10
    )
    return summary, out, model


def test_pair_counts_and_rates_at_threshold(small: tuple[dict[str, Any], Path, FakeModel]) -> None:
    summary, _, model = small
    assert sorted(model.calls) == sorted(SMALL)
    data = summary["dataset"]
    assert (data["images_listed"], data["images_enrolled"]) == (9, 9)
    assert (data["identities_listed"], data["identities_with_genuine_pairs"]) == (4, 3)
    assert (data["genuine_pairs"], data["impostor_pairs"]) == (7, 29)
    at = summary["at_threshold"]
    assert at["threshold"] == THRESHOLD
    assert (at["fmr"]["errors"], at["fmr"]["trials"]) == (3, 29)
    assert at["fmr"]["rate"] == pytest.approx(3 / 29)
    assert (at["fnmr"]["errors"], at["fnmr"]["trials"]) == (2, 7)
    assert at["fnmr"]["rate"] == pytest.approx(2 / 7)
    low, high = at["fnmr"]["ci95"]
    assert low < 2 / 7 < high
    assert summary["failure_to_enrol"]["errors"] == 0
    assert summary["failure_to_enrol"]["by_code"] == {}


def test_threshold_for_target_fmr(small: tuple[dict[str, Any], Path, FakeModel]) -> None:
    target = small[0]["target"]
    # 0.05 x 29 allows one false match; the three lookalike pairs tie at 0.63, so the
    # smallest threshold that meets the target lies just above 0.63 (float32 templates).
    assert target["threshold"] == pytest.approx(0.63, abs=1e-6)
    assert target["threshold"] > target["just_above"] == pytest.approx(0.63, abs=1e-6)
    assert (target["fmr"]["errors"], target["fnmr"]["errors"]) == (0, 3)
    assert target["fnmr"]["rate"] == pytest.approx(3 / 7)
    # Zero of 29 has an upper bound of about 0.12, above 0.05: not shown to be met.
    assert target["demonstrated"] is False
    assert "too small" in target["note"]


def test_threshold_for_fmr_is_the_smallest_meeting_the_target() -> None:
    impostor = np.sort(np.array([0.1, 0.2, 0.3, 0.3, 0.5, 0.9, 0.0, -0.1, -0.2, -0.3]))
    for target in (0.05, 0.1, 0.2, 0.3, 0.5, 0.95, 1.0):
        t = threshold_for_fmr(impostor, target)
        assert t is not None
        assert np.mean(impostor >= t) <= target
        below = np.nextafter(t, -np.inf)
        assert np.mean(impostor >= below) > target or target == 1.0
    assert threshold_for_fmr(np.zeros(0), 0.01) is None


def test_federation_fpir(small: tuple[dict[str, Any], Path, FakeModel]) -> None:
    fed = small[0]["federation"]
    assert fed["records"] == 10
    assert fed["fmr_basis"] == "observed"
    assert fed["fpir_is_upper_bound"] is False
    assert fed["fpir"] == pytest.approx(1 - (1 - 3 / 29) ** 10)
    assert fed["fpir_upper_95"] > fed["fpir"]
    # FPIR 0.003 over 10 records needs about 3.0e-4 per comparison.
    assert fed["fmr_needed_for_target_fpir"] == pytest.approx(1 - (1 - 0.003) ** 0.1)


def test_fpir_is_stable_for_large_galleries() -> None:
    assert fpir(1e-9, 7_000_000) == pytest.approx(-math.expm1(-7e-3), rel=1e-9)
    assert fpir(0.0, 7_000_000) == 0.0
    assert fpir(1.0, 3) == 1.0
    with pytest.raises(InvalidInput):
        fpir(1.5, 3)


def test_zero_false_matches_give_a_labelled_rule_of_three_bound(tmp_path: Path) -> None:
    model = FakeModel()
    rows = []
    for person in "PQRS":
        for k in range(2):
            file = f"{person}{k}.jpg"
            model.add(file, {person: 0.9})
            rows.append((file, person))
    images, identities, _ = write_dataset(tmp_path, rows)
    summary = evaluate(
        images, identities, tmp_path / "out", model, 0.5, MODEL, federation_records=1000
    )
    fed = summary["federation"]
    n_imp = summary["dataset"]["impostor_pairs"]
    assert n_imp == 28 - 4
    assert summary["at_threshold"]["fmr"]["errors"] == 0
    assert fed["fmr_basis"] == "rule_of_three_upper_bound"
    assert fed["fpir_is_upper_bound"] is True
    assert fed["fmr_used"] == pytest.approx(3 / n_imp)
    assert fed["fpir"] == pytest.approx(-math.expm1(1000 * math.log1p(-3 / n_imp)))
    assert "UPPER BOUND" in fed["note"]
    assert "upper bound" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    ("errors", "trials", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 100, 0.0018, 0.0545),
    ],
)
def test_wilson_interval_known_values(errors: int, trials: int, low: float, high: float) -> None:
    assert wilson_interval(errors, trials) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_rejects_impossible_counts() -> None:
    for errors, trials in ((0, 0), (3, 2), (-1, 5)):
        with pytest.raises(InvalidInput):
            wilson_interval(errors, trials)


def test_curve_is_monotone_and_holds_the_operational_threshold(
    small: tuple[dict[str, Any], Path, FakeModel],
) -> None:
    rows = small[0]["curve"]
    assert THRESHOLD in [r["threshold"] for r in rows]
    fmr = [r["fmr"] for r in rows]
    fnmr = [r["fnmr"] for r in rows]
    assert fmr == sorted(fmr, reverse=True)
    assert fnmr == sorted(fnmr)
    assert fmr[0] == 1.0 and fnmr[-1] == 1.0


# --- A grouped data set with a built-in differential --------------------------------------
#
# 20 people (F0..F9, M0..M9), three photos each at 0.9, except: the third photo of F2..F5
# and of M2 is weak (0.5: two false non-matches each at 0.6); F0's third photo is a
# lookalike of F1 (0.7 on F0, 0.7 on F1: three false matches with F1's photos). Three more
# photos fail to enrol (two NoFace in F, one TooDark in M).
# Age bands: 0-4 "18-34", 5-8 "35-64", M9 alone "65+" (F9 is "35-64"). Region is empty
# for F9 and M9.


def grouped_dataset(root: Path) -> tuple[Path, Path, Path | None, FakeModel]:
    model = FakeModel()
    rows: list[tuple[str, str]] = []
    groups: list[dict[str, str]] = []
    for sex in "FM":
        for k in range(10):
            person = f"{sex}{k}"
            band = "18-34" if k < 5 else ("65+" if person == "M9" else "35-64")
            region = "" if k == 9 else ("north" if k % 2 == 0 else "south")
            files = [f"{person}_{j}.jpg" for j in range(3)]
            for j, file in enumerate(files):
                weak = j == 2 and person in {"F2", "F3", "F4", "F5", "M2"}
                weights = {person: 0.5 if weak else 0.9}
                if j == 2 and person == "F0":
                    weights = {"F0": 0.7, "F1": 0.7}
                model.add(file, weights)
            if person in {"F2", "F6", "M3"}:
                files.append(f"{person}_x.jpg")
                model.fail(files[-1], TooDark if sex == "M" else NoFace)
            for file in files:
                rows.append((file, person))
                groups.append({"file": file, "sex": sex, "age_band": band, "region": region})
    images, identities, groups_csv = write_dataset(root, rows, groups)
    return images, identities, groups_csv, model


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("grouped")
    images, identities, groups_csv, model = grouped_dataset(root)
    out = root / "out"
    summary = evaluate(images, identities, out, model, THRESHOLD, MODEL, groups=groups_csv)
    return summary, out


def group(summary: dict[str, Any], attribute: str, value: str) -> dict[str, Any]:
    (entry,) = [a for a in summary["groups"] if a["attribute"] == attribute]
    (found,) = [g for g in entry["groups"] if g["value"] == value]
    assert isinstance(found, dict)
    return found


def attribute(summary: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [a for a in summary["groups"] if a["attribute"] == name]
    assert isinstance(entry, dict)
    return entry


def test_failure_to_enrol_overall_and_per_group(grouped: tuple[dict[str, Any], Path]) -> None:
    summary, _ = grouped
    fte = summary["failure_to_enrol"]
    assert (fte["errors"], fte["trials"]) == (3, 63)
    assert fte["by_code"] == {"no_face": 2, "too_dark": 1}
    female, male = group(summary, "sex", "F"), group(summary, "sex", "M")
    assert (female["failure_to_enrol"]["errors"], female["failure_to_enrol"]["trials"]) == (2, 32)
    assert (male["failure_to_enrol"]["errors"], male["failure_to_enrol"]["trials"]) == (1, 31)
    assert (female["images"], female["enrolled"]) == (32, 30)


def test_other_embed_errors_propagate(tmp_path: Path) -> None:
    images, identities, _, model = grouped_dataset(tmp_path)

    def broken(path: Path) -> npt.NDArray[np.float32]:
        if path.name == "M5_1.jpg":
            raise RuntimeError("model crashed")
        return model(path)

    with pytest.raises(RuntimeError, match="model crashed"):
        evaluate(images, identities, tmp_path / "out", broken, THRESHOLD, MODEL)


def test_group_counts(grouped: tuple[dict[str, Any], Path]) -> None:
    summary, _ = grouped
    assert (summary["dataset"]["genuine_pairs"], summary["dataset"]["impostor_pairs"]) == (60, 1710)
    assert summary["at_threshold"]["fnmr"]["errors"] == 10
    assert summary["at_threshold"]["fmr"]["errors"] == 3
    female, male = group(summary, "sex", "F"), group(summary, "sex", "M")
    # Within a group of 10 people x 3 photos: 30 genuine pairs, C(30, 2) - 30 = 405 impostor.
    assert (female["fnmr"]["errors"], female["fnmr"]["trials"]) == (8, 30)
    assert (female["fmr"]["errors"], female["fmr"]["trials"]) == (3, 405)
    assert (male["fnmr"]["errors"], male["fnmr"]["trials"]) == (2, 30)
    assert (male["fmr"]["errors"], male["fmr"]["trials"]) == (0, 405)
    assert male["fmr"]["ci95"] == pytest.approx(
        [0.0, 1.959963984540054**2 / (405 + 3.8415)], abs=1e-4
    )
    older = group(summary, "age_band", "35-64")
    assert (older["fnmr"]["trials"], older["fmr"]["trials"]) == (27, 324)
    assert attribute(summary, "region")["images_without_value"] == 6


def test_small_groups_are_marked_insufficient(grouped: tuple[dict[str, Any], Path]) -> None:
    summary, _ = grouped
    oldest = group(summary, "age_band", "65+")
    assert oldest["status"] == "insufficient"
    assert (oldest["fnmr"]["trials"], oldest["fmr"]["trials"]) == (3, 0)
    assert oldest["fmr"]["rate"] is None
    assert "3 genuine pairs < 10" in oldest["status_note"]
    assert "0 impostor pairs < 30" in oldest["status_note"]
    assert group(summary, "sex", "F")["status"] == "sufficient"
    # The insufficient group is left out of both ratios.
    ages = attribute(summary, "age_band")
    assert ages["fnmr_ratio"]["groups_compared"] == 2
    assert ages["fmr_ratio"]["groups_compared"] == 2


def test_ratios_and_flags(grouped: tuple[dict[str, Any], Path]) -> None:
    summary, _ = grouped
    sex = attribute(summary, "sex")
    fnmr = sex["fnmr_ratio"]
    assert fnmr["ratio"] == pytest.approx(4.0)  # 8/30 against 2/30
    assert fnmr["flagged"] is True
    assert (fnmr["worst"]["group"], fnmr["best"]["group"]) == ("F", "M")
    # FMR: 3/405 against 0/405. The ratio is unbounded, so none is given; dividing by the
    # best group's upper bound (about 0.0094) gives about 0.79, not above 2.
    fmr = sex["fmr_ratio"]
    assert fmr["ratio"] is None
    assert "0 errors" in fmr["note"]
    assert fmr["conservative_ratio"] == pytest.approx((3 / 405) / wilson_interval(0, 405)[1])
    assert fmr["flagged"] is False
    ages = attribute(summary, "age_band")["fnmr_ratio"]
    assert ages["ratio"] == pytest.approx((8 / 30) / (2 / 27))
    flagged = sorted(f.split(":")[0] + " " + f.split(":")[1].split()[0] for f in summary["flags"])
    assert flagged == ["age_band FNMR", "sex FNMR"]


def test_worst_to_best_with_zeros() -> None:
    none = worst_to_best([("a", 0, 50), ("b", 0, 50)], 10)
    assert none["ratio"] is None and none["flagged"] is False
    assert "no errors" in none["note"]
    mild = worst_to_best([("a", 5, 50), ("b", 0, 50)], 10)
    assert mild["ratio"] is None and mild["flagged"] is False
    strong = worst_to_best([("a", 20, 50), ("b", 0, 50)], 10)
    assert strong["ratio"] is None and strong["flagged"] is True
    few = worst_to_best([("a", 20, 50), ("b", 1, 9)], 10)
    assert few["ratio"] is None and few["groups_compared"] == 1
    assert worst_to_best([("a", 3, 50), ("b", 1, 50)], 10)["ratio"] == pytest.approx(3.0)
    assert worst_to_best([("a", 2, 50), ("b", 1, 50)], 10)["flagged"] is False


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    from matplotlib.image import imread

    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"


@pytest.mark.parametrize("which", ["small", "grouped"])
def test_files_written(which: str, request: pytest.FixtureRequest) -> None:
    summary, out = request.getfixturevalue(which)[:2]
    per_group = ["det-1-sex.png", "det-2-age_band.png", "det-3-region.png"]
    assert sorted(p.name for p in out.iterdir()) == [
        *(per_group if which == "grouped" else []),
        "det.png",
        "report.md",
        "scores.png",
        "summary.json",
    ]
    for name in per_group if which == "grouped" else []:
        assert_valid_png(out / name)
    assert_valid_png(out / "det.png")
    assert_valid_png(out / "scores.png")
    assert json.loads((out / "summary.json").read_text()) == summary


def test_report_content(grouped: tuple[dict[str, Any], Path]) -> None:
    report = (grouped[1] / "report.md").read_text()
    assert MODEL in report
    assert "Operational threshold | 0.6 " in report
    assert "![DET curve: FNMR against FMR](det.png)" in report
    assert "](scores.png)" in report
    assert "How to read" in report and "Limitations" in report
    assert "FLAGGED" in report and "insufficient" in report
    # Aggregates only: no vector-like run of numbers, no per-image file names.
    assert not re.search(r"(-?\d+\.\d+[,;\s]+){8,}", report)
    assert not re.search(r"\d\.\d{9,}", report)
    for text in (report, (grouped[1] / "summary.json").read_text()):
        assert "_0.jpg" not in text and "_x.jpg" not in text


def test_report_names_the_figures_and_tables_render(
    small: tuple[dict[str, Any], Path, FakeModel],
) -> None:
    report = (small[1] / "report.md").read_text()
    assert "No groups file was given" in report
    assert "is **just above 0.63** (exact value" in report
    for line in report.splitlines():
        if line.startswith("|"):
            assert line.endswith("|")


@pytest.mark.parametrize(
    ("identities_text", "message"),
    [
        ("file,who\nA1.jpg,A\n", "missing identity"),
        ("file,identity\nA1.jpg,A\nA1.jpg,B\n", "more than once"),
        ("file,identity\nmissing.jpg,A\n", "not a file"),
        ("file,identity\nA1.jpg,\n", "non-empty"),
        ("file,identity\n", "no images"),
    ],
)
def test_bad_listings_are_refused(tmp_path: Path, identities_text: str, message: str) -> None:
    images, identities, _ = write_dataset(tmp_path, [("A1.jpg", "A")])
    identities.write_text(identities_text)
    model = FakeModel()
    model.add("A1.jpg", {"A": 0.9})
    with pytest.raises(InvalidInput, match=message):
        evaluate(images, identities, tmp_path / "out", model, THRESHOLD, MODEL)


def test_bad_template_is_refused(tmp_path: Path) -> None:
    images, identities, _ = write_dataset(tmp_path, [("A1.jpg", "A"), ("A2.jpg", "A")])

    def flat(path: Path) -> npt.NDArray[np.float32]:
        return np.zeros((2, 8), dtype=np.float32)

    with pytest.raises(InvalidInput, match="shape"):
        evaluate(images, identities, tmp_path / "out", flat, THRESHOLD, MODEL)


def test_groups_file_rows_for_unknown_images_are_ignored(tmp_path: Path) -> None:
    model = FakeModel()
    rows = [(f"{p}{k}.jpg", p) for p in "PQ" for k in range(2)]
    for file, person in rows:
        model.add(file, {person: 0.9})
    groups = [{"file": f, "sex": "F"} for f, _ in rows] + [{"file": "other.jpg", "sex": "M"}]
    images, identities, groups_csv = write_dataset(tmp_path, rows, groups)
    summary = evaluate(
        images, identities, tmp_path / "out", model, THRESHOLD, MODEL, groups=groups_csv
    )
    assert summary["dataset"]["group_rows_not_in_identities"] == 1
    assert [g["value"] for g in attribute(summary, "sex")["groups"]] == ["F"]
    assert "insufficient" in (tmp_path / "out" / "report.md").read_text()


def test_block_wise_counts_equal_a_brute_force_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedmatch.evaluation import metrics

    # Seven similarity cells per block forces many small row blocks.
    monkeypatch.setattr(metrics, "_BLOCK_CELLS", 7)
    rng = np.random.default_rng(3)
    n = 40
    labels = rng.integers(0, 8, size=n).astype(np.int64)
    centres = rng.standard_normal((8, 16))
    templates = centres[labels] + 0.8 * rng.standard_normal((n, 16))
    codes = rng.integers(-1, 3, size=n).astype(np.int64)
    result = metrics.compare_all(templates, labels, 0.5, [codes], [3])

    unit = templates / np.linalg.norm(templates, axis=1, keepdims=True)
    genuine: list[float] = []
    impostor: list[float] = []
    expected = np.zeros((4, 3), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            score = float(unit[i] @ unit[j])
            same = labels[i] == labels[j]
            (genuine if same else impostor).append(score)
            if codes[i] == codes[j] >= 0:
                g = codes[i]
                if same:
                    expected[0, g] += 1
                    expected[1, g] += score < 0.5
                else:
                    expected[2, g] += 1
                    expected[3, g] += score >= 0.5
    assert result.genuine == pytest.approx(sorted(genuine))
    assert result.impostor == pytest.approx(sorted(impostor))
    (counts,) = result.groups
    got = [counts.genuine_pairs, counts.false_non_matches, counts.impostor_pairs]
    assert np.array_equal(np.stack([*got, counts.false_matches]), expected)
