"""The one factory for gRPC servers and channels.

Message-size bounds come from :mod:`fedmatch.limits` (measured object sizes), never
"unlimited". Servers bind explicit addresses (port 0 for tests and the demo) and report the
port actually bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc

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

    def stop(self, grace: float = 2.0) -> None:
        self.server.stop(grace).wait()


def start_server(
    register: Callable[[grpc.Server], None], listen: str, limits: ServerLimits
) -> RunningServer:
    """Create, register servicers on, bind and start a server; returns the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.max_workers),
        options=[
            ("grpc.max_receive_message_length", limits.max_receive_bytes),
            ("grpc.max_send_message_length", limits.max_send_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    register(server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise ConfigError(f"could not bind {listen}")
    host = listen.rsplit(":", 1)[0]
    server.start()
    return RunningServer(server=server, port=port, address=f"{host}:{port}")


def make_channel(address: str, max_receive_bytes: int, max_send_bytes: int) -> grpc.Channel:
    """A channel with explicit size bounds and no transparent retries (queries are not
    idempotent at a node: a reused query id is refused)."""
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", max_send_bytes),
            ("grpc.enable_retries", 0),
        ],
    )
