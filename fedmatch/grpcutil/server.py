"""The one factory for gRPC servers and channels.

Message-size bounds come from :mod:`fedmatch.protocol.limits` (measured object sizes), never
"unlimited". Servers bind explicit addresses (port 0 for tests and the demo) and report the
port actually bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer

from fedmatch.errors import ConfigError

__all__ = ["RunningServer", "ServerLimits", "make_channel", "start_server"]

log = logging.getLogger("fedmatch.grpc")


@dataclass(frozen=True)
class ServerLimits:
    max_receive_bytes: int
    max_send_bytes: int
    max_workers: int = 8
    max_concurrent_rpcs: int = 64


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    address: str
    health: HealthServicer | None = None

    def stop(self, grace: float = 2.0) -> None:
        """Graceful stop: report NOT_SERVING, finish calls in flight, refuse new ones."""
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def start_server(
    register: Callable[[grpc.Server], None],
    listen: str,
    limits: ServerLimits,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),  # type: ignore[type-arg]
) -> RunningServer:
    """Create, register servicers on, bind and start a server; returns the bound port.

    ``credentials`` None means plaintext (``--dev-insecure``): warned about at every start.
    Every server also answers the standard gRPC health service."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.max_workers),
        options=[
            ("grpc.max_receive_message_length", limits.max_receive_bytes),
            ("grpc.max_send_message_length", limits.max_send_bytes),
            ("grpc.so_reuseport", 0),
        ],
        interceptors=list(interceptors),
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if credentials is None:
        log.warning(
            "PLAINTEXT gRPC on %s (--dev-insecure): no TLS, no client certificates, no "
            "authorization by role. For development on one machine only.",
            listen,
        )
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise ConfigError(f"could not bind {listen}")
    host = listen.rsplit(":", 1)[0]
    server.start()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, port=port, address=f"{host}:{port}", health=health)


def make_channel(
    address: str,
    max_receive_bytes: int,
    max_send_bytes: int,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel with explicit size bounds and no transparent retries (a retried call is
    answered from the query id, but a retry must be the caller's decision).

    With ``credentials`` (mTLS), ``server_name`` is the DNS name the server's certificate
    must carry, whatever address it is reached at."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", max_send_bytes),
        ("grpc.enable_retries", 0),
    ]
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, credentials, options=options)
