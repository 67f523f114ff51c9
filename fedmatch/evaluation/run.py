"""``evaluate``: one accuracy and fairness evaluation of a face model on a labelled data set.

The evaluation follows ISO/IEC 19795-10's audit of demographic differentials: failure to
enrol, FMR and FNMR at the operational threshold with Wilson 95% intervals and sample sizes,
per (attribute, value) group, and the worst-to-best ratio per attribute (flagged above 2).
It also projects the per-comparison FMR to the false positive identification rate of a
search across the whole federation, because the threshold must be set for the sum of all
node galleries, not for one node.

Only aggregates leave this module: counts, rates, intervals, curves and figures. Templates
and per-image scores are held in memory for the run and never written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch.biometrics.errors import FaceQualityError
from fedmatch.errors import InvalidInput
from fedmatch.evaluation.dataset import GroupListing, ImageListing, read_groups, read_identities
from fedmatch.evaluation.figures import draw_det, draw_scores
from fedmatch.evaluation.metrics import (
    Comparison,
    compare_all,
    curve,
    false_match_count,
    false_non_match_count,
    fmr_for_fpir,
    fpir,
    highest_rejected_score,
    rate,
    threshold_for_fmr,
    wilson_interval,
    worst_to_best,
)
from fedmatch.evaluation.report import render_report

__all__ = ["SCHEMA", "evaluate"]

SCHEMA = "fedmatch.evaluation/1"

REPORT_FILE = "report.md"
DET_FILE = "det.png"
SCORES_FILE = "scores.png"
SUMMARY_FILE = "summary.json"

# NIST FRVT 1:N reports miss rates at this false positive identification rate (DOMAIN.md §7).
DEFAULT_TARGET_FPIR = 0.003
# Step of the threshold grid of the curve table (cosine similarity units).
_CURVE_STEP = 0.05

Embedder = Callable[[Path], npt.NDArray[np.float32]]


def _check_settings(
    threshold: float,
    target_fmr: float,
    federation_records: int,
    min_genuine_pairs: int,
    min_impostor_pairs: int,
    target_fpir: float,
) -> None:
    if not math.isfinite(threshold):
        raise InvalidInput(f"threshold must be a finite number, got {threshold}")
    if not 0.0 < target_fmr <= 1.0:
        raise InvalidInput(f"target_fmr must be in (0, 1], got {target_fmr}")
    if federation_records < 1:
        raise InvalidInput(f"federation_records must be at least 1, got {federation_records}")
    if min_genuine_pairs < 1 or min_impostor_pairs < 1:
        raise InvalidInput("min_genuine_pairs and min_impostor_pairs must be at least 1")
    if not 0.0 < target_fpir < 1.0:
        raise InvalidInput(f"target_fpir must be in (0, 1), got {target_fpir}")


def _enrol(
    images: Path, listing: ImageListing, embed: Embedder
) -> tuple[list[int], npt.NDArray[np.float64], Counter[str]]:
    """Embeds every listed image; returns enrolled indices, their templates, failure codes."""
    enrolled: list[int] = []
    templates: list[npt.NDArray[np.float64]] = []
    failures: Counter[str] = Counter()
    dimension: int | None = None
    for index, name in enumerate(listing.files):
        try:
            raw = embed(images / name)
        except FaceQualityError as exc:
            failures[str(getattr(exc, "code", "quality"))] += 1
            continue
        template = np.asarray(raw, dtype=np.float64)
        # Messages name the file and the shape, never template values.
        if template.ndim != 1 or template.size == 0:
            raise InvalidInput(
                f"embed({name!r}) returned an array of shape {template.shape}; "
                "expected one non-empty vector"
            )
        if dimension is None:
            dimension = template.size
        elif template.size != dimension:
            raise InvalidInput(
                f"embed({name!r}) returned {template.size} dimensions; earlier images had "
                f"{dimension}"
            )
        norm = float(np.linalg.norm(template))
        if not math.isfinite(norm) or norm == 0.0:
            raise InvalidInput(f"embed({name!r}) returned a zero or non-finite vector")
        enrolled.append(index)
        templates.append(template / norm)
    matrix = np.stack(templates) if templates else np.zeros((0, 1))
    return enrolled, matrix, failures


def _codes(values: Sequence[str]) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Sorted distinct values (empty string excluded) and each item's code (-1 if empty)."""
    distinct = sorted({v for v in values if v})
    index = {v: i for i, v in enumerate(distinct)}
    return distinct, np.array([index.get(v, -1) for v in values], dtype=np.int64)


def _curve_thresholds(comparison: Comparison, threshold: float) -> list[float]:
    scores = [a for a in (comparison.genuine, comparison.impostor) if a.size]
    if not scores:
        return [threshold]
    lo = min(float(a[0]) for a in scores)
    hi = max(float(a[-1]) for a in scores)
    first = math.floor(max(lo, -1.0) / _CURVE_STEP)
    last = math.ceil(min(hi, 1.0) / _CURVE_STEP)
    grid = {round(k * _CURVE_STEP, 4) for k in range(first, last + 1)}
    grid.add(float(threshold))
    return sorted(grid)


def _groups_section(
    listing: ImageListing,
    groups: GroupListing,
    enrolled: list[int],
    comparison: Comparison,
    attribute_values: list[list[str]],
    min_genuine_pairs: int,
    min_impostor_pairs: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    enrolled_set = set(enrolled)
    attributes: list[dict[str, Any]] = []
    flags: list[str] = []
    for k, attribute in enumerate(groups.attributes):
        values = groups.values[attribute]
        counts = comparison.groups[k]
        entries: list[dict[str, Any]] = []
        for code, value in enumerate(attribute_values[k]):
            members = [i for i, f in enumerate(listing.files) if values.get(f) == value]
            n_enrolled = sum(1 for i in members if i in enrolled_set)
            gen_n, gen_err = int(counts.genuine_pairs[code]), int(counts.false_non_matches[code])
            imp_n, imp_err = int(counts.impostor_pairs[code]), int(counts.false_matches[code])
            short = []
            if gen_n < min_genuine_pairs:
                short.append(f"{gen_n} genuine pairs < {min_genuine_pairs}")
            if imp_n < min_impostor_pairs:
                short.append(f"{imp_n} impostor pairs < {min_impostor_pairs}")
            entries.append(
                {
                    "attribute": attribute,
                    "value": value,
                    "images": len(members),
                    "enrolled": n_enrolled,
                    "failure_to_enrol": rate(len(members) - n_enrolled, len(members)),
                    "fnmr": rate(gen_err, gen_n),
                    "fmr": rate(imp_err, imp_n),
                    "fnmr_sufficient": gen_n >= min_genuine_pairs,
                    "fmr_sufficient": imp_n >= min_impostor_pairs,
                    "status": "insufficient" if short else "sufficient",
                    "status_note": "; ".join(short) if short else None,
                }
            )
        fnmr_ratio = worst_to_best(
            [(e["value"], e["fnmr"]["errors"], e["fnmr"]["trials"]) for e in entries],
            min_genuine_pairs,
        )
        fmr_ratio = worst_to_best(
            [(e["value"], e["fmr"]["errors"], e["fmr"]["trials"]) for e in entries],
            min_impostor_pairs,
        )
        for metric, result in (("FNMR", fnmr_ratio), ("FMR", fmr_ratio)):
            if result["flagged"]:
                if result["ratio"] is not None:
                    how, why = f"ratio {result['ratio']:.3g}", ""
                else:
                    how = f"conservative ratio {result['conservative_ratio']:.3g}"
                    why = "best group has 0 errors; "
                flags.append(
                    f"{attribute}: {metric} worst-to-best {how} > 2 ({why}worst "
                    f"{result['worst']['group']!r}, best {result['best']['group']!r})"
                )
        attributes.append(
            {
                "attribute": attribute,
                "images_without_value": sum(1 for f in listing.files if f not in values),
                "groups": entries,
                "fnmr_ratio": fnmr_ratio,
                "fmr_ratio": fmr_ratio,
            }
        )
    return attributes, flags


def _federation_section(
    comparison: Comparison,
    threshold: float,
    federation_records: int,
    target_fpir: float,
) -> dict[str, Any]:
    n_imp = int(comparison.impostor.size)
    needed = fmr_for_fpir(target_fpir, federation_records)
    pairs_needed = math.ceil(3.0 / needed)
    section: dict[str, Any] = {
        "records": federation_records,
        "threshold": threshold,
        "fmr_used": None,
        "fmr_basis": None,
        "fpir": None,
        "fpir_is_upper_bound": False,
        "fpir_upper_95": None,
        "target_fpir": target_fpir,
        "fmr_needed_for_target_fpir": needed,
        "impostor_pairs_needed_to_show_it": pairs_needed,
        # Photos of distinct people whose n (n - 1) / 2 pairs reach that number.
        "photos_needed_to_show_it": math.ceil((1 + math.sqrt(1 + 8 * pairs_needed)) / 2),
        "note": None,
    }
    if n_imp == 0:
        section["note"] = "no impostor pairs: FPIR cannot be estimated"
        return section
    errors = false_match_count(comparison.impostor, threshold)
    if errors == 0:
        bound = 3.0 / n_imp
        section.update(
            fmr_used=bound,
            fmr_basis="rule_of_three_upper_bound",
            fpir=fpir(bound, federation_records),
            fpir_is_upper_bound=True,
            note=(
                f"no false match in {n_imp} impostor pairs; the rule of three bounds FMR "
                f"by 3/{n_imp} at 95% confidence, so the FPIR shown is an UPPER BOUND, "
                "not an estimate"
            ),
        )
        return section
    observed = errors / n_imp
    upper = wilson_interval(errors, n_imp)[1]
    section.update(
        fmr_used=observed,
        fmr_basis="observed",
        fpir=fpir(observed, federation_records),
        fpir_upper_95=fpir(upper, federation_records),
        note=(
            f"{errors} false matches in {n_imp} impostor pairs; the upper figure uses the "
            "Wilson 95% upper bound of FMR"
        ),
    )
    return section


def _target_section(comparison: Comparison, target_fmr: float) -> dict[str, Any]:
    n_imp, n_gen = int(comparison.impostor.size), int(comparison.genuine.size)
    at = threshold_for_fmr(comparison.impostor, target_fmr)
    section: dict[str, Any] = {
        "target_fmr": target_fmr,
        "threshold": at,
        "just_above": highest_rejected_score(comparison.impostor, target_fmr) if n_imp else None,
        "fmr": None,
        "fnmr": None,
        "demonstrated": False,
        "note": None,
    }
    if at is None:
        section["note"] = "no impostor pairs: no threshold can be derived"
        return section
    fmr = rate(false_match_count(comparison.impostor, at), n_imp)
    section["fmr"] = fmr
    section["fnmr"] = rate(false_non_match_count(comparison.genuine, at), n_gen)
    # The target is shown only if even the interval's upper end is within it.
    section["demonstrated"] = bool(fmr["ci95"][1] <= target_fmr)
    if not section["demonstrated"]:
        section["note"] = (
            f"with {n_imp} impostor pairs the upper 95% bound of FMR at this threshold is "
            f"{fmr['ci95'][1]:.3g}, above the target {target_fmr:g}: the data set is too small "
            "to show that the target is met"
        )
    return section


def _limitations(
    summary: dict[str, Any], min_genuine_pairs: int, min_impostor_pairs: int
) -> list[str]:
    data = summary["dataset"]
    n_gen, n_imp = data["genuine_pairs"], data["impostor_pairs"]
    notes = []
    if n_imp:
        notes.append(
            f"Small sample: {n_imp} impostor pairs cannot show an FMR below about "
            f"{3 / n_imp:.2g} (rule of three); the federation needs about "
            f"{summary['federation']['fmr_needed_for_target_fpir']:.2g} per comparison."
        )
    if n_gen:
        notes.append(
            f"Small sample: {n_gen} genuine pairs from {data['identities_with_genuine_pairs']} "
            "people; FNMR intervals are wide when either number is small."
        )
    notes.append(
        "Pairs are not independent: each image and each person appears in many pairs, so the "
        "Wilson intervals (which assume independent trials) are narrower than the true "
        "uncertainty."
    )
    insufficient = sum(
        1 for a in summary["groups"] for g in a["groups"] if g["status"] == "insufficient"
    )
    if insufficient:
        notes.append(
            f"{insufficient} group(s) have fewer than {min_genuine_pairs} genuine or "
            f"{min_impostor_pairs} impostor pairs and are marked insufficient; they are left "
            "out of the worst-to-best ratios, so a disparity there would not be seen."
        )
    notes.append(
        "The FPIR projection assumes that a probe's comparisons with different records are "
        "independent and that this data set's impostor scores represent the federation's "
        "registers; neither is exactly true."
    )
    notes.append(
        "These are one-to-one verification rates. Rank-based identification measures "
        "(FNIR, candidate lists) and human-review overturn rates are not measured here."
    )
    notes.append(
        "Group labels come from the groups file; results hold only for the population, "
        "capture conditions and label definitions of this data set."
    )
    return notes


def evaluate(
    images: Path,
    identities: Path,
    out: Path,
    embed: Callable[[Path], npt.NDArray[np.float32]],
    threshold: float,
    model_id: str,
    groups: Path | None = None,
    target_fmr: float = 0.01,
    federation_records: int = 7_000_000,
    *,
    min_genuine_pairs: int = 10,
    min_impostor_pairs: int = 30,
    target_fpir: float = DEFAULT_TARGET_FPIR,
) -> dict[str, Any]:
    """Evaluates ``embed`` on a labelled data set and writes the report files into ``out``.

    ``embed`` is called once per image listed in ``identities`` (``file,identity``, paths
    relative to ``images``); a :class:`~fedmatch.biometrics.errors.FaceQualityError` counts
    as a failure to enrol under its ``code``, any other exception propagates. Every pair of
    enrolled images is compared by cosine similarity: same identity is a genuine pair,
    different identity an impostor pair. ``groups`` (``file`` plus one column per
    attribute) adds per-group rates and worst-to-best ratios.

    Writes ``report.md``, ``det.png``, ``scores.png`` and ``summary.json`` (which equals the
    returned dict). Malformed inputs raise :class:`~fedmatch.errors.InvalidInput`.
    """
    _check_settings(
        threshold,
        target_fmr,
        federation_records,
        min_genuine_pairs,
        min_impostor_pairs,
        target_fpir,
    )
    if not model_id:
        raise InvalidInput("model_id must be non-empty")
    if not images.is_dir():
        raise InvalidInput(f"{images}: not a directory of images")
    listing = read_identities(identities, images)
    group_listing = read_groups(groups, listing) if groups is not None else None

    enrolled, templates, failures = _enrol(images, listing, embed)
    _, identity_codes = _codes([listing.identities[i] for i in enrolled])
    attribute_values: list[list[str]] = []
    attribute_codes: list[npt.NDArray[np.int64]] = []
    for attribute in group_listing.attributes if group_listing else ():
        assert group_listing is not None
        values = group_listing.values[attribute]
        distinct = sorted(set(values.values()))
        index = {v: i for i, v in enumerate(distinct)}
        attribute_values.append(distinct)
        attribute_codes.append(
            np.array(
                [index.get(values.get(listing.files[i], ""), -1) for i in enrolled], dtype=np.int64
            )
        )
    comparison = compare_all(
        templates,
        identity_codes,
        threshold,
        attribute_codes,
        [len(v) for v in attribute_values],
    )

    n_gen, n_imp = int(comparison.genuine.size), int(comparison.impostor.size)
    per_identity = Counter(listing.identities[i] for i in enrolled)
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "model_id": model_id,
        "settings": {
            "threshold": float(threshold),
            "decision_rule": "match when cosine similarity >= threshold",
            "target_fmr": float(target_fmr),
            "federation_records": int(federation_records),
            "target_fpir": float(target_fpir),
            "min_genuine_pairs": int(min_genuine_pairs),
            "min_impostor_pairs": int(min_impostor_pairs),
            "interval": "Wilson score interval, 95%",
        },
        "dataset": {
            "images": str(images),
            "identities_csv": str(identities),
            "groups_csv": str(groups) if groups is not None else None,
            "images_listed": len(listing.files),
            "identities_listed": len(set(listing.identities)),
            "images_enrolled": len(enrolled),
            "identities_enrolled": len(per_identity),
            "identities_with_genuine_pairs": sum(1 for c in per_identity.values() if c >= 2),
            "genuine_pairs": n_gen,
            "impostor_pairs": n_imp,
            "group_rows_not_in_identities": group_listing.unlisted_files if group_listing else 0,
        },
        "failure_to_enrol": {
            **rate(len(listing.files) - len(enrolled), len(listing.files)),
            "by_code": dict(sorted(failures.items())),
        },
        "at_threshold": {
            "threshold": float(threshold),
            "fmr": rate(false_match_count(comparison.impostor, threshold), n_imp),
            "fnmr": rate(false_non_match_count(comparison.genuine, threshold), n_gen),
        },
        "target": _target_section(comparison, target_fmr),
        "federation": _federation_section(comparison, threshold, federation_records, target_fpir),
        "curve": curve(
            comparison.genuine, comparison.impostor, _curve_thresholds(comparison, threshold)
        ),
        "groups": [],
        "flags": [],
        "limitations": [],
        "files": {
            "report": REPORT_FILE,
            "det": DET_FILE,
            "scores": SCORES_FILE,
            "summary": SUMMARY_FILE,
        },
    }
    if group_listing is not None:
        summary["groups"], summary["flags"] = _groups_section(
            listing,
            group_listing,
            enrolled,
            comparison,
            attribute_values,
            min_genuine_pairs,
            min_impostor_pairs,
        )
    summary["limitations"] = _limitations(summary, min_genuine_pairs, min_impostor_pairs)

    out.mkdir(parents=True, exist_ok=True)
    target_threshold = summary["target"]["threshold"]
    draw_det(
        out / DET_FILE,
        comparison.genuine,
        comparison.impostor,
        threshold,
        target_fmr,
        target_threshold,
    )
    draw_scores(
        out / SCORES_FILE, comparison.genuine, comparison.impostor, threshold, target_threshold
    )
    # allow_nan=False: a NaN would make the file invalid JSON; every rate is a float or None.
    text = json.dumps(summary, indent=2, allow_nan=False, ensure_ascii=False)
    (out / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
    (out / REPORT_FILE).write_text(render_report(summary), encoding="utf-8")
    return summary
