"""Running a server process until SIGTERM/SIGINT, then stopping gracefully.

The order of a stop: the health service says NOT_SERVING and new calls are refused, calls
in flight get ``grace`` seconds to finish (then are cancelled: their clients see a clean
status, never a half answer), the metrics listener closes, and a last checkpoint covers
every entry the log holds. The caller's ExitStack then closes the engine, stores and the
audit log (which flushes before it closes).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from fedmatch.grpcutil.server import RunningServer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["serve_party", "serve_until_signalled", "write_port_file"]

log = logging.getLogger("fedmatch")

# How often a waiting main thread gives Python a chance to run a pending signal's handler.
_SIGNAL_POLL_SECONDS = 0.25


def write_port_file(path: Path, port: int) -> None:
    # Write then rename, so a reader polling for the file never sees it half written.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


def serve_until_signalled(server: RunningServer, grace: float = 5.0) -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping (grace %.1fs)", signum, grace)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Timed waits: Python runs a signal's handler in the main thread, between bytecodes.
    # The kernel may deliver the signal to another thread (gRPC's, the audit's); an
    # untimed wait is then never interrupted and the handler never runs.
    while not stop.wait(_SIGNAL_POLL_SECONDS):
        pass
    server.stop(grace)


def serve_party(
    server: RunningServer,
    registry: CollectorRegistry,
    metrics_listen: str,
    final_checkpoint: Callable[[], object],
    port_file: Path | None = None,
    grace: float = 5.0,
) -> None:
    """Serve until signalled with the ``/metrics`` listener on ``metrics_listen`` (empty:
    none), then stop in the order above. The port file is written once everything is up."""
    from fedmatch.ops.metrics_http import MetricsServer

    try:
        metrics = MetricsServer(registry, metrics_listen) if metrics_listen else None
    except BaseException:
        server.stop(0)
        raise
    try:
        if port_file is not None:
            write_port_file(port_file, server.port)
        serve_until_signalled(server, grace)
    finally:
        if metrics is not None:
            metrics.stop()
        try:
            final_checkpoint()
        except Exception as exc:  # noqa: BLE001 - the log stays valid up to its last one
            log.error("final checkpoint not published: %s", type(exc).__name__)
    log.info("stopped")
