"""The ``fedmatch`` command.

Subcommands: ``node serve|seed``, ``coordinator serve``, ``keys generate``, ``enroll``,
``lookup``, ``demo``, ``bench search``. Every subcommand has ``--help``. This is the only
place that turns errors into exit codes: 0 success, 2 usage or input error, 3 refused by a
peer, 4 unreachable peer, 1 anything else.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fedmatch.domain import Category, Purpose, QueryHeader, Sex, parse_date
from fedmatch.errors import ConfigError, FedmatchError, InvalidInput

if TYPE_CHECKING:
    from fedmatch.biometrics.pipeline import FacePipeline
    from fedmatch.enrolment import EnrolmentRecord

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

log = logging.getLogger("fedmatch")


def _header_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", required=True, help="requesting member state (ISO 3166-1 alpha-2)")
    p.add_argument(
        "--purpose",
        default=Purpose.ASYLUM_DUBLIN.value,
        choices=[x.value for x in Purpose],
        help="purpose of the request",
    )
    p.add_argument(
        "--legal-basis", required=True, help="legal basis, e.g. 'Reg. 2024/1358 Art. 15'"
    )
    p.add_argument("--case-reference", required=True, help="case or file number")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmatch", description="Federated, encrypted biometric matching for member states."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run or prepare a member-state node")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    serve = node_sub.add_parser("serve", help="serve a node's register over gRPC")
    serve.add_argument("--config", type=Path, required=True, help="node TOML config")
    serve.add_argument("--listen", help="override [node].listen, e.g. 127.0.0.1:0")
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    seed = node_sub.add_parser("seed", help="add synthetic records to a node's register")
    seed.add_argument("--config", type=Path, required=True, help="node TOML config")
    seed.add_argument("--count", type=int, required=True, help="number of records")
    seed.add_argument("--seed", type=int, default=0, help="random seed")

    coord = sub.add_parser("coordinator", help="run the coordinator")
    coord_sub = coord.add_subparsers(dest="coord_command", required=True, metavar="ACTION")
    cserve = coord_sub.add_parser("serve", help="serve the coordinator over gRPC")
    cserve.add_argument("--config", type=Path, required=True, help="coordinator TOML config")
    cserve.add_argument("--listen", help="override [coordinator].listen")
    cserve.add_argument("--port-file", type=Path, help="write the bound port here once serving")

    keys = sub.add_parser("keys", help="requester key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kgen = keys_sub.add_parser("generate", help="generate a requester key pair (file mode 0600)")
    kgen.add_argument("--out", type=Path, required=True, help="key file to write")

    enroll = sub.add_parser("enroll", help="enrol records at a node (your own state's node)")
    enroll.add_argument("--node", required=True, help="node address host:port")
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
    enroll.add_argument("--operator", default="", help="operator id (recorded and logged)")
    enroll.add_argument("--unit", default="", help="enrolling unit (logged)")

    lookup = sub.add_parser("lookup", help="encrypted lookup of one probe across the federation")
    lookup.add_argument("--coordinator", required=True, help="coordinator address host:port")
    _header_args(lookup)
    lookup.add_argument("--unit", required=True, help="requesting unit (logged)")
    lookup.add_argument(
        "--operator", required=True, help="operator id of the person asking (logged)"
    )
    lookup.add_argument(
        "--verified-by",
        default="",
        help="comma-separated ids of the people who verified the candidate hits; without it "
        "the lookup stops at the candidates (no details are requested)",
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
    lookup.add_argument("--timeout", type=float, default=60.0, help="seconds")

    demo = sub.add_parser("demo", help="run a 3-node federation end to end on this machine")
    demo.add_argument("--records", type=int, default=20_000, help="synthetic records per node")
    demo.add_argument("--workdir", type=Path, help="keep the registers and configs here")
    demo.add_argument(
        "--photos", type=Path, help="a folder of photos with identities.csv (file,identity)"
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
    astats = audit_sub.add_parser(
        "stats", help="publishable aggregates from the verified logs (no individual data)"
    )
    astats.add_argument("--config", type=Path, required=True, help="auditor TOML file")

    bench = sub.add_parser("bench", help="benchmarks (JSON on the last line)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bsearch = bench_sub.add_parser("search", help="encrypted 1:N search vs a numpy baseline")
    bsearch.add_argument("--records", type=int, default=100_000, help="register size")
    bsearch.add_argument("--dim", type=int, default=128, help="template dimension")
    bsearch.add_argument(
        "--queries", type=int, default=10, help="timed queries (after one warm-up)"
    )
    bsearch.add_argument(
        "--threads", type=int, default=0, help="search worker processes (0: one per core)"
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO
        if args.verbose or args.command in ("node", "coordinator")
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
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


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "node":
        return _node(args)
    if args.command == "coordinator":
        return _coordinator(args)
    if args.command == "keys":
        from fedmatch.he.keys import RequesterKeys
        from fedmatch.keyfile import save_keys

        save_keys(RequesterKeys.generate(), args.out)
        print(f"wrote {args.out}")
        return EXIT_OK
    if args.command == "audit":
        return _audit(args)
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "lookup":
        return _lookup(args)
    if args.command == "demo":
        from fedmatch.demo import run_demo

        return run_demo(records=args.records, workdir=args.workdir, photos=args.photos)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "bench" and args.bench_command == "faces":
        from fedmatch.biometrics.bench import bench_faces

        print(json.dumps(bench_faces(args.photos, args.images)))
        return EXIT_OK
    if args.command == "bench" and args.bench_command == "audit":
        from fedmatch.audit.bench import bench_audit

        print(json.dumps(bench_audit(args.appends, args.threads, args.entries, args.workdir)))
        return EXIT_OK
    if args.command == "bench":
        from fedmatch.bench import bench_search

        print(json.dumps(bench_search(args.records, args.dim, args.queries, args.threads)))
        return EXIT_OK
    raise AssertionError(args.command)


def _node(args: argparse.Namespace) -> int:
    from node.config import load_node_config
    from node.store import RecordStore

    cfg = load_node_config(args.config, {"listen": getattr(args, "listen", None)})
    if args.node_command == "seed":
        from fedmatch.seed import seed_register

        seed_register(
            cfg.database,
            cfg.member_state,
            args.count,
            args.seed,
            cfg.dimension,
            cfg.model_id,
            dt.date.today(),
        )
        print(f"{cfg.member_state}: added {args.count} synthetic records to {cfg.database}")
        return EXIT_OK
    from fedmatch.audit.party import PartyAudit, load_audit_config, node_origin
    from fedmatch.serving import serve_until_signalled, write_port_file
    from node.service import NodeService
    from node.servicer import serve_node

    audit = PartyAudit(load_audit_config(args.config), node_origin(cfg.member_state))
    store = RecordStore(cfg.database, cfg.member_state, cfg.dimension, cfg.model_id)
    service = NodeService(cfg, store, audit)
    server = serve_node(service)
    log.info(
        "node %s serving %d records on %s", cfg.member_state, service.record_count(), server.address
    )
    if args.port_file:
        write_port_file(args.port_file, server.port)
    serve_until_signalled(server)
    service.close()
    store.close()
    audit.close()
    return EXIT_OK


def _coordinator(args: argparse.Namespace) -> int:
    from coordinator.config import load_coordinator_config
    from coordinator.service import CoordinatorService
    from coordinator.servicer import serve_coordinator
    from fedmatch.audit.party import COORDINATOR_ORIGIN, PartyAudit, load_audit_config
    from fedmatch.serving import serve_until_signalled, write_port_file

    cfg = load_coordinator_config(args.config, {"listen": args.listen})
    audit = PartyAudit(load_audit_config(args.config), COORDINATOR_ORIGIN)
    service = CoordinatorService(cfg, audit)
    server = serve_coordinator(service)
    log.info("coordinator serving %d nodes on %s", len(cfg.nodes), server.address)
    if args.port_file:
        write_port_file(args.port_file, server.port)
    serve_until_signalled(server)
    service.close()
    audit.close()
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    if args.audit_command == "keygen":
        from fedmatch.audit.party import create_party_key

        vkey = create_party_key(args.out, args.name)
        print(f"wrote {args.out}; verifier key (give it to those who verify you):", file=sys.stderr)
        print(vkey)
        return EXIT_OK
    from fedmatch.audit.auditor import load_auditor_config, run_audit, run_stats

    config = load_auditor_config(args.config)
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
        "sex": args.sex, **extra,
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
    from fedmatch.enrolment import EnrolmentRecord

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
            )
        except (KeyError, ValueError, IndexError, TypeError):
            raise InvalidInput(
                f"manifest row {n} is incomplete or names a missing template row"
            ) from None
        except FedmatchError as exc:
            raise InvalidInput(f"manifest row {n}: {exc}") from None
        out.append((record, source))
    return out


def _progress(done: int, total: int, rejected: int) -> None:
    if total > 1:
        print(f"\r[{done}/{total}] enrolled {done - rejected}, rejected {rejected}",
              end="" if done < total else "\n", file=sys.stderr, flush=True)  # fmt: skip


def _enroll(args: argparse.Namespace) -> int:
    import grpc
    import numpy as np

    from fedmatch.biometrics.errors import FaceQualityError
    from fedmatch.enrolment import NodeEnroller
    from fedmatch.templates import read_templates

    matrix = read_templates(args.template) if args.template else np.zeros((0, 1), np.float32)
    records = _records(args, _enrol_rows(args), matrix.shape[0])
    photos = any(isinstance(src, Path) for _, src in records)
    pipeline = _pipeline(args) if photos else None
    model_id = pipeline.model_id if pipeline is not None else args.model_id
    pick = _pick(args.pick)
    purpose = Purpose.parse(args.purpose)
    size, done, rejects = 0, 0, []
    with NodeEnroller(args.node, model_id) as node:
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


def _lookup(args: argparse.Namespace) -> int:
    from fedmatch.keyfile import load_keys
    from fedmatch.requester import Requester
    from fedmatch.templates import read_templates

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
    requester = Requester(args.coordinator, args.state, keys, args.unit, args.operator)
    verified_by = [v.strip() for v in args.verified_by.split(",") if v.strip()]
    try:
        header = requester.header(
            Purpose.parse(args.purpose), args.legal_basis, args.case_reference
        )
        report = requester.lookup(templates[0], header, timeout=args.timeout)
        # Details of candidate hits are asked for only once people have verified them.
        resolved = None
        if verified_by or not report.matches:
            resolved = requester.resolve(report, app_date, verified_by, timeout=args.timeout)
    finally:
        requester.close()
    from fedmatch.report import lookup_summary

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
