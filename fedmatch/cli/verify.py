"""``fedmatch verify-hit`` and ``fedmatch resolve``: the human steps between a lookup and a
decision, on the command line.

1. ``fedmatch lookup ... --candidates-out hits.json`` stops at the candidate hits and writes
   them (:mod:`fedmatch.requester.candidates`: the query's header and each hit's state and
   opaque handle; nothing personal), and their verification packets beside them
   (``hits.json.packets/``: the probe image and each candidate's facial image);
2. each verifier of the requesting state compares the images (the verifier desk,
   ``fedmatch desk serve``, or by hand: ``fedmatch verify-hit --candidates hits.json``
   lists where they are and their SHA-256) and signs a verdict with the key their
   ``verifier`` certificate binds: ``fedmatch verify-hit --config verifier.toml
   --candidates hits.json --seen PROBE_SHA256,CANDIDATE_SHA256 --confirm --out anna.json``
   (or ``--reject REASON``, which also deletes the candidate's image). The verdict binds the
   two hashes; without ``--seen`` naming the released images nothing is signed;
3. the operator resolves with the verdict files: ``fedmatch resolve --config operator.toml
   --coordinator HOST:PORT --candidates hits.json --verdicts anna.json ben.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedmatch.cli.common import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    insecure_arg,
    operator_args,
    requester_from_args,
)
from fedmatch.domain import Sex, parse_date
from fedmatch.errors import ConfigError, InvalidInput
from fedmatch.requester.candidates import read_candidates, read_release, read_unanswered

__all__ = ["add_parsers", "run_resolve", "run_verify_hit"]


def add_parsers(sub: Any) -> None:
    """Register ``verify-hit`` and ``resolve`` on the ``fedmatch`` subcommands."""
    from fedmatch.protocol.verification import REJECT_REASONS

    v = sub.add_parser(
        "verify-hit", help="a verifier signs a verdict on candidate hits (confirm or reject)"
    )
    v.set_defaults(run=run_verify_hit)
    v.add_argument(
        "--config",
        type=Path,
        help="verifier TOML: [tls] chain (a `verifier` certificate of the requesting state) "
        "and [verifier] signing_key (the key that certificate binds); needed to sign",
    )
    v.add_argument("--candidates", type=Path, required=True, help="file of lookup --candidates-out")
    v.add_argument(
        "--hit", type=int, action="append", help="index of a hit in the file (default: all)"
    )
    v.add_argument(
        "--seen",
        action="append",
        default=[],
        metavar="PROBE_SHA256,CANDIDATE_SHA256",
        help="the SHA-256 of the probe image and of the candidate image you compared, once "
        "per hit signed (as listed without --confirm/--reject; empty for no image)",
    )
    what = v.add_mutually_exclusive_group()
    what.add_argument("--confirm", action="store_true", help="the hit is the same person")
    what.add_argument("--reject", choices=REJECT_REASONS, help="reject, with this reason code")
    v.add_argument(
        "--probe-sex",
        default="",
        choices=[s.value for s in Sex],
        help="the sex declared for the person searched (a different-sex hit needs two people)",
    )
    v.add_argument("--out", type=Path, help="verdict file to write (needed to sign)")

    r = sub.add_parser(
        "resolve", help="ask for the details of verified hits and the decision (verdict files)"
    )
    r.set_defaults(run=run_resolve)
    r.add_argument("--coordinator", required=True, help="coordinator address host:port")
    operator_args(r, "the resolve")
    insecure_arg(r)
    r.add_argument("--candidates", type=Path, required=True, help="file of lookup --candidates-out")
    r.add_argument(
        "--verdicts", type=Path, nargs="+", required=True, help="verdict files of verify-hit"
    )
    r.add_argument(
        "--application-date",
        required=True,
        help="YYYY-MM-DD the application was registered (always given, never assumed)",
    )
    # The Dublin case inputs (fedmatch/protocol/casefile.py); the proposal is printed with its
    # due dates.
    r.add_argument("--case-file", type=Path, help="JSON: family, documents and visas, lodging date")
    r.add_argument(
        "--accept-incomplete",
        action="store_true",
        help="propose a decision although a node did not answer the lookup: provisional, "
        "and logged as accepted (without it such a resolve is refused, exit code "
        f"{EXIT_INCOMPLETE})",
    )
    r.add_argument("--timeout", type=float, default=30.0, help="seconds")


def _verdict_signer(path: Path) -> Any:
    """The verifier's key and certificate chain, checked to belong together."""
    from fedmatch.audit.note import NoteSigner
    from fedmatch.config import read_toml
    from fedmatch.pki.names import identity_from_certificate
    from fedmatch.protocol.transport import load_security
    from fedmatch.protocol.verification import VerdictSigner

    security = load_security(path)
    table = read_toml(path).get("verifier", {})
    if not isinstance(table, dict) or set(table) - {"signing_key"}:
        raise ConfigError("[verifier] is a table with only signing_key")
    raw = table.get("signing_key")
    if not isinstance(raw, str) or not raw:
        raise ConfigError("verifier.signing_key is required (the key that signs verdicts)")
    key = NoteSigner.load(Path(raw) if Path(raw).is_absolute() else path.parent / raw)
    chain = security.chain_pem()
    from cryptography import x509

    identity = identity_from_certificate(x509.load_pem_x509_certificates(chain)[0])
    if identity.role != "verifier":
        raise ConfigError(f"tls.chain names {identity.dns}, not a verifier")
    if identity.signing_key != key.public_key_bytes():
        raise ConfigError("tls.chain binds another signing key than verifier.signing_key")
    return VerdictSigner(key, chain)


def run_verify_hit(args: argparse.Namespace) -> int:
    """Without --confirm or --reject: list where each hit's two images are. With one: sign,
    for each hit, a verdict binding the images --seen names (which must be the released
    ones); a reject deletes the candidate's image from the packet folder."""
    from fedmatch.protocol.verification import HitKey, write_verdicts
    from fedmatch.requester.client import check_candidate_count
    from fedmatch.requester.packets import PacketFolder, packets_path

    header, hits = read_candidates(args.candidates)
    try:
        # A lookup with more candidates than one packet request carries fetched none.
        check_candidate_count(len(hits), "packet request")
    except InvalidInput as exc:
        raise InvalidInput(f"no verification packets to compare: {exc}") from None
    picked = args.hit if args.hit else list(range(len(hits)))
    if not hits or any(not 0 <= i < len(hits) for i in picked):
        raise InvalidInput(f"--hit must index the {len(hits)} hits of {args.candidates}")
    folder = PacketFolder(packets_path(args.candidates))
    chosen = [HitKey(*hits[i]) for i in picked]
    if not args.confirm and not args.reject:
        print(json.dumps({"query_id": header.query_id, "hits": _listing(folder, chosen)}))
        return 0
    if args.config is None or args.out is None:
        raise InvalidInput("signing a verdict needs --config and --out")
    seen = {_seen(text) for text in args.seen}
    evidence = {hit: folder.evidence(hit) for hit in chosen}
    unseen = [hit.label() for hit, e in evidence.items() if e not in seen]
    if unseen:
        raise InvalidInput(
            f"not signed: --seen names the images of no hit of {', '.join(unseen)}; list "
            "them with `fedmatch verify-hit --candidates FILE`, compare, and give their "
            "SHA-256 as --seen PROBE,CANDIDATE"
        )
    signer = _verdict_signer(args.config)
    sex = Sex.parse(args.probe_sex) if args.probe_sex else folder.probe_sex()
    state = header.requesting_state
    verdicts = [
        signer.confirm(header.query_id, state, hit, evidence[hit], sex)
        if args.confirm
        else signer.reject(header.query_id, state, hit, evidence[hit], args.reject, sex)
        for hit in chosen
    ]
    write_verdicts(verdicts, args.out)
    if args.reject:
        for hit in chosen:
            folder.remove_image(hit)  # a rejected candidate's image leaves the desk
    print(json.dumps({
        "verdict": "confirm" if args.confirm else "reject", "reason": args.reject or "",
        "verifier": signer.name, "query_id": header.query_id, "hits": len(verdicts),
        "out": str(args.out),
    }))  # fmt: skip
    return 0


def _listing(folder: Any, hits: list[Any]) -> list[dict[str, Any]]:
    """Where each hit's images are, their SHA-256 (what --seen takes) and the metadata."""
    probe = folder.probe_path()
    out = []
    for hit in hits:
        c = folder.candidate(hit)
        image = folder.image_path(hit)
        out.append({
            "member_state": hit.member_state, "handle": hit.handle.hex(),
            "probe_image": str(probe) if probe else None,
            "candidate_image": str(image) if image else None,
            "seen": f"{folder.probe_sha256()},{c.image_sha256}",
            "verifiable": c.verifiable and probe is not None, "removed": c.removed,
            "sex": c.sex.value, "age_band": c.age_band, "capture_date": c.capture_date,
            "image_quality": c.image_quality,
        })  # fmt: skip
    return out


def _seen(text: str) -> Any:
    from fedmatch.protocol.packet import check_image_digest
    from fedmatch.protocol.verification import Evidence

    probe, sep, candidate = text.partition(",")
    if not sep:
        raise InvalidInput("--seen is PROBE_SHA256,CANDIDATE_SHA256")
    return Evidence(
        check_image_digest(probe.strip().lower(), "--seen probe"),
        check_image_digest(candidate.strip().lower(), "--seen candidate"),
    )


def run_resolve(args: argparse.Namespace) -> int:
    from fedmatch.protocol.casefile import load_case_file
    from fedmatch.protocol.verification import read_verdicts
    from fedmatch.requester.client import LookupReport, NodeSummary, check_candidate_count
    from fedmatch.requester.report import (
        decision_summary,
        incomplete_text,
        log_accepted_incomplete,
        unanswered,
    )

    header, hits = read_candidates(args.candidates)
    # Before anything else: one resolve carries all of a lookup's candidates.
    check_candidate_count(len(hits), "resolve")
    missing = read_unanswered(args.candidates)
    if missing and not args.accept_incomplete:
        print(
            f"fedmatch: incomplete: {incomplete_text(missing)} at the lookup; a record held "
            "there is not among the candidates, so no decision is proposed: look up again "
            "once every node answers, or resolve with --accept-incomplete for a provisional "
            "proposal",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    verdicts = [v for path in args.verdicts for v in read_verdicts(path)]
    app_date = args.application_date
    parse_date(app_date, "--application-date")
    opening, opening_keys = read_release(args.candidates, header.query_id)
    # The nodes that did not answer the lookup, as the file recorded them.
    nodes = tuple(NodeSummary(s, o, "", 0, 0.0, 0, 0) for s, o in missing.items())
    report = LookupReport(
        header, 0.0, "", tuple(hits), nodes, 0, 0, {}, opening=opening,
        opening_keys=opening_keys,
    )  # fmt: skip
    # The officer resolving may be another than the one who looked up: they sign and are
    # logged (the Requester names them in every request it sends).
    requester = requester_from_args(args, header.requesting_state, header.unit)
    if missing:
        log_accepted_incomplete(replace(header, operator=requester.operator), missing)
    try:
        case_inputs = load_case_file(args.case_file) if args.case_file else None
        resolved = requester.resolve(
            report, app_date, verdicts, timeout=args.timeout, case_inputs=case_inputs
        )
    finally:
        requester.close()
    gone = missing | unanswered(resolved.nodes)
    print(json.dumps({
        "query_id": header.query_id, "decision": decision_summary(resolved, missing),
        "proposal": resolved.proposal,
        "hits": list(resolved.statuses),
    }))  # fmt: skip
    if gone:
        print(
            f"fedmatch: incomplete: {incomplete_text(gone)}; the proposal is provisional",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return EXIT_OK
