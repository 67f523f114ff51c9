"""``fedmatch bench``: the benchmark commands, each printing one JSON line with the fastest
plain baseline on the same data in the same run (:mod:`fedmatch.bench`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_INPUT, EXIT_OK

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register ``bench`` and its benchmarks on the ``fedmatch`` subcommands."""
    bench = sub.add_parser("bench", help="benchmarks (JSON on the last line)")
    bench.set_defaults(run=run)
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
    _param_set_argument(bsearch)
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
    _param_set_argument(bfed)
    bflood = bench_sub.add_parser(
        "flood",
        help="honest lookups while a hostile state's flooder processes attack (issue 21)",
    )
    bflood.add_argument("--nodes", type=int, default=3, help="node processes (K, at most 27)")
    bflood.add_argument("--records-per-node", type=int, default=20_000, help="register size")
    bflood.add_argument(
        "--quiet-seconds", type=float, default=60.0, help="honest lookups alone, for this long"
    )
    bflood.add_argument(
        "--flood-seconds", type=float, default=60.0, help="honest lookups under the flood"
    )
    bflood.add_argument("--flooders", type=int, default=2, help="flooder processes")
    bflood.add_argument(
        "--honest-interval", type=float, default=1.0, help="seconds between honest lookups"
    )
    bflood.add_argument(
        "--lookup-threads", type=int, default=12, help="the hostile state's concurrent lookups"
    )
    bflood.add_argument(
        "--registration-threads",
        type=int,
        default=4,
        help="the hostile state's concurrent key registrations",
    )
    bflood.add_argument(
        "--flooder-nice",
        type=int,
        default=0,
        help="the flooders' niceness, 0-19 (here the attacker's CPU is the servers')",
    )
    bflood.add_argument("--dim", type=int, default=128, help="template dimension")
    bflood.add_argument(
        "--registration-burst",
        type=int,
        default=None,
        help="new key bundles a state may register before the hourly quota (default: the "
        "federation's 10), at every party",
    )
    bflood.add_argument("--workdir", type=Path, help="keep the federation's files here")
    bfaces = bench_sub.add_parser(
        "faces", help="the face path on photos as given: stage times per megapixel band"
    )
    bfaces.add_argument(
        "--photos", type=Path, required=True, help="folder of photos (every image file)"
    )
    bfaces.add_argument(
        "--images",
        type=int,
        help="photos to process, cycling through the folder (default: 200, at least each once)",
    )
    bfaces.add_argument(
        "--enlarge",
        type=int,
        metavar="PX",
        help="resize each photo in memory to PX on the long side first (default: as given)",
    )
    bkernel = bench_sub.add_parser(
        "kernel", help="native product kernel vs SEAL: per block, transfers, engine searches"
    )
    bkernel.add_argument(
        "--records", type=int, default=100_000, help="register size of the searches (0: none)"
    )
    bkernel.add_argument("--queries", type=int, default=5, help="timed searches per engine")
    bkernel.add_argument(
        "--workers", type=int, default=0, help="processes of the sharded engines (0: per core)"
    )
    baudit = bench_sub.add_parser(
        "audit", help="audit log: durable appends/s, inclusion proofs, full verification"
    )
    baudit.add_argument("--appends", type=int, default=20_000, help="durable appends timed")
    baudit.add_argument("--threads", type=int, default=16, help="concurrent appending threads")
    baudit.add_argument(
        "--entries", type=int, default=1_000_000, help="entries of the log proved and verified"
    )
    baudit.add_argument("--workdir", type=Path, help="directory for the temporary logs")


def _param_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--param-set NAME``: the HE parameter set of the bench's nodes and requester keys
    (checked in :func:`run`: the parser does not load the HE library)."""
    parser.add_argument(
        "--param-set",
        default="",
        metavar="NAME",
        help="HE parameter set of the nodes and the requester's keys (default: the default "
        "set, the faster one end to end here; see fedmatch.bench.search)",
    )


def _param_set(args: argparse.Namespace) -> str | None:
    """The bench's parameter set name, or None (after saying why) for an unknown one."""
    from fedmatch.bench.search import DEFAULT_BENCH_PARAM_SET
    from fedmatch.he.params import PARAM_SETS

    name = str(args.param_set) or DEFAULT_BENCH_PARAM_SET
    if name not in PARAM_SETS:
        known = ", ".join(sorted(PARAM_SETS))
        print(f"error: --param-set must be one of {known}", file=sys.stderr)
        return None
    return name


def run(args: argparse.Namespace) -> int:
    if args.bench_command == "faces":
        from fedmatch.bench.faces import bench_faces

        print(json.dumps(bench_faces(args.photos, args.images, enlarge_px=args.enlarge)))
        return EXIT_OK
    if args.bench_command == "kernel":
        from fedmatch.bench.kernel import bench_kernel

        print(json.dumps(bench_kernel(args.records, args.queries, args.workers)))
        return EXIT_OK
    if args.bench_command == "audit":
        from fedmatch.bench.audit import bench_audit

        print(json.dumps(bench_audit(args.appends, args.threads, args.entries, args.workdir)))
        return EXIT_OK
    if args.bench_command == "federation":
        from fedmatch.bench.federation import bench_federation

        param_set = _param_set(args)
        if param_set is None:
            return EXIT_INPUT
        result = bench_federation(
            args.nodes, args.records_per_node, args.queries, args.concurrency, args.dim,
            search_workers=args.search_workers, workdir=args.workdir,
            param_set=param_set,
        )  # fmt: skip
        print(json.dumps(result))
        return EXIT_OK
    if args.bench_command == "flood":
        from fedmatch.bench.flood import bench_flood

        print(json.dumps(bench_flood(
            args.nodes, args.records_per_node, args.quiet_seconds, args.flood_seconds,
            args.flooders, args.honest_interval, args.lookup_threads,
            args.registration_threads, args.flooder_nice, args.dim,
            registration_burst=args.registration_burst, workdir=args.workdir,
        )))  # fmt: skip
        return EXIT_OK
    from fedmatch.bench.search import bench_search

    param_set = _param_set(args)
    if param_set is None:
        return EXIT_INPUT
    print(json.dumps(bench_search(
        args.records, args.dim, args.queries, args.threads,
        engine=args.engine, ray_address=args.ray_address, param_set=param_set,
    )))  # fmt: skip
    return EXIT_OK
