"""Running a server process until SIGTERM/SIGINT, then stopping gracefully."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from fedmatch.grpcutil.server import RunningServer

__all__ = ["serve_until_signalled", "write_port_file"]

log = logging.getLogger("fedmatch")


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
    stop.wait()
    server.stop(grace)
