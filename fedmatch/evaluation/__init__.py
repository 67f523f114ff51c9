"""Accuracy and fairness evaluation of a face model (ISO/IEC 19795-10 style audit).

:func:`evaluate` counts each picture once (:mod:`~fedmatch.evaluation.integrity`), embeds a
labelled data set, compares every pair of enrolled images, searches every image against a
gallery of the federation's size (:mod:`~fedmatch.evaluation.identification`), and writes a
Markdown report with DET figures of measured points, score histograms and a JSON summary:
failure to enrol, FMR and FNMR at the operational threshold with Wilson 95% intervals, the
threshold for a target FMR, the federation-wide false positive identification rate, FNIR at
fixed FPIRs and rank miss rates, per-group rates with worst-to-best ratios flagged above 2,
and what was measured (software version, model, detector, digest of the input list). Only
aggregates are written.

Imports ``biometrics`` and the shared top-level modules; imported only by the command line
(``fedmatch evaluate``).
"""

from __future__ import annotations

from fedmatch.evaluation.metrics import fpir, threshold_for_fmr, wilson_interval, worst_to_best
from fedmatch.evaluation.run import SCHEMA, evaluate

__all__ = [
    "SCHEMA",
    "evaluate",
    "fpir",
    "threshold_for_fmr",
    "wilson_interval",
    "worst_to_best",
]
