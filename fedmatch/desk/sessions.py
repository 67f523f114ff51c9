"""Server-side sessions: who is logged in and the key unlocked for them.

The browser holds only a random session id (in Flask's signed, HttpOnly, SameSite=Strict
cookie); the unlocked key stays in this process's memory, and is dropped at logout, after
the idle timeout, and when the desk stops (a new start has a new cookie secret as well).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedmatch.desk.accounts import Unlocked

__all__ = ["DeskSession", "SessionStore"]


@dataclass
class DeskSession:
    sid: str
    user: Unlocked
    last_seen: float


class SessionStore:
    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, DeskSession] = {}

    def open(self, user: Unlocked) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sweep()
            self._sessions[sid] = DeskSession(sid, user, self._clock())
        return sid

    def get(self, sid: str) -> DeskSession | None:
        """The live session ``sid`` (its idle clock restarts), or None (unknown, expired)."""
        with self._lock:
            self._sweep()
            found = self._sessions.get(sid)
            if found is not None:
                found.last_seen = self._clock()
            return found

    def close(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        with self._lock:
            self._sweep()
            return len(self._sessions)

    def _sweep(self) -> None:
        now = self._clock()
        for sid in [s for s, v in self._sessions.items() if now - v.last_seen > self._idle]:
            del self._sessions[sid]
