"""Replay protection and per-requester quotas, persisted in a small SQLite file.

A signed request is accepted once: its 128-bit nonce is remembered (on disk, so a restart
does not reopen the window) until its timestamp falls out of the accepted window, after
which the timestamp check alone refuses it. Quotas count accepted searches per requesting
state and UTC day, also on disk; the per-minute rate limit is a token bucket in memory.
What each state used, and how often it was refused, is read by the node's metrics
(:meth:`ReplayGuard.quota_use`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedmatch.errors import PermissionDenied, ResourceLimit

__all__ = ["ReplayGuard"]


class ReplayGuard:
    def __init__(
        self,
        path: Path,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS quotas (state TEXT, day TEXT, used INTEGER NOT NULL,"
            " PRIMARY KEY (state, day))"
        )
        self.window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._purged = 0.0
        # Searches refused by the rate limit or the daily quota since start, per state.
        self._refused: dict[str, int] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def check_time(self, issued_ms: int) -> None:
        if abs(issued_ms / 1000 - self._clock()) > self.window:
            raise PermissionDenied(
                f"request time is outside the accepted window of {int(self.window)} s"
            )

    def use_nonce(self, nonce: str, issued_ms: int) -> None:
        """Accept ``nonce`` once; a second use within the window is a replay."""
        self.check_time(issued_ms)
        now = self._clock()
        with self._lock:
            if now - self._purged > 60:
                self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
                self._purged = now
            try:
                self._db.execute(
                    "INSERT INTO nonces (nonce, expires) VALUES (?, ?)",
                    (nonce, max(now, issued_ms / 1000) + self.window),
                )
            except sqlite3.IntegrityError:
                raise PermissionDenied("request nonce was already used (replay)") from None

    def used_today(self, state: str) -> int:
        """How many searches and resolves ``state`` was charged today (UTC)."""
        day = dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC).date().isoformat()
        with self._lock:
            row = self._db.execute(
                "SELECT used FROM quotas WHERE state = ? AND day = ?", (state, day)
            ).fetchone()
        return int(row[0]) if row else 0

    def quota_use(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Per requesting state: charged today (UTC), charged in all (every day kept), and
        refused by the rate limit or the daily quota since start (the node's metrics)."""
        day = dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC).date().isoformat()
        with self._lock:
            rows = self._db.execute(
                "SELECT state, SUM(used), SUM(CASE WHEN day = ? THEN used ELSE 0 END)"
                " FROM quotas GROUP BY state",
                (day,),
            ).fetchall()
            refused = dict(self._refused)
        today = {str(r[0]): int(r[2]) for r in rows}
        total = {str(r[0]): int(r[1]) for r in rows}
        return today, total, refused

    def _refuse(self, state: str) -> None:
        self._refused[state] = self._refused.get(state, 0) + 1

    def charge(self, state: str, per_minute: int, per_day: int) -> None:
        """Count one search for ``state``: refused beyond its rate or its daily quota."""
        now = self._clock()
        day = dt.datetime.fromtimestamp(now, tz=dt.UTC).date().isoformat()
        with self._lock:
            tokens, last = self._buckets.get(state, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * per_minute / 60.0)
            if tokens < 1.0:
                self._buckets[state] = (tokens, now)
                self._refuse(state)
                raise ResourceLimit(f"rate limit of {per_minute} searches a minute for {state}")
            row = self._db.execute(
                "SELECT used FROM quotas WHERE state = ? AND day = ?", (state, day)
            ).fetchone()
            used = int(row[0]) if row else 0
            if used >= per_day:
                self._refuse(state)
                raise ResourceLimit(f"daily quota of {per_day} searches for {state} is used up")
            self._db.execute(
                "INSERT INTO quotas (state, day, used) VALUES (?, ?, 1) "
                "ON CONFLICT (state, day) DO UPDATE SET used = used + 1",
                (state, day),
            )
            self._buckets[state] = (tokens - 1.0, now)
