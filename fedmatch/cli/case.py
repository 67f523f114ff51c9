"""``fedmatch confirm-decision``: an official accepts or overrides a Dublin case proposal.

The official works at an operator workstation of the requesting state (``--config``: its
``[tls]``, and the official's own ``[officer]`` certificate and protected key, which signs:
they are the official logged); the confirmation names the case by the lookup's
query id and the proposal by the digest ``fedmatch lookup`` printed, and is signed over its
whole body (which proposal, accepted or overridden, to which state, by which criterion, why).
The coordinator accepts one confirmation per case and logs it with the official's identity.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict
from typing import Any

from fedmatch.cli.common import (
    EXIT_OK,
    header_args,
    insecure_arg,
    load_operator,
    operator_args,
    signed_requester,
    warn_insecure,
)
from fedmatch.domain import Purpose, QueryHeader
from fedmatch.errors import InvalidInput
from fedmatch.protocol.casefile import CRITERIA

__all__ = ["add_parsers", "run"]

_QUERY_ID = re.compile(r"[0-9a-f]{32}")


def add_parsers(sub: Any) -> None:
    """Register ``confirm-decision`` on the ``fedmatch`` subcommands."""
    p = sub.add_parser(
        "confirm-decision",
        help="an official accepts or overrides the Dublin case proposal of a lookup",
    )
    p.set_defaults(run=run)
    p.add_argument("--coordinator", required=True, help="coordinator address host:port")
    operator_args(p, "the confirmation: the confirming official's")
    insecure_arg(p)
    header_args(p)
    p.add_argument("--unit", required=True, help="the official's unit (logged)")
    p.add_argument("--query-id", required=True, help="the lookup's query id (32 hex digits)")
    p.add_argument("--proposal", required=True, help="the proposal's digest, as lookup printed")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--accept", action="store_true", help="confirm the proposal as it is")
    action.add_argument(
        "--override-state", help="override: the member state the official holds responsible"
    )
    p.add_argument(
        "--override-criterion", choices=sorted(CRITERIA), help="override: the criterion applied"
    )
    p.add_argument(
        "--reason", default="", help="override: why (kept in the case file; the log has a digest)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds")


def run(args: argparse.Namespace) -> int:
    insecure = warn_insecure(args, "confirm-decision")
    if not _QUERY_ID.fullmatch(args.query_id):
        raise InvalidInput("--query-id must be the lookup's 32 lowercase hex digits")
    if args.accept and (args.override_criterion or args.reason):
        raise InvalidInput("--accept takes no --override-criterion or --reason")
    if not args.accept and not (args.override_criterion and args.reason):
        raise InvalidInput("an override needs --override-state, --override-criterion and --reason")
    security, signer = load_operator(args.config, insecure, args.state, signs=True)
    assert security is not None and signer is not None
    requester = signed_requester(args, args.state, None, args.unit, security, signer)
    header = QueryHeader(
        args.query_id,
        args.state,
        Purpose.parse(args.purpose),
        args.legal_basis,
        args.case_reference,
        args.unit,
        requester.operator,
    )
    try:
        report = requester.confirm_decision(
            header,
            args.proposal,
            "accept" if args.accept else "override",
            override_state=args.override_state or "",
            override_criterion=args.override_criterion or "",
            reason=args.reason,
            timeout=args.timeout,
        )
    finally:
        requester.close()
    print(json.dumps(asdict(report)))
    return EXIT_OK
