"""``fedmatch coordinator``: serve the coordinator, or check its status."""

from __future__ import annotations

import argparse
import logging
from contextlib import ExitStack
from typing import Any

from fedmatch.cli.common import (
    EXIT_OK,
    check_own_certificate,
    serve_args,
    setup_logging,
    warn_insecure,
)
from fedmatch.cli.health import add_status_parser, run_status

__all__ = ["add_parsers", "run"]

log = logging.getLogger("fedmatch")


def add_parsers(sub: Any) -> None:
    """Register ``coordinator`` and its actions on the ``fedmatch`` subcommands."""
    coord = sub.add_parser("coordinator", help="run the coordinator")
    coord.set_defaults(run=run)
    coord_sub = coord.add_subparsers(dest="coord_command", required=True, metavar="ACTION")
    cserve = coord_sub.add_parser("serve", help="serve the coordinator over gRPC")
    serve_args(cserve, "coordinator", "override [coordinator].listen")
    add_status_parser(coord_sub, "coordinator")


def run(args: argparse.Namespace) -> int:
    from coordinator.casestore import case_store_path
    from coordinator.config import load_coordinator_config
    from coordinator.service import CoordinatorService
    from coordinator.servicer import serve_coordinator
    from fedmatch.audit.party import COORDINATOR_ORIGIN, PartyAudit, load_audit_config
    from fedmatch.fileio import OwnerLock
    from fedmatch.ops.metrics import coordinator_metrics
    from fedmatch.ops.metrics_http import load_metrics_config
    from fedmatch.ops.party_info import register_party_info
    from fedmatch.ops.serving import serve_party
    from fedmatch.protocol.gate import Gate
    from fedmatch.protocol.replay import ReplayGuard
    from fedmatch.protocol.transport import load_security

    if args.coord_command == "status":
        return run_status(args, "coordinator")
    insecure = warn_insecure(args, "coordinator")
    cfg = load_coordinator_config(args.config, {"listen": args.listen})
    audit_config = load_audit_config(args.config)
    security = load_security(args.config, insecure)
    metrics_config = load_metrics_config(args.config)
    setup_logging(args, args.config)
    # Beside the audit directory unless [coordinator] replay_db says where.
    replay = cfg.replay_db or audit_config.directory.parent / "coordinator.replay.sqlite"
    with ExitStack() as stack:
        # One coordinator per audit log and case file: a second one (a copy of the config,
        # another port) is refused here, before it binds a port or writes anything.
        directory = audit_config.directory
        cases = case_store_path(directory)
        stack.enter_context(
            OwnerLock(
                [
                    (directory, f"audit directory {directory.name}", "used"),
                    (cases, f"case store {cases.name}", "used"),
                ],
                "coordinator serve",
            )
        )
        audit = PartyAudit(audit_config, COORDINATOR_ORIGIN)
        stack.callback(audit.close)
        if not insecure:
            check_own_certificate(security, "coordinator", None, audit.signer)
        gate = Gate(security.verify_chain, ReplayGuard(replay))
        stack.callback(gate.close)
        service = CoordinatorService(cfg, audit, gate, security.channel_credentials())
        stack.callback(service.close)
        metrics = coordinator_metrics(service)
        # Build, process and certificate-expiry metrics (deploy/monitoring/ alerts).
        register_party_info(metrics.registry, security.files.chain)
        server = serve_coordinator(service, security, interceptors=[metrics.interceptor])
        log.info(
            "coordinator serving %d nodes on %s (%s)",
            len(cfg.nodes),
            server.address,
            "PLAINTEXT" if insecure else "mTLS",
        )
        _startup_checks(service)
        serve_party(
            server, metrics.registry, metrics_config.listen, audit.log.checkpoint, args.port_file
        )
    return EXIT_OK


def _startup_checks(service: Any) -> None:
    """Every node reachable, with the verifier key the config names for it: a wrong key is
    found here, not at the first lookup. A node not ``ok`` is warned about (it stays in the
    federation; `coordinator status` is unhealthy until it cosigns with its key)."""
    try:
        checks = service.check_nodes()
    except Exception as exc:  # noqa: BLE001 - the coordinator still serves; status says why
        log.warning("node start-up checks failed: %s", type(exc).__name__)
        return
    bad = sorted(s for s, c in checks.items() if not c.ok)
    if bad:
        log.warning(
            "start-up checks: %d of %d nodes not ok: %s",
            len(bad),
            len(checks),
            ", ".join(f"{s} {checks[s].state}" for s in bad),
        )
    else:
        log.info("start-up checks: all %d nodes reachable, keys verified", len(checks))
