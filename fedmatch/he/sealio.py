"""Byte (de)serialization of SEAL objects.

tenseal's ``sealapi`` binds ``save`` and ``load`` with file paths only (no stream or buffer
overloads), so every object goes through a private file in memory-backed storage. Loading goes
through SEAL's own validating ``load``, which checks the header, sizes and that the data is
valid for the given context; any failure becomes :class:`HEError` with a message that names
the object, never its bytes.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedmatch.errors import HEError

__all__ = ["load_bytes", "to_bytes"]

_SHM = Path("/dev/shm")  # noqa: S108 - a private mkdtemp (0700) below it, not a fixed name
_lock = threading.Lock()
_dir: Path | None = None


def _scratch_dir() -> Path:
    # One private directory per process, created lazily (after any fork), mode 0700 so that
    # other local users cannot read ciphertexts or keys in transit through it.
    global _dir
    with _lock:
        if _dir is None or not _dir.exists():
            base = str(_SHM) if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None
            _dir = Path(tempfile.mkdtemp(prefix="fedmatch-seal-", dir=base))
        return _dir


@contextmanager
def _scratch_file() -> Iterator[Path]:
    fd, name = tempfile.mkstemp(dir=_scratch_dir())
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def to_bytes(obj: Any) -> bytes:
    """Serialize a SEAL object (anything with ``save(path)``) to bytes."""
    with _scratch_file() as path:
        obj.save(str(path))
        return path.read_bytes()


def load_bytes(load: Callable[[str], None], data: bytes, what: str) -> None:
    """Call ``load(path)`` on ``data`` written to a scratch file; SEAL errors -> HEError."""
    if not data:
        raise HEError(f"{what} is empty")
    with _scratch_file() as path:
        path.write_bytes(data)
        try:
            load(str(path))
        except (RuntimeError, ValueError, TypeError, OSError, MemoryError) as exc:
            # SEAL's messages describe the format problem only ("loaded data is invalid");
            # keep the class name for operators, never the bytes.
            raise HEError(f"{what} could not be decoded ({type(exc).__name__})") from None
