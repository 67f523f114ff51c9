"""One-to-many measures in the style of NIST FRVT 1:N: searches against a federation-sized
gallery, false negative and false positive identification rates, rank-k miss rates.

The gallery holds one enrolled template per identity of the evaluation set (its first
enrolled image in listing order) plus synthetic distractors up to the federation's gallery
size. Two kinds of search are run, each probe against the whole gallery:

- a *mated* search probes with another image of an enrolled identity: it misses (counts
  towards FNIR) when the mate is not among the first ``candidates`` entries or scores below
  the threshold; its rank is the mate's position, ties counted against it;
- a *non-mated* search probes with any image, its own identity's entry left out of the
  gallery: it is a false positive (FPIR) when any entry scores at or above the threshold.

Distractors are random unit vectors (independent standard normal coordinates, normalised:
the same recipe as the project's synthetic registers), drawn block by block from a seeded
generator, so a gallery of millions is searched in a few tens of megabytes. Real faces'
embeddings are not spread evenly over the sphere: real impostors score higher than random
vectors, so synthetic distractors understate FPIR. The report says so and shows both
impostor score distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch.errors import InvalidInput
from fedmatch.evaluation.metrics import rate, threshold_for_fmr

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FPIR_TARGETS",
    "Searches",
    "identification_section",
    "search_all",
]

DEFAULT_CANDIDATES = 50
"""Length of the candidate list a human reviewer sees (DOMAIN.md §7)."""

DEFAULT_FPIR_TARGETS = (0.001, 0.003, 0.01)
"""FPIRs at which FNIR is reported; FRVT's 0.003 among them."""

# Cells of one probes x distractors block (float32): about 64 MB.
_BLOCK_CELLS = 16_000_000
_MAX_BLOCK = 131_072

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Searches:
    """The outcome of every search, as the numbers FNIR, FPIR and ranks are made of."""

    mated_scores: FloatArray
    """Per mated search, the mate's score."""
    mated_ranks: IntArray
    """Per mated search, the mate's rank (1 is first; entries scoring the same count ahead)."""
    non_mated_top: FloatArray
    """Per non-mated search, its highest score in the gallery, sorted ascending."""
    entries: int
    """Enrolled identities in the gallery."""
    distractors: int
    distractor_score_mean: float | None
    distractor_score_sd: float | None
    """Of the first block of distractor scores: the synthetic impostor distribution."""


def _distractors(rng: np.random.Generator, n: int, dimension: int) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, dimension), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def search_all(
    templates: npt.NDArray[np.float64],
    labels: IntArray,
    gallery_size: int,
    seed: int = 0,
) -> Searches:
    """Runs every mated and non-mated search of unit-norm ``templates`` (rows; ``labels``
    are identity codes) against their enrolled entries plus distractors up to
    ``gallery_size`` entries in all."""
    n = templates.shape[0]
    if labels.shape != (n,):
        raise InvalidInput("labels must give one identity code per template")
    first: dict[int, int] = {}
    for row, code in enumerate(labels.tolist()):
        first.setdefault(int(code), row)
    entry_rows = sorted(first.values())
    entries = len(entry_rows)
    if gallery_size < entries:
        raise InvalidInput(
            f"gallery size {gallery_size:,} is smaller than the {entries} identities enrolled"
        )
    column = {int(labels[r]): c for c, r in enumerate(entry_rows)}
    own = np.array([column[int(code)] for code in labels.tolist()], dtype=np.int64)
    is_entry = np.zeros(n, dtype=bool)
    is_entry[entry_rows] = True
    mated = np.flatnonzero(~is_entry)

    t32 = np.asarray(templates, dtype=np.float32)
    enrolled = t32[entry_rows] @ t32.T  # entries x probes
    scores = enrolled.T.astype(np.float64)  # probes x entries
    rows = np.arange(n)
    mate = scores[rows, own]
    others = scores.copy()
    others[rows, own] = -np.inf
    # Ties are counted against the mate: an entry scoring the same is ranked ahead.
    ahead = (others >= mate[:, None]).sum(axis=1).astype(np.int64)
    top = others.max(axis=1) if entries > 1 else np.full(n, -np.inf)

    distractors = gallery_size - entries
    rng = np.random.default_rng(seed)
    block = max(1, min(_MAX_BLOCK, _BLOCK_CELLS // max(n, 1)))
    mean: float | None = None
    sd: float | None = None
    mate32 = mate.astype(np.float32)
    done = 0
    while done < distractors:
        size = min(block, distractors - done)
        found = t32 @ _distractors(rng, size, t32.shape[1]).T  # probes x block
        if mean is None:
            mean, sd = float(found.mean()), float(found.std())
        np.maximum(top, found.max(axis=1), out=top)
        ahead[mated] += (found[mated] >= mate32[mated, None]).sum(axis=1)
        done += size
    return Searches(
        mated_scores=mate[mated],
        mated_ranks=1 + ahead[mated],
        non_mated_top=np.sort(top),
        entries=entries,
        distractors=distractors,
        distractor_score_mean=mean,
        distractor_score_sd=sd,
    )


def _misses(s: Searches, threshold: float, candidates: int) -> int:
    return int(np.count_nonzero((s.mated_ranks > candidates) | (s.mated_scores < threshold)))


def _false_positives(s: Searches, threshold: float) -> int:
    return int(s.non_mated_top.size - np.searchsorted(s.non_mated_top, threshold, side="left"))


def identification_section(
    s: Searches,
    threshold: float,
    candidates: int,
    fpir_targets: Sequence[float],
    seed: int,
    real_impostor: FloatArray,
    dimension: int,
) -> dict[str, Any]:
    """The summary's ``identification`` section: the gallery, and every 1:N rate with its
    number of searches and Wilson 95% interval."""
    n_mated, n_non = int(s.mated_ranks.size), int(s.non_mated_top.size)
    ranks = sorted({1, min(10, candidates), candidates})
    section: dict[str, Any] = {
        "gallery": {
            "size": s.entries + s.distractors,
            "enrolled_identities": s.entries,
            "distractors": s.distractors,
            "distractor_kind": "synthetic",
            "distractor_recipe": (
                f"unit vectors of {dimension} independent standard normal coordinates, "
                f"normalised (numpy default_rng, seed {seed})"
            ),
            "enrolment": "the first enrolled image of each identity, in listing order",
        },
        "mated_searches": n_mated,
        "non_mated_searches": n_non,
        "candidates": candidates,
        "rank_miss": [
            {"rank": k, **rate(int(np.count_nonzero(s.mated_ranks > k)), n_mated)} for k in ranks
        ],
        "at_threshold": {
            "threshold": float(threshold),
            "fnir": rate(_misses(s, threshold, candidates), n_mated),
            "fpir": rate(_false_positives(s, threshold), n_non),
        },
        "at_fpir": [],
        "impostor_scores": {
            "real_mean": float(real_impostor.mean()) if real_impostor.size else None,
            "real_sd": float(real_impostor.std()) if real_impostor.size else None,
            "synthetic_mean": s.distractor_score_mean,
            "synthetic_sd": s.distractor_score_sd,
            "synthetic_sd_expected": 1 / math.sqrt(dimension),
        },
        "note": (
            "Distractors are synthetic: random unit vectors score lower against a face than "
            "real faces of other people do, so the FPIR shown understates a real gallery's "
            "and the FNIR at a fixed FPIR is optimistic."
        ),
    }
    for target in fpir_targets:
        entry: dict[str, Any] = {
            "target_fpir": float(target),
            "threshold": None,
            "fpir": None,
            "fnir": None,
            "demonstrated": False,
            "note": None,
        }
        at = threshold_for_fmr(s.non_mated_top, target)
        if at is None:
            entry["note"] = "no non-mated searches: no threshold can be derived"
        else:
            fpir = rate(_false_positives(s, at), n_non)
            entry.update(
                threshold=at,
                fpir=fpir,
                fnir=rate(_misses(s, at, candidates), n_mated),
                demonstrated=bool(fpir["ci95"][1] <= target),
            )
            if not entry["demonstrated"]:
                entry["note"] = (
                    f"{n_non} non-mated searches put the upper 95% bound of FPIR at this "
                    f"threshold at {fpir['ci95'][1]:.3g}, above the target {target:g}: too "
                    "few searches to show it"
                )
        section["at_fpir"].append(entry)
    return section
