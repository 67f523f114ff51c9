"""Metrics every serving party exports besides its own: what build it runs, its process, and
how long its own TLS certificate has left.

* ``fedmatch_build_info{version, python, grpcio}``: always 1; the labels say what runs;
* ``fedmatch_tls_certificate_expiry_seconds``: seconds until the party's leaf certificate
  (the first of its ``[tls] chain``) expires, negative once expired. The chain file is read
  at each scrape, so a certificate replaced by ``pki issue`` (which the server reloads)
  shows at once; an unreadable file leaves the gauge out of that scrape, never fails it;
* the process and platform collectors of ``prometheus_client`` (``process_*``:
  CPU seconds, resident memory, open file descriptors, start time; ``python_info``).

:func:`register_party_info` adds them to a party's registry
(:mod:`fedmatch.ops.metrics`); the alert rules and dashboard of ``deploy/monitoring/`` use
them.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fedmatch import __version__

__all__ = ["register_party_info"]

log = logging.getLogger("fedmatch.metrics")


def _grpc_version() -> str:
    try:
        import grpc

        return str(grpc.__version__)
    except ImportError:  # pragma: no cover - grpcio is a dependency of every party
        return ""


class _BuildInfo(Collector):
    def __init__(self) -> None:
        self._labels = {
            "version": __version__,
            "python": platform.python_version(),
            "grpcio": _grpc_version(),
        }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fedmatch_build_info",
            "Always 1; the labels name the fedmatch, Python and grpcio versions running.",
            labels=list(self._labels),
        )
        family.add_metric(list(self._labels.values()), 1)
        yield family


class _CertificateExpiry(Collector):
    def __init__(self, chain: Path) -> None:
        self._chain = chain

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            leaf = x509.load_pem_x509_certificates(self._chain.read_bytes())[0]
        except (OSError, ValueError, IndexError) as exc:
            log.debug("certificate expiry not read: %s", type(exc).__name__)
            return
        left = (leaf.not_valid_after_utc - datetime.now(UTC)).total_seconds()
        family = GaugeMetricFamily(
            "fedmatch_tls_certificate_expiry_seconds",
            "Seconds until this party's own TLS certificate expires (negative: expired).",
        )
        family.add_metric([], left)
        yield family


def register_party_info(registry: CollectorRegistry, chain: Path | None) -> None:
    """Add build information, process and platform metrics and, when the party has a
    certificate chain file, its certificate's time left, to ``registry``."""
    registry.register(_BuildInfo())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if chain is not None:
        registry.register(_CertificateExpiry(Path(chain)))
