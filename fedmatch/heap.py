"""Giving freed heap back to the operating system after a bulk load.

Loading a register reads every template from SQLite and encodes it block by block; the
temporaries (Python bytes of the rows, the joined matrix, the encoder's arrays) are freed,
but glibc's malloc keeps freed pages in its arenas for reuse. A node loads its register once
and then only searches, so those pages would stay in its RSS for its whole life: measured
at ~1.2 KB per record at d = 128 (tests/integration/test_node_memory.py), more than half the
register itself. ``malloc_trim(0)`` returns them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

__all__ = ["release_free_heap"]


@cache
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_free_heap() -> bool:
    """Return the C heap's free pages to the operating system; False where the C library
    has no ``malloc_trim`` (not glibc), which then changes nothing."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True
