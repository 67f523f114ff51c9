"""Durable file writes shared by the audit log, the auditor's state, keys and the PKI,
mode-checked reads of certificates and keys, and the owner locks that keep a second process
off a party's files (a node's register and audit log, the coordinator's audit log)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fedmatch.errors import ConfigError, PreconditionFailed

__all__ = [
    "OwnerLock",
    "flock",
    "fsync_directory",
    "open_lock_file",
    "owner_lock_path",
    "read_file",
    "write_atomically",
    "write_file",
]


def fsync_directory(directory: Path, strict: bool = False) -> None:
    """Make a new or renamed directory entry durable. Not every platform can open a
    directory, and there it is skipped; a failing fsync raises only when ``strict``."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(dfd)


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync it, rename it over,
    fsync the directory. Readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        # A short write to a regular file means trouble (a full disk): fail, never rename
        # a truncated file into place.
        if os.write(fd, data) != len(data):
            raise OSError(f"short write of {path.name}")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent, strict=True)


# Certificates, keys and CRLs are a few KiB; the bound stops a wrong path (a
# log file, a device) from being read whole.
_MAX_FILE_BYTES = 16 << 20


def write_file(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file created 0600 in the same
    directory: readers see the old file or the whole new one. Without ``replace`` an
    existing file is never overwritten (link(2) fails if the target exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not replace and (path.exists() or path.is_symlink()):
        raise ConfigError(f"{path} already exists; refusing to overwrite it")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"{path} could not be created ({exc.strerror})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConfigError(f"{path} already exists; refusing to overwrite it") from None
        fsync_directory(path.parent)
    except OSError as exc:
        raise ConfigError(f"{path} could not be written ({exc.strerror})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_file(path: Path, private: bool = False) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ConfigError(f"{path} could not be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if private and st.st_mode & 0o077:
            raise ConfigError(
                f"key file {path} is accessible by group or other "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); make it 0600"
            )
        data = fh.read(_MAX_FILE_BYTES + 1)
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError(f"{path} is too large")
    return data


# --- locks (``flock`` on small files beside what they guard) ------------------------------

_POLL_SECONDS = 0.01


def open_lock_file(path: Path) -> int:
    """A lock file's descriptor (created 0600, with its directory, when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def flock(fd: int, mode: int, timeout: float) -> bool:
    """Take ``mode`` (``fcntl.LOCK_SH`` or ``LOCK_EX``) on ``fd`` within ``timeout``
    seconds (0: one try); whether it was taken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)


def owner_lock_path(path: Path) -> Path:
    """The owner lock of a file or a directory: beside it, so that a restore, which
    replaces what it guards, never replaces the lock."""
    return path.with_name(path.name + ".owner.lock")


class OwnerLock:
    """Exclusive ownership of a party's files for one process's life: an exclusive flock on
    ``<path>.owner.lock`` for each ``(path, what, verb)`` target, the holder's pid and
    ``command`` written in it. A second process is refused at once, naming the holder:
    "register it.sqlite already served by pid 4242 (fedmatch node serve)". ``verb`` says
    what a serving holder does to the target ("served" for a register; "used" otherwise,
    and for any holder that does not serve). ``flock`` releases the locks when the process
    ends, however it ends."""

    def __init__(self, targets: Sequence[tuple[Path, str, str]], command: str) -> None:
        self._fds: list[int] = []
        try:
            for path, what, verb in targets:
                self._take(path, what, verb, command)
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path, what: str, served: str, command: str) -> None:
        fd = open_lock_file(owner_lock_path(path))
        if not flock(fd, fcntl.LOCK_EX, 0):
            try:
                holder = os.read(fd, 256).decode("utf-8", "replace").split()
            finally:
                os.close(fd)
            pid = holder[0] if holder and holder[0].isdigit() else ""
            by = " ".join(holder[1:])
            verb = served if by == "" or by.endswith(" serve") else "used"
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
