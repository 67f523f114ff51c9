"""The register rows an engine re-encodes blocks from, on enrolment and erasure.

An engine keeps its own float32 copy of the rows only until its owner names where they live
(:meth:`KeptRows.read_from`: the node's store); from then on it reads the few blocks' rows a
re-encoding needs, and holds none (512 bytes per record at d = 128 saved). One class, used
by the in-process engine and the multi-process engine's coordinating side alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from fedmatch.errors import InvalidInput

__all__ = ["KeptRows", "RowSource", "blank_rows"]

# Register rows ``start`` to ``stop`` (float32, in row order, an erased row all zeros): where
# an engine re-reads rows to re-encode a block once its owner keeps them (the node: its
# store), so that it does not hold a second copy of the register's templates.
RowSource = Callable[[int, int], npt.NDArray[np.float32]]

Rows = npt.NDArray[np.float32]


def blank_rows(rows: Rows, erase: Sequence[int]) -> Rows:
    """A copy of ``rows`` with the ``erase`` rows zeroed (a copy: a concurrent search keeps
    the snapshot it started with)."""
    if any(not 0 <= r < rows.shape[0] for r in erase):
        raise InvalidInput("erase names a row outside the register")
    out = rows.copy()
    out[list(erase)] = 0.0
    return out


class KeptRows:
    """The rows of a register as an engine keeps them: all of them (its own copy), or none
    once a source is named. ``check`` validates what a source returns (dimension, dtype)."""

    def __init__(self, dimension: int, check: Callable[[Rows], Rows]) -> None:
        self._dimension = dimension
        self._check = check
        self._rows: Rows = np.zeros((0, dimension), dtype=np.float32)
        self._source: RowSource | None = None

    def read_from(self, source: RowSource) -> None:
        """Read rows from ``source`` from now on, and drop the copy."""
        self._source = source
        self._rows = np.zeros((0, self._dimension), dtype=np.float32)

    def read(self, start: int, stop: int) -> Rows:
        """Rows ``start`` to ``stop`` of the register."""
        if self._source is None:
            return self._rows[start:stop]
        return self._check(self._source(start, stop))

    def replace(self, rows: Rows) -> None:
        """The whole register is now ``rows`` (a load, a full re-encode); a copy is kept
        only without a source."""
        if self._source is None:
            self._rows = np.array(rows, dtype=np.float32, copy=True)

    def extend(self, new: Rows) -> None:
        """``new`` rows were appended to the register."""
        if self._source is None:
            self._rows = np.concatenate([self._rows, new])

    def blank(self, erase: Sequence[int]) -> None:
        """Rows ``erase`` were erased."""
        if self._source is None:
            self._rows = blank_rows(self._rows, erase)

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes)
