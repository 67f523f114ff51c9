"""Durable file writes shared by the audit log, the auditor's state, keys and the PKI."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory", "write_atomically"]


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
