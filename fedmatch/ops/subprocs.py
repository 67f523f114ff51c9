"""Child ``fedmatch`` processes for the demos and the federation bench: start one with its
output in a log file, wait for the port it serves on, stop it on the way out."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["fedmatch_process", "wait_port"]


@contextmanager
def fedmatch_process(
    args: list[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    stop_timeout: float = 10.0,
    module: str = "fedmatch",
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m fedmatch *args`` (or another ``module`` of ours), stdout and stderr to
    ``log_path``; on exit SIGTERM (graceful shutdown) and, after ``stop_timeout`` seconds,
    SIGKILL."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
            [sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            # Its own session: a Ctrl-C at the terminal reaches the parent only, which then
            # stops its children in order (after the demo's audit, say), not all at once.
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_port(
    path: Path,
    proc: subprocess.Popen[bytes],
    timeout: float = 120.0,
    log_path: Path | None = None,
) -> int:
    """The port a child wrote to ``path`` (``--port-file``) once it serves; RuntimeError if
    it exits first (with the tail of ``log_path``, when given) or takes over ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():  # written then renamed (serving.write_port_file): never partial
            return int(path.read_text().strip())
        if proc.poll() is not None:
            tail = "" if log_path is None else ": " + log_path.read_text(errors="replace")[-600:]
            raise RuntimeError(f"{path.stem} exited with code {proc.returncode}{tail}")
        time.sleep(0.05)
    raise RuntimeError(f"{path.stem} did not start serving in {timeout:.0f}s")
