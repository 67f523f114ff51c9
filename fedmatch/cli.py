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
from typing import TYPE_CHECKING, Any

from fedmatch.domain import Category, Purpose, QueryHeader, Sex, parse_date
from fedmatch.errors import ConfigError, FedmatchError, InvalidInput

if TYPE_CHECKING:
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
    enroll.add_argument("--template", type=Path, required=True, help=".npy or .json template(s)")
    enroll.add_argument("--model-id", default="sface-2021dec-int8bq", help="model of the template")
    enroll.add_argument(
        "--manifest",
        type=Path,
        help="CSV with reference,category,event_date,event_place,capture_date,sex,row "
        "(row indexes the template matrix); for bulk enrolment",
    )
    enroll.add_argument("--reference", help="origin reference number (single record)")
    enroll.add_argument("--category", choices=[c.value for c in Category])
    enroll.add_argument("--event-date", help="YYYY-MM-DD")
    enroll.add_argument("--event-place")
    enroll.add_argument("--capture-date", help="YYYY-MM-DD (default: event date)")
    enroll.add_argument("--sex", default="", choices=[s.value for s in Sex])
    enroll.add_argument("--operator", default="", help="operator id")

    lookup = sub.add_parser("lookup", help="encrypted lookup of one probe across the federation")
    lookup.add_argument("--coordinator", required=True, help="coordinator address host:port")
    _header_args(lookup)
    lookup.add_argument("--template", type=Path, required=True, help=".npy or .json probe")
    lookup.add_argument("--keys", type=Path, help="key file (default: a fresh key pair)")
    lookup.add_argument("--application-date", help="YYYY-MM-DD of the application (default: today)")
    lookup.add_argument("--timeout", type=float, default=60.0, help="seconds")

    demo = sub.add_parser("demo", help="run a 3-node federation end to end on this machine")
    demo.add_argument("--records", type=int, default=20_000, help="synthetic records per node")
    demo.add_argument("--workdir", type=Path, help="keep the registers and configs here")

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
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "lookup":
        return _lookup(args)
    if args.command == "demo":
        from fedmatch.demo import run_demo

        return run_demo(records=args.records, workdir=args.workdir)
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
    from fedmatch.serving import serve_until_signalled, write_port_file
    from node.service import NodeService
    from node.servicer import serve_node

    store = RecordStore(cfg.database, cfg.member_state, cfg.dimension, cfg.model_id)
    service = NodeService(cfg, store)
    server = serve_node(service)
    log.info(
        "node %s serving %d records on %s", cfg.member_state, service.record_count(), server.address
    )
    if args.port_file:
        write_port_file(args.port_file, server.port)
    serve_until_signalled(server)
    service.close()
    store.close()
    return EXIT_OK


def _coordinator(args: argparse.Namespace) -> int:
    from coordinator.config import load_coordinator_config
    from coordinator.service import CoordinatorService
    from coordinator.servicer import serve_coordinator
    from fedmatch.serving import serve_until_signalled, write_port_file

    cfg = load_coordinator_config(args.config, {"listen": args.listen})
    service = CoordinatorService(cfg)
    server = serve_coordinator(service)
    log.info("coordinator serving %d nodes on %s", len(cfg.nodes), server.address)
    if args.port_file:
        write_port_file(args.port_file, server.port)
    serve_until_signalled(server)
    service.close()
    return EXIT_OK


def _manifest_rows(args: argparse.Namespace, templates: int) -> list[tuple[EnrolmentRecord, int]]:
    """Every record to enrol with its template row, all validated before anything is sent."""
    from fedmatch.enrolment import EnrolmentRecord

    if args.manifest:
        with args.manifest.open(newline="") as fh:
            rows: list[dict[str, Any]] = list(csv.DictReader(fh))
    else:
        needed = ("reference", "category", "event_date", "event_place")
        missing = [n for n in needed if not getattr(args, n)]
        if missing:
            flags = ", ".join("--" + m.replace("_", "-") for m in missing)
            raise InvalidInput(f"single-record enrolment needs {flags}")
        if templates != 1:
            raise InvalidInput("template file holds several templates: use --manifest")
        rows = [{
            "reference": args.reference, "category": args.category,
            "event_date": args.event_date, "event_place": args.event_place,
            "capture_date": args.capture_date, "sex": args.sex, "row": "0",
        }]  # fmt: skip
    out = []
    for n, row in enumerate(rows, 1):
        try:
            index = int(row["row"])
            if not 0 <= index < templates:
                raise IndexError(index)
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
        out.append((record, index))
    return out


def _enroll(args: argparse.Namespace) -> int:
    import grpc

    from fedmatch.enrolment import NodeEnroller
    from fedmatch.templates import read_templates

    templates = read_templates(args.template)
    records = _manifest_rows(args, templates.shape[0])
    purpose = Purpose.parse(args.purpose)
    size, done = 0, 0
    with NodeEnroller(args.node, args.model_id) as node:
        for record, index in records:
            header = _new_header(args.state, purpose, args.legal_basis, args.case_reference)
            try:
                size = node.enroll(header, record, templates[index])
            except grpc.RpcError as err:
                code = err.code()
                print(
                    f"fedmatch: record {record.reference}: {code.name}: {err.details()} "
                    f"({done} of {len(records)} enrolled before it)",
                    file=sys.stderr,
                )
                return EXIT_UNREACHABLE if code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED
            done += 1
    print(json.dumps({"enrolled": done, "register_size": size}))
    return EXIT_OK


def _new_header(state: str, purpose: Purpose, legal_basis: str, case: str) -> QueryHeader:
    import secrets

    return QueryHeader(secrets.token_hex(16), state, purpose, legal_basis, case)


def _lookup(args: argparse.Namespace) -> int:
    from fedmatch.keyfile import load_keys
    from fedmatch.requester import Requester
    from fedmatch.templates import read_templates

    templates = read_templates(args.template)
    if templates.shape[0] != 1:
        raise InvalidInput("one probe per lookup: the template file holds several")
    keys = load_keys(args.keys) if args.keys else None
    app_date = args.application_date or dt.date.today().isoformat()
    parse_date(app_date, "--application-date")
    requester = Requester(args.coordinator, args.state, keys)
    try:
        header = requester.header(
            Purpose.parse(args.purpose), args.legal_basis, args.case_reference
        )
        report = requester.lookup(templates[0], header, timeout=args.timeout)
        resolved = requester.resolve(report, app_date, timeout=args.timeout)
    finally:
        requester.close()
    from fedmatch.report import lookup_summary

    print(json.dumps(lookup_summary(report, resolved)))
    return EXIT_OK
