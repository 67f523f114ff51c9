"""``fedmatch dublin-form``: the standard Dublin request, pre-filled from a resolve's proposal
(:mod:`fedmatch.requester.forms`), written as JSON and as a printable HTML page.

After ``fedmatch resolve ... > resolved.json``::

    fedmatch dublin-form --config operator.toml --resolved resolved.json \\
        --candidates hits.json --verdicts anna.json ben.json --date 2026-12-07 --out forms/

writes ``forms/take_charge_request.json`` and ``.html`` (or ``take_back_request``,
``take_back_notification``). ``--config`` is only read for its ``[tls]`` root and CRLs, which
verify the verdicts' signers; nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedmatch.domain import parse_date
from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``dublin-form`` on the ``fedmatch`` subcommands."""
    p = sub.add_parser(
        "dublin-form",
        help="pre-fill the standard take charge / take back request from a resolve's proposal",
    )
    p.set_defaults(run=run)
    p.add_argument(
        "--config",
        type=Path,
        required=True,
        help="operator workstation TOML: its [tls] root and CRLs verify the verdicts' signers",
    )
    p.add_argument(
        "--resolved", type=Path, required=True, help="the JSON `fedmatch resolve` printed"
    )
    p.add_argument("--candidates", type=Path, required=True, help="file of lookup --candidates-out")
    p.add_argument(
        "--verdicts", type=Path, nargs="+", required=True, help="verdict files of verify-hit"
    )
    p.add_argument(
        "--date",
        required=True,
        help="YYYY-MM-DD, the date of the request (always given, never assumed)",
    )
    p.add_argument(
        "--urgent",
        metavar="REASON",
        default="",
        help="ask for an urgent reply (Dublin III Art. 21(2), take charge), with the reason",
    )
    p.add_argument(
        "--detention", action="store_true", help="the applicant is detained (Dublin III Art. 28)"
    )
    p.add_argument("--out", type=Path, required=True, help="directory for <kind>.json and .html")


def run(args: argparse.Namespace) -> int:
    from fedmatch.protocol.transport import load_security
    from fedmatch.protocol.verification import read_verdicts
    from fedmatch.requester.candidates import read_candidates
    from fedmatch.requester.forms import (
        FormOptions,
        build_form,
        check_verdicts,
        read_resolve_output,
        write_form,
    )

    options = FormOptions(parse_date(args.date, "--date"), args.urgent, args.detention)
    header, candidates = read_candidates(args.candidates)
    query_id, proposal = read_resolve_output(args.resolved)
    if query_id != header.query_id:
        raise InvalidInput(
            f"{args.resolved} resolves query {query_id}, {args.candidates} is query "
            f"{header.query_id}: not the same case"
        )
    security = load_security(args.config)
    signed = [v for path in args.verdicts for v in read_verdicts(path)]
    verdicts = check_verdicts(signed, header, candidates, security.verify_chain)
    form = build_form(proposal, header, verdicts, options)
    as_json, as_html = write_form(form, args.out)
    print(json.dumps({
        "kind": form["kind"], "requested_state": form["requested_state"],
        "dublinet_reference": form["dublinet_reference"]["value"],
        "json": str(as_json), "html": str(as_html), "status": form["status"],
    }))  # fmt: skip
    return 0
