"""``fedmatch evaluate``: accuracy and error rates by group of the face path on a labelled
photo set (:mod:`fedmatch.evaluation`); only aggregates are written."""

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
        "evaluate", help="accuracy and error rates by group on a labelled photo set"
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
    )
    print(f"report: {args.out / 'report.md'}", file=sys.stderr)
    print(json.dumps(summary))
    return EXIT_OK
