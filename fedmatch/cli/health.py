"""``fedmatch health`` (is a party up?) and the ``status`` action of ``fedmatch node`` and
``fedmatch coordinator`` (is it healthy, with its log verified?). The checks themselves live
in :mod:`fedmatch.ops.health` and :mod:`fedmatch.ops.status`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedmatch.cli.common import EXIT_ERROR, EXIT_OK, insecure_arg, warn_insecure

__all__ = ["add_parsers", "add_status_parser", "run", "run_status"]


def add_parsers(sub: Any) -> None:
    """Register ``health`` on the ``fedmatch`` subcommands."""
    health = sub.add_parser(
        "health", help="is a party up? (gRPC health over its mTLS; an auditor's watch loop)"
    )
    health.set_defaults(run=run)
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
    insecure_arg(health)


def run(args: argparse.Namespace) -> int:
    from fedmatch.ops.health import health, print_result

    insecure = warn_insecure(args, "health check")
    checked = health(
        args.config, args.address, args.server_name, insecure, args.timeout, args.max_age
    )
    print_result(checked)
    return EXIT_OK if checked.healthy else EXIT_ERROR


def add_status_parser(sub: Any, role: str) -> None:
    """Register ``status`` under ``fedmatch node`` or ``fedmatch coordinator``."""
    status = sub.add_parser(
        "status",
        help=f"is the {role} healthy? JSON: server health, log verified against its "
        "checkpoint, sizes, metrics (reads files read-only; exit 7 if unhealthy)",
    )
    status.add_argument("--config", type=Path, required=True, help=f"the {role}'s TOML file")
    status.add_argument("--address", help="host:port of the server (default: its listen)")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    insecure_arg(status)


def run_status(args: argparse.Namespace, role: str) -> int:
    from fedmatch.ops.status import EXIT_UNHEALTHY, coordinator_status, node_status

    insecure = warn_insecure(args, f"{role} status check")
    check = node_status if role == "node" else coordinator_status
    status = check(args.config, args.address, insecure, args.timeout)
    print(json.dumps(status.as_json()))
    return EXIT_OK if status.healthy else EXIT_UNHEALTHY
