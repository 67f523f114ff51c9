"""The plain (unencrypted) searches the benchmarks compare the encrypted one with, on the
same rows and probes in the same run (issue 20):

- ``float32``: the fastest plain search a user would write, a float32 matrix-vector
  product and the threshold compare (``plain_p50_s`` in the JSON, the denominator of
  ``he_over_plain``);
- ``float64``: the earlier baseline, a float64 product and a Python set of the hits (about
  twice the float32 one);
- ``faiss``: faiss-cpu's flat inner-product index (exhaustive, as the encrypted search is),
  when the optional ``faiss`` extra is installed.

Decisions (which rows match) are the float64 ones: the agreement row compares the encrypted
answers with exact decisions, whatever baseline is fastest.
"""

from __future__ import annotations

import importlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PlainBaselines", "faiss_module"]


def faiss_module() -> Any | None:
    """The ``faiss`` module, or None when faiss-cpu is not installed (an optional extra)."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


@dataclass
class PlainBaselines:
    """The plain searches of one register (``rows``, n x d float32), timed per probe."""

    rows: npt.NDArray[np.float32]
    threshold: float
    float32_s: list[float] = field(default_factory=list)
    float64_s: list[float] = field(default_factory=list)
    faiss_s: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = np.ascontiguousarray(self.rows, dtype=np.float32)
        # The float64 copy is the earlier baseline's own data (made once, not timed).
        self._exact = self.rows.astype(np.float64)
        self._index: Any | None = None
        faiss = faiss_module()
        if faiss is not None:
            self._index = faiss.IndexFlatIP(self.rows.shape[1])
            self._index.add(self.rows)

    @property
    def has_faiss(self) -> bool:
        return self._index is not None

    def search(self, probe: npt.NDArray[np.floating[Any]], timed: bool = True) -> set[int]:
        """Run every baseline once for ``probe``; returns the rows whose exact (float64)
        score is at least the threshold. ``timed`` False: a warm-up, not recorded."""
        p32 = np.ascontiguousarray(probe, dtype=np.float32)
        t0 = time.perf_counter()
        np.flatnonzero(self.rows @ p32 >= self.threshold)
        t1 = time.perf_counter()
        exact = set(np.flatnonzero(self._exact @ p32.astype(np.float64) >= self.threshold).tolist())
        t2 = time.perf_counter()
        if timed:
            self.float32_s.append(t1 - t0)
            self.float64_s.append(t2 - t1)
        if self._index is not None:
            t3 = time.perf_counter()
            # A range search: every row at or above the threshold, as the others find.
            self._index.range_search(p32.reshape(1, -1), self.threshold)
            if timed:
                self.faiss_s.append(time.perf_counter() - t3)
        return exact

    def scores(self, probe: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        """Exact (float64) scores of every row for ``probe`` (untimed)."""
        out: npt.NDArray[np.float64] = self._exact @ np.asarray(probe, dtype=np.float64)
        return out

    def report(self, he_p50: float) -> dict[str, Any]:
        """The JSON fields: each baseline's median, and HE's p50 over the float32 one."""
        plain = statistics.median(self.float32_s)
        out: dict[str, Any] = {
            "plain": "float32 matrix-vector product + threshold compare",
            "plain_p50_s": _seconds(plain),
            "plain_float64_p50_s": _seconds(statistics.median(self.float64_s)),
            "he_over_plain": round(he_p50 / plain, 1) if plain > 0 else None,
        }
        if self.faiss_s:
            out["faiss_p50_s"] = _seconds(statistics.median(self.faiss_s))
        return out


def _seconds(value: float) -> float:
    """Three significant digits: a small register's plain search takes microseconds, which
    a fixed number of decimals would round to zero."""
    return float(f"{value:.3g}")
