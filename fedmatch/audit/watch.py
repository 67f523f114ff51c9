"""An auditor that keeps watching: ``fedmatch audit verify`` run every ``interval`` seconds.

This is what an auditor's container runs. Each run verifies every party's log and
cross-checks the federation (:func:`fedmatch.audit.auditor.run_audit`); the auditor's saved
state advances only for parties that verified, so a later run checks consistency with what
the earlier ones accepted. Each run leaves, under ``<state_dir>/watch/``:

- ``status.json``: when the last run started and finished, its result and the interval,
  which ``fedmatch health`` reads (an auditor serves nothing a probe could ask);
- ``last-report.txt`` and ``last-summary.json``: the latest report;
- ``failed-<unix time in ms>.txt``: every failed run's report, never overwritten (the evidence
  files it names are kept by the auditor itself).

The summary of each run is also printed as one JSON line (a failed run is logged as an
error), so that a log collector can alert on ``"ok": false``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from fedmatch.audit.auditor import AuditorConfig, AuditResult, run_audit
from fedmatch.fileio import write_atomically

__all__ = ["read_status", "status_path", "watch", "watch_until_signalled"]

log = logging.getLogger("fedmatch.audit.watch")


def status_path(state_dir: Path) -> Path:
    return state_dir / "watch" / "status.json"


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status the loop wrote, or None if there is none (or it is unreadable: the
    loop replaces it atomically, so a torn file means someone else wrote it)."""
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    write_atomically(path, (json.dumps(value, indent=2) + "\n").encode(), mode=0o644)


def watch(
    config: AuditorConfig,
    interval: float,
    stop: threading.Event,
    runs: int = 0,
) -> AuditResult | None:
    """Audit every ``interval`` seconds (measured from the start of a run) until ``stop``
    is set or ``runs`` runs are done (0: no limit); returns the last run's result."""
    directory = status_path(config.state_dir).parent
    directory.mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {"interval_seconds": interval, "runs": 0, "finished": None}
    last: AuditResult | None = None
    while not stop.is_set():
        started = time.time()
        status |= {"started": started}
        _write_json(status_path(config.state_dir), status)
        last = run_audit(config)
        finished = time.time()
        status |= {
            "finished": finished,
            "runs": status["runs"] + 1,
            "ok": last.ok,
            "violations": last.summary.get("violations", 0),
            "duration_seconds": round(finished - started, 3),
        }
        write_atomically(directory / "last-report.txt", (last.report + "\n").encode(), 0o644)
        _write_json(directory / "last-summary.json", last.summary)
        if not last.ok:
            name = f"failed-{int(finished * 1000)}.txt"
            write_atomically(directory / name, (last.report + "\n").encode(), 0o644)
            log.error(
                "audit FAILED: %d violation(s); report %s", status["violations"], directory / name
            )
        _write_json(status_path(config.state_dir), status)
        print(json.dumps({"run": status["runs"], **last.summary}), flush=True)
        if runs and status["runs"] >= runs:
            break
        stop.wait(max(0.0, started + interval - time.time()))
    return last


def watch_until_signalled(config: AuditorConfig, interval: float, runs: int = 0) -> bool:
    """:func:`watch` until SIGTERM or SIGINT (a run in progress finishes first); whether
    the last run verified everything (True when stopped before any run)."""
    import signal

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current run", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    last = watch(config, interval, stop, runs)
    return last is None or last.ok
