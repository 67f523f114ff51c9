"""``fedmatch node``: serve a member state's node, seed it with synthetic records, check its
status; the storage actions (:mod:`fedmatch.cli.node_storage`) and the record lifecycle
actions (:mod:`fedmatch.cli.node_lifecycle`) register under the same group."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmatch.cli import node_lifecycle, node_storage
from fedmatch.cli.common import (
    EXIT_OK,
    check_own_certificate,
    serve_args,
    setup_logging,
    warn_insecure,
)
from fedmatch.cli.health import add_status_parser, run_status
from fedmatch.errors import PreconditionFailed

if TYPE_CHECKING:
    from fedmatch.protocol.transport import Security
    from node.config import NodeConfig
    from node.lifecycle import Lifecycle, LifecycleJob
    from node.retention import RetentionPolicy
    from node.service import NodeService

__all__ = ["add_parsers", "run"]

log = logging.getLogger("fedmatch")


def add_parsers(sub: Any) -> None:
    """Register ``node`` and its actions on the ``fedmatch`` subcommands."""
    node = sub.add_parser("node", help="run or prepare a member-state node")
    node.set_defaults(run=run)
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    serve = node_sub.add_parser("serve", help="serve a node's register over gRPC")
    serve_args(serve, "node", "override [node].listen, e.g. 127.0.0.1:0")
    seed = node_sub.add_parser("seed", help="add synthetic records to a node's register")
    seed.add_argument("--config", type=Path, required=True, help="node TOML config")
    seed.add_argument("--count", type=int, required=True, help="number of records")
    seed.add_argument("--seed", type=int, default=0, help="random seed")
    seed.add_argument(
        "--dev",
        action="store_true",
        help="development only: also seed a register that holds real records or is sealed",
    )
    add_status_parser(node_sub, "node")
    node_storage.add_parsers(node_sub)  # storage-key, seal, rotate-key, backup, restore
    node_lifecycle.add_parsers(node_sub)  # mark, unmark, erase, route, inbox, ack


def run(args: argparse.Namespace) -> int:
    from node.config import load_node_config

    if args.node_command == "status":
        return run_status(args, "node")
    if args.node_command in node_storage.COMMANDS:
        return node_storage.run(args)
    if args.node_command in node_lifecycle.COMMANDS:
        return node_lifecycle.run(args)
    # The warning comes first, whatever else fails.
    insecure = args.node_command == "serve" and warn_insecure(args, "node")
    cfg = load_node_config(args.config, {"listen": getattr(args, "listen", None)})
    if args.node_command == "seed":
        return _seed(args, cfg)
    return _serve(args, cfg, insecure)


def _seed(args: argparse.Namespace, cfg: NodeConfig) -> int:
    from fedmatch.audit.party import PartyAudit, load_audit_config, node_origin
    from fedmatch.demo.seed import register_census, seed_logged
    from node.locks import OwnerLock

    # The records added are logged in the node's own log: seeding needs its [audit] table.
    audit_config = load_audit_config(args.config)
    kek = node_storage.node_storage_key(args.config)
    if args.dev:
        log.warning("--dev: seeding even a register of real records or a sealed register")
    name = cfg.database.name
    # The register's only writer meanwhile: refused under a running node.
    with OwnerLock(cfg.database, audit_config.directory, "node seed"):
        if cfg.database.exists():
            census = register_census(cfg.database, cfg.member_state)
            if census.not_synthetic and not args.dev:
                s = "" if census.not_synthetic == 1 else "s"
                raise PreconditionFailed(
                    f"{name} holds {census.not_synthetic} record{s} not added by `node seed`: "
                    "synthetic records are not added to a real register (--dev for a test "
                    "register)"
                )
            if census.sealing_key_id and not args.dev:
                raise PreconditionFailed(
                    f"{name} is sealed (templates encrypted at rest, key id "
                    f"{census.sealing_key_id}), as a production register is: synthetic "
                    "records are only added to a new or clear test register (--dev to seed "
                    "it anyway)"
                )
        # Opened before the register is written: a log that cannot be written refuses here.
        audit = PartyAudit(audit_config, node_origin(cfg.member_state))
        try:
            # Logged with the row ids they get: they reconcile with the log like enrolled
            # records (fedmatch/audit/register.py).
            seed_logged(
                audit.log,
                cfg.database,
                cfg.member_state,
                args.count,
                args.seed,
                cfg.dimension,
                cfg.model_id,
                dt.date.today(),
                kek=kek,
                dev=args.dev,
            )
        finally:
            audit.close()
    print(f"{cfg.member_state}: added {args.count} synthetic records to {cfg.database} (logged)")
    return EXIT_OK


def _serve(args: argparse.Namespace, cfg: NodeConfig, insecure: bool) -> int:
    from fedmatch.audit.party import PartyAudit, load_audit_config, node_origin
    from fedmatch.ops.metrics import node_metrics
    from fedmatch.ops.metrics_http import load_metrics_config
    from fedmatch.ops.party_info import register_party_info
    from fedmatch.ops.serving import serve_party
    from fedmatch.protocol.gate import Gate
    from fedmatch.protocol.replay import ReplayGuard
    from fedmatch.protocol.transport import load_security
    from node.locks import OpenLock, OwnerLock
    from node.policy import load_policy
    from node.retention import load_retention
    from node.service import NodeService
    from node.servicer import serve_node
    from node.store import RecordStore

    # Every table is checked before anything is created.
    audit_config = load_audit_config(args.config)
    security = load_security(args.config, insecure)
    policy = load_policy(args.config)
    retention = load_retention(args.config)
    metrics_config = load_metrics_config(args.config)
    setup_logging(args, args.config)
    with ExitStack() as stack:
        # One writer per register and audit log: a second node (or an offline command that
        # writes) is refused here, before it binds a port or writes anything.
        stack.enter_context(OwnerLock(cfg.database, audit_config.directory, "node serve"))
        # The register's open lock before the audit log: a node started during a restore
        # is refused before it can touch (or create) the log being swapped in.
        stack.enter_context(OpenLock(cfg.database, exclusive=False))
        audit = PartyAudit(audit_config, node_origin(cfg.member_state))
        stack.callback(audit.close)
        if not insecure:
            check_own_certificate(security, "node", cfg.member_state, audit.signer)
        kek = node_storage.node_storage_key(args.config)  # templates at rest ([storage])
        store = RecordStore(cfg.database, cfg.member_state, cfg.dimension, cfg.model_id, kek)
        stack.callback(store.close)
        gate = Gate(security.verify_chain, ReplayGuard(cfg.replay_path))
        stack.callback(gate.close)
        service = NodeService(cfg, store, audit, gate, policy)
        stack.callback(service.close)
        metrics = node_metrics(service)
        # Build, process and certificate-expiry metrics (deploy/monitoring/ alerts).
        register_party_info(metrics.registry, security.files.chain)
        lifecycle, job = _lifecycle(stack, cfg, service, security, retention)
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
            return service.publish_checkpoint()

        serve_party(
            server, metrics.registry, metrics_config.listen, last_checkpoint, args.port_file
        )
    return EXIT_OK


def _lifecycle(
    stack: ExitStack,
    config: NodeConfig,
    service: NodeService,
    security: Security,
    retention: RetentionPolicy,
) -> tuple[Lifecycle, LifecycleJob]:
    """`node serve`'s record lifecycle: inbox and outbox, the relay through the configured
    coordinator, and the erasure job on its own thread (stopped with ``stack``, or earlier
    by the caller: stopping twice is harmless)."""
    from node.inbox import NoticeBox
    from node.lifecycle import Lifecycle, LifecycleJob
    from node.notices import CoordinatorRelay, NoticeSigner

    box = NoticeBox(config.notices_path, config.member_state)
    stack.callback(box.close)
    relay = None
    if config.coordinator:
        sign = NoticeSigner(service.audit.signer, security.chain_pem())
        relay = CoordinatorRelay(config.coordinator, security.channel_credentials(), sign)
        stack.callback(relay.close)
    lifecycle = Lifecycle(service, box, retention, relay=relay)
    job = LifecycleJob(lifecycle, retention.job_interval_seconds).start()
    stack.callback(job.stop)
    return lifecycle, job
