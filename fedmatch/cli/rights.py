"""``fedmatch rights which-states`` and ``fedmatch rights answer``: a data subject's "which
states hold my data?", answered with the states whose record the requesting state's
verifiers confirmed to be the person (:mod:`fedmatch.requester.rights`).

1. ``rights which-states ... --image P --candidates-out dsr.json`` searches, writes the
   candidates file and their verification packets (``dsr.json.packets/``) for the verifiers
   and prints how many candidates await verification, naming no state;
2. two verifiers compare the images and sign (``fedmatch verify-hit --candidates dsr.json
   --seen ... --confirm --out anna.json``, or the desk);
3. ``rights answer --candidates dsr.json --verdicts anna.json ben.json`` prints the states
   they confirmed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import insecure_arg, operator_args, requester_from_args
from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run", "run_answer"]


class _DeprecatedAlias(argparse.Action):
    """Stores the value; warns on stderr when the option was spelt ``--photo``, the name
    this command used before every command took ``--image``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string == "--photo":
            print("fedmatch: --photo is deprecated, use --image", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_parsers(sub: Any) -> None:
    """Register ``rights which-states`` and ``rights answer`` on the ``fedmatch`` subcommands."""
    rights = sub.add_parser("rights", help="data-subject rights")
    rights_sub = rights.add_subparsers(dest="rights_command", required=True)
    w = rights_sub.add_parser(
        "which-states",
        help="search for a data subject's records: the candidates go to the verifiers "
        "(no state is named before they confirm one; `rights answer`)",
    )
    w.set_defaults(run=run)
    w.add_argument("--coordinator", required=True, help="coordinator address host:port")
    operator_args(w, "the search")
    insecure_arg(w)
    w.add_argument("--state", required=True, help="the authority's member state")
    w.add_argument(
        "--legal-basis", required=True, help="legal basis, e.g. 'Reg. (EU) 2024/1358 Art. 43'"
    )
    w.add_argument("--case-reference", required=True, help="the request's file number")
    w.add_argument("--unit", required=True, help="the authority's unit (logged)")
    probe = w.add_mutually_exclusive_group(required=True)
    probe.add_argument(
        "--image", "--photo", type=Path, action=_DeprecatedAlias,
        help="a photo of the person (what the verifiers compare); --photo is a deprecated "
        "alias",
    )  # fmt: skip
    probe.add_argument(
        "--template",
        type=Path,
        help=".npy or .json template of the person (no image to compare: names no state)",
    )
    w.add_argument(
        "--candidates-out",
        type=Path,
        required=True,
        help="write the candidates here, and their verification packets beside them, for "
        "the verifiers (`fedmatch verify-hit`) and `fedmatch rights answer`",
    )
    w.add_argument("--keys", type=Path, help="key file (default: a fresh key pair)")
    w.add_argument("--timeout", type=float, default=60.0, help="seconds")

    a = rights_sub.add_parser(
        "answer",
        help="the states whose candidate two verifiers confirmed (verdict files of verify-hit)",
    )
    a.set_defaults(run=run_answer)
    a.add_argument("--coordinator", required=True, help="coordinator address host:port")
    operator_args(a, "the request")
    insecure_arg(a)
    a.add_argument("--candidates", type=Path, required=True, help="file of rights which-states")
    a.add_argument(
        "--verdicts", type=Path, nargs="*", default=[], help="verdict files of verify-hit"
    )
    a.add_argument("--timeout", type=float, default=30.0, help="seconds")


def run(args: argparse.Namespace) -> int:
    from fedmatch.requester.candidates import write_candidates
    from fedmatch.requester.packets import PacketFolder, packets_path
    from fedmatch.requester.rights import subject_search

    if args.image:
        from fedmatch.biometrics.pipeline import FacePipeline

        template = FacePipeline.for_model(None).template(args.image)
        photo = args.image.read_bytes()
    else:
        from fedmatch.cli.templates import read_templates

        templates = read_templates(args.template)
        if templates.shape[0] != 1:
            raise InvalidInput("one person per request: the template file holds several")
        template, photo = templates[0], b""
    requester = requester_from_args(args, args.state, args.unit)
    try:
        found = subject_search(
            requester, template, args.legal_basis, args.case_reference, photo, args.timeout
        )
    finally:
        requester.close()
    summary: dict[str, Any] = {
        "query_id": found.query_id,
        "candidates": found.candidates,
        "complete": found.complete,
    }
    if found.candidates == 0:
        # Nothing to verify: no state holds a record matching the person (the final answer).
        summary["states"] = []
    else:
        # The candidates (with their states) go to the verifiers' files only: what is
        # printed names no state (DOMAIN.md section 6).
        write_candidates(found.report, args.candidates_out)
        assert found.packets is not None
        folder = packets_path(args.candidates_out)
        PacketFolder(folder).write(found.query_id, photo, found.packets.packets)
        summary |= {
            "awaiting_verification": found.candidates,
            "candidates_file": str(args.candidates_out),
            "packets": {
                "folder": str(folder),
                "released": len(found.packets.packets),
                "not_verifiable": sum(1 for p in found.packets.packets if not p.verifiable),
                "failed": len(found.packets.failed),
            },
        }
    print(json.dumps(summary))
    return 0


def run_answer(args: argparse.Namespace) -> int:
    from fedmatch.protocol.verification import read_verdicts
    from fedmatch.requester.candidates import read_candidates
    from fedmatch.requester.packets import PacketFolder, packets_path
    from fedmatch.requester.rights import subject_answer

    header, hits = read_candidates(args.candidates)
    verdicts = [v for path in args.verdicts for v in read_verdicts(path)]
    folder_path = packets_path(args.candidates)
    folder = PacketFolder(folder_path) if folder_path.exists() else None
    # The officer answering may be another than the one who searched: they sign and are logged.
    requester = requester_from_args(args, header.requesting_state, header.unit)
    try:
        answer = subject_answer(requester, header, hits, verdicts, folder, args.timeout)
    finally:
        requester.close()
    # The states and counts only: nothing about any candidate not confirmed.
    print(json.dumps({
        "query_id": answer.query_id, "states": list(answer.states),
        "complete": answer.complete, "unanswered": list(answer.unanswered),
        "confirmed": answer.confirmed, "rejected": answer.rejected,
        "pending": answer.pending, "unverifiable": answer.unverifiable,
    }))  # fmt: skip
    return 0
