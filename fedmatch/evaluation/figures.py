"""The two figures of an evaluation report: the DET curve and the score distributions.

Both are drawn from aggregate quantities only (error rates across thresholds, histograms of
scores), with matplotlib's Agg canvas directly, so no GUI backend or pyplot global state is
involved and the caller's backend is left alone. matplotlib is imported when a figure is
drawn, not when fedmatch is imported: it is needed only for evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedmatch.errors import PreconditionFailed
from fedmatch.evaluation.metrics import FloatArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["draw_det", "draw_scores"]

# Points of the DET curve: enough to look smooth, few enough to draw quickly.
_DET_POINTS = 1000
_TAIL_POINTS = 2000


def _label(t: float) -> str:
    """A threshold for a legend; the smallest float above a score of 0 reads as "0+"."""
    return "0+" if 0 < t < 1e-12 else f"{t:.4g}"


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PreconditionFailed(
            "evaluation figures need matplotlib: pip install matplotlib"
        ) from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _no_data(path: Path, title: str, why: str) -> None:
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    fig.savefig(path, format="png")


def _det_thresholds(genuine: FloatArray, impostor: FloatArray) -> FloatArray:
    """Thresholds spread over the score range, dense in the tails that set low error rates."""
    lo = float(min(genuine[0], impostor[0]))
    hi = float(max(genuine[-1], impostor[-1]))
    parts = [
        np.linspace(lo, hi, _DET_POINTS),
        impostor[-_TAIL_POINTS:],
        genuine[:_TAIL_POINTS],
        np.nextafter(impostor[-_TAIL_POINTS:], np.inf),
    ]
    result: FloatArray = np.unique(np.concatenate(parts))
    return result


def draw_det(
    path: Path,
    genuine: FloatArray,
    impostor: FloatArray,
    threshold: float,
    target_fmr: float,
    target_threshold: float | None,
) -> None:
    """FNMR against FMR on log axes; zero rates are drawn at half the data's resolution."""
    title = "DET curve (verification, all pairs)"
    if genuine.size == 0 or impostor.size == 0:
        _no_data(path, title, "no genuine or no impostor pairs: no curve")
        return
    n_gen, n_imp = genuine.size, impostor.size
    t = _det_thresholds(genuine, impostor)
    fmr = (n_imp - np.searchsorted(impostor, t, side="left")) / n_imp
    fnmr = np.searchsorted(genuine, t, side="left") / n_gen
    # A log axis cannot show 0; the floor line marks "no errors observed" honestly.
    fmr_floor, fnmr_floor = 0.5 / n_imp, 0.5 / n_gen
    fig = _figure(6.5, 5.0)
    ax = fig.add_subplot()
    ax.plot(np.maximum(fmr, fmr_floor), np.maximum(fnmr, fnmr_floor), color="C0", label="DET")
    ax.axvline(fmr_floor, color="0.6", linestyle=":", linewidth=1)
    ax.axhline(fnmr_floor, color="0.6", linestyle=":", linewidth=1, label="0 errors observed")
    ax.axvline(
        target_fmr, color="C2", linestyle="--", linewidth=1, label=f"target FMR {target_fmr:g}"
    )

    def point(at: float) -> tuple[float, float]:
        fm = (n_imp - np.searchsorted(impostor, at, side="left")) / n_imp
        fnm = np.searchsorted(genuine, at, side="left") / n_gen
        return max(float(fm), fmr_floor), max(float(fnm), fnmr_floor)

    x, y = point(threshold)
    ax.plot([x], [y], "o", color="C3", label=f"operational threshold {_label(threshold)}")
    if target_threshold is not None:
        x, y = point(target_threshold)
        ax.plot([x], [y], "s", color="C2", label=f"threshold for target {_label(target_threshold)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(fmr_floor / 2, 1.0)
    ax.set_ylim(fnmr_floor / 2, 1.0)
    ax.set_xlabel(f"false match rate (FMR), {n_imp} impostor pairs")
    ax.set_ylabel(f"false non-match rate (FNMR), {n_gen} genuine pairs")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.savefig(path, format="png")


def draw_scores(
    path: Path,
    genuine: FloatArray,
    impostor: FloatArray,
    threshold: float,
    target_threshold: float | None,
) -> None:
    """Normalised histograms of genuine and impostor scores with the threshold(s)."""
    title = "Comparison scores (cosine similarity)"
    if genuine.size == 0 and impostor.size == 0:
        _no_data(path, title, "no pairs to compare")
        return
    present = [a for a in (genuine, impostor) if a.size]
    lo = min([threshold, *(float(a[0]) for a in present)])
    hi = max([threshold, *(float(a[-1]) for a in present)])
    if hi <= lo:
        lo, hi = lo - 0.05, hi + 0.05
    bins = [float(b) for b in np.linspace(lo, hi, 61)]
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    if impostor.size:
        ax.hist(
            impostor,
            bins=bins,
            density=True,
            alpha=0.55,
            color="C1",
            label=f"impostor pairs ({impostor.size})",
        )
    if genuine.size:
        ax.hist(
            genuine,
            bins=bins,
            density=True,
            alpha=0.55,
            color="C0",
            label=f"genuine pairs ({genuine.size})",
        )
    ax.axvline(
        threshold, color="C3", linewidth=1.5, label=f"operational threshold {_label(threshold)}"
    )
    if target_threshold is not None:
        ax.axvline(
            target_threshold,
            color="C2",
            linestyle="--",
            linewidth=1,
            label=f"threshold for target FMR {_label(target_threshold)}",
        )
    ax.set_xlabel("cosine similarity (match if at or above the threshold)")
    ax.set_ylabel("density (each histogram has area 1)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, format="png")
