"""What a masked result's magnitude tells the requester about a score, in bits.

A node answers ``r (s - t)`` per record, ``r`` log-uniform over the parameter set's mask
bits ``[lo, hi]``: the requester, who decrypts, reads ``log2 |r (s - t)| = log2 r +
log2 |s - t|``, the score's log-distance from the threshold seen through uniform noise
``w = hi - lo`` bits wide. Per record and query it learns the mutual information

    I = h(log2 |s - t| + U) - log2 w,   U uniform on [0, w],

for the distribution of ``|s - t|`` over the register: computed here exactly for an
empirical one (the density of the sum is ``(F(y) - F(y - w)) / w``, F the empirical CDF),
so that a federation can state the bound for its own scores and thresholds before it
chooses a parameter set (fedmatch.he.params: 17 bits of masks on the default and kernel
sets, 5 on the narrow one).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["magnitude_information"]

# Grid step of the integral, in bits of log-distance: fine against any mask width in use.
_STEP = 1.0 / 512


def magnitude_information(
    scores: npt.ArrayLike, threshold: float, mask_bits: tuple[int, int]
) -> float:
    """Bits a record's masked magnitude says about its score, on average over ``scores``
    (the register's scores against a probe), with masks log-uniform over ``mask_bits``."""
    lo, hi = mask_bits
    width = float(hi - lo)
    if width <= 0:
        raise ValueError("masks must span a positive number of bits")
    gaps = np.abs(np.asarray(scores, dtype=np.float64) - threshold)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        raise ValueError("no score differs from the threshold")
    logs = np.sort(np.log2(gaps))
    grid = np.arange(logs[0], logs[-1] + width + _STEP, _STEP)
    # The sum's density on the grid, from the empirical CDF at y and y - w.
    below = np.searchsorted(logs, grid, side="right")
    below_shifted = np.searchsorted(logs, grid - width, side="right")
    density = (below - below_shifted) / (logs.size * width)
    positive = density[density > 0]
    entropy = -float(np.sum(positive * np.log2(positive))) * _STEP
    return max(0.0, entropy - float(np.log2(width)))
