"""``fedmatch lookup``: an encrypted lookup of one probe (a template or a photo) across the
federation. Without hits it resolves at once to a decision; with hits it stops at the
candidates (``--candidates-out``) for the verifiers (:mod:`fedmatch.cli.verify`), and fetches
their verification packets (the candidates' facial images and non-identifying metadata,
:mod:`fedmatch.requester.packets`) into the folder beside them for the verifiers' desk."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import (
    EXIT_INCOMPLETE,
    EXIT_INPUT,
    EXIT_OK,
    QUALITY_EXIT,
    face_pipeline,
    header_args,
    insecure_arg,
    load_operator,
    officer_id,
    operator_args,
    parse_pick,
    signed_requester,
    warn_insecure,
)
from fedmatch.domain import Purpose, Sex, parse_date
from fedmatch.errors import InvalidInput

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``lookup`` on the ``fedmatch`` subcommands."""
    lookup = sub.add_parser("lookup", help="encrypted lookup of one probe across the federation")
    lookup.set_defaults(run=run)
    lookup.add_argument("--coordinator", required=True, help="coordinator address host:port")
    operator_args(lookup, "every lookup and resolve")
    insecure_arg(lookup)
    header_args(lookup)
    lookup.add_argument("--unit", required=True, help="requesting unit (logged)")
    lookup.add_argument(
        "--candidates-out",
        type=Path,
        help="write the candidate hits here for the verifiers (`fedmatch verify-hit`) and "
        "`fedmatch resolve`; a lookup with hits stops at the candidates",
    )
    lookup.add_argument(
        "--probe-sex",
        default="",
        choices=[s.value for s in Sex],
        help="the sex declared for the person searched (shown to the verifiers; a "
        "different-sex candidate needs two people)",
    )
    probe = lookup.add_mutually_exclusive_group(required=True)
    probe.add_argument("--template", type=Path, help=".npy or .json probe")
    probe.add_argument("--image", type=Path, help="a photo of the person")
    lookup.add_argument("--pick", help="which face of a photo with several: index or 'largest'")
    lookup.add_argument(
        "--model", type=Path, help="an ArcFace-style ONNX recognizer (default SFace)"
    )
    lookup.add_argument("--keys", type=Path, help="key file (default: a fresh key pair)")
    lookup.add_argument(
        "--application-date",
        required=True,
        help="YYYY-MM-DD the application was registered (selects Dublin III or the AMMR; "
        "always given, never assumed)",
    )
    lookup.add_argument(
        "--case-file",
        type=Path,
        help="JSON: what the authority knows for the Dublin criteria (family, documents and "
        "visas, visa waiver, airport transit, lodging date; see fedmatch/protocol/casefile.py)",
    )
    lookup.add_argument(
        "--accept-incomplete",
        action="store_true",
        help="when a node did not answer and there is no hit, still propose a decision: "
        "provisional, and logged as accepted (without it: no proposal; either way the "
        f"states are named and the exit code is {EXIT_INCOMPLETE})",
    )
    lookup.add_argument("--timeout", type=float, default=60.0, help="seconds")


def run(args: argparse.Namespace) -> int:
    from fedmatch.cli.templates import read_templates
    from fedmatch.protocol.casefile import load_case_file
    from fedmatch.requester.client import check_candidate_count
    from fedmatch.requester.keyfile import load_keys
    from fedmatch.requester.report import log_accepted_incomplete, unanswered

    insecure = warn_insecure(args, "lookup")
    if args.purpose == Purpose.LAW_ENFORCEMENT.value:
        # The request needs a verifying authority's second signature over the very statement
        # sent (fresh nonce, time, probe hash): this command cannot obtain one.
        raise InvalidInput(
            "law-enforcement lookups need the verifying authority's approval of each request; "
            "use the library: "
            "fedmatch.protocol.statement.RequestSigner(approve=..., prior_check=...)"
        )
    if args.purpose == Purpose.DATA_SUBJECT_REQUEST.value:
        # Such a search answers only which states hold data: never resolved to details.
        raise InvalidInput("a data-subject request is `fedmatch rights which-states`")
    security, signer = load_operator(args.config, insecure, args.state, signs=True)
    assert security is not None and signer is not None
    officer_id(args, signer)  # a wrong --operator is refused before any face work
    if args.image:
        from fedmatch.biometrics.errors import FaceQualityError

        try:
            probe = face_pipeline(args).template(args.image, pick=parse_pick(args.pick))
        except FaceQualityError as exc:
            print(f"fedmatch: {exc.code}: {exc}", file=sys.stderr)
            return QUALITY_EXIT.get(exc.code, EXIT_INPUT)
        templates = probe.reshape(1, -1)
    else:
        templates = read_templates(args.template)
    if templates.shape[0] != 1:
        raise InvalidInput("one probe per lookup: the template file holds several")
    keys = load_keys(args.keys) if args.keys else None
    app_date = args.application_date
    parse_date(app_date, "--application-date")
    case_inputs = load_case_file(args.case_file) if args.case_file else None
    requester = signed_requester(args, args.state, keys, args.unit, security, signer)
    try:
        header = requester.header(
            Purpose.parse(args.purpose), args.legal_basis, args.case_reference
        )
        report = requester.lookup(templates[0], header, timeout=args.timeout)
        missing = unanswered(report.nodes)
        # Details of candidate hits are asked for only once people have verified them
        # (`fedmatch verify-hit`, then `fedmatch resolve` with their signed verdicts).
        resolved = None
        packets = None
        refused = ""
        if not report.matches and (args.accept_incomplete or not missing):
            if missing:
                log_accepted_incomplete(report.header, missing)
            resolved = requester.resolve(
                report, app_date, (), timeout=args.timeout, case_inputs=case_inputs
            )
        elif report.matches and args.candidates_out is not None:
            from fedmatch.requester.candidates import write_candidates

            write_candidates(report, args.candidates_out)
            try:
                check_candidate_count(len(report.matches), "packet request")
            except InvalidInput as exc:
                # The candidates are kept (listing them is local); no packet is asked for.
                refused = str(exc)
            else:
                packets = _fetch_packets(requester, report, args, timeout=args.timeout)
    finally:
        requester.close()
    from fedmatch.requester.report import lookup_summary

    summary = lookup_summary(report, resolved)
    if packets is not None:
        summary["packets"] = packets
    if refused:
        summary["packets"] = {"released": 0, "refused": refused}
    print(json.dumps(summary))
    hits = bool(report.matches)
    if refused:
        print(f"fedmatch: verification packets not asked for: {refused}", file=sys.stderr)
    if missing:
        print(f"fedmatch: incomplete: {_incomplete(missing, resolved, hits)}", file=sys.stderr)
    return EXIT_INPUT if refused else EXIT_INCOMPLETE if missing else EXIT_OK


def _incomplete(missing: dict[str, str], resolved: Any, hits: bool) -> str:
    """What the operator reads when a node did not answer (the JSON names the same states)."""
    from fedmatch.requester.report import incomplete_text

    said = incomplete_text(missing)
    if resolved is not None:
        return f"{said}; the proposal is provisional (--accept-incomplete, logged)"
    if hits:
        return (
            f"{said}; a record held there is not among the candidates: `fedmatch resolve` "
            "proposes nothing on them without --accept-incomplete"
        )
    return (
        f"{said}; a record held there could not be found, so no decision is proposed: look "
        "up again once every node answers, or give --accept-incomplete for a provisional "
        "proposal"
    )


def _fetch_packets(
    requester: Any, report: Any, args: argparse.Namespace, timeout: float
) -> dict[str, Any]:
    """The candidates' verification packets, into the folder beside the candidates file
    with the probe image (the photo looked up; none for a template lookup)."""
    from fedmatch.requester.packets import PacketFolder, packets_path

    probe_image = args.image.read_bytes() if args.image else b""
    fetched = requester.fetch_packets(report, probe_image, timeout=timeout)
    folder = packets_path(args.candidates_out)
    PacketFolder(folder).write(
        report.header.query_id, probe_image, fetched.packets, Sex.parse(args.probe_sex)
    )
    return {
        "folder": str(folder),
        "released": len(fetched.packets),
        "not_verifiable": sum(1 for p in fetched.packets if not p.verifiable),
        "probe_image_sha256": fetched.probe_sha256,
        "failed": fetched.failed,
    }
