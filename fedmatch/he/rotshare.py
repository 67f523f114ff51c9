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

__all__ = ["TERM_SLOTS", "RotationShare", "SharedStack", "stack_bytes", "terms_bytes"]

# How long a worker waits for its peers' shares before it gives the query up: far above a
# share's time (~0.2 s at d = 128, ~1 s at d = 512), so only a lost peer reaches it.
_WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.0002


# The shared terms: the malformation terms w and z (PackedBase._malformation), their
# conjugates, and the norm excess, in that order.
TERM_SLOTS = 5
_HEADER = TERM_SLOTS * 2  # per slot, float64: written (1.0) or not (0.0), and the scale


def stack_bytes(params: ParamSet, dimension: int) -> int:
    """The words of dp rotations of a two-part ciphertext at the top data level, uint32."""
    dp = padded_dimension(dimension, params.slots)
    moduli = len(params.coeff_bits) - 1
    return dp * 2 * moduli * params.poly_modulus_degree * 4


def terms_bytes(params: ParamSet) -> int:
    """The header and SEAL's uint64 words of TERM_SLOTS two-part ciphertexts at the top
    data level."""
    moduli = len(params.coeff_bits) - 1
    return 8 * (_HEADER + TERM_SLOTS * 2 * moduli * params.poly_modulus_degree)


class SharedStack:
    """The main process's segments for ``workers`` workers (see the module)."""

    def __init__(self, params: ParamSet, dimension: int, workers: int) -> None:
        sizes = (stack_bytes(params, dimension), 16 * workers, terms_bytes(params))
        made: list[SharedMemory] = []
        try:
            for size in sizes:
                made.append(SharedMemory(create=True, size=size))
        except BaseException:
            for segment in made:
                segment.close()
                segment.unlink()
            raise
        self.words, self.marks, self.terms = made
        np.ndarray((2 * workers,), dtype=np.int64, buffer=self.marks.buf)[:] = 0

    @property
    def names(self) -> tuple[str, str, str]:
        return self.words.name, self.marks.name, self.terms.name

    def close(self) -> None:
        for segment in (self.words, self.marks, self.terms):
            segment.close()
            segment.unlink()


class RotationShare:
    """One worker's part in one query's shared rotations (see the module)."""

    def __init__(
        self,
        words: SharedMemory,
        marks: SharedMemory,
        terms: SharedMemory,
        seq: int,
        participants: Sequence[int],
        me: int,
        workers: int,
        count: int,
    ) -> None:
        if me not in participants or len(set(participants)) != len(participants):
            raise HEError("a shared rotation stack needs this worker among distinct peers")
        self.count = count  # the rotations every peer's blocks need (one split for all)
        self._words, self._terms, self._seq = words, terms, seq
        # Row 0: the rotations' round; row 1: the terms'.
        self._marks: npt.NDArray[np.int64] = np.ndarray((2, workers), np.int64, buffer=marks.buf)
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

    def terms(
        self, shape: tuple[int, int, int]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]:
        """The shared terms: their header (TERM_SLOTS x (written, scale)) and their words
        (TERM_SLOTS x ``shape``, a two-part ciphertext's: parts, moduli, degree)."""
        if len(shape) != 3 or 8 * (_HEADER + TERM_SLOTS * int(np.prod(shape))) > self._terms.size:
            raise HEError("the probe's terms do not fit the shared segment")
        header = np.ndarray((TERM_SLOTS, 2), dtype=np.float64, buffer=self._terms.buf)
        words = np.ndarray(
            (TERM_SLOTS, *shape), dtype=np.uint64, buffer=self._terms.buf, offset=8 * _HEADER
        )
        return header, words

    def computes(self, part: int) -> bool:
        """Whether this worker computes the terms' ``part`` (0: the malformation terms and
        their conjugates, 1: the norm excess): the first two peers one each, a lone one
        (never shared: see the sharded engine) both."""
        return self._index == part % len(self._peers)

    def publish(self, round_: int = 0) -> None:
        """This worker's share of a round (0: the rotations, 1: the terms) is written."""
        self._marks[round_, self._me] = self._seq

    def fail(self) -> None:
        """This worker will not write its shares: its peers stop waiting."""
        self._marks[:, self._me] = -self._seq

    def wait(
        self, should_stop: Callable[[], bool], limit: float = _WAIT_SECONDS, round_: int = 0
    ) -> None:
        """Until every peer has written its share of the round; raises if one failed, if
        the caller stops the query, or after ``limit`` seconds."""
        what = ("rotations", "probe's terms")[round_]
        deadline = time.monotonic() + limit
        while True:
            marks = self._marks[round_, self._peers]
            if (marks == self._seq).all():
                return
            if (self._marks[:, self._peers] == -self._seq).any():
                raise Unavailable(f"a search worker failed while computing the query's {what}")
            if should_stop():
                raise DeadlineExceeded(f"search stopped while waiting for the {what}")
            if time.monotonic() > deadline:
                raise Unavailable(f"a search worker did not compute its {what} in time")
            time.sleep(_POLL_SECONDS)
