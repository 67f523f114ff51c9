"""The ``fedmatch`` command.

Subcommands: ``node serve|seed``, ``coordinator serve``, ``keys generate``, ``enroll``,
``lookup``, ``demo``, ``bench search``, ``pki init|intermediate|issue|revoke|show``. Every
subcommand has ``--help``. This is the only place that turns errors into exit codes: 0
success, 2 usage or input error, 3 refused by a peer, 4 unreachable peer, 1 anything else.

Every channel is mutual TLS with the certificates a party's TOML file names in ``[tls]``;
``lookup`` and ``enroll`` read an operator workstation's file (``--config``: ``[tls]`` and
``[operator] signing_key``, which signs every lookup and resolve). ``--dev-insecure`` (on the
commands that connect or serve) is plaintext gRPC for development, warned about on stderr
at every start; signed requests are still verified against the ``[tls]`` root and CRLs.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fedmatch.domain import Category, Purpose, QueryHeader, Sex, parse_date
from fedmatch.errors import ConfigError, FedmatchError, InvalidInput

if TYPE_CHECKING:
    from fedmatch.audit.note import NoteSigner
    from fedmatch.biometrics.pipeline import FacePipeline
    from fedmatch.protocol.transport import Security
    from fedmatch.requester.enrolment import EnrolmentRecord

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

log = logging.getLogger("fedmatch")


def _header_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", required=True, help="requesting member state (ISO 3166-1 alpha-2)")
    p.add_argument(
        "--purpose",
        default=Purpose.ASYLUM_DUBLIN.value,
        choices=[x.value for x in Purpose],
        help="purpose of the request (a law_enforcement lookup needs a verifying authority's "
        "approval of each request: library only, see deploy/README.md)",
    )
    p.add_argument(
        "--legal-basis", required=True, help="legal basis, e.g. 'Reg. 2024/1358 Art. 15'"
    )
    p.add_argument("--case-reference", required=True, help="case or file number")


INSECURE_WARNING = (
    "WARNING: --dev-insecure: PLAINTEXT gRPC, no TLS and no client certificates on this "
    "{what}. Signed requests are still verified against the PKI. For development on one "
    "machine only, never in production."
)


def _insecure_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dev-insecure",
        action="store_true",
        help="development only: plaintext gRPC, no TLS (warned about at every start); "
        "the [tls] root and CRLs still verify signed requests",
    )


def _warn_insecure(args: argparse.Namespace, what: str) -> bool:
    """Print the --dev-insecure warning (every start) and say whether it is on."""
    if getattr(args, "dev_insecure", False):
        print(INSECURE_WARNING.format(what=what), file=sys.stderr, flush=True)
        return True
    return False


def _operator_config_arg(p: argparse.ArgumentParser, required: bool, needs: str) -> None:
    p.add_argument(
        "--config",
        type=Path,
        required=required,
        help="operator workstation TOML: [tls] key, chain, root, crls (this operator's "
        f"certificate of `fedmatch pki issue --role operator`){needs}",
    )


def _log_format_arg(p: argparse.ArgumentParser) -> None:
    # Also accepted after `serve`; SUPPRESS keeps an absent flag from hiding the global one.
    p.add_argument(
        "--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
        help="log lines as text (default) or one JSON object per line",
    )  # fmt: skip


def _status_parser(sub: Any, role: str) -> None:
    status = sub.add_parser(
        "status",
        help=f"is the {role} healthy? JSON: server health, log verified against its "
        "checkpoint, sizes, metrics (reads files read-only; exit 7 if unhealthy)",
    )
    status.add_argument("--config", type=Path, required=True, help=f"the {role}'s TOML file")
    status.add_argument("--address", help="host:port of the server (default: its listen)")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    _insecure_arg(status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmatch", description="Federated, encrypted biometric matching for member states."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text (default) or one JSON object per line (also "
        "FEDMATCH_LOGGING_FORMAT or [logging] format in a party's TOML file)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run or prepare a member-state node")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    serve = node_sub.add_parser("serve", help="serve a node's register over gRPC")
    serve.add_argument("--config", type=Path, required=True, help="node TOML config")
    serve.add_argument("--listen", help="override [node].listen, e.g. 127.0.0.1:0")
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    _insecure_arg(serve)
    _log_format_arg(serve)
    seed = node_sub.add_parser("seed", help="add synthetic records to a node's register")
    seed.add_argument("--config", type=Path, required=True, help="node TOML config")
    seed.add_argument("--count", type=int, required=True, help="number of records")
    seed.add_argument("--seed", type=int, default=0, help="random seed")
    _status_parser(node_sub, "node")
    from fedmatch.cli.node_storage import add_parsers as add_storage_parsers

    add_storage_parsers(node_sub)  # storage-key, seal, rotate-key, backup, restore
    from fedmatch.cli.node_lifecycle import add_parsers as add_lifecycle_parsers

    add_lifecycle_parsers(node_sub)  # mark, unmark, erase, route, inbox, ack

    coord = sub.add_parser("coordinator", help="run the coordinator")
    coord_sub = coord.add_subparsers(dest="coord_command", required=True, metavar="ACTION")
    cserve = coord_sub.add_parser("serve", help="serve the coordinator over gRPC")
    cserve.add_argument("--config", type=Path, required=True, help="coordinator TOML config")
    cserve.add_argument("--listen", help="override [coordinator].listen")
    cserve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    _insecure_arg(cserve)
    _log_format_arg(cserve)
    _status_parser(coord_sub, "coordinator")

    keys = sub.add_parser("keys", help="requester key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kgen = keys_sub.add_parser("generate", help="generate a requester key pair (file mode 0600)")
    kgen.add_argument("--out", type=Path, required=True, help="key file to write")

    enroll = sub.add_parser("enroll", help="enrol records at a node (your own state's node)")
    enroll.add_argument("--node", required=True, help="node address host:port")
    _operator_config_arg(
        enroll, False, "; required unless --dev-insecure (an operator of --state's own node)"
    )
    _insecure_arg(enroll)
    _header_args(enroll)
    source = enroll.add_mutually_exclusive_group(required=True)
    source.add_argument("--template", type=Path, help=".npy or .json template(s)")
    source.add_argument("--image", type=Path, help="a photo (one face, or --pick)")
    source.add_argument(
        "--images", type=Path, help="a folder of photos: bulk, reference = file name stem"
    )
    enroll.add_argument("--model-id", default="sface-2021dec-int8bq", help="model of --template")
    enroll.add_argument(
        "--manifest",
        type=Path,
        help="CSV with reference,category,event_date,event_place,capture_date,sex and either "
        "row (indexing the --template matrix) or image (a photo path, relative to the CSV)",
    )
    enroll.add_argument(
        "--pick", help="which face of a photo with several: an index (0 = best) or 'largest'"
    )
    enroll.add_argument(
        "--model", type=Path, help="an ArcFace-style ONNX recognizer (default SFace)"
    )
    enroll.add_argument("--reference", help="origin reference number (single record)")
    enroll.add_argument("--category", choices=[c.value for c in Category])
    enroll.add_argument("--event-date", help="YYYY-MM-DD")
    enroll.add_argument("--event-place")
    enroll.add_argument("--capture-date", help="YYYY-MM-DD (default: event date)")
    enroll.add_argument("--sex", default="", choices=[s.value for s in Sex])
    enroll.add_argument(
        "--birth-date",
        help="YYYY-MM-DD (required: no one under 6 at capture is enrolled; manifest column "
        "birth_date)",
    )
    enroll.add_argument(
        "--birth-date-estimated",
        action="store_true",
        help="the birth date is an estimate (a child who could be under 6 is refused; "
        "manifest column birth_date_estimated = 1)",
    )
    enroll.add_argument("--operator", default="", help="operator id (recorded and logged)")
    enroll.add_argument("--unit", default="", help="enrolling unit (logged)")

    lookup = sub.add_parser("lookup", help="encrypted lookup of one probe across the federation")
    lookup.add_argument("--coordinator", required=True, help="coordinator address host:port")
    _operator_config_arg(
        lookup, True, ", and [operator] signing_key (the Ed25519 key bound into that "
        "certificate, which signs every lookup and resolve)",
    )  # fmt: skip
    _insecure_arg(lookup)
    _header_args(lookup)
    lookup.add_argument("--unit", required=True, help="requesting unit (logged)")
    lookup.add_argument(
        "--operator", required=True, help="operator id of the person asking (logged)"
    )
    lookup.add_argument(
        "--candidates-out",
        type=Path,
        help="write the candidate hits here for the verifiers (`fedmatch verify-hit`) and "
        "`fedmatch resolve`; a lookup with hits stops at the candidates",
    )
    probe = lookup.add_mutually_exclusive_group(required=True)
    probe.add_argument("--template", type=Path, help=".npy or .json probe")
    probe.add_argument("--image", type=Path, help="a photo of the person")
    lookup.add_argument("--pick", help="which face of a photo with several: index or 'largest'")
    lookup.add_argument(
        "--model", type=Path, help="an ArcFace-style ONNX recognizer (default SFace)"
    )
    lookup.add_argument("--keys", type=Path, help="key file (default: a fresh key pair)")
    lookup.add_argument("--application-date", help="YYYY-MM-DD of the application (default: today)")
    lookup.add_argument(
        "--case-file",
        type=Path,
        help="JSON: what the authority knows for the Dublin criteria (family, documents and "
        "visas, visa waiver, airport transit, lodging date; see fedmatch/protocol/casefile.py)",
    )
    lookup.add_argument("--timeout", type=float, default=60.0, help="seconds")

    from fedmatch.cli.case import add_confirm_parser

    add_confirm_parser(sub)
    from fedmatch.cli.verify import add_parsers as add_verification_parsers

    add_verification_parsers(sub)  # verify-hit, resolve, rights which-states

    demo = sub.add_parser("demo", help="run a 3-node federation end to end on this machine")
    demo.add_argument("--records", type=int, default=20_000, help="synthetic records per node")
    demo.add_argument("--workdir", type=Path, help="keep the registers and configs here")
    demo.add_argument(
        "--photos", type=Path, help="a folder of photos with identities.csv (file,identity)"
    )
    demo.add_argument(
        "--scenario",
        choices=["default", "dublin"],
        default="default",
        help="default: one traveller's lookup and decision; dublin: three Dublin cases from "
        "enrolment to an official's confirmed decision (fedmatch/demo/dublin.py)",
    )

    evaluate = sub.add_parser(
        "evaluate", help="accuracy and error rates by group on a labelled photo set"
    )
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

    audit = sub.add_parser("audit", help="audit logs: keys, verification, statistics")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    akeygen = audit_sub.add_parser(
        "keygen", help="generate a party's or an auditor's Ed25519 signing key (mode 0600)"
    )
    akeygen.add_argument(
        "--name", required=True,
        help="key name: fedmatch/node/<STATE>, fedmatch/coordinator, or an auditor's name",
    )  # fmt: skip
    akeygen.add_argument("--out", type=Path, required=True, help="key file to create")
    averify = audit_sub.add_parser(
        "verify", help="verify every party's log and cross-check the federation"
    )
    averify.add_argument("--config", type=Path, required=True, help="auditor TOML file")
    averify.add_argument("--report", type=Path, help="also write the report to this file")
    _insecure_arg(averify)
    astats = audit_sub.add_parser(
        "stats", help="publishable aggregates from the verified logs (no individual data)"
    )
    astats.add_argument("--config", type=Path, required=True, help="auditor TOML file")
    _insecure_arg(astats)
    awatch = audit_sub.add_parser(
        "watch", help="run `audit verify` every --interval seconds (an auditor's service)"
    )
    awatch.add_argument("--config", type=Path, required=True, help="auditor TOML file")
    awatch.add_argument(
        "--interval", type=float, default=300.0, help="seconds from one run's start to the next"
    )
    awatch.add_argument("--runs", type=int, default=0, help="stop after this many runs (0: never)")
    _insecure_arg(awatch)

    bench = sub.add_parser("bench", help="benchmarks (JSON on the last line)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bsearch = bench_sub.add_parser("search", help="encrypted 1:N search vs a numpy baseline")
    bsearch.add_argument("--records", type=int, default=100_000, help="register size")
    bsearch.add_argument("--dim", type=int, default=128, help="template dimension")
    bsearch.add_argument(
        "--queries", type=int, default=10, help="timed queries (after one warm-up)"
    )
    bsearch.add_argument(
        "--threads",
        "--workers",
        type=int,
        default=0,
        help="search worker processes, or Ray actors with --engine ray (0: one per core)",
    )
    bsearch.add_argument("--engine", choices=["local", "ray"], default="local")
    bsearch.add_argument(
        "--ray-address", default="", help='Ray cluster ("auto", "ray://host:port"); empty: local'
    )
    bfed = bench_sub.add_parser(
        "federation", help="K node processes + coordinator over mTLS: lookups end to end"
    )
    bfed.add_argument("--nodes", type=int, default=3, help="node processes (K, at most 27)")
    bfed.add_argument("--records-per-node", type=int, default=20_000, help="register size")
    bfed.add_argument("--queries", type=int, default=10, help="timed lookups (after a warm-up)")
    bfed.add_argument("--concurrency", type=int, default=1, help="concurrent clients")
    bfed.add_argument("--dim", type=int, default=128, help="template dimension")
    bfed.add_argument("--search-workers", type=int, default=1, help="search processes per node")
    bfed.add_argument("--workdir", type=Path, help="keep the federation's files here")
    bfaces = bench_sub.add_parser("faces", help="photos per second through the face path")
    bfaces.add_argument("--photos", type=Path, required=True, help="folder of photos")
    bfaces.add_argument("--images", type=int, default=200, help="photos to process")
    baudit = bench_sub.add_parser(
        "audit", help="audit log: durable appends/s, inclusion proofs, full verification"
    )
    baudit.add_argument("--appends", type=int, default=20_000, help="durable appends timed")
    baudit.add_argument("--threads", type=int, default=16, help="concurrent appending threads")
    baudit.add_argument(
        "--entries", type=int, default=1_000_000, help="entries of the log proved and verified"
    )
    baudit.add_argument("--workdir", type=Path, help="directory for the temporary logs")

    pki = sub.add_parser("pki", help="federation certificate authorities and TLS certificates")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    pinit = pki_sub.add_parser(
        "init", help="create the federation root CA (root.key, root.pem, an empty root.crl)"
    )
    pinit.add_argument("--dir", type=Path, required=True, help="directory of the root CA")
    pinit.add_argument("--days", type=int, default=3650, help="validity in days")
    pinter = pki_sub.add_parser(
        "intermediate",
        help="create the CA of a member state (or EU), signed by the root, with an empty CRL",
    )
    pinter.add_argument("--dir", type=Path, required=True, help="directory of the root CA")
    pinter.add_argument("--scope", required=True, help="member state code (IT, DE, ...) or EU")
    pinter.add_argument(
        "--out", type=Path, help="directory for <scope>.key/.pem/.crl (default: --dir)"
    )
    pinter.add_argument("--days", type=int, default=1825, help="validity in days")
    pissue = pki_sub.add_parser(
        "issue", help="issue a TLS certificate ([instance.]role.scope.fedmatch.eu)"
    )
    pissue.add_argument(
        "--dir", type=Path, required=True, help="CA directory with <scope>.key/.pem and root.pem"
    )
    pissue.add_argument(
        "--role", required=True, help="node, coordinator, auditor, operator or verifier"
    )
    pissue.add_argument("--scope", required=True, help="member state code or EU")
    pissue.add_argument("--instance", default="", help="optional DNS label, e.g. desk7")
    pissue.add_argument(
        "--signing-key", type=Path, required=True,
        help="the holder's Ed25519 signing key file, bound into the certificate; created "
        "(mode 0600, named fedmatch/node/<STATE>, fedmatch/coordinator or the DNS name) if missing",
    )  # fmt: skip
    pissue.add_argument(
        "--out", type=Path, required=True, help="writes key.pem (0600), cert.pem, ca.pem here"
    )
    pissue.add_argument("--days", type=int, default=90, help="validity in days")
    prevoke = pki_sub.add_parser("revoke", help="add a certificate to its CA's CRL")
    prevoke.add_argument("--dir", type=Path, required=True, help="directory of the issuing CA")
    prevoke.add_argument(
        "--scope", required=True, help="scope of the issuing CA, or 'root' for an intermediate"
    )
    prevoke.add_argument("--serial", required=True, help="serial number (decimal or 0x hex)")
    pshow = pki_sub.add_parser("show", help="print the identity a certificate names (JSON)")
    pshow.add_argument("--cert", type=Path, required=True, help="PEM certificate (or chain)")
    health = sub.add_parser(
        "health", help="is a party up? (gRPC health over its mTLS; an auditor's watch loop)"
    )
    health.add_argument("--config", type=Path, required=True, help="the party's TOML file")
    health.add_argument("--address", help="host:port to ask (default: the config's listen)")
    health.add_argument(
        "--server-name", help="name the server's certificate must carry (default: the party's own)"
    )
    health.add_argument("--timeout", type=float, default=5.0, help="seconds")
    health.add_argument(
        "--max-age",
        type=float,
        help="auditor: seconds since its last run (default: 2 intervals + 300)",
    )
    _insecure_arg(health)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _configure_logging(args, None)
        return _dispatch(args)
    except ConfigError as exc:
        print(f"fedmatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except FedmatchError as exc:
        print(f"fedmatch: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as exc:
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code()
            print(f"fedmatch: {code.name}: {exc.details()}", file=sys.stderr)
            return EXIT_UNREACHABLE if code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED
        raise


def _configure_logging(args: argparse.Namespace, config: Path | None) -> None:
    """Log format and level: --log-format, else FEDMATCH_LOGGING_*, else [logging] of
    ``config`` (a serving party's TOML file, applied once it is known)."""
    from fedmatch.ops.logjson import configure_logging, load_logging_config

    serving = args.command in ("node", "coordinator") and "status" not in (
        getattr(args, "node_command", None),
        getattr(args, "coord_command", None),
    )
    default = logging.INFO if args.verbose or serving else logging.WARNING
    configure_logging(load_logging_config(config, args.log_format), default)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "node":
        return _node(args)
    if args.command == "coordinator":
        return _coordinator(args)
    if args.command == "keys":
        from fedmatch.he.keys import RequesterKeys
        from fedmatch.requester.keyfile import save_keys

        save_keys(RequesterKeys.generate(), args.out)
        print(f"wrote {args.out}")
        return EXIT_OK
    if args.command == "audit":
        return _audit(args)
    if args.command == "pki":
        return _pki(args)
    if args.command == "health":
        from fedmatch.ops.health import health, print_result

        insecure = _warn_insecure(args, "health check")
        checked = health(
            args.config, args.address, args.server_name, insecure, args.timeout, args.max_age
        )
        print_result(checked)
        return EXIT_OK if checked.healthy else EXIT_ERROR
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "lookup":
        return _lookup(args)
    if args.command in ("verify-hit", "resolve", "rights"):
        from fedmatch.cli import verify as vc

        run = {"verify-hit": vc.run_verify_hit, "resolve": vc.run_resolve}
        return run.get(args.command, vc.run_which_states)(args)
    if args.command == "confirm-decision":
        from fedmatch.cli.case import run_confirm

        return run_confirm(args)
    if args.command == "demo" and args.scenario == "dublin":
        from fedmatch.demo.dublin import run_dublin_demo

        return run_dublin_demo(records=args.records, workdir=args.workdir, photos=args.photos)
    if args.command == "demo":
        from fedmatch.demo.federation import run_demo

        return run_demo(records=args.records, workdir=args.workdir, photos=args.photos)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "bench" and args.bench_command == "faces":
        from fedmatch.bench.faces import bench_faces

        print(json.dumps(bench_faces(args.photos, args.images)))
        return EXIT_OK
    if args.command == "bench" and args.bench_command == "audit":
        from fedmatch.bench.audit import bench_audit

        print(json.dumps(bench_audit(args.appends, args.threads, args.entries, args.workdir)))
        return EXIT_OK
    if args.command == "bench" and args.bench_command == "federation":
        from fedmatch.bench.federation import bench_federation

        result = bench_federation(
            args.nodes, args.records_per_node, args.queries, args.concurrency, args.dim,
            search_workers=args.search_workers, workdir=args.workdir,
        )  # fmt: skip
        print(json.dumps(result))
        return EXIT_OK
    if args.command == "bench":
        from fedmatch.bench.search import bench_search

        print(json.dumps(bench_search(
            args.records, args.dim, args.queries, args.threads,
            engine=args.engine, ray_address=args.ray_address,
        )))  # fmt: skip
        return EXIT_OK
    raise AssertionError(args.command)


def _node(args: argparse.Namespace) -> int:
    from node.config import load_node_config
    from node.store import RecordStore

    if args.node_command == "status":
        return _status(args, "node")
    from fedmatch.cli import node_storage as storage_cli

    if args.node_command in storage_cli.COMMANDS:
        return storage_cli.run(args)
    from fedmatch.cli import node_lifecycle as lifecycle_cli

    if args.node_command in lifecycle_cli.COMMANDS:
        return lifecycle_cli.run(args)
    # The warning comes first, whatever else fails.
    insecure = args.node_command == "serve" and _warn_insecure(args, "node")
    cfg = load_node_config(args.config, {"listen": getattr(args, "listen", None)})
    if args.node_command == "seed":
        from fedmatch.demo.seed import seed_register

        seed_register(
            cfg.database,
            cfg.member_state,
            args.count,
            args.seed,
            cfg.dimension,
            cfg.model_id,
            dt.date.today(),
            kek=storage_cli.node_storage_key(args.config),
        )
        print(f"{cfg.member_state}: added {args.count} synthetic records to {cfg.database}")
        return EXIT_OK
    from fedmatch.audit.party import PartyAudit, load_audit_config, node_origin
    from fedmatch.cli.node_lifecycle import node_lifecycle as _node_lifecycle
    from fedmatch.ops.metrics import node_metrics
    from fedmatch.ops.metrics_http import load_metrics_config
    from fedmatch.ops.serving import serve_party
    from fedmatch.protocol.gate import Gate
    from fedmatch.protocol.replay import ReplayGuard
    from fedmatch.protocol.transport import load_security
    from node.locks import OpenLock
    from node.policy import load_policy
    from node.retention import load_retention
    from node.service import NodeService
    from node.servicer import serve_node

    # Every table is checked before anything is created.
    audit_config = load_audit_config(args.config)
    security = load_security(args.config, insecure)
    policy = load_policy(args.config)
    retention = load_retention(args.config)
    metrics_config = load_metrics_config(args.config)
    _configure_logging(args, args.config)
    with ExitStack() as stack:
        # The register's open lock before the audit log: a node started during a restore
        # is refused before it can touch (or create) the log being swapped in.
        stack.enter_context(OpenLock(cfg.database, exclusive=False))
        audit = PartyAudit(audit_config, node_origin(cfg.member_state))
        stack.callback(audit.close)
        if not insecure:
            _check_own_certificate(security, "node", cfg.member_state, audit.signer)
        kek = storage_cli.node_storage_key(args.config)  # templates at rest ([storage])
        store = RecordStore(cfg.database, cfg.member_state, cfg.dimension, cfg.model_id, kek)
        stack.callback(store.close)
        gate = Gate(security.verify_chain, ReplayGuard(cfg.replay_path))
        stack.callback(gate.close)
        service = NodeService(cfg, store, audit, gate, policy)
        stack.callback(service.close)
        metrics = node_metrics(service)
        lifecycle, job = _node_lifecycle(stack, cfg, service, security, retention)
        server = serve_node(
            service, security, interceptors=[metrics.interceptor], lifecycle=lifecycle
        )
        log.info(
            "node %s serving %d records on %s (%s, policy %s)",
            cfg.member_state,
            service.record_count(),
            server.address,
            "PLAINTEXT" if insecure else "mTLS",
            policy.version,
        )

        def last_checkpoint() -> object:
            job.stop()  # an erasure run under way lands before the last checkpoint
            return audit.log.checkpoint()

        serve_party(
            server, metrics.registry, metrics_config.listen, last_checkpoint, args.port_file
        )
    return EXIT_OK


def _coordinator(args: argparse.Namespace) -> int:
    from coordinator.config import load_coordinator_config
    from coordinator.service import CoordinatorService
    from coordinator.servicer import serve_coordinator
    from fedmatch.audit.party import COORDINATOR_ORIGIN, PartyAudit, load_audit_config
    from fedmatch.ops.metrics import coordinator_metrics
    from fedmatch.ops.metrics_http import load_metrics_config
    from fedmatch.ops.serving import serve_party
    from fedmatch.protocol.gate import Gate
    from fedmatch.protocol.replay import ReplayGuard
    from fedmatch.protocol.transport import load_security

    if args.coord_command == "status":
        return _status(args, "coordinator")
    insecure = _warn_insecure(args, "coordinator")
    cfg = load_coordinator_config(args.config, {"listen": args.listen})
    audit_config = load_audit_config(args.config)
    security = load_security(args.config, insecure)
    metrics_config = load_metrics_config(args.config)
    _configure_logging(args, args.config)
    # Beside the audit directory unless [coordinator] replay_db says where.
    replay = cfg.replay_db or audit_config.directory.parent / "coordinator.replay.sqlite"
    with ExitStack() as stack:
        audit = PartyAudit(audit_config, COORDINATOR_ORIGIN)
        stack.callback(audit.close)
        if not insecure:
            _check_own_certificate(security, "coordinator", None, audit.signer)
        gate = Gate(security.verify_chain, ReplayGuard(replay))
        stack.callback(gate.close)
        service = CoordinatorService(cfg, audit, gate, security.channel_credentials())
        stack.callback(service.close)
        metrics = coordinator_metrics(service)
        server = serve_coordinator(service, security, interceptors=[metrics.interceptor])
        log.info(
            "coordinator serving %d nodes on %s (%s)",
            len(cfg.nodes),
            server.address,
            "PLAINTEXT" if insecure else "mTLS",
        )
        serve_party(
            server, metrics.registry, metrics_config.listen, audit.log.checkpoint, args.port_file
        )
    return EXIT_OK


def _status(args: argparse.Namespace, role: str) -> int:
    from fedmatch.ops.status import EXIT_UNHEALTHY, coordinator_status, node_status

    insecure = _warn_insecure(args, f"{role} status check")
    check = node_status if role == "node" else coordinator_status
    status = check(args.config, args.address, insecure, args.timeout)
    print(json.dumps(status.as_json()))
    return EXIT_OK if status.healthy else EXIT_UNHEALTHY


def _leaf_identity(security: Security) -> Any:
    """The identity this party's own certificate names (checked against the federation
    root and CRLs, as its peers will check it)."""
    try:
        chain = security.chain_pem()
    except OSError as exc:
        raise ConfigError(
            f"tls.chain {security.files.chain} could not be read ({exc.strerror})"
        ) from None
    try:
        return security.verify_chain(chain)
    except FedmatchError as exc:
        raise ConfigError(f"tls.chain {security.files.chain}: {exc}") from None


def _check_own_certificate(
    security: Security, role: str, state: str | None, signer: NoteSigner | None
) -> Any:
    """Refuse at start a certificate this party's peers would refuse at every call: another
    role, another member state, expired or revoked, or binding another signing key than the
    one this party signs with (its audit log's, or an operator's request key)."""
    identity = _leaf_identity(security)
    if identity.role != role or identity.member_state != state:
        raise ConfigError(
            f"tls.chain names {identity.dns}, not the {role} of {state or 'the federation'}"
        )
    if signer is not None and identity.signing_key != signer.public_key_bytes():
        raise ConfigError(
            f"tls.chain {security.files.chain} binds another signing key than {signer.name}'s "
            "(issue the certificate with `fedmatch pki issue --signing-key` of that key)"
        )
    return identity


def _audit(args: argparse.Namespace) -> int:
    if args.audit_command == "keygen":
        from fedmatch.audit.party import create_party_key

        vkey = create_party_key(args.out, args.name)
        print(f"wrote {args.out}; verifier key (give it to those who verify you):", file=sys.stderr)
        print(vkey)
        return EXIT_OK
    from fedmatch.audit.auditor import load_auditor_config, run_audit, run_stats

    insecure = _warn_insecure(args, "auditor")
    config = load_auditor_config(args.config, insecure)
    if args.audit_command == "watch":
        from fedmatch.audit.watch import watch_until_signalled

        ok = watch_until_signalled(config, args.interval, args.runs)
        return EXIT_OK if ok else EXIT_AUDIT_FAILED
    if args.audit_command == "stats":
        print(json.dumps(run_stats(config)))
        return EXIT_OK
    result = run_audit(config)
    print(result.report)
    if args.report:
        args.report.write_text(result.report + "\n")
    print(json.dumps(result.summary))
    return EXIT_OK if result.ok else EXIT_AUDIT_FAILED


# Exit codes of the face quality gates: one per reason, so that scripts can tell them apart.
QUALITY_EXIT = {
    "unreadable_image": 10,
    "no_face": 11,
    "several_faces": 12,
    "face_too_small": 13,
    "too_blurred": 14,
    "too_dark": 15,
}
EXIT_SOME_REJECTED = 5
# `audit verify` found a problem: the report names the party and the evidence.
EXIT_AUDIT_FAILED = 6
_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _pick(value: str | None) -> int | Literal["largest"] | None:
    if value is None:
        return None
    if value == "largest":
        return "largest"
    try:
        return int(value)
    except ValueError:
        raise InvalidInput("--pick takes a face index (0 = best) or 'largest'") from None


def _flag_row(args: argparse.Namespace, **extra: str) -> dict[str, Any]:
    needed = ("category", "event_date", "event_place")
    missing = [n for n in needed if not getattr(args, n)]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise InvalidInput(f"enrolment without a manifest needs {flags}")
    return {
        "category": args.category, "event_date": args.event_date,
        "event_place": args.event_place, "capture_date": args.capture_date,
        "sex": args.sex, "birth_date": args.birth_date,
        "birth_date_estimated": "1" if args.birth_date_estimated else "", **extra,
    }  # fmt: skip


def _enrol_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The records to enrol as manifest-like rows with a ``row`` or an ``image`` source."""
    if args.manifest:
        with args.manifest.open(newline="") as fh:
            rows: list[dict[str, Any]] = list(csv.DictReader(fh))
        base = args.images or args.manifest.parent
        for row in rows:
            if row.get("image"):
                row["image"] = str(base / row["image"])
        return rows
    if args.template:
        if not args.reference:
            raise InvalidInput("single-record enrolment needs --reference")
        return [_flag_row(args, reference=args.reference, row="0")]
    if args.image:
        reference = args.reference or args.image.stem
        return [_flag_row(args, reference=reference, image=str(args.image))]
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in _PHOTO_SUFFIXES)
    if not photos:
        raise InvalidInput(f"no photos in {args.images.name}")
    return [_flag_row(args, reference=p.stem, image=str(p)) for p in photos]


def _records(
    args: argparse.Namespace, rows: list[dict[str, Any]], templates: int
) -> list[tuple[EnrolmentRecord, int | Path]]:
    """Every record with its template row or photo, all validated before anything is sent."""
    from fedmatch.requester.enrolment import EnrolmentRecord

    out: list[tuple[EnrolmentRecord, int | Path]] = []
    for n, row in enumerate(rows, 1):
        try:
            source: int | Path
            if row.get("image"):
                source = Path(row["image"])
            else:
                source = int(row["row"])
                if not 0 <= source < templates:
                    raise IndexError(source)
            event = parse_date(row["event_date"], "event_date")
            captured = row.get("capture_date")
            record = EnrolmentRecord(
                reference=row["reference"],
                category=Category.parse(row["category"]),
                event_date=event,
                event_place=row["event_place"],
                capture_date=parse_date(captured, "capture_date") if captured else event,
                sex=Sex.parse(row.get("sex") or ""),
                operator_id=args.operator,
                **_birth(row),
            )
        except (KeyError, ValueError, IndexError, TypeError):
            raise InvalidInput(
                f"manifest row {n} is incomplete or names a missing template row"
            ) from None
        except FedmatchError as exc:
            raise InvalidInput(f"manifest row {n}: {exc}") from None
        out.append((record, source))
    return out


def _birth(row: dict[str, Any]) -> dict[str, Any]:
    """A row's birth date, checked against the minimum age before anything is sent."""
    from node.retention import check_enrolment_age

    raw = row.get("birth_date")
    born = parse_date(raw, "birth_date") if raw else None
    estimated = (row.get("birth_date_estimated") or "").strip().lower() in ("1", "true", "yes")
    captured = row.get("capture_date") or row["event_date"]
    check_enrolment_age(born, estimated, parse_date(captured, "capture_date"))
    return {"birth_date": born, "birth_date_estimated": estimated}


def _progress(done: int, total: int, rejected: int) -> None:
    if total > 1:
        print(f"\r[{done}/{total}] enrolled {done - rejected}, rejected {rejected}",
              end="" if done < total else "\n", file=sys.stderr, flush=True)  # fmt: skip


def _enroll(args: argparse.Namespace) -> int:
    import grpc
    import numpy as np

    from fedmatch.biometrics.errors import FaceQualityError
    from fedmatch.cli.templates import read_templates
    from fedmatch.requester.enrolment import NodeEnroller

    insecure = _warn_insecure(args, "enrolment")
    security, _ = _operator(args.config, insecure, args.state, signs=False)
    matrix = read_templates(args.template) if args.template else np.zeros((0, 1), np.float32)
    records = _records(args, _enrol_rows(args), matrix.shape[0])
    photos = any(isinstance(src, Path) for _, src in records)
    pipeline = _pipeline(args) if photos else None
    model_id = pipeline.model_id if pipeline is not None else args.model_id
    pick = _pick(args.pick)
    purpose = Purpose.parse(args.purpose)
    size, done, rejects = 0, 0, []
    credentials = security.channel_credentials() if security is not None else None
    with NodeEnroller(
        args.node, model_id, credentials=credentials, member_state=args.state
    ) as node:
        for record, source in records:
            if isinstance(source, Path):
                assert pipeline is not None
                try:
                    template = pipeline.template(source, pick=pick)
                except FaceQualityError as exc:
                    if len(records) == 1:
                        print(f"fedmatch: {exc.code}: {exc}", file=sys.stderr)
                        return QUALITY_EXIT.get(exc.code, EXIT_INPUT)
                    rejects.append({"file": source.name, "reason": exc.code})
                    done += 1
                    _progress(done, len(records), len(rejects))
                    continue
            else:
                template = matrix[source]
            header = _new_header(
                args.state, purpose, args.legal_basis, args.case_reference, args.unit, args.operator
            )
            try:
                size = node.enroll(header, record, template)
            except grpc.RpcError as err:
                code = err.code()
                print(
                    f"fedmatch: record {record.reference}: {code.name}: {err.details()} "
                    f"({done - len(rejects)} of {len(records)} enrolled before it)",
                    file=sys.stderr,
                )
                return EXIT_UNREACHABLE if code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED
            done += 1
            _progress(done, len(records), len(rejects))
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    print(json.dumps({
        "enrolled": done - len(rejects), "rejected": len(rejects), "reject_reasons": reasons,
        "rejected_files": rejects, "register_size": size, "model_id": model_id,
    }))  # fmt: skip
    return EXIT_SOME_REJECTED if rejects else EXIT_OK


def _pipeline(args: argparse.Namespace) -> FacePipeline:
    from fedmatch.biometrics.pipeline import FacePipeline

    return FacePipeline.for_model(getattr(args, "model", None))


def _new_header(
    state: str, purpose: Purpose, legal_basis: str, case: str, unit: str, operator: str
) -> QueryHeader:
    import secrets

    return QueryHeader(secrets.token_hex(16), state, purpose, legal_basis, case, unit, operator)


def _operator(
    path: Path | None, insecure: bool, state: str, signs: bool
) -> tuple[Security | None, NoteSigner | None]:
    """An operator workstation's TOML file: ``[tls]`` (its mTLS certificate, an operator
    certificate of ``state``) and, when it ``signs`` requests, ``[operator] signing_key``
    (the Ed25519 key bound into that certificate). Relative paths are relative to the file.
    Checked here, before anything is sent: a wrong certificate would be refused remotely."""
    from fedmatch.audit.note import NoteSigner
    from fedmatch.config import read_toml
    from fedmatch.protocol.transport import load_security

    if path is None:
        if not insecure:
            raise InvalidInput("--config (the operator's [tls] table) is required")
        return None, None
    security = load_security(path, insecure)
    table = read_toml(path).get("operator", {})
    if not isinstance(table, dict):
        raise ConfigError("[operator] must be a table")
    unknown = set(table) - {"signing_key"}
    if unknown:
        raise ConfigError(f"operator.{sorted(unknown)[0]}: unknown key")
    signer = None
    if signs:
        raw = table.get("signing_key")
        if not isinstance(raw, str) or not raw:
            raise ConfigError("operator.signing_key is required (the key that signs requests)")
        key_path = Path(raw) if Path(raw).is_absolute() else path.parent / raw
        signer = NoteSigner.load(key_path)
    _check_own_certificate(security, "operator", state, signer)
    return security, signer


def _lookup(args: argparse.Namespace) -> int:
    from fedmatch.cli.templates import read_templates
    from fedmatch.protocol.statement import RequestSigner
    from fedmatch.requester import Requester
    from fedmatch.requester.keyfile import load_keys

    insecure = _warn_insecure(args, "lookup")
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
    security, signer = _operator(args.config, insecure, args.state, signs=True)
    assert security is not None and signer is not None
    if args.image:
        from fedmatch.biometrics.errors import FaceQualityError

        try:
            probe = _pipeline(args).template(args.image, pick=_pick(args.pick))
        except FaceQualityError as exc:
            print(f"fedmatch: {exc.code}: {exc}", file=sys.stderr)
            return QUALITY_EXIT.get(exc.code, EXIT_INPUT)
        templates = probe.reshape(1, -1)
    else:
        templates = read_templates(args.template)
    if templates.shape[0] != 1:
        raise InvalidInput("one probe per lookup: the template file holds several")
    keys = load_keys(args.keys) if args.keys else None
    app_date = args.application_date or dt.date.today().isoformat()
    parse_date(app_date, "--application-date")
    requester = Requester(
        args.coordinator,
        args.state,
        keys,
        args.unit,
        args.operator,
        RequestSigner(signer, security.chain_pem()),
        security.channel_credentials(),
    )
    from fedmatch.protocol.casefile import load_case_file

    case_inputs = load_case_file(args.case_file) if args.case_file else None
    try:
        header = requester.header(
            Purpose.parse(args.purpose), args.legal_basis, args.case_reference
        )
        report = requester.lookup(templates[0], header, timeout=args.timeout)
        # Details of candidate hits are asked for only once people have verified them
        # (`fedmatch verify-hit`, then `fedmatch resolve` with their signed verdicts).
        resolved = None
        if not report.matches:
            resolved = requester.resolve(
                report, app_date, (), timeout=args.timeout, case_inputs=case_inputs
            )
        elif args.candidates_out is not None:
            from fedmatch.cli.verify import write_candidates

            write_candidates(report, args.candidates_out)
    finally:
        requester.close()
    from fedmatch.requester.report import lookup_summary

    print(json.dumps(lookup_summary(report, resolved)))
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from fedmatch.evaluation import evaluate

    pipeline = _pipeline(args)
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


def _pki(args: argparse.Namespace) -> int:
    from cryptography import x509

    from fedmatch.audit.note import NoteSigner
    from fedmatch.pki import (
        Identity,
        create_intermediate,
        create_root,
        identity_from_certificate,
        issue,
        publish_crl,
        revoke,
        signing_key_name,
    )
    from fedmatch.pki.ca import ROOT

    def described(identity: Identity) -> dict[str, Any]:
        # The serial is a string: a 159-bit integer loses digits in most JSON readers.
        return {
            "dns": identity.dns, "role": identity.role, "scope": identity.scope,
            "member_state": identity.member_state, "instance": identity.instance,
            "signing_key": identity.signing_key.hex(), "serial": str(identity.serial),
            "not_after": identity.not_after.isoformat(),
        }  # fmt: skip

    # A CA starts with an empty CRL, so that every party can list it in [tls] crls from the
    # start; `pki revoke` extends it (and parties re-read it when it changes).
    if args.pki_command == "init":
        root_pem = create_root(args.dir, args.days)
        print(f"wrote {root_pem} and {publish_crl(args.dir, ROOT)}")
        return EXIT_OK
    if args.pki_command == "intermediate":
        out = args.out or args.dir
        ca_pem = create_intermediate(args.dir, args.scope, out, args.days)
        print(f"wrote {ca_pem} and {publish_crl(out, args.scope)}")
        return EXIT_OK
    if args.pki_command == "issue":
        if not args.signing_key.exists():
            name = signing_key_name(args.role, args.scope, args.instance)
            args.signing_key.parent.mkdir(parents=True, exist_ok=True)
            NoteSigner.generate(name).save(args.signing_key)
            print(f"created signing key {args.signing_key} ({name})", file=sys.stderr)
        files = issue(
            args.dir, args.role, args.scope, args.instance, args.signing_key, args.out, args.days
        )
        leaf = x509.load_pem_x509_certificates(files.chain.read_bytes())[0]
        paths = {"key": str(files.key), "chain": str(files.chain), "root": str(files.root)}
        print(json.dumps({**described(identity_from_certificate(leaf)), **paths}))
        return EXIT_OK
    if args.pki_command == "revoke":
        text = args.serial.strip().lower()
        try:
            serial = int(text[2:], 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise InvalidInput("--serial must be a decimal or 0x-prefixed hex number") from None
        crl = revoke(args.dir, args.scope, serial)
        print(json.dumps({"revoked": str(serial), "crl": str(crl)}))
        return EXIT_OK
    try:
        data = args.cert.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"--cert {args.cert} could not be read ({exc.strerror})") from None
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        raise InvalidInput(f"--cert {args.cert} is not a PEM certificate") from None
    print(json.dumps(described(identity_from_certificate(cert))))
    return EXIT_OK
