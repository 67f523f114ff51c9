"""fedmatch.he.leakage: the bits a masked magnitude says about a score, exact for simple
cases, equal to a Monte Carlo estimate with real draws of the masks, and the numbers the
parameter sets' docs quote."""

from __future__ import annotations

import numpy as np
import pytest

from fedmatch.he.leakage import magnitude_information
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET, NARROW_PARAM_SET


def test_two_point_scores_give_the_overlap_in_closed_form() -> None:
    """Two equally frequent log-distances ``a`` bits apart through uniform noise ``w`` wide:
    the magnitude tells them apart except in the overlap, ``I = a / w`` bits (a <= w)."""
    scores = np.concatenate([np.full(1000, 0.40), np.full(1000, 0.05)])
    for w in (3, 5, 8, 17):
        got = magnitude_information(scores, 0.45, (30, 30 + w))
        assert got == pytest.approx(3 / w, abs=0.005)
    # Further apart than the masks are wide: the magnitude tells the two apart entirely.
    assert magnitude_information(scores, 0.45, (30, 32)) == pytest.approx(1.0, abs=0.005)


def test_it_equals_a_monte_carlo_estimate_with_drawn_masks() -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal(200_000) / np.sqrt(128)
    for mask_bits in ((29, 34), (30, 47)):
        lo, hi = mask_bits
        y = np.log2(np.abs(scores - 0.3)) + rng.uniform(lo, hi, scores.size)
        density, edges = np.histogram(y, bins=600, density=True)
        step = edges[1] - edges[0]
        p = density[density > 0] * step
        monte_carlo = float(-(p * np.log2(p)).sum() + np.log2(step)) - np.log2(hi - lo)
        assert magnitude_information(scores, 0.3, mask_bits) == pytest.approx(monte_carlo, abs=0.02)


def test_the_numbers_the_docs_quote() -> None:
    """fedmatch.he.params: synthetic 128-d scores, an ordinary threshold and one at the
    median score (the requester's worst choice for the register)."""
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(1_000_000) / np.sqrt(128)
    wide = DEFAULT_PARAM_SET.mask_bits
    assert wide == KERNEL_PARAM_SET.mask_bits == (30, 47)
    narrow = NARROW_PARAM_SET.mask_bits
    median = float(np.median(scores))
    assert magnitude_information(scores, 0.45, wide) == pytest.approx(0.046, abs=0.005)
    assert magnitude_information(scores, 0.45, narrow) == pytest.approx(0.155, abs=0.005)
    assert magnitude_information(scores, median, wide) == pytest.approx(0.234, abs=0.005)
    assert magnitude_information(scores, median, narrow) == pytest.approx(0.782, abs=0.005)


def test_degenerate_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        magnitude_information([0.1, 0.2], 0.45, (30, 30))
    with pytest.raises(ValueError, match="threshold"):
        magnitude_information([0.45, 0.45], 0.45, (30, 47))
