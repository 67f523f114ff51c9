"""``evaluate``: one accuracy and fairness evaluation of a face model on a labelled data set.

The evaluation follows ISO/IEC 19795-10's audit of demographic differentials: failure to
enrol, FMR and FNMR at the operational threshold with Wilson 95% intervals and sample sizes,
per (attribute, value) group, and the worst-to-best ratio per attribute (flagged above 2).
It also projects the per-comparison FMR to the false positive identification rate of a
search across the whole federation, because the threshold must be set for the sum of all
node galleries, not for one node, and measures the 1:N rates directly by searching a
gallery of the federation's size (:mod:`fedmatch.evaluation.identification`).

Copies and near-copies of a picture are counted once (:mod:`fedmatch.evaluation.integrity`),
and the summary names what was measured: the software version, the model and detector, and
a digest of the input list.

Only aggregates leave this module: counts, rates, intervals, curves and figures. Templates
and per-image scores are held in memory for the run and never written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmatch import __version__
from fedmatch.biometrics.errors import FaceQualityError
from fedmatch.errors import InvalidInput
from fedmatch.evaluation.dataset import GroupListing, ImageListing, read_groups, read_identities
from fedmatch.evaluation.figures import draw_det, draw_group_det, draw_scores
from fedmatch.evaluation.identification import (
    DEFAULT_CANDIDATES,
    DEFAULT_FPIR_TARGETS,
    identification_section,
    search_all,
)
from fedmatch.evaluation.integrity import (
    NEAR_IDENTICAL,
    Screening,
    file_facts,
    input_digest,
    screen_files,
    screen_templates,
)
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

SCHEMA = "fedmatch.evaluation/2"

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
    gallery_size: int,
    candidates: int,
    near_identical: float,
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
    if gallery_size < 1:
        raise InvalidInput(f"gallery_size must be at least 1, got {gallery_size}")
    if candidates < 1:
        raise InvalidInput(f"candidates must be at least 1, got {candidates}")
    if not 0.0 < near_identical < 1.0:
        raise InvalidInput(f"near_identical must be in (0, 1), got {near_identical}")


def _enrol(
    images: Path, listing: ImageListing, embed: Embedder, indices: Sequence[int]
) -> tuple[list[int], npt.NDArray[np.float64], Counter[str]]:
    """Embeds the listed images at ``indices``; returns enrolled indices, their templates,
    failure codes."""
    enrolled: list[int] = []
    templates: list[npt.NDArray[np.float64]] = []
    failures: Counter[str] = Counter()
    dimension: int | None = None
    for index in indices:
        name = listing.files[index]
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


def _refuse_copies(screening: Screening, listing: ImageListing) -> None:
    """Raises InvalidInput naming the copies found, for ``refuse_duplicates``."""
    if not screening.dropped:
        return
    pairs = sorted(screening.dropped.items())
    named = "; ".join(
        f"{listing.files[i]!r} is a copy of {listing.files[j]!r} ({reason.replace('_', ' ')})"
        for i, (reason, j) in pairs[:5]
    )
    more = f" and {len(pairs) - 5} more" if len(pairs) > 5 else ""
    raise InvalidInput(
        f"{len(pairs)} listed image(s) copy another: {named}{more} (remove them, or run "
        "without refusing duplicates to count each picture once)"
    )


def _pairs(per_identity: Counter[str]) -> dict[str, int]:
    total = sum(per_identity.values())
    genuine = sum(c * (c - 1) // 2 for c in per_identity.values())
    return {"genuine": genuine, "impostor": total * (total - 1) // 2 - genuine}


def _deduplication_section(
    listing: ImageListing,
    screening: Screening,
    enrolled: Sequence[int],
    near_identical: float,
) -> dict[str, Any]:
    final = set(enrolled)
    # The pairs the copies would have added: each copy counts as enrolled when the
    # picture it copies was.
    with_copies = Counter(
        listing.identities[i] for i in range(len(listing.files)) if screening.original(i) in final
    )
    dropped = len(screening.dropped)
    return {
        "rules": {
            "identical_file": "SHA-256 of the file bytes",
            "identical_pixels": "SHA-256 of the decoded pixels (EXIF orientation applied)",
            "near_identical_pixels": (
                f"correlation of 32 x 32 greyscale thumbnails above {near_identical:g}"
            ),
            "near_identical_template": (
                f"cosine similarity of two templates of one identity above {near_identical:g}"
            ),
        },
        "kept": "the first image in listing order; the same picture under two identities "
        "is refused as a labelling error",
        "images_listed": len(listing.files),
        "images_dropped": dropped,
        "dropped_by_reason": screening.by_reason(),
        "images_kept": len(listing.files) - dropped,
        "pairs_with_copies": _pairs(with_copies),
        "pairs_counted": _pairs(Counter(listing.identities[i] for i in enrolled)),
    }


def _fairness(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether "no worst-to-best ratio above 2" may be said, and if not, why not."""
    computed: list[str] = []
    not_computed: list[dict[str, str]] = []
    flagged = 0
    for a in attributes:
        for metric in ("fnmr", "fmr"):
            result = a[f"{metric}_ratio"]
            name = f"{a['attribute']} {metric.upper()}"
            flagged += bool(result["flagged"])
            if result["complete"]:
                computed.append(name)
            else:
                not_computed.append({"ratio": name, "reason": str(result["note"])})
    total = len(computed) + len(not_computed)
    if not attributes:
        statement = "No groups were given: no worst-to-best ratio was computed."
    elif flagged:
        statement = f"{flagged} of {total} worst-to-best ratios are flagged above 2."
    elif not_computed:
        statement = (
            f"Only {len(computed)} of {total} worst-to-best ratios could be computed over "
            "every group; none of those is above 2, but nothing is said of the others."
        )
    else:
        statement = f"No worst-to-best ratio above 2 (all {total} computed over every group)."
    return {
        "ratios": total,
        "computed": computed,
        "not_computed": not_computed,
        "flagged": flagged,
        "no_ratio_above_2": bool(attributes) and not flagged and not not_computed,
        "statement": statement,
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "attribute"


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
    counted: list[int],
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
            members = [i for i in counted if values.get(listing.files[i]) == value]
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
                "images_without_value": sum(1 for i in counted if listing.files[i] not in values),
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
    ident = summary["identification"]
    notes.append(
        f"The 1:N rates search a gallery of {ident['gallery']['size']:,} entries of which "
        f"{ident['gallery']['distractors']:,} are synthetic distractors; real faces of "
        "other people score higher than random vectors, so FPIR is understated. "
        f"{ident['non_mated_searches']} non-mated searches resolve FPIR only down to about "
        f"{3 / max(ident['non_mated_searches'], 1):.2g}. Human-review overturn rates are "
        "not measured here."
    )
    dedup = summary["deduplication"]
    if dedup["images_dropped"]:
        notes.append(
            f"{dedup['images_dropped']} listed image(s) were copies of others and were "
            "counted once; failure to enrol is over the images kept."
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
    detector_id: str | None = None,
    gallery_size: int | None = None,
    candidates: int = DEFAULT_CANDIDATES,
    distractor_seed: int = 0,
    near_identical: float = NEAR_IDENTICAL,
    refuse_duplicates: bool = False,
) -> dict[str, Any]:
    """Evaluates ``embed`` on a labelled data set and writes the report files into ``out``.

    ``embed`` is called once per image listed in ``identities`` (``file,identity``, paths
    relative to ``images``); a :class:`~fedmatch.biometrics.errors.FaceQualityError` counts
    as a failure to enrol under its ``code``, any other exception propagates. Every pair of
    enrolled images is compared by cosine similarity: same identity is a genuine pair,
    different identity an impostor pair. ``groups`` (``file`` plus one column per
    attribute) adds per-group rates, worst-to-best ratios and per-group DET figures.

    Copies of a picture are counted once (``refuse_duplicates``: refused instead) by the
    rules of :mod:`fedmatch.evaluation.integrity` with the limit ``near_identical``; a
    picture under two identities is refused. The 1:N rates search a gallery of
    ``gallery_size`` entries (default: ``federation_records``): one template per identity
    plus synthetic distractors drawn with ``distractor_seed``, a mate found when it is
    among the first ``candidates``.

    Writes ``report.md``, ``det.png`` (and ``det-<k>-<attribute>.png`` per attribute),
    ``scores.png`` and ``summary.json`` (which equals the returned dict). Malformed inputs
    raise :class:`~fedmatch.errors.InvalidInput`.
    """
    gallery = federation_records if gallery_size is None else gallery_size
    _check_settings(
        threshold,
        target_fmr,
        federation_records,
        min_genuine_pairs,
        min_impostor_pairs,
        target_fpir,
        gallery,
        candidates,
        near_identical,
    )
    if not model_id:
        raise InvalidInput("model_id must be non-empty")
    if not images.is_dir():
        raise InvalidInput(f"{images}: not a directory of images")
    listing = read_identities(identities, images)
    group_listing = read_groups(groups, listing) if groups is not None else None

    facts = file_facts([images / name for name in listing.files])
    digest = input_digest(listing.files, listing.identities, facts)
    screening = screen_files(listing.files, listing.identities, facts, near_identical)
    if refuse_duplicates:
        _refuse_copies(screening, listing)
    considered = list(screening.kept)
    enrolled, templates, failures = _enrol(images, listing, embed, considered)
    keep = screen_templates(
        screening, enrolled, templates, listing.files, listing.identities, near_identical
    )
    if refuse_duplicates:
        _refuse_copies(screening, listing)
    enrolled = [enrolled[k] for k in keep]
    templates = templates[keep] if enrolled else np.zeros((0, 1))
    counted = [i for i in considered if i not in screening.dropped]
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
    fpir_targets = sorted({*DEFAULT_FPIR_TARGETS, float(target_fpir)})
    if enrolled:
        searches = search_all(templates, identity_codes, gallery, distractor_seed)
        identification = identification_section(
            searches,
            threshold,
            candidates,
            fpir_targets,
            distractor_seed,
            comparison.impostor,
            int(templates.shape[1]),
        )
    else:
        raise InvalidInput("no listed image could be enrolled: nothing to evaluate")
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "model_id": model_id,
        "provenance": {
            "software": "fedmatch",
            "software_version": __version__,
            "model_id": model_id,
            "detector_id": detector_id,
            "input_digest": digest,
            "input_digest_covers": (
                "SHA-256 of the sorted lines 'file TAB sha256(file bytes) TAB identity', "
                f"one per listed image ({len(listing.files)})"
            ),
            "groups_csv_sha256": (
                hashlib.sha256(groups.read_bytes()).hexdigest() if groups is not None else None
            ),
        },
        "settings": {
            "threshold": float(threshold),
            "decision_rule": "match when cosine similarity >= threshold",
            "target_fmr": float(target_fmr),
            "federation_records": int(federation_records),
            "target_fpir": float(target_fpir),
            "min_genuine_pairs": int(min_genuine_pairs),
            "min_impostor_pairs": int(min_impostor_pairs),
            "interval": "Wilson score interval, 95%",
            "near_identical": float(near_identical),
            "refuse_duplicates": bool(refuse_duplicates),
            "gallery_size": int(gallery),
            "candidates": int(candidates),
            "distractor_seed": int(distractor_seed),
            "fpir_targets": fpir_targets,
        },
        "dataset": {
            "images": str(images),
            "identities_csv": str(identities),
            "groups_csv": str(groups) if groups is not None else None,
            "images_listed": len(listing.files),
            "images_after_deduplication": len(listing.files) - len(screening.dropped),
            "identities_listed": len(set(listing.identities)),
            "images_enrolled": len(enrolled),
            "identities_enrolled": len(per_identity),
            "identities_with_genuine_pairs": sum(1 for c in per_identity.values() if c >= 2),
            "genuine_pairs": n_gen,
            "impostor_pairs": n_imp,
            "group_rows_not_in_identities": group_listing.unlisted_files if group_listing else 0,
        },
        "deduplication": _deduplication_section(listing, screening, enrolled, near_identical),
        "failure_to_enrol": {
            **rate(len(counted) - len(enrolled), len(counted)),
            "by_code": dict(sorted(failures.items())),
        },
        "at_threshold": {
            "threshold": float(threshold),
            "fmr": rate(false_match_count(comparison.impostor, threshold), n_imp),
            "fnmr": rate(false_non_match_count(comparison.genuine, threshold), n_gen),
        },
        "target": _target_section(comparison, target_fmr),
        "federation": _federation_section(comparison, threshold, federation_records, target_fpir),
        "identification": identification,
        "curve": curve(
            comparison.genuine, comparison.impostor, _curve_thresholds(comparison, threshold)
        ),
        "groups": [],
        "flags": [],
        "fairness": {},
        "limitations": [],
        "files": {
            "report": REPORT_FILE,
            "det": DET_FILE,
            "det_by_attribute": {
                a: f"det-{k + 1}-{_slug(a)}.png"
                for k, a in enumerate(group_listing.attributes if group_listing else ())
            },
            "scores": SCORES_FILE,
            "summary": SUMMARY_FILE,
        },
    }
    if group_listing is not None:
        summary["groups"], summary["flags"] = _groups_section(
            listing,
            group_listing,
            counted,
            enrolled,
            comparison,
            attribute_values,
            min_genuine_pairs,
            min_impostor_pairs,
        )
    summary["fairness"] = _fairness(summary["groups"])
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
    for k, attribute in enumerate(group_listing.attributes if group_listing else ()):
        scores = comparison.group_scores[k]
        draw_group_det(
            out / summary["files"]["det_by_attribute"][attribute],
            attribute,
            [
                (value, scores.genuine[g], scores.impostor[g])
                for g, value in enumerate(attribute_values[k])
            ],
            threshold,
        )
    draw_scores(
        out / SCORES_FILE, comparison.genuine, comparison.impostor, threshold, target_threshold
    )
    # allow_nan=False: a NaN would make the file invalid JSON; every rate is a float or None.
    text = json.dumps(summary, indent=2, allow_nan=False, ensure_ascii=False)
    (out / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
    (out / REPORT_FILE).write_text(render_report(summary), encoding="utf-8")
    return summary
