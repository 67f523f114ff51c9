"""``fedmatch evaluate``: accuracy and error rates by group of the face path on a labelled
photo set (:mod:`fedmatch.evaluation`), 1:1 and 1:N; only aggregates are written."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_OK, face_pipeline

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``evaluate`` on the ``fedmatch`` subcommands."""
    evaluate = sub.add_parser(
        "evaluate",
        help="accuracy and error rates by group on a labelled photo set",
        description=(
            "Embeds every listed photo, compares every pair (1:1: FMR, FNMR, per group) and "
            "searches every photo against a gallery of the federation's size (1:N: FNIR at "
            "fixed FPIRs, rank-1 and rank-k miss rates). Copies of a photo are counted once "
            "(same bytes, same pixels, near-identical thumbnails, or templates of one person "
            "above --near-identical); the same picture under two identities is refused. "
            "Writes report.md, DET and score figures and summary.json (also printed) with the "
            "software version, model and detector ids and a digest of the input list."
        ),
    )
    evaluate.set_defaults(run=run)
    evaluate.add_argument("--images", type=Path, required=True, help="folder of photos")
    evaluate.add_argument(
        "--identities", type=Path, required=True, help="CSV file,identity (one row per photo)"
    )
    evaluate.add_argument(
        "--groups", type=Path, help="CSV file plus any group columns (sex, age band, region...)"
    )
    evaluate.add_argument(
        "--model", type=Path, help="ArcFace-style ONNX recognizer (default: SFace)"
    )
    evaluate.add_argument("--threshold", type=float, default=0.45, help="operational threshold")
    evaluate.add_argument(
        "--target-fmr", type=float, default=0.01, help="FMR to find a threshold for"
    )
    evaluate.add_argument(
        "--federation-records", type=int, default=7_000_000,
        help="total records of all registers, for the expected FPIR",
    )  # fmt: skip
    evaluate.add_argument(
        "--gallery-size", type=int,
        help="1:N gallery entries in all: the enrolled identities plus synthetic distractors "
        "(default: --federation-records, the size a search really faces)",
    )  # fmt: skip
    evaluate.add_argument(
        "--candidates", type=int, default=50,
        help="candidate list length for FNIR and the rank-k miss rate (default 50)",
    )  # fmt: skip
    evaluate.add_argument(
        "--distractor-seed", type=int, default=0, help="seed of the synthetic distractors"
    )
    evaluate.add_argument(
        "--near-identical", type=float, default=0.99,
        help="thumbnail correlation or same-person template similarity above which two "
        "photos count as one (default 0.99)",
    )  # fmt: skip
    evaluate.add_argument(
        "--refuse-duplicates", action="store_true",
        help="fail naming the copies instead of counting each picture once",
    )  # fmt: skip
    evaluate.add_argument("--out", type=Path, required=True, help="report folder")


def run(args: argparse.Namespace) -> int:
    from fedmatch.evaluation import evaluate

    pipeline = face_pipeline(args)
    summary = evaluate(
        images=args.images,
        identities=args.identities,
        out=args.out,
        embed=pipeline.template,
        threshold=args.threshold,
        model_id=pipeline.model_id,
        groups=args.groups,
        target_fmr=args.target_fmr,
        federation_records=args.federation_records,
        detector_id=pipeline.detector_id,
        gallery_size=args.gallery_size,
        candidates=args.candidates,
        distractor_seed=args.distractor_seed,
        near_identical=args.near_identical,
        refuse_duplicates=args.refuse_duplicates,
    )
    for line in _digest(summary):
        print(line, file=sys.stderr)
    print(f"report: {args.out / 'report.md'}", file=sys.stderr)
    print(json.dumps(summary))
    return EXIT_OK


def _rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    if r["errors"] == 0:
        return f"0 of {r['trials']} (<= {r['ci95'][1]:.2g} at 95%)"
    return f"{r['rate']:.3g} ({r['errors']} of {r['trials']})"


def _digest(s: dict[str, Any]) -> list[str]:
    """The few lines a person reads before opening the report."""
    d, dedup, at, ident = s["dataset"], s["deduplication"], s["at_threshold"], s["identification"]
    lines = [
        f"fedmatch {s['provenance']['software_version']}, model {s['model_id']}, detector "
        f"{s['provenance']['detector_id']}, input {s['provenance']['input_digest'][:16]}",
        f"images {d['images_listed']} listed, {dedup['images_dropped']} copies dropped "
        f"{ {k: v for k, v in dedup['dropped_by_reason'].items() if v} }, "
        f"{d['images_enrolled']} enrolled; failure to enrol {_rate(s['failure_to_enrol'])}",
        f"1:1 at {at['threshold']:g}: {d['genuine_pairs']} genuine / {d['impostor_pairs']} "
        f"impostor pairs; FNMR {_rate(at['fnmr'])}, FMR {_rate(at['fmr'])}; target FMR "
        f"{s['target']['target_fmr']:g} shown: {'yes' if s['target']['demonstrated'] else 'no'}",
        f"1:N gallery {ident['gallery']['size']:,} ({ident['gallery']['distractors']:,} "
        f"synthetic): FNIR {_rate(ident['at_threshold']['fnir'])}, FPIR "
        f"{_rate(ident['at_threshold']['fpir'])}, "
        + ", ".join(f"rank-{r['rank']} miss {_rate(r)}" for r in ident["rank_miss"]),
    ]
    lines += [
        f"1:N at FPIR {e['target_fpir']:g}: threshold "
        + (
            f"{e['threshold']:.4g}, FNIR {_rate(e['fnir'])}"
            if e["threshold"] is not None
            else "n/a"
        )
        + ("" if e["demonstrated"] else " (FPIR not shown: too few non-mated searches)")
        for e in ident["at_fpir"]
    ]
    lines.append(s["fairness"]["statement"])
    return lines
