"""File helpers of the PKI package: atomic, fsynced writes and mode-checked reads."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from fedmatch.errors import ConfigError
from fedmatch.fileio import fsync_directory

__all__ = ["read_file", "write_file"]

# Certificates, keys and CRLs of this PKI are a few KiB; the bound stops a wrong path (a
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
