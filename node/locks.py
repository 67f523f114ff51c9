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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from fedmatch import fileio
from fedmatch.errors import PreconditionFailed, Unavailable
from fedmatch.fileio import flock, open_lock_file, owner_lock_path

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


def open_lock_path(register: Path) -> Path:
    return register.with_name(register.name + ".lock")


def write_lock_path(register: Path) -> Path:
    return register.with_name(register.name + ".write.lock")


class OpenLock:
    """The open lock held by one store (shared) or by a restore/re-encryption (exclusive)."""

    def __init__(self, register: Path, exclusive: bool) -> None:
        self._fd = open_lock_file(open_lock_path(register))
        if not flock(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, 0):
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


class OwnerLock(fileio.OwnerLock):
    """Exclusive ownership of a register and its audit directory for one process's life.

    ``command`` (``"node serve"``, ``"node seed"``...) is written with the pid, so that the
    refusal names who holds them: "register it.sqlite already served by pid 4242".
    """

    def __init__(self, register: Path, audit_directory: Path | None, command: str) -> None:
        targets = [(register, f"register {register.name}", "served")]
        if audit_directory is not None:
            targets.append((audit_directory, f"audit directory {audit_directory.name}", "used"))
        super().__init__(targets, command)


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
                fd = open_lock_file(self.path)
                if not flock(fd, fcntl.LOCK_SH, timeout):
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
        fd = open_lock_file(self.path)
        try:
            if not flock(fd, fcntl.LOCK_EX, timeout):
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
