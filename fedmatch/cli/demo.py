"""``fedmatch demo``: a 3-node federation end to end on this machine (the default scenario,
:mod:`fedmatch.demo.federation`), or three Dublin cases from enrolment to an official's
confirmed decision (``--scenario dublin``, :mod:`fedmatch.demo.dublin`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``demo`` on the ``fedmatch`` subcommands."""
    demo = sub.add_parser("demo", help="run a 3-node federation end to end on this machine")
    demo.set_defaults(run=run)
    demo.add_argument("--records", type=int, default=20_000, help="synthetic records per node")
    demo.add_argument("--workdir", type=Path, help="keep the registers and configs here")
    demo.add_argument(
        "--photos", type=Path, help="a folder of photos with identities.csv (file,identity)"
    )
    demo.add_argument(
        "--desk",
        action="store_true",
        help="hand the candidates to the verifier desk and serve it until Ctrl-C (its "
        "address and the demo logins are printed): two people verify in a browser",
    )
    demo.add_argument(
        "--scenario",
        choices=["default", "dublin"],
        default="default",
        help="default: one traveller's lookup and decision; dublin: three Dublin cases from "
        "enrolment to an official's confirmed decision (fedmatch/demo/dublin.py)",
    )


def run(args: argparse.Namespace) -> int:
    if args.scenario == "dublin":
        if args.desk:
            raise InvalidInput("--desk is for the default scenario")
        from fedmatch.demo.dublin import run_dublin_demo

        return run_dublin_demo(records=args.records, workdir=args.workdir, photos=args.photos)
    from fedmatch.demo.federation import run_demo

    return run_demo(records=args.records, workdir=args.workdir, photos=args.photos, desk=args.desk)
