"""Cross-process locks beside a register file (``flock`` on small lock files).

- ``<register>.owner.lock`` and ``<audit directory>.owner.lock``, the *owner* locks: one
  process at a time writes a register and its audit log, the node that serves them
  (``node serve``) or one offline command that writes (seed, seal, rotate-key, restore).
  Each holds both exclusively for its whole life (:class:`OwnerLock`) and writes its pid
  in them; a second one is refused at once, before it binds a port or writes anything.
  ``flock`` releases them when the process ends, however it ends.
- ``<register>.lock``, the *open* lock: every open :class:`node.store.RecordStore` holds it
  shared for its lifetime; a restore or a data-key re-encryption takes it exclusively, so
  neither ever runs under a live node (and no node opens a register being replaced).
- ``<register>.write.lock``, the *write* lock: the node holds it shared from the moment it
  writes the register until the matching audit entry is durable (:func:`register_write`);
  a backup takes it exclusively while it snapshots the register and copies the log, so the
  two always agree (no record without its log entry, no entry without its record).

``flock`` locks belong to an open file, so the shared write lock is counted per process:
the first writer takes it, the last one releases it.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from fedmatch.errors import PreconditionFailed, Unavailable

__all__ = [
    "OpenLock",
    "OwnerLock",
    "WriteLock",
    "open_lock_path",
    "owner_lock_path",
    "register_write",
    "write_lock_path",
]

# A backup holds the write lock for a snapshot and a log copy; enrolments wait this long
# for it before they are refused as unavailable (retryable), never lost.
WRITE_WAIT_SECONDS = 120.0
_POLL_SECONDS = 0.01


def open_lock_path(register: Path) -> Path:
    return register.with_name(register.name + ".lock")


def write_lock_path(register: Path) -> Path:
    return register.with_name(register.name + ".write.lock")


def owner_lock_path(path: Path) -> Path:
    """The owner lock of a register file or an audit directory: beside it, so that a
    restore, which replaces both, never replaces the lock."""
    return path.with_name(path.name + ".owner.lock")


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _flock(fd: int, mode: int, timeout: float) -> bool:
    """Take ``mode`` on ``fd`` within ``timeout`` seconds (0: one try)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)


class OpenLock:
    """The open lock held by one store (shared) or by a restore/re-encryption (exclusive)."""

    def __init__(self, register: Path, exclusive: bool) -> None:
        self._fd = _open(open_lock_path(register))
        if not _flock(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, 0):
            os.close(self._fd)
            self._fd = -1
            if exclusive:
                raise PreconditionFailed(
                    f"register {register.name} is open in a running node or another "
                    "process; stop it first"
                )
            raise PreconditionFailed(
                f"register {register.name} is being restored or re-encrypted; open it later"
            )

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the file releases its flock
            self._fd = -1

    def __enter__(self) -> OpenLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class OwnerLock:
    """Exclusive ownership of a register and its audit directory for one process's life.

    ``command`` (``"node serve"``, ``"node seed"``...) is written with the pid, so that the
    refusal names who holds them: "register it.sqlite already served by pid 4242".
    """

    def __init__(self, register: Path, audit_directory: Path | None, command: str) -> None:
        self._fds: list[int] = []
        try:
            self._take(register, f"register {register.name}", "served", command)
            if audit_directory is not None:
                name = f"audit directory {audit_directory.name}"
                self._take(audit_directory, name, "used", command)
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path, what: str, served: str, command: str) -> None:
        fd = _open(owner_lock_path(path))
        if not _flock(fd, fcntl.LOCK_EX, 0):
            try:
                holder = os.read(fd, 256).decode("utf-8", "replace").split()
            finally:
                os.close(fd)
            pid = holder[0] if holder and holder[0].isdigit() else ""
            by = " ".join(holder[1:])
            verb = served if by in ("node serve", "") else "used"
            who = f"pid {pid}" if pid else "another process"
            raise PreconditionFailed(
                f"{what} already {verb} by {who}"
                + (f" (fedmatch {by})" if by else "")
                + "; stop it first"
            )
        self._fds.append(fd)
        # The holder's pid, for the refusal of the next one (read under no lock: a reader
        # that comes before it is written names "another process").
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the file releases its flock

    def __enter__(self) -> OwnerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class WriteLock:
    """The register's write lock: shared by the node's writers, exclusive for a backup."""

    def __init__(self, register: Path) -> None:
        self.path = write_lock_path(register)
        self._mutex = threading.Lock()
        self._holders = 0
        self._fd = -1

    @contextmanager
    def shared(self, timeout: float = WRITE_WAIT_SECONDS) -> Iterator[None]:
        with self._mutex:
            if self._holders == 0:
                fd = _open(self.path)
                if not _flock(fd, fcntl.LOCK_SH, timeout):
                    os.close(fd)
                    raise Unavailable("the register is being backed up; retry shortly")
                self._fd = fd
            self._holders += 1
        try:
            yield
        finally:
            with self._mutex:
                self._holders -= 1
                if self._holders == 0:
                    os.close(self._fd)
                    self._fd = -1

    @contextmanager
    def exclusive(self, timeout: float = WRITE_WAIT_SECONDS) -> Iterator[None]:
        fd = _open(self.path)
        try:
            if not _flock(fd, fcntl.LOCK_EX, timeout):
                raise Unavailable(
                    f"register writes did not pause within {timeout:.0f} s; backup not taken"
                )
            yield
        finally:
            os.close(fd)


class _Store(Protocol):
    @property
    def writes(self) -> WriteLock: ...


class _Writer(Protocol):
    @property
    def store(self) -> _Store: ...


S = TypeVar("S", bound=_Writer)
P = ParamSpec("P")
R = TypeVar("R")


def register_write(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run a service method that writes the register and logs it under the shared write
    lock, so a backup sees both the row and its audit entry, or neither."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.store.writes.shared():
            return method(self, *args, **kwargs)

    return wrapper
