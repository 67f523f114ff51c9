"""Durable file writes shared by the audit log, the auditor's state, keys and the PKI, and
mode-checked reads of certificates and keys."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from fedmatch.errors import ConfigError

__all__ = ["fsync_directory", "read_file", "write_atomically", "write_file"]


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
