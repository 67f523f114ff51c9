"""Error-rate arithmetic of a verification evaluation (ISO/IEC 19795-1 and -10 terms).

This module owns the numbers: comparison of every pair of enrolled templates, false match
and false non-match rates at a threshold and across thresholds, the threshold that meets a
target false match rate, Wilson score intervals, the false positive identification rate a
per-comparison FMR implies for a federation of N records, and worst-to-best group ratios.
It has no file I/O. The decision rule everywhere is: a pair matches when its cosine
similarity is at least the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch.errors import InvalidInput

__all__ = [
    "Z95",
    "Comparison",
    "GroupCounts",
    "GroupScores",
    "compare_all",
    "curve",
    "false_match_count",
    "false_non_match_count",
    "fmr_for_fpir",
    "fpir",
    "highest_rejected_score",
    "rate",
    "threshold_for_fmr",
    "wilson_interval",
    "worst_to_best",
]

Z95 = 1.959963984540054
"""The two-sided 95% standard normal quantile."""

# Pairs whose scores are held in memory per block of the similarity matrix (float64 each).
_BLOCK_CELLS = 4_000_000

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def wilson_interval(errors: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``errors / trials``.

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0 errors
    (0 of 10 gives an upper bound of about 0.28), which is the common case for FMR.
    """
    if trials <= 0:
        raise InvalidInput("a Wilson interval needs at least one trial")
    if not 0 <= errors <= trials:
        raise InvalidInput(f"errors must be between 0 and trials ({trials}), got {errors}")
    p = errors / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    # The bounds are exact at the edges; rounding must not move them off 0 or 1.
    low = 0.0 if errors == 0 else max(0.0, centre - half)
    high = 1.0 if errors == trials else min(1.0, centre + half)
    return low, high


def rate(errors: int, trials: int) -> dict[str, Any]:
    """``{"errors", "trials", "rate", "ci95"}``; rate and interval are None without trials."""
    if trials == 0:
        return {"errors": int(errors), "trials": 0, "rate": None, "ci95": None}
    low, high = wilson_interval(errors, trials)
    return {
        "errors": int(errors),
        "trials": int(trials),
        "rate": errors / trials,
        "ci95": [low, high],
    }


@dataclass(frozen=True)
class GroupCounts:
    """Pair counts of one attribute's groups at the operational threshold.

    Index ``g`` of every array is the group with code ``g``. A genuine pair belongs to a
    group when both images are in it; so does an impostor pair.
    """

    genuine_pairs: IntArray
    false_non_matches: IntArray
    impostor_pairs: IntArray
    false_matches: IntArray


@dataclass(frozen=True)
class GroupScores:
    """The scores of one attribute's groups (each sorted ascending), for per-group curves.

    ``genuine[g]`` and ``impostor[g]`` hold the pairs whose two images are both in group
    ``g``, the same pairs :class:`GroupCounts` counts.
    """

    genuine: tuple[FloatArray, ...]
    impostor: tuple[FloatArray, ...]


@dataclass(frozen=True)
class Comparison:
    """All genuine and impostor scores (each sorted ascending) and per-attribute counts."""

    genuine: FloatArray
    impostor: FloatArray
    groups: tuple[GroupCounts, ...]
    group_scores: tuple[GroupScores, ...] = ()


def compare_all(
    templates: npt.NDArray[np.floating[Any]],
    labels: IntArray,
    threshold: float,
    attribute_codes: Sequence[IntArray] = (),
    group_counts: Sequence[int] = (),
) -> Comparison:
    """Scores every unordered pair of ``templates`` (rows, L2-normalised here) once.

    ``labels`` are identity codes: pairs with equal labels are genuine, the rest impostor.
    ``attribute_codes[k][i]`` is the group code of image ``i`` for attribute ``k`` (``-1``:
    not in any group), with ``group_counts[k]`` groups. The per-group counts are taken in
    the same pass as the scores, so an image pair is scored exactly once.
    """
    t = np.asarray(templates, dtype=np.float64)
    if t.ndim != 2:
        raise InvalidInput("templates must be a two-dimensional array, one row per image")
    n = t.shape[0]
    if labels.shape != (n,):
        raise InvalidInput("labels must give one identity code per template")
    if len(attribute_codes) != len(group_counts):
        raise InvalidInput("attribute_codes and group_counts must have the same length")
    norms = np.linalg.norm(t, axis=1, keepdims=True) if n else np.ones((0, 1))
    if n and (not np.all(np.isfinite(t)) or np.any(norms == 0)):
        raise InvalidInput("every template must be finite and non-zero")
    t = t / norms

    sums = [[np.zeros(g, dtype=np.int64) for _ in range(4)] for g in group_counts]
    # Per attribute: the group codes and scores of its genuine and impostor pairs.
    parts: list[list[list[tuple[IntArray, FloatArray]]]] = [[[], []] for _ in group_counts]
    genuine: list[FloatArray] = []
    impostor: list[FloatArray] = []
    block = max(1, _BLOCK_CELLS // max(n, 1))
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = t[start:stop] @ t[start:].T
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start, n)[None, :]
        upper = cols > rows
        same = labels[start:stop, None] == labels[None, start:]
        is_genuine = upper & same
        is_impostor = upper & ~same
        genuine.append(scores[is_genuine])
        impostor.append(scores[is_impostor])
        non_match = is_genuine & (scores < threshold)
        false_match = is_impostor & (scores >= threshold)
        for k, codes in enumerate(attribute_codes):
            mine = codes[start:stop, None]
            both = (mine == codes[None, start:]) & (mine >= 0)
            group = np.broadcast_to(mine, scores.shape)
            for slot, mask in enumerate((is_genuine, non_match, is_impostor, false_match)):
                sums[k][slot] += np.bincount(group[mask & both], minlength=group_counts[k])
            for slot, mask in enumerate((is_genuine, is_impostor)):
                parts[k][slot].append((group[mask & both], scores[mask & both]))
    return Comparison(
        genuine=np.sort(np.concatenate(genuine)) if genuine else np.zeros(0),
        impostor=np.sort(np.concatenate(impostor)) if impostor else np.zeros(0),
        groups=tuple(GroupCounts(*s) for s in sums),
        group_scores=tuple(
            GroupScores(_split(parts[k][0], g), _split(parts[k][1], g))
            for k, g in enumerate(group_counts)
        ),
    )


def _split(parts: list[tuple[IntArray, FloatArray]], groups: int) -> tuple[FloatArray, ...]:
    """Sorted scores per group code from the blocks' (codes, scores) pieces."""
    if not parts:
        return tuple(np.zeros(0) for _ in range(groups))
    codes = np.concatenate([c for c, _ in parts])
    scores = np.concatenate([s for _, s in parts])
    return tuple(np.sort(scores[codes == g]) for g in range(groups))


def false_match_count(impostor_sorted: FloatArray, threshold: float) -> int:
    """Impostor scores at or above ``threshold`` (scores sorted ascending)."""
    return int(impostor_sorted.size - np.searchsorted(impostor_sorted, threshold, side="left"))


def false_non_match_count(genuine_sorted: FloatArray, threshold: float) -> int:
    """Genuine scores below ``threshold`` (scores sorted ascending)."""
    return int(np.searchsorted(genuine_sorted, threshold, side="left"))


def highest_rejected_score(impostor_sorted: FloatArray, target: float) -> float | None:
    """The highest impostor score a threshold meeting ``target`` FMR must reject.

    With ``n`` impostor pairs at most ``k = floor(target * n)`` of them may score at or
    above the threshold, so the ``(k + 1)``-th highest impostor score must fall below it.
    None when no score needs rejecting (``k >= n``) or there are no impostor pairs.
    """
    n = int(impostor_sorted.size)
    if not 0.0 < target <= 1.0:
        raise InvalidInput(f"target FMR must be in (0, 1], got {target}")
    # The tiny relative margin keeps e.g. 0.01 * 300 from flooring to 2.
    allowed = math.floor(target * n * (1 + 1e-12))
    if allowed >= n:
        return None
    return float(impostor_sorted[n - 1 - allowed])


def threshold_for_fmr(impostor_sorted: FloatArray, target: float) -> float | None:
    """The smallest threshold whose observed FMR is at most ``target``; None without pairs.

    That is the smallest float strictly above :func:`highest_rejected_score` (or the lowest
    impostor score when the target allows every pair to match).
    """
    rejected = highest_rejected_score(impostor_sorted, target)
    if impostor_sorted.size == 0:
        return None
    if rejected is None:
        return float(impostor_sorted[0])
    return float(np.nextafter(rejected, np.inf))


def fpir(fmr: float, records: int) -> float:
    """``1 - (1 - fmr) ** records``: the chance that a probe of someone not enrolled falsely
    matches at least one of ``records`` independent comparisons, computed stably."""
    if not 0.0 <= fmr <= 1.0:
        raise InvalidInput(f"FMR must be in [0, 1], got {fmr}")
    if records < 0:
        raise InvalidInput(f"records must be non-negative, got {records}")
    if fmr == 1.0:
        return 1.0 if records else 0.0
    return -math.expm1(records * math.log1p(-fmr))


def fmr_for_fpir(target_fpir: float, records: int) -> float:
    """The per-comparison FMR at which ``records`` comparisons give ``target_fpir``."""
    if not 0.0 < target_fpir < 1.0 or records < 1:
        raise InvalidInput("target FPIR must be in (0, 1) and records at least 1")
    return -math.expm1(math.log1p(-target_fpir) / records)


def curve(
    genuine_sorted: FloatArray, impostor_sorted: FloatArray, thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """One row per threshold: false matches, false non-matches and their rates."""
    rows: list[dict[str, Any]] = []
    n_gen, n_imp = int(genuine_sorted.size), int(impostor_sorted.size)
    for t in thresholds:
        fm = false_match_count(impostor_sorted, t)
        fnm = false_non_match_count(genuine_sorted, t)
        rows.append(
            {
                "threshold": float(t),
                "false_matches": fm,
                "fmr": fm / n_imp if n_imp else None,
                "false_non_matches": fnm,
                "fnmr": fnm / n_gen if n_gen else None,
            }
        )
    return rows


def worst_to_best(groups: Sequence[tuple[str, int, int]], minimum: int) -> dict[str, Any]:
    """Worst-to-best ratio of an error rate among groups with at least ``minimum`` trials.

    ``groups`` holds ``(value, errors, trials)``. The ratio is None, with the reason in
    ``note``, when fewer than two groups qualify or the best group shows no errors. In the
    latter case ``conservative_ratio`` divides the worst rate by the best group's upper 95%
    bound instead: it understates the true ratio, so it exceeding 2 is itself a finding.
    ``flagged`` is set when either ratio exceeds 2. ``left_out`` names each group with too
    few trials; ``complete`` is set only when a ratio was computed over every group, which
    is the only case in which "no ratio above 2" may be said of the attribute.
    """
    eligible = [(v, e, n, e / n) for v, e, n in groups if n >= minimum and n > 0]
    left_out = [
        {"group": v, "reason": f"{n} pairs < {minimum}"} for v, _, n in groups if n < minimum
    ]
    result: dict[str, Any] = {
        "groups_compared": len(eligible),
        "groups_total": len(groups),
        "left_out": left_out,
        "complete": False,
        "worst": None,
        "best": None,
        "ratio": None,
        "conservative_ratio": None,
        "flagged": False,
        "note": None,
    }
    if len(eligible) < 2:
        result["note"] = f"fewer than two groups have at least {minimum} pairs"
        return result
    worst = max(eligible, key=lambda g: (g[3], g[2]))
    best = min(eligible, key=lambda g: (g[3], -g[2]))
    result["worst"] = {"group": worst[0], "rate": worst[3]}
    result["best"] = {"group": best[0], "rate": best[3]}
    if worst[3] == 0.0:
        result["note"] = "no errors observed in any group compared; ratio undefined (0/0)"
        return result
    if best[3] == 0.0:
        upper = wilson_interval(best[1], best[2])[1]
        conservative = worst[3] / upper
        result["conservative_ratio"] = conservative
        result["flagged"] = conservative > 2.0
        result["note"] = (
            f"best group {best[0]!r} has 0 errors in {best[2]} pairs, so the ratio is "
            f"unbounded; worst rate / best group's upper 95% bound = {conservative:.3g}"
        )
        return result
    ratio = worst[3] / best[3]
    result["ratio"] = ratio
    result["flagged"] = ratio > 2.0
    result["complete"] = not left_out
    if left_out:
        result["note"] = (
            f"computed over {len(eligible)} of {len(groups)} groups; left out: "
            + ", ".join(f"{g['group']!r} ({g['reason']})" for g in left_out)
        )
    return result
