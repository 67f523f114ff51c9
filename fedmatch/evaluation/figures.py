"""The figures of an evaluation report: DET curves (all pairs, and per group of each
attribute) and the score distributions.

A DET figure shows measured operating points only, each with its Wilson 95% intervals on
both rates; nothing is interpolated between them. A rate of 0 cannot sit on a log axis and
is not a measurement of 0 either: it is drawn as a bound marker at its upper 95% bound and
labelled "0 of n (<= x at 95%)", never as a line along the axis.

All are drawn from aggregate quantities only (error counts at thresholds, histograms of
scores), with matplotlib's Agg canvas directly, so no GUI backend or pyplot global state is
involved and the caller's backend is left alone. matplotlib is imported when a figure is
drawn, not when fedmatch is imported: it is needed only for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedmatch.errors import PreconditionFailed
from fedmatch.evaluation.metrics import FloatArray, IntArray, wilson_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["draw_det", "draw_group_det", "draw_scores", "operating_points"]

# Measured operating points drawn per curve, at most: the rest are thinned out evenly along
# the FMR axis (every point is still a measured one).
_MAX_POINTS = 60
_MAX_GROUP_POINTS = 30


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


def _counts(
    genuine: FloatArray, impostor: FloatArray, thresholds: FloatArray
) -> tuple[IntArray, IntArray]:
    """False matches and false non-matches at each threshold (scores sorted ascending)."""
    fm = impostor.size - np.searchsorted(impostor, thresholds, side="left")
    fnm = np.searchsorted(genuine, thresholds, side="left")
    return fm.astype(np.int64), fnm.astype(np.int64)


def operating_points(genuine: FloatArray, impostor: FloatArray) -> list[tuple[int, int]]:
    """Every distinct (false matches, false non-matches) the threshold can give, ordered by
    falling false matches: each is measured, none interpolated."""
    scores = np.unique(np.concatenate([genuine, impostor]))
    thresholds = np.concatenate([scores, np.nextafter(scores[-1:], np.inf)])
    fm, fnm = _counts(genuine, impostor, thresholds)
    distinct = {(int(a), int(b)) for a, b in zip(fm, fnm, strict=True)}
    return sorted(distinct, key=lambda p: (-p[0], p[1]))


def _thin(points: list[tuple[int, int]], n_imp: int, most: int) -> list[tuple[int, int]]:
    """At most ``most`` points, spread evenly over log FMR (the extremes kept)."""
    if len(points) <= most:
        return points
    logs = np.log10(np.array([p[0] for p in points]) / n_imp)
    targets = np.linspace(logs.min(), logs.max(), most)
    keep = {int(np.argmin(np.abs(logs - t))) for t in targets}
    return [points[i] for i in sorted(keep)]


def _upper(trials: int) -> float:
    return wilson_interval(0, trials)[1]


def _plot_det(
    ax: Axes,
    genuine: FloatArray,
    impostor: FloatArray,
    colour: str,
    name: str,
    most: int,
) -> list[float]:
    """Draws one curve's measured points with 95% intervals; zero rates as bound markers.

    Returns every x and y it drew (for the axis limits).
    """
    n_gen, n_imp = int(genuine.size), int(impostor.size)
    points = operating_points(genuine, impostor)
    both = _thin([p for p in points if p[0] and p[1]], n_imp, most)
    drawn: list[float] = []
    if both:
        x = np.array([p[0] / n_imp for p in both])
        y = np.array([p[1] / n_gen for p in both])
        xci = np.array([wilson_interval(p[0], n_imp) for p in both])
        yci = np.array([wilson_interval(p[1], n_gen) for p in both])
        ax.errorbar(
            x,
            y,
            xerr=[x - xci[:, 0], xci[:, 1] - x],
            yerr=[y - yci[:, 0], yci[:, 1] - y],
            fmt="o",
            markersize=3,
            color=colour,
            ecolor=colour,
            elinewidth=0.6,
            alpha=0.8,
            label=f"{name}: measured, 95% intervals ({n_imp} impostor, {n_gen} genuine pairs)",
        )
        drawn += [float(v) for v in (*xci[:, 0], *xci[:, 1], *yci[:, 0], *yci[:, 1])]
    # At FMR 0 of n the best FNMR is reached just above the highest impostor score; it is
    # drawn at FMR's upper 95% bound with a left-pointing marker: "at most this".
    zero_fm = [p for p in points if p[0] == 0]
    zero_fnm = [p for p in points if p[1] == 0]
    x_up, y_up = _upper(n_imp), _upper(n_gen)
    if zero_fm:
        fnm = min(p[1] for p in zero_fm)
        at_y = fnm / n_gen if fnm else y_up
        marker = "<" if fnm else "$\\swarrow$"
        text = f"FMR 0 of {n_imp} (<= {x_up:.2g} at 95%)"
        if not fnm:
            text += f", FNMR 0 of {n_gen} (<= {y_up:.2g})"
        ax.plot([x_up], [at_y], marker=marker, markersize=9, color=colour, linestyle="none")
        ax.annotate(text, (x_up, at_y), textcoords="offset points", xytext=(6, 4), fontsize=7,
                    color=colour)  # fmt: skip
        drawn += [x_up, at_y]
    fewest: int = min((p[0] for p in zero_fnm), default=0)
    if fewest:
        at_x = fewest / n_imp
        ax.plot([at_x], [y_up], marker="v", markersize=9, color=colour, linestyle="none")
        ax.annotate(f"FNMR 0 of {n_gen} (<= {y_up:.2g} at 95%)", (at_x, y_up),
                    textcoords="offset points", xytext=(6, -10), fontsize=7,
                    color=colour)  # fmt: skip
        drawn += [at_x, y_up]
    return drawn


def _mark(
    ax: Axes,
    genuine: FloatArray,
    impostor: FloatArray,
    at: float,
    marker: str,
    colour: str,
    label: str,
) -> list[float]:
    """The operating point of one threshold, a zero rate drawn at its upper bound."""
    fm, fnm = _counts(genuine, impostor, np.array([at]))
    n_gen, n_imp = int(genuine.size), int(impostor.size)
    x = fm[0] / n_imp if fm[0] else _upper(n_imp)
    y = fnm[0] / n_gen if fnm[0] else _upper(n_gen)
    bound = [w for w, zero in (("FMR", not fm[0]), ("FNMR", not fnm[0])) if zero]
    if bound:
        label += f" ({' and '.join(bound)} 0: drawn at the upper 95% bound)"
    ax.plot([x], [y], marker, color=colour, markersize=8, fillstyle="none", label=label)
    return [x, y]


def _finish(ax: Axes, drawn: list[float], title: str, xlabel: str, ylabel: str) -> None:
    positive = [v for v in drawn if v > 0]
    low = min(positive) / 2 if positive else 1e-3
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1.0)
    ax.set_ylim(low, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize="x-small")


def draw_det(
    path: Path,
    genuine: FloatArray,
    impostor: FloatArray,
    threshold: float,
    target_fmr: float,
    target_threshold: float | None,
) -> None:
    """FNMR against FMR on log axes: measured operating points only, each with its Wilson
    95% intervals; a rate of 0 is drawn as a bound marker at its upper 95% bound, never as
    a line along the axis."""
    title = "DET (verification, all pairs): measured points"
    if genuine.size == 0 or impostor.size == 0:
        _no_data(path, title, "no genuine or no impostor pairs: no curve")
        return
    fig = _figure(7.0, 5.5)
    ax = fig.add_subplot()
    drawn = _plot_det(ax, genuine, impostor, "C0", "all pairs", _MAX_POINTS)
    ax.axvline(
        target_fmr, color="C2", linestyle="--", linewidth=1, label=f"target FMR {target_fmr:g}"
    )
    drawn += _mark(ax, genuine, impostor, threshold, "o", "C3",
                   f"operational threshold {_label(threshold)}")  # fmt: skip
    if target_threshold is not None:
        drawn += _mark(ax, genuine, impostor, target_threshold, "s", "C2",
                       f"threshold for target {_label(target_threshold)}")  # fmt: skip
    _finish(
        ax,
        drawn,
        title,
        f"false match rate (FMR), {impostor.size} impostor pairs",
        f"false non-match rate (FNMR), {genuine.size} genuine pairs",
    )
    fig.savefig(path, format="png")


def draw_group_det(
    path: Path,
    attribute: str,
    groups: Sequence[tuple[str, FloatArray, FloatArray]],
    threshold: float,
) -> None:
    """One DET per group of ``attribute`` (``(value, genuine, impostor)`` sorted scores), in
    one figure; groups without genuine or impostor pairs are listed, not drawn."""
    title = f"DET per group of {attribute!r}: measured points"
    fig = _figure(7.0, 5.5)
    ax = fig.add_subplot()
    drawn: list[float] = []
    missing: list[str] = []
    for k, (value, genuine, impostor) in enumerate(groups):
        if genuine.size == 0 or impostor.size == 0:
            missing.append(f"{value} ({genuine.size} genuine, {impostor.size} impostor)")
            continue
        colour = f"C{k % 10}"
        drawn += _plot_det(ax, genuine, impostor, colour, str(value), _MAX_GROUP_POINTS)
        drawn += _mark(ax, genuine, impostor, threshold, "o", colour,
                       f"{value} at threshold {_label(threshold)}")  # fmt: skip
    if not drawn:
        _no_data(path, title, "no group has both genuine and impostor pairs")
        return
    if missing:
        ax.text(0.02, 0.02, "no curve: " + "; ".join(missing), transform=ax.transAxes,
                fontsize=7, va="bottom")  # fmt: skip
    _finish(ax, drawn, title, "false match rate (FMR)", "false non-match rate (FNMR)")
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
