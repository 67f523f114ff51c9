"""The ``/metrics`` HTTP listener and its ``[metrics]`` table.

A node's or the coordinator's TOML file may have::

    [metrics]
    listen = "127.0.0.1:9464"   # empty or absent: no listener

(``FEDMATCH_METRICS_LISTEN`` overrides it). The listener is plain HTTP on its own port, apart
from the mTLS gRPC port: Prometheus scrapes it from inside the party's network (deploy/
exposes it as port 9464 named ``metrics``, behind a network policy). It serves only the
party's own registry in the Prometheus text exposition format, whose label values come from
closed sets (see :mod:`fedmatch.grpcutil.metrics` and :mod:`fedmatch.ops.metrics`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from fedmatch.config import load_section
from fedmatch.errors import ConfigError

__all__ = ["MetricsConfig", "MetricsServer", "load_metrics_config", "parse_listen"]

log = logging.getLogger("fedmatch.metrics")


def parse_listen(value: str, key: str = "metrics.listen") -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) as (host, port); port 0 picks a free one."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key} must be host:port, e.g. 127.0.0.1:9464")
    return host, int(port_text)


@dataclass(frozen=True)
class MetricsConfig:
    # host:port of the HTTP listener; empty means no metrics endpoint.
    listen: str = ""

    def __post_init__(self) -> None:
        if self.listen:
            parse_listen(self.listen)

    @property
    def enabled(self) -> bool:
        return bool(self.listen)


def load_metrics_config(
    path: Path | None, overrides: dict[str, Any] | None = None
) -> MetricsConfig:
    return MetricsConfig(
        **load_section(path, "metrics", "FEDMATCH_METRICS_", MetricsConfig, overrides or {})
    )


class MetricsServer:
    """A running listener; :meth:`stop` closes its socket and joins its thread."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        host, port = parse_listen(listen)
        try:
            httpd, thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise ConfigError(f"metrics.listen {listen}: could not bind ({exc.strerror})") from None
        self._httpd: WSGIServer = httpd
        self._thread: threading.Thread = thread
        self.port = int(self._httpd.server_port)
        shown = f"[{host}]" if ":" in host else host
        self.address = f"{shown}:{self.port}"
        log.info("metrics on http://%s/metrics", self.address)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
