"""Is a party up? What container health checks and probes run (``fedmatch health``).

A node or a coordinator is asked over the standard gRPC health service
(``grpc.health.v1.Health/Check``), over mutual TLS with the party's own certificate (every
federation member may ask; see :data:`fedmatch.grpcutil.auth.AUDIT_AND_HEALTH_RULES`), at
the address its config listens on unless told otherwise. The server's certificate must name
the party itself: a health check that any TLS server could pass would hide a mix-up of
certificates until the first real call.

An auditor serves nothing: its ``fedmatch audit watch`` loop records each run in a status
file (:mod:`fedmatch.audit.watch`), and it is healthy while that loop keeps completing runs.
Whether the last audit *found* a problem is reported, not counted as ill health: restarting
an auditor never fixes a party's log, and a restart loop would bury the alarm.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmatch.config import read_toml
from fedmatch.errors import ConfigError, InvalidInput

__all__ = [
    "HealthResult",
    "auditor_health",
    "health",
    "listen_target",
    "print_result",
    "server_health",
]

# A health response is a few bytes; nothing bigger is accepted or sent.
_HEALTH_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    detail: dict[str, Any]


def listen_target(listen: str) -> str:
    """The address to dial for a server listening on ``listen``: a wildcard host is reached
    on loopback (the check runs beside the server, in its container or pod)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) == 0:
        raise InvalidInput(f"listen address {listen!r} has no fixed port: give --address")
    if host in ("", "0.0.0.0"):  # noqa: S104 - the wildcard is what we replace, not bind
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def _party_of(config: Path) -> str:
    tables = read_toml(config)
    # An auditor's file also has [coordinator] (the party it audits): look for it first.
    for role in ("auditor", "node", "coordinator"):
        if role in tables:
            return role
    raise ConfigError(f"{config} has no [node], [coordinator] or [auditor] table")


def _listen_of(config: Path, role: str) -> str:
    if role == "node":
        from node.config import load_node_config

        return load_node_config(config).listen
    from coordinator.config import load_coordinator_config

    return load_coordinator_config(config).listen


def server_health(
    config: Path,
    address: str | None = None,
    server_name: str | None = None,
    insecure: bool = False,
    timeout: float = 5.0,
    service: str = "",
) -> HealthResult:
    """Ask the node or coordinator that ``config`` describes for its health; an unreachable
    server raises :class:`grpc.RpcError` (the CLI maps it to its exit code)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from fedmatch.grpcutil.server import make_channel
    from fedmatch.protocol.transport import load_security

    role = _party_of(config)
    if role == "auditor":
        raise InvalidInput("an auditor serves nothing to ask: see auditor_health")
    target = address or listen_target(_listen_of(config, role))
    security = load_security(config, insecure)
    credentials = security.channel_credentials()
    name = None
    if credentials is not None:
        # By default the server must present this party's own name (it checks itself).
        name = server_name or security.verify_chain(security.chain_pem()).dns
    channel = make_channel(target, _HEALTH_MESSAGE_BYTES, _HEALTH_MESSAGE_BYTES, credentials, name)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    detail = {"party": role, "address": target, "server_name": name, "status": status}
    return HealthResult(serving, detail)


def auditor_health(config: Path, max_age: float | None = None) -> HealthResult:
    """Healthy while the ``audit watch`` loop of the auditor ``config`` keeps completing
    runs: the last one finished (or, before any finished, the first one started) at most
    ``max_age`` seconds ago (default: two intervals plus five minutes)."""
    from fedmatch.audit.auditor import load_auditor_config
    from fedmatch.audit.watch import read_status, status_path

    auditor = load_auditor_config(config, insecure=True)  # nothing is dialled here
    path = status_path(auditor.state_dir)
    status = read_status(path)
    if status is None:
        return HealthResult(False, {"party": "auditor", "status": "NO_WATCH_STATUS"})
    interval = float(status.get("interval_seconds", 0.0))
    limit = max_age if max_age is not None else 2 * interval + 300.0
    finished = status.get("finished")
    since = float(finished if finished is not None else status.get("started", 0.0))
    age = time.time() - since
    fresh = age <= limit
    detail = {
        "party": "auditor",
        "status": "WATCHING" if fresh else "STALE",
        "age_seconds": round(age, 1),
        "max_age_seconds": limit,
        "runs": status.get("runs", 0),
        "last_ok": status.get("ok"),
    }
    return HealthResult(fresh, detail)


def health(
    config: Path,
    address: str | None = None,
    server_name: str | None = None,
    insecure: bool = False,
    timeout: float = 5.0,
    max_age: float | None = None,
) -> HealthResult:
    """The health of whichever party ``config`` describes."""
    if _party_of(config) == "auditor":
        return auditor_health(config, max_age)
    return server_health(config, address, server_name, insecure, timeout)


def print_result(result: HealthResult) -> None:
    print(json.dumps({"healthy": result.healthy, **result.detail}))
