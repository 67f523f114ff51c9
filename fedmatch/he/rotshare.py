"""A query's baby-step rotations computed once by a sharded engine's workers together.

Every worker of :class:`fedmatch.he.sharded.ShardedEngine` needs all of the query's
baby-step rotations (its blocks use them all) and used to compute all of them: 127 key
switches at d = 128, ~0.2 s of each worker's time per query at 1M records (the kernel
set's, whose key switches are dear), done twice on 2 cores. Here each worker computes a
contiguous share of the rotations and writes their words, tiled as the kernel reads them,
into one shared-memory stack; then it waits until every worker of the query has written
its share, and every worker's kernel reads the whole stack.

- :class:`SharedStack` (main process): the segments, sized for the register's dp rotations
  of a ciphertext at the query's level, and one mark per worker; the main process owns and
  unlinks them.
- :class:`RotationShare` (a worker, one query): its share of the rotation indices, the
  stack as an array, and the marks: ``seq`` once its share is written, ``-seq`` if it
  failed (its peers then fail the query too, instead of waiting).

The stack is reused by every query: the node searches one query at a time, and the sharded
engine returns only when every worker has answered, so no worker writes a query's
rotations while another still reads the previous one's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import numpy.typing as npt

from fedmatch.errors import DeadlineExceeded, HEError, Unavailable
from fedmatch.he.layout import padded_dimension
from fedmatch.he.params import ParamSet

__all__ = ["RotationShare", "SharedStack", "stack_bytes"]

# How long a worker waits for its peers' shares before it gives the query up: far above a
# share's time (~0.2 s at d = 128, ~1 s at d = 512), so only a lost peer reaches it.
_WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.0002


def stack_bytes(params: ParamSet, dimension: int) -> int:
    """The words of dp rotations of a two-part ciphertext at the top data level, uint32."""
    dp = padded_dimension(dimension, params.slots)
    moduli = len(params.coeff_bits) - 1
    return dp * 2 * moduli * params.poly_modulus_degree * 4


class SharedStack:
    """The main process's segments for ``workers`` workers (see the module)."""

    def __init__(self, params: ParamSet, dimension: int, workers: int) -> None:
        self.words = SharedMemory(create=True, size=stack_bytes(params, dimension))
        try:
            self.marks = SharedMemory(create=True, size=8 * workers)
        except BaseException:
            self.words.close()
            self.words.unlink()
            raise
        np.ndarray((workers,), dtype=np.int64, buffer=self.marks.buf)[:] = 0

    @property
    def names(self) -> tuple[str, str]:
        return self.words.name, self.marks.name

    def close(self) -> None:
        for segment in (self.words, self.marks):
            segment.close()
            segment.unlink()


class RotationShare:
    """One worker's part in one query's shared rotations (see the module)."""

    def __init__(
        self,
        words: SharedMemory,
        marks: SharedMemory,
        seq: int,
        participants: Sequence[int],
        me: int,
        workers: int,
        count: int,
    ) -> None:
        if me not in participants or len(set(participants)) != len(participants):
            raise HEError("a shared rotation stack needs this worker among distinct peers")
        self.count = count  # the rotations every peer's blocks need (one split for all)
        self._words, self._seq = words, seq
        self._marks: npt.NDArray[np.int64] = np.ndarray((workers,), np.int64, buffer=marks.buf)
        self._peers = list(participants)
        self._index = self._peers.index(me)
        self._me = me

    def part(self, count: int) -> range:
        """The rotation indices (of 0 .. count - 1) this worker computes."""
        if count != self.count:
            # Peers that split differently would read each other's words in the wrong place.
            raise HEError("this worker's blocks need another number of rotations than its peers'")
        n = len(self._peers)
        return range(self._index * count // n, (self._index + 1) * count // n)

    def stack(self, shape: tuple[int, int, int, int, int]) -> npt.NDArray[np.uint32]:
        """The shared stack as (moduli, tiles, count, parts, tile) uint32, contiguous."""
        need = int(np.prod(shape)) * 4
        if need > self._words.size:
            raise HEError("the rotations do not fit the shared stack")
        return np.ndarray(shape, dtype=np.uint32, buffer=self._words.buf)

    def publish(self) -> None:
        """This worker's share is in the stack."""
        self._marks[self._me] = self._seq

    def fail(self) -> None:
        """This worker will not write its share: its peers stop waiting."""
        self._marks[self._me] = -self._seq

    def wait(self, should_stop: Callable[[], bool], limit: float = _WAIT_SECONDS) -> None:
        """Until every peer has written its share; raises if one failed, if the caller
        stops the query, or after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while True:
            marks = self._marks[self._peers]
            if (marks == self._seq).all():
                return
            if (marks == -self._seq).any():
                raise Unavailable("a search worker failed while computing the query's rotations")
            if should_stop():
                raise DeadlineExceeded("search stopped while waiting for the rotations")
            if time.monotonic() > deadline:
                raise Unavailable("a search worker did not compute its rotations in time")
            time.sleep(_POLL_SECONDS)
