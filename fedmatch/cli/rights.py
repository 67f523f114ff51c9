"""``fedmatch rights which-states``: a data subject's "which states hold my data?", answered
with the states only (:mod:`fedmatch.requester.rights`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedmatch.cli.common import insecure_arg, operator_config_arg, requester_from_args
from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``rights which-states`` on the ``fedmatch`` subcommands."""
    rights = sub.add_parser("rights", help="data-subject rights")
    rights_sub = rights.add_subparsers(dest="rights_command", required=True)
    w = rights_sub.add_parser(
        "which-states", help="which member states hold data of this person (states only)"
    )
    w.set_defaults(run=run)
    w.add_argument("--coordinator", required=True, help="coordinator address host:port")
    operator_config_arg(w, True, ", and [operator] signing_key (signs the search)")
    insecure_arg(w)
    w.add_argument("--state", required=True, help="the authority's member state")
    w.add_argument(
        "--legal-basis", required=True, help="legal basis, e.g. 'Reg. (EU) 2024/1358 Art. 43'"
    )
    w.add_argument("--case-reference", required=True, help="the request's file number")
    w.add_argument("--unit", required=True, help="the authority's unit (logged)")
    w.add_argument("--operator", required=True, help="operator id of the person asking (logged)")
    probe = w.add_mutually_exclusive_group(required=True)
    probe.add_argument("--template", type=Path, help=".npy or .json template of the person")
    probe.add_argument("--photo", type=Path, help="a photo of the person")
    w.add_argument("--keys", type=Path, help="key file (default: a fresh key pair)")
    w.add_argument("--timeout", type=float, default=60.0, help="seconds")


def run(args: argparse.Namespace) -> int:
    from fedmatch.requester.rights import which_states

    if args.photo:
        from fedmatch.biometrics.pipeline import FacePipeline

        template = FacePipeline.for_model(None).template(args.photo)
    else:
        from fedmatch.cli.templates import read_templates

        templates = read_templates(args.template)
        if templates.shape[0] != 1:
            raise InvalidInput("one person per request: the template file holds several")
        template = templates[0]
    requester = requester_from_args(args, args.state, args.unit, args.operator)
    try:
        answer = which_states(
            requester, template, args.legal_basis, args.case_reference, args.timeout
        )
    finally:
        requester.close()
    # Only the states (and whether every node answered): nothing else about the person.
    print(json.dumps({"states": list(answer.states), "complete": answer.complete}))
    return 0
