"""Issue 18, item 5: 1:N measures in the FRVT style, by real searches of a gallery of the
evaluation set's enrolled templates plus synthetic distractors.

A handmade set whose every score is known gives exact ranks, FNIR and FPIR; a brute-force
search checks the block-wise one; a gallery of a million 128-dimensional distractors shows
that the federation's size fits in memory and time and ranks a weak mate where the
distribution of random vectors puts it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.errors import InvalidInput
from fedmatch.evaluation import identification
from fedmatch.evaluation.identification import identification_section, search_all
from tests.unit.test_evaluation import FakeModel, evaluate, write_dataset


def unit(**weights: float) -> dict[str, float]:
    return weights


# A0, A1, A2 of A; B0, B1 of B; C0 alone. The gallery enrols A0, B0, C0.
# Mated searches: A1 (mate 0.9, rank 1), A2 (mate 0.5, but B0 scores 0.6: rank 2), B1 (0.8,
# rank 1). Non-mated searches (own entry left out): A2 meets B0 at 0.6, all others score 0.
HAND = {
    "A0.jpg": ("A", unit(A=1.0)),
    "A1.jpg": ("A", unit(A=0.9)),
    "A2.jpg": ("A", unit(A=0.5, B=0.6)),
    "B0.jpg": ("B", unit(B=1.0)),
    "B1.jpg": ("B", unit(B=0.8)),
    "C0.jpg": ("C", unit(C=1.0)),
}


def hand_templates() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    model = FakeModel(dimension=16)
    for file, (_, weights) in HAND.items():
        model.add(file, weights)
    rows = np.stack([model.vectors[f] for f in HAND]).astype(np.float64)
    labels = np.array([ord(who) - ord("A") for who, _ in HAND.values()], dtype=np.int64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), labels


def test_ranks_and_top_scores_of_a_handmade_gallery() -> None:
    templates, labels = hand_templates()
    s = search_all(templates, labels, gallery_size=3)
    assert (s.entries, s.distractors) == (3, 0)
    assert s.mated_scores == pytest.approx([0.9, 0.5, 0.8], abs=1e-6)
    assert s.mated_ranks.tolist() == [1, 2, 1]
    assert s.non_mated_top == pytest.approx([0, 0, 0, 0, 0, 0.6], abs=1e-6)


def test_fnir_fpir_and_rank_misses_of_a_handmade_gallery() -> None:
    templates, labels = hand_templates()
    s = search_all(templates, labels, gallery_size=3)
    section = identification_section(s, 0.55, 50, (0.01,), 0, np.zeros(0), 16)
    assert (section["mated_searches"], section["non_mated_searches"]) == (3, 6)
    at = section["at_threshold"]
    # A2's mate scores 0.5 < 0.55: one miss of three. A2 against B0 (0.6): one false positive.
    assert (at["fnir"]["errors"], at["fnir"]["trials"]) == (1, 3)
    assert (at["fpir"]["errors"], at["fpir"]["trials"]) == (1, 6)
    assert [(r["rank"], r["errors"]) for r in section["rank_miss"]] == [(1, 1), (10, 0), (50, 0)]
    (target,) = section["at_fpir"]
    # FPIR 0.01 of 6 searches allows none: the threshold lies just above 0.6.
    assert target["threshold"] == pytest.approx(0.6, abs=1e-6) and target["threshold"] > 0.6
    assert (target["fpir"]["errors"], target["fnir"]["errors"]) == (0, 1)
    assert target["demonstrated"] is False
    assert "6 non-mated searches" in target["note"]
    # A candidate list of one: A2 (rank 2) is missed even at a threshold of 0.
    short = identification_section(s, 0.0, 1, (0.01,), 0, np.zeros(0), 16)
    assert short["at_threshold"]["fnir"]["errors"] == 1
    assert [r["rank"] for r in short["rank_miss"]] == [1]


def test_the_gallery_cannot_be_smaller_than_the_enrolled_identities() -> None:
    templates, labels = hand_templates()
    with pytest.raises(InvalidInput, match="smaller than the 3 identities"):
        search_all(templates, labels, gallery_size=2)


def test_block_wise_search_equals_a_brute_force_search(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n, d, distractors = 30, 8, 5_000
    labels = rng.integers(0, 7, size=n).astype(np.int64)
    centres = rng.standard_normal((7, d))
    templates = centres[labels] + 0.7 * rng.standard_normal((n, d))
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    # Drawing in blocks gives the same distractors as one draw: the blocks only bound memory.
    whole = identification._distractors(np.random.default_rng(11), distractors, d)
    parts = np.random.default_rng(11)
    chunks = [identification._distractors(parts, size, d) for size in (700, 4_000, 300)]
    assert np.array_equal(np.concatenate(chunks), whole)

    monkeypatch.setattr(identification, "_MAX_BLOCK", 700)
    entries = len(set(labels.tolist()))
    s = search_all(templates, labels, gallery_size=entries + distractors, seed=11)

    first = {int(c): i for i, c in reversed(list(enumerate(labels.tolist())))}
    entry_rows = sorted(first.values())
    gallery = np.concatenate([templates[entry_rows].astype(np.float32), whole])
    owner = [int(labels[r]) for r in entry_rows] + [-1] * distractors
    scores = templates.astype(np.float32) @ gallery.T
    ranks, tops = [], []
    for p in range(n):
        own = next(c for c, o in enumerate(owner) if o == labels[p])
        others = np.delete(scores[p], own)
        tops.append(float(others.max()))
        if p not in entry_rows:
            ranks.append(1 + int(np.count_nonzero(others >= scores[p, own])))
    assert s.mated_ranks.tolist() == ranks
    assert s.non_mated_top == pytest.approx(sorted(tops), abs=1e-5)
    assert s.distractors == distractors


@pytest.mark.slow
def test_a_million_distractors_fit_and_rank_a_weak_mate_where_chance_puts_it() -> None:
    """The federation's size: 1,000,000 x 128 searched block-wise (about 64 MB at a time).
    A mate at 0.9 or 0.5 stays first; one at 0.3 sits behind the random vectors that score
    above 0.3 by chance: about N * P(Z >= 0.3 * sqrt(128)) = 1e6 * 3.5e-4, a few hundred."""
    rng = np.random.default_rng(2)
    d = 128
    identities = rng.standard_normal((3, d))
    identities /= np.linalg.norm(identities, axis=1, keepdims=True)
    rows = [identities[0], identities[1], identities[2]]
    for k, similarity in enumerate((0.9, 0.5, 0.3)):
        noise = rng.standard_normal(d)
        noise -= (noise @ identities[k]) * identities[k]
        noise /= np.linalg.norm(noise)
        rows.append(similarity * identities[k] + math.sqrt(1 - similarity**2) * noise)
    templates = np.stack(rows)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)
    started = time.perf_counter()
    s = search_all(templates, labels, gallery_size=1_000_000)
    elapsed = time.perf_counter() - started
    assert s.distractors == 1_000_000 - 3
    assert s.mated_ranks[:2].tolist() == [1, 1]
    assert 150 < int(s.mated_ranks[2]) < 700
    assert s.distractor_score_sd == pytest.approx(1 / math.sqrt(d), rel=0.02)
    assert abs(s.distractor_score_mean or 1.0) < 0.002
    # The highest of a million random cosines in 128 dimensions: about 0.4 to 0.5.
    assert 0.35 < float(s.non_mated_top[-1]) < 0.55
    assert elapsed < 120


def test_evaluate_reports_the_1_to_n_section(tmp_path: Path) -> None:
    model = FakeModel(dimension=16)
    for file, (_, weights) in HAND.items():
        model.add(file, weights)
    images, identities, _ = write_dataset(tmp_path, [(f, who) for f, (who, _) in HAND.items()])
    summary = evaluate(images, identities, tmp_path / "out", model, 0.55, "fake", gallery_size=53)
    ident = summary["identification"]
    assert ident["gallery"] == {
        "size": 53,
        "enrolled_identities": 3,
        "distractors": 50,
        "distractor_kind": "synthetic",
        "distractor_recipe": "unit vectors of 16 independent standard normal coordinates, "
        "normalised (numpy default_rng, seed 0)",
        "enrolment": "the first enrolled image of each identity, in listing order",
    }
    assert ident["rank_miss"][0]["errors"] == 1  # A2 ranks behind B0 whatever the distractors
    assert [e["target_fpir"] for e in ident["at_fpir"]] == [0.001, 0.003, 0.01]
    assert summary["settings"]["gallery_size"] == 53
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Identification (1:N) against a federation-sized gallery" in report
    assert "50 **synthetic** distractors" in report
    assert "understates" in report
    # The federation's size is the default gallery.
    default = evaluate(
        images, identities, tmp_path / "o2", model, 0.55, "fake", federation_records=40,
        gallery_size=None,
    )  # fmt: skip
    assert default["identification"]["gallery"]["size"] == 40
