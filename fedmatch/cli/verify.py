"""``fedmatch verify-hit``, ``fedmatch resolve`` and ``fedmatch rights which-states``.

The human steps between a lookup and a decision, on the command line:

1. ``fedmatch lookup ... --candidates-out hits.json`` stops at the candidate hits and writes
   them (the query's header and each hit's state and opaque handle; nothing personal);
2. each verifier of the requesting state signs a verdict on them with the key their
   ``verifier`` certificate binds: ``fedmatch verify-hit --config verifier.toml
   --candidates hits.json --confirm --out anna.json`` (or ``--reject REASON``);
3. the operator resolves with the verdict files: ``fedmatch resolve --config operator.toml
   --coordinator HOST:PORT --candidates hits.json --verdicts anna.json ben.json``.

``fedmatch rights which-states`` answers a data subject's "which states hold my data" and
prints only the states (:mod:`fedmatch.requester.rights`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from fedmatch.domain import Purpose, QueryHeader, Sex, parse_date
from fedmatch.errors import ConfigError, InvalidInput
from fedmatch.protocol.limits import HANDLE_BYTES, MAX_HANDLES_PER_REQUEST

__all__ = [
    "add_parsers",
    "read_candidates",
    "run_resolve",
    "run_verify_hit",
    "run_which_states",
    "write_candidates",
]

_CANDIDATES = "fedmatch-candidate-hits-v1"


def add_parsers(sub: Any) -> None:
    """Register ``verify-hit``, ``resolve`` and ``rights`` on the ``fedmatch`` subcommands."""
    from fedmatch.cli.main import _insecure_arg, _operator_config_arg
    from fedmatch.protocol.verification import REJECT_REASONS

    v = sub.add_parser(
        "verify-hit", help="a verifier signs a verdict on candidate hits (confirm or reject)"
    )
    v.add_argument(
        "--config",
        type=Path,
        required=True,
        help="verifier TOML: [tls] chain (a `verifier` certificate of the requesting state) "
        "and [verifier] signing_key (the key that certificate binds)",
    )
    v.add_argument("--candidates", type=Path, required=True, help="file of lookup --candidates-out")
    v.add_argument(
        "--hit", type=int, action="append", help="index of a hit in the file (default: all)"
    )
    what = v.add_mutually_exclusive_group(required=True)
    what.add_argument("--confirm", action="store_true", help="the hit is the same person")
    what.add_argument("--reject", choices=REJECT_REASONS, help="reject, with this reason code")
    v.add_argument(
        "--probe-sex",
        default="",
        choices=[s.value for s in Sex],
        help="the sex declared for the person searched (a different-sex hit needs two people)",
    )
    v.add_argument("--out", type=Path, required=True, help="verdict file to write")

    r = sub.add_parser(
        "resolve", help="ask for the details of verified hits and the decision (verdict files)"
    )
    r.add_argument("--coordinator", required=True, help="coordinator address host:port")
    _operator_config_arg(r, True, ", and [operator] signing_key (signs the resolve)")
    _insecure_arg(r)
    r.add_argument("--candidates", type=Path, required=True, help="file of lookup --candidates-out")
    r.add_argument(
        "--verdicts", type=Path, nargs="+", required=True, help="verdict files of verify-hit"
    )
    r.add_argument("--application-date", help="YYYY-MM-DD of the application (default: today)")
    # The Dublin case inputs (fedmatch/protocol/casefile.py); the proposal is printed with its
    # due dates.
    r.add_argument("--case-file", type=Path, help="JSON: family, documents and visas, lodging date")
    r.add_argument("--timeout", type=float, default=30.0, help="seconds")

    rights = sub.add_parser("rights", help="data-subject rights")
    rights_sub = rights.add_subparsers(dest="rights_command", required=True)
    w = rights_sub.add_parser(
        "which-states", help="which member states hold data of this person (states only)"
    )
    w.add_argument("--coordinator", required=True, help="coordinator address host:port")
    _operator_config_arg(w, True, ", and [operator] signing_key (signs the search)")
    _insecure_arg(w)
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


def write_candidates(report: Any, path: Path) -> None:
    """A lookup's candidate hits for the verifiers and a later resolve (``report``: a
    LookupReport). Only the header and opaque per-query handles: nothing personal."""
    from fedmatch.fileio import write_atomically

    h: QueryHeader = report.header
    body = {
        "format": _CANDIDATES,
        "query_id": h.query_id,
        "requesting_state": h.requesting_state,
        "purpose": h.purpose.value,
        "legal_basis": h.legal_basis,
        "case_reference": h.case_reference,
        "unit": h.unit,
        "operator": h.operator,
        "hits": [{"member_state": s, "handle": handle.hex()} for s, handle in report.matches],
    }
    write_atomically(path, (json.dumps(body, indent=1) + "\n").encode(), mode=0o644)


def read_candidates(path: Path) -> tuple[QueryHeader, list[tuple[str, bytes]]]:
    try:
        obj = json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"candidates file {path} could not be read ({exc.strerror})") from None
    except ValueError:
        raise InvalidInput(f"candidates file {path} is not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != _CANDIDATES:
        raise InvalidInput(f"{path} is not a file of `fedmatch lookup --candidates-out`")
    try:
        header = QueryHeader(
            obj["query_id"], obj["requesting_state"], Purpose.parse(obj["purpose"]),
            obj["legal_basis"], obj["case_reference"], obj["unit"], obj["operator"],
        )  # fmt: skip
        hits = [(str(h["member_state"]), bytes.fromhex(h["handle"])) for h in obj["hits"]]
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"candidates file {path} is malformed") from None
    if len(hits) > MAX_HANDLES_PER_REQUEST or any(len(h) != HANDLE_BYTES for _, h in hits):
        raise InvalidInput(f"candidates file {path} is malformed")
    return header, hits


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
    from fedmatch.protocol.verification import HitKey, write_verdicts

    signer = _verdict_signer(args.config)
    header, hits = read_candidates(args.candidates)
    picked = args.hit if args.hit else list(range(len(hits)))
    if not hits or any(not 0 <= i < len(hits) for i in picked):
        raise InvalidInput(f"--hit must index the {len(hits)} hits of {args.candidates}")
    sex = Sex.parse(args.probe_sex)
    state = header.requesting_state
    verdicts = [
        signer.confirm(header.query_id, state, HitKey(*hits[i]), sex)
        if args.confirm
        else signer.reject(header.query_id, state, HitKey(*hits[i]), args.reject, sex)
        for i in picked
    ]
    write_verdicts(verdicts, args.out)
    print(json.dumps({
        "verdict": "confirm" if args.confirm else "reject", "reason": args.reject or "",
        "verifier": signer.name, "query_id": header.query_id, "hits": len(verdicts),
        "out": str(args.out),
    }))  # fmt: skip
    return 0


def _requester(args: argparse.Namespace, state: str, unit: str, operator: str) -> Any:
    from fedmatch.cli.main import _operator, _warn_insecure
    from fedmatch.protocol.statement import RequestSigner
    from fedmatch.requester import Requester
    from fedmatch.requester.keyfile import load_keys

    insecure = _warn_insecure(args, args.command)
    security, signer = _operator(args.config, insecure, state, signs=True)
    assert security is not None and signer is not None
    keys = load_keys(args.keys) if getattr(args, "keys", None) else None
    return Requester(
        args.coordinator, state, keys, unit, operator,
        RequestSigner(signer, security.chain_pem()), security.channel_credentials(),
    )  # fmt: skip


def run_resolve(args: argparse.Namespace) -> int:
    from fedmatch.protocol.verification import read_verdicts
    from fedmatch.requester.client import LookupReport
    from fedmatch.requester.report import decision_summary

    header, hits = read_candidates(args.candidates)
    verdicts = [v for path in args.verdicts for v in read_verdicts(path)]
    app_date = args.application_date or dt.date.today().isoformat()
    parse_date(app_date, "--application-date")
    report = LookupReport(header, 0.0, "", tuple(hits), (), 0, 0, {})
    requester = _requester(args, header.requesting_state, header.unit, header.operator)
    try:
        from fedmatch.protocol.casefile import load_case_file

        case_inputs = load_case_file(args.case_file) if args.case_file else None
        resolved = requester.resolve(
            report, app_date, verdicts, timeout=args.timeout, case_inputs=case_inputs
        )
    finally:
        requester.close()
    print(json.dumps({
        "query_id": header.query_id, "decision": decision_summary(resolved),
        "proposal": resolved.proposal,
        "hits": list(resolved.statuses),
    }))  # fmt: skip
    return 0


def run_which_states(args: argparse.Namespace) -> int:
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
    requester = _requester(args, args.state, args.unit, args.operator)
    try:
        answer = which_states(
            requester, template, args.legal_basis, args.case_reference, args.timeout
        )
    finally:
        requester.close()
    # Only the states (and whether every node answered): nothing else about the person.
    print(json.dumps({"states": list(answer.states), "complete": answer.complete}))
    return 0
