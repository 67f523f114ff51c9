"""The node-side encrypted search engine: packed diagonals, only match bits out.

:class:`SearchEngine` is the one interface node code uses; :func:`fedmatch.he.engines.create_engine`
picks the implementation. :class:`PackedBase` scores a replicated probe ciphertext against the
register packed as diagonals (:mod:`fedmatch.he.layout`), two records per complex slot; its
step 2 is SEAL's in :class:`PackedEngine` and the native kernel's in
:class:`fedmatch.he.kernel_engine.KernelEngine`, everything else is shared:

1. Baby-step/giant-step with a split chosen from the register's block count: the
   ``n1 - 1`` one-step rotations of the query (baby steps) are computed once per query and
   shared by every block of 8,192 records; a block's ``dp`` diagonals are pre-rotated by
   their giant step ``j * n1`` when encoded, so each block sums ``n1`` products per giant
   step, and the partial sums are combined by Horner's rule, ``S = inner_j + rot_n1(S)``
   (``dp / n1 - 1`` rotations per block, all by ``n1``: one key). Key switches per query:
   ``(n1 - 1) + blocks * (dp / n1 - 1)``. A large register (100+ blocks)
   gets ``n1 = dp`` (no giant steps: 127 rotations at d = 128, shared by all blocks); a
   small one a real split (3 blocks: ``n1 = 16``, 15 + 3 * 7 = 36 instead of 127). The split
   is fixed when the register is loaded (and re-chosen, with a full re-encode, only if
   enrolment grows the register so much that it would cost twice the best split).
2. Each block is ``dp`` plaintext products (register pre-encoded in NTT form at the query's
   level) summed before anything else: the real part of slot ``s`` holds the score of row
   ``s``, the imaginary part that of row ``slots + s``.
3. The threshold is subtracted; the complex conjugate separates real and imaginary parts so
   that each record gets its own fresh mask: ``y = x*(r1+r2)/2 + conj(x)*(r1-r2)/2`` gives
   ``r1*(a-t) + i*r2*(b-t)``. Masks are log-uniform positive reals, fresh per slot and query:
   the sign says match / no match, the magnitude is dominated by the mask. A row the query
   may not search (``exclude``) gets a zero mask, so nothing of its score survives whatever
   the probe, and a fresh negative decoy drawn like an ordinary non-match's masked value:
   a no-match like any other, at the cost of one more encode for its block.
   Before the masks, the probe's well-formedness terms (:meth:`PackedEngine._malformation`,
   zero for a real probe replicated with period ``dp`` and equal to its norm copy) times
   fresh random plaintexts are added to every score; with the masks, its norm excess
   (:meth:`PackedEngine._norm_excess`, ``2(||q2||^2 - 1)``) times each row's mask and a
   random factor. A probe that packs several people, is complex or is not unit norm gets
   noise for an answer; a well-formed one, scores moved by less than 1e-4.
4. One rescale drops the 50-bit prime, leaving the result at the last prime (the smallest
   modulus that decrypts; the kernel set rescales twice, to two 29-bit primes, see
   :mod:`fedmatch.he.params`), then the block is rotated by a fresh random shift, re-randomized
   by adding a fresh public-key encryption of slot-domain noise of 2^16, and the blocks leave
   in a fresh random order. A result position therefore names a different record in every query.
   (The kernel engine rotates a block's sum while it computes it, before step 3, with no key
   switch; its exclusion flags move with it, see :meth:`PackedBase._rotated_products`. It
   also sums the conjugated diagonals, which for a real probe is the conjugate of step 3
   without its key switch: see :class:`Sums`.)

The node keeps the per-query :class:`QueryLayout` (block order, shifts, register size) to map
a position the requester reports back to a register row.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.domain import MAX_PROBE_BYTES
from fedmatch.errors import DeadlineExceeded, HEError, InvalidInput
from fedmatch.he import resultfmt, rng, sealio, sealmem, uniform
from fedmatch.he.keys import EvaluationKeys
from fedmatch.he.layout import padded_dimension
from fedmatch.he.params import ParamSet
from fedmatch.he.rows import KeptRows, RowSource, blank_rows
from fedmatch.he.slotorder import conjugated

if TYPE_CHECKING:
    # Imported when used (_native_zero): it loads numba, which a default-set engine never does.
    from fedmatch.he.native_encrypt import ZeroEncryptor
    from fedmatch.he.rotshare import RotationShare

__all__ = [
    "HOISTED_BABY_STEP",
    "MAX_CIPHERTEXT_BYTES",
    "EncodedBlock",
    "OpenedProbe",
    "PackedBase",
    "PackedEngine",
    "QueryLayout",
    "RowSource",
    "SearchEngine",
    "SearchOutput",
    "Sums",
    "blank_rows",
    "block_exclusions",
    "check_exclude",
    "check_search",
    "key_switches",
    "new_layout",
    "packed_exclusions",
    "padded_block_count",
    "rotated_flags",
    "unpack_exclusions",
    "warm_natives",
    "with_padding",
]

# The log2 of the smallest random factor of each well-formedness term (replication, then
# consistency; see PackedBase._garble): the consistency term's noise is half the
# replication term's, so it can take four times the factor, and must (a probe of norm 3
# with an honest copy has a consistency term of only ~0.2 per slot).
_TERM_LOWS = (2.0, 4.0)

# One encoded register block, as an engine keeps it (see PackedBase).
BlockT = TypeVar("BlockT")

# Blocks scored together, diagonal-major (see PackedEngine._products): 8 accumulators of
# 262 KB plus one rotation stay within a core's cache.
_GROUP = 8

# A seeded query ciphertext of the default set is ~126 KB, a result block 97 KB (the compact
# format of fedmatch.he.resultfmt; ~131 KB as a SEAL ciphertext); the bound
# is the domain's probe bound, so the edge and the engine refuse the same thing.
MAX_CIPHERTEXT_BYTES = MAX_PROBE_BYTES

# An excluded row's decoy is -r * |t - s'|: r a mask as any row's, s' a stand-in impostor
# score drawn from N(0, 0.1^2), the spread of impostor cosines of 128-d face templates (and
# of random 128-d unit vectors: sd 1/sqrt(128) = 0.088). An ordinary non-match is r * (s - t)
# with the probe's own impostor score s. The mask spans 17 bits, log-uniform; the score part
# moves log2 |value| by a few tenths of a bit, so the two cannot be told apart (AUC measured
# in tests/unit/test_engine_contract.py). |t - s'| < 2 with overwhelming probability, within
# the 2^49 bound a masked value must respect (see fedmatch.he.params).
_DECOY_SCORE_SD = 0.1


class EncodedBlock(list[seal.Plaintext]):
    """The ``dp`` plaintext diagonals of one register block, diagonal ``j * n1 + k``
    pre-rotated right by its giant step ``j * n1``; ``baby_steps`` is that ``n1`` (``dp``:
    no pre-rotation). Scoring reads the split from the block, so blocks encoded with
    different splits can never be mixed up."""

    def __init__(self, plains: Sequence[seal.Plaintext], baby_steps: int) -> None:
        super().__init__(plains)
        self.baby_steps = baby_steps


def key_switches(step: int, base: int) -> int:
    """Key switches of one left rotation by ``step`` (one per nonzero base-``base`` digit,
    as :meth:`PackedEngine._rotate` does it with the keys of ``ParamSet.rotation_steps``)."""
    count = 0
    while step:
        step, digit = divmod(step, base)
        count += digit != 0
    return count


def rotation_cost(dp: int, baby_steps: int, blocks: int, base: int) -> int:
    """Key switches per query for ``blocks`` blocks with ``baby_steps`` baby steps (giant
    steps by Horner's rule: ``dp / n1 - 1`` rotations by ``n1`` per block)."""
    giant = (dp // baby_steps - 1) * key_switches(baby_steps, base)
    return (baby_steps - 1) + blocks * giant


def choose_baby_steps(dp: int, blocks: int, base: int) -> int:
    """The power-of-two baby-step count (dividing ``dp``) with the fewest key switches per
    query for ``blocks`` blocks; ties go to the larger count (fewer rotations per block)."""
    candidates = [1 << i for i in range(dp.bit_length()) if dp % (1 << i) == 0]
    return min(candidates, key=lambda n1: (rotation_cost(dp, n1, max(blocks, 1), base), -n1))


# A baby step of the kernel engine, native and hoisted (fedmatch.he.keyswitch), in SEAL key
# switches: 127 of them at dp = 128 took 0.126-0.139 s against 0.40-0.44 s for SEAL's 127
# (one process, this machine, three runs).
HOISTED_BABY_STEP = 0.33


def kernel_rotation_cost(
    dp: int, baby_steps: int, blocks: int, base: int, sharers: int = 1
) -> float:
    """Key switches per query and worker of the kernel engine (KernelEngine): its baby steps
    (hoisted: :data:`HOISTED_BABY_STEP` each) shared by ``sharers`` workers
    (fedmatch.he.rotshare), and with giant steps, per block, the shift left after them (the
    mean of a uniform shift modulo dp: 2.25 at dp = 128, base 8) and the conjugation
    (without, the kernel rotates and conjugates as it sums)."""
    giant = (dp // baby_steps - 1) * key_switches(baby_steps, base)
    cost = (baby_steps - 1) * HOISTED_BABY_STEP / sharers + blocks * giant
    if baby_steps == dp:
        return cost
    mean = sum(key_switches(x, base) for x in range(dp)) / dp
    return cost + blocks * (mean + 1)


def choose_kernel_baby_steps(dp: int, blocks: int, base: int, sharers: int = 1) -> int:
    """:func:`choose_baby_steps` with :func:`kernel_rotation_cost` (``blocks`` per worker)."""
    candidates = [1 << i for i in range(dp.bit_length()) if dp % (1 << i) == 0]
    cost = kernel_rotation_cost
    return min(candidates, key=lambda n1: (cost(dp, n1, max(blocks, 1), base, sharers), -n1))


def split_for(params: ParamSet, dp: int, blocks: int, sharers: int = 1) -> int:
    """The split of a multi-worker engine for ``blocks`` blocks per worker, with the model
    of the engine its workers run (the kernel engine's for a kernel set), ``sharers``
    workers sharing the baby steps (kernel sets only, fedmatch.he.rotshare)."""
    if params.kernel:
        return choose_kernel_baby_steps(dp, blocks, params.rotation_base, sharers)
    return choose_baby_steps(dp, blocks, params.rotation_base)


@dataclass(frozen=True)
class QueryLayout:
    """How one query's result positions map to register rows; kept by the node only."""

    order: tuple[int, ...]  # response block k holds register block order[k]
    shifts: tuple[int, ...]  # left rotation applied to response block k
    rows: int  # register rows when the query ran
    slots: int

    def row(self, block: int, position: int) -> int | None:
        """The register row at ``position`` of response block ``block``, or None for a
        position outside the response or past the register's end (padding)."""
        if not 0 <= block < len(self.order) or not 0 <= position < 2 * self.slots:
            return None
        half, slot = divmod(position, self.slots)
        original = (slot + self.shifts[block]) % self.slots
        row = self.order[block] * 2 * self.slots + half * self.slots + original
        return row if row < self.rows else None


@dataclass(frozen=True)
class SearchOutput:
    blocks: tuple[bytes, ...]
    layout: QueryLayout


@dataclass(frozen=True)
class Sums:
    """A group of blocks' sums from :meth:`PackedBase._rotated_products`: per job, the sum,
    the left rotation it already comes out with (part of the job's shift), and the sum
    over the conjugated diagonals when the engine computed it (else None: score() then
    conjugates the sum with a key switch).

    Why a conjugate sum is the conjugate: ``sum_k conj(d_k) * rot_k(q)`` is
    ``conj(sum_k d_k * rot_k(q))`` when the probe ``q`` is real. It is computed from the
    register and the probe's rotations, with no key switch of register data under the
    requester's keys (HE_NOTES: a requester who crafts its Galois keys controls what a key
    switch does). A probe with an imaginary part ``v`` gets, besides the garbling its
    well-formedness term adds (with the conjugated factors here, so that the garbling is
    the conjugate's), a difference ``2i conj(z_v)`` (``z_v``: the scores of ``v``), which
    the masks turn into ``m1 a(u) - m2 b(v) + i (m2 b(u) + m1 a(v))``: every value a sum of
    two scores under two independent masks, where the key-switched conjugate gave
    ``m1 (a(u) - b(v))``, one mask over a difference of scores; with the masks' ratio
    spread over 2^+-17, that says less of the scores than the key-switched form, and the
    garbling covers both (tests/unit/test_engine_contract.py, the imaginary-part probe on
    the kernel engines)."""

    sums: list[seal.Ciphertext]
    applied: list[int]
    conjugates: list[seal.Ciphertext | None]


@dataclass(frozen=True)
class OpenedProbe:
    """A received probe, loaded: the probe at the query scale, and its copy at the norm
    scale for the node's norm check (None only for a kernel driven directly, in tests)."""

    query: seal.Ciphertext
    norm_copy: seal.Ciphertext | None


class SearchEngine(Protocol):
    """What the node needs from an encrypted search engine."""

    @property
    def params(self) -> ParamSet: ...

    @property
    def dimension(self) -> int: ...

    @property
    def size(self) -> int: ...

    def load(self, templates: npt.NDArray[np.float32]) -> None:
        """Replace the register with ``templates`` (n x dimension), in row order."""

    def append(self, templates: npt.NDArray[np.float32]) -> None:
        """Add rows at the end, re-encoding only the blocks they touch."""

    def erase(self, rows: Sequence[int]) -> None:
        """Blank rows in place (they can never match again: 0 - t < 0), re-encoding only
        the blocks that hold them. Row numbers, and so every other row's position, stay."""

    def read_rows_from(self, source: RowSource) -> None:
        """From now on, read the rows a re-encoding needs from ``source`` and drop the
        engine's own copy of the rows (an engine whose rows live elsewhere keeps them)."""

    def search(
        self,
        keys: EvaluationKeys,
        probe: bytes,
        threshold: float,
        should_stop: Callable[[], bool],
        exclude: npt.NDArray[np.bool_] | None = None,
    ) -> SearchOutput:
        """Masked match results for every row. ``exclude``, one bool per row (``size`` of
        them, else InvalidInput), marks rows this query may not search: they never match,
        whatever their score; the results keep the same layout and masking. Raises
        DeadlineExceeded as soon as ``should_stop()`` turns true."""

    def close(self) -> None:
        """Release worker processes, if any."""

    def kept_keys(self, keys: EvaluationKeys) -> EvaluationKeys:
        """What the caller keeps of a requester's validated keys for this engine's searches
        (an engine that searches in worker processes needs no loaded rotation keys here,
        one that searches itself no bundle bytes: see EvaluationKeys)."""
        ...


def _check_stop(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise DeadlineExceeded("search stopped: the caller's deadline passed or it cancelled")


def _uniform(n: int) -> npt.NDArray[np.float64]:
    """n uniform floats in [0, 1), 53 bits each, from the process's CSPRNG stream
    (:mod:`fedmatch.he.rng`: AES-CTR keyed from the OS per refill; masks and shifts must not
    be predictable from earlier queries, so no seeded PRNG)."""
    return rng.uniform(n)


def _normal(n: int) -> npt.NDArray[np.float64]:
    """n standard normal floats from the same stream (Box-Muller)."""
    u1, u2 = 1.0 - _uniform(n), _uniform(n)  # u1 in (0, 1]: log(u1) is finite
    out: npt.NDArray[np.float64] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out


def _random_below(n: int) -> int:
    return rng.random_below(n)


def _random_order(n: int) -> list[int]:
    order = list(range(n))
    for i in range(n - 1, 0, -1):  # Fisher-Yates with CSPRNG draws
        j = _random_below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def check_exclude(exclude: npt.NDArray[np.bool_] | None, rows: int) -> npt.NDArray[np.bool_] | None:
    """``exclude`` checked against a register of ``rows`` rows, or InvalidInput; None when
    it excludes no row (the search then runs exactly as without it)."""
    if exclude is None:
        return None
    mask = np.asarray(exclude)
    if mask.dtype != np.bool_ or mask.shape != (rows,):
        raise InvalidInput(f"exclude must be {rows} booleans, one per register row")
    return mask if bool(mask.any()) else None


def check_search(
    params: ParamSet,
    keys: EvaluationKeys,
    threshold: float,
    exclude: npt.NDArray[np.bool_] | None,
    rows: int,
) -> npt.NDArray[np.bool_] | None:
    """The arguments every engine's ``search`` refuses before any work: keys for another
    parameter set, a threshold that is not a cosine in (0, 1), a malformed ``exclude``.
    Returns the exclusion mask as ``check_exclude`` does."""
    if keys.params != params:
        raise HEError("key bundle is for another parameter set than this register")
    if not 0.0 < threshold < 1.0:
        # Positive, so that padding and erased (all-zero) rows can never match.
        raise InvalidInput("threshold must be a cosine in (0, 1)")
    return check_exclude(exclude, rows)


def packed_exclusions(
    exclude: npt.NDArray[np.bool_] | None, nblocks: int, records: int
) -> list[bytes | None]:
    """Per block, its exclusion flags as packed bits (1 KB) if it has an excluded row, else
    None: what a worker or actor is sent of ``exclude``, only for its own blocks."""
    bits: list[bytes | None] = [None] * nblocks
    if exclude is not None:
        for b, flags in enumerate(block_exclusions(exclude, records)):
            if flags is not None:
                bits[b] = np.packbits(flags).tobytes()
    return bits


def unpack_exclusions(bits: bytes | None, records: int) -> npt.NDArray[np.bool_] | None:
    """A block's exclusion flags from ``packed_exclusions``' bits (or None)."""
    if bits is None:
        return None
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=records).astype(np.bool_)


def block_exclusions(
    exclude: npt.NDArray[np.bool_], records: int
) -> list[npt.NDArray[np.bool_] | None]:
    """Per register block, its ``records`` exclusion flags (padding rows False), or None for
    a block without an excluded row."""
    nblocks = -(-exclude.shape[0] // records)
    grid = np.zeros((nblocks, records), dtype=np.bool_)
    grid.reshape(-1)[: exclude.shape[0]] = exclude
    return [flags if bool(flags.any()) else None for flags in grid]


def rotated_flags(flags: npt.NDArray[np.bool_], shift: int) -> npt.NDArray[np.bool_]:
    """A block's per-row flags (slot s's real part is row s, its imaginary part row
    slots + s) after its slots are rotated left by ``shift``: slot s then holds what slot
    s + shift held, in both parts."""
    slots = flags.shape[0] // 2
    return np.concatenate([np.roll(flags[:slots], -shift), np.roll(flags[slots:], -shift)])


def padded_block_count(blocks: int) -> int:
    """How many result blocks a node sends for a register of ``blocks`` blocks: at least 4
    (32,768 records), then rounded up to a multiple of max(4, 2^(floor(log2 blocks) - 3)).
    A requester learns the register's size only to its bucket (123 blocks, 1M records, are
    sent as 128; 129 as 144), at most 12.5% more blocks from 32 blocks on."""
    if blocks <= 4:
        return 4
    step = max(4, 1 << max(0, blocks.bit_length() - 4))
    return -(-blocks // step) * step


def with_padding(output: SearchOutput, padding: Sequence[bytes]) -> SearchOutput:
    """``output`` with ``padding`` blocks (decoys only: PackedEngine.padding_block) mixed in
    at fresh random positions. A padding block stands for register blocks past the end, so
    every one of its positions maps to no row."""
    layout = output.layout
    entries = [(block, layout.order[k], layout.shifts[k]) for k, block in enumerate(output.blocks)]
    # Register block numbers past the last one: their rows are past the register's end.
    entries += [(block, len(layout.order) + i, 0) for i, block in enumerate(padding)]
    mixed = [entries[i] for i in _random_order(len(entries))]
    return SearchOutput(
        tuple(block for block, _, _ in mixed),
        QueryLayout(
            tuple(index for _, index, _ in mixed),
            tuple(shift for _, _, shift in mixed),
            layout.rows,
            layout.slots,
        ),
    )


def new_layout(blocks: int, rows: int, slots: int) -> QueryLayout:
    """A fresh random block order and per-block rotation for one query."""
    order = _random_order(blocks)
    return QueryLayout(tuple(order), tuple(_random_below(slots) for _ in order), rows, slots)


def warm_natives(params: ParamSet) -> tuple[float, float]:
    """Compile the native encoder, encryptor and result compression of a kernel set's
    per-block steps (once per process) and build the encoder's tables now, so that no query
    pays it; (encoder and compression, encryptor) compile seconds, zeros for a set that
    uses SEAL's."""
    if not params.kernel:
        return 0.0, 0.0
    # Imported here: they load numba, which a default-set engine never does.
    from fedmatch.he import ckks_encode, native_compress, native_encrypt

    encoder = ckks_encode.warm_up() + native_compress.warm_up()
    ckks_encode.native_encoder(params).prepare()
    return encoder, native_encrypt.warm_up()


def garbling_factors(low: float, slots: int) -> npt.NDArray[np.complex128]:
    """Per slot (both parts) a fresh factor of random sign and magnitude 2^low to
    2^(low + 2), for a well-formedness term (:meth:`PackedBase._garble`)."""
    sign = np.where(_uniform(2 * slots) < 0.5, -1.0, 1.0)
    rho = sign * np.exp2(low + 2.0 * _uniform(2 * slots))
    values: npt.NDArray[np.complex128] = rho[:slots] + 1j * rho[slots:]
    return values


def masks(
    params: ParamSet, flags: npt.NDArray[np.bool_] | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Fresh log-uniform masks over ``params.mask_bits`` for the real and the imaginary
    parts of every slot, 0 at the flagged rows (:meth:`PackedBase._mask`)."""
    lo, hi = params.mask_bits
    slots = params.slots
    r1, r2 = (np.exp2(lo + (hi - lo) * _uniform(slots)) for _ in range(2))
    if flags is not None:
        r1[flags[:slots]] = 0.0
        r2[flags[slots:]] = 0.0
    return r1, r2


def excess_weights(
    r1: npt.NDArray[np.float64], r2: npt.NDArray[np.float64]
) -> npt.NDArray[np.complex128]:
    """The norm excess's weights: each row's mask times a fresh factor of random sign and
    magnitude 2 to 8 (:meth:`PackedBase._mask`)."""
    slots = r1.shape[0]
    factors = [
        np.where(_uniform(slots) < 0.5, -1.0, 1.0) * np.exp2(1.0 + 2.0 * _uniform(slots))
        for _ in range(2)
    ]
    values: npt.NDArray[np.complex128] = r1 * factors[0] + 1j * r2 * factors[1]
    return values


class PackedBase(Generic[BlockT]):
    """Complex-packed CKKS search with shared rotations and masked, shuffled results: every
    step but two, which a subclass supplies for its kind of encoded block (``BlockT``): how
    a block's rows are encoded (:meth:`encode_block_rows`) and how its products with the
    baby steps are summed (:meth:`_products`). :class:`PackedEngine` does both with SEAL;
    :class:`fedmatch.he.kernel_engine.KernelEngine` with the native kernel."""

    # Blocks whose products are computed together (see _GROUP).
    _group = _GROUP

    def __init__(self, params: ParamSet, dimension: int) -> None:
        self._params = params
        self._dimension = dimension
        self._dp = padded_dimension(dimension, params.slots)
        ctx = params.context()
        self._ctx = ctx
        self._encoder = seal.CKKSEncoder(ctx)
        self._evaluator = seal.Evaluator(ctx)
        # The rows, kept to re-encode a block on enrolment and erasure, until the owner says
        # where to read them (read_rows_from); then only their count is.
        self._rows = KeptRows(dimension, self.check_rows)
        self._size = 0
        self._blocks: list[BlockT] = []
        # The baby-step count new blocks are encoded with (chosen by load()).
        self._baby_steps = self._dp
        self._encryptors: OrderedDict[str, seal.Encryptor] = OrderedDict()
        # The kernel set's native encryptions of zero (fedmatch.he.native_encrypt), per key.
        self._zero_encryptors: OrderedDict[str, ZeroEncryptor] = OrderedDict()

    @property
    def params(self) -> ParamSet:
        return self._params

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def size(self) -> int:
        return self._size

    def warm_natives(self) -> tuple[float, float]:
        """:func:`warm_natives` for this engine's parameter set."""
        return warm_natives(self._params)

    def close(self) -> None:
        """Nothing to release: everything lives in this process."""

    def kept_keys(self, keys: EvaluationKeys) -> EvaluationKeys:
        return keys.searching_copy()  # it searches here: the loaded keys, not the bytes

    def read_rows_from(self, source: RowSource) -> None:
        self._rows.read_from(source)

    def held_bytes(self) -> dict[str, int]:
        """Bytes of the register this engine holds, by kind: ``register`` (the encoded
        blocks) and ``rows`` (the float32 rows, none once they are read from a source)."""
        return {
            "register": sum(self.block_nbytes(block) for block in self._blocks),
            "rows": self._rows.nbytes,
        }

    def block_nbytes(self, block: BlockT) -> int:
        """Bytes of one encoded block's data."""
        raise NotImplementedError

    def check_rows(self, templates: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``templates`` as float32 rows of this engine's dimension, or InvalidInput."""
        rows = np.asarray(templates, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self._dimension:
            raise InvalidInput(f"register rows must have dimension {self._dimension}")
        return rows

    def _nblocks(self, rows: int) -> int:
        return -(-rows // self._params.block_records)

    def choose_baby_steps(self, blocks: int) -> int:
        """The baby-step count for a query over ``blocks`` blocks (see the module doc)."""
        return choose_baby_steps(self._dp, blocks, self._params.rotation_base)

    def _rotation_cost(self, baby_steps: int, blocks: int) -> int:
        return rotation_cost(self._dp, baby_steps, blocks, self._params.rotation_base)

    def load(self, templates: npt.NDArray[np.float32]) -> None:
        rows = self.check_rows(templates)
        nblocks = self._nblocks(rows.shape[0])
        baby = self.choose_baby_steps(nblocks)
        blocks = [self._encode_block(rows, b, baby) for b in range(nblocks)]
        self._rows.replace(rows)
        # Swap in one step, so a concurrent reader sees the old or the new register.
        self._size, self._blocks, self._baby_steps = len(rows), blocks, baby

    def append(self, templates: npt.NDArray[np.float32]) -> None:
        new = self.check_rows(templates)
        if new.shape[0] == 0:
            return
        size, per = self.size, self._params.block_records
        nblocks = self._nblocks(size + len(new))
        best = self.choose_baby_steps(nblocks)
        if self._rotation_cost(self._baby_steps, nblocks) > 2 * self._rotation_cost(best, nblocks):
            # Enrolment grew the register far past what its split was chosen for: one full
            # re-encode (rare: a split stays within 2x of the best over a wide size range).
            rows = np.concatenate([self._rows.read(0, size), new])
            blocks = [self._encode_block(rows, b, best) for b in range(nblocks)]
            self._rows.replace(rows)
            self._size = len(rows)
            self._blocks, self._baby_steps = blocks, best
            return
        first, baby = size // per, self._baby_steps
        # The rows from the first block the new ones touch (its older rows are re-encoded).
        tail = np.concatenate([self._rows.read(first * per, size), new])
        touched = [self._encode_block(tail, b, baby) for b in range(nblocks - first)]
        self._rows.extend(new)
        self._size, self._blocks = size + len(new), self._blocks[:first] + touched

    def erase(self, rows: Sequence[int]) -> None:
        if any(not 0 <= r < self.size for r in rows):
            raise InvalidInput("erase names a row outside the register")
        per = self._params.block_records
        blocks = list(self._blocks)
        for b in sorted({r // per for r in rows}):
            start = b * per
            chunk = blank_rows(
                self._rows.read(start, min(start + per, self.size)),
                [r - start for r in rows if start <= r < start + per],
            )
            blocks[b] = self.encode_block_rows(chunk, self._split(blocks[b]))
        self._rows.blank(rows)
        self._blocks = blocks

    def _encode_block(self, rows: npt.NDArray[np.float32], index: int, baby_steps: int) -> BlockT:
        per = self._params.block_records
        return self.encode_block_rows(rows[index * per : (index + 1) * per], baby_steps)

    def encode_block_rows(
        self, chunk: npt.NDArray[np.float32], baby_steps: int | None = None
    ) -> BlockT:
        """One block holding ``chunk`` (at most block_records rows), encoded for
        ``baby_steps`` baby steps (a power of two dividing ``dp``; default ``dp``, no giant
        steps): diagonal ``j * n1 + k`` rotated right by ``j * n1`` slots, so that the
        giant-step rotation of the partial sum brings every product back in place."""
        raise NotImplementedError

    def _split(self, block: BlockT) -> int:
        """The baby-step count ``block`` was encoded for (``dp`` for a block that does not
        say: diagonals without pre-rotation)."""
        return int(getattr(block, "baby_steps", self._dp))

    def _diagonals(
        self, chunk: npt.NDArray[np.float32], baby_steps: int | None
    ) -> tuple[int, list[npt.NDArray[np.complex128]]]:
        """(n1, the ``dp`` slot vectors of a block's diagonals, pre-rotated as
        :meth:`encode_block_rows` says): what either kind of block encodes."""
        slots, dp, per = self._params.slots, self._dp, self._params.block_records
        n1 = dp if baby_steps is None else baby_steps
        if n1 < 1 or dp % n1:
            raise InvalidInput(f"baby steps must divide the padded dimension {dp}")
        block = np.zeros((per, dp), dtype=np.float64)
        block[: chunk.shape[0], : self._dimension] = chunk
        real, imag = block[:slots], block[slots:]
        s = np.arange(slots)
        diagonals = []
        for i in range(dp):
            cols = (s + i) % dp
            diagonals.append(np.roll(real[s, cols] + 1j * imag[s, cols], i - i % n1))
        return n1, diagonals

    def open_probe(self, data: bytes) -> OpenedProbe:
        """Load and validate a probe (both its ciphertexts) for this parameter set, or
        raise HEError."""
        if len(data) > MAX_CIPHERTEXT_BYTES:
            raise HEError(f"probe ciphertext exceeds {MAX_CIPHERTEXT_BYTES} bytes")
        # The uniform parts are the node's to expand from the probe's seed
        # (fedmatch.he.uniform).
        query, copy = uniform.open_probe_bytes(self._params, data)
        return OpenedProbe(
            self._load_probe(query, self._params.query_scale),
            self._load_probe(copy, self._params.norm_scale),
        )

    def _load_probe(self, data: bytes, scale: float) -> seal.Ciphertext:
        ct = seal.Ciphertext()
        sealio.load_bytes(lambda p: ct.load(self._ctx, p), data, "probe ciphertext")
        if ct.size() != 2:
            raise HEError("probe ciphertext must have exactly two polynomials")
        if list(ct.parms_id()) != list(self._ctx.first_parms_id()):
            raise HEError("probe ciphertext is not at the top level of the parameter set")
        if not ct.is_ntt_form():
            raise HEError("probe ciphertext is not a CKKS ciphertext in NTT form")
        if abs(ct.scale / scale - 1.0) > 1e-9:
            raise HEError("probe ciphertext scale differs from the parameter set")
        return ct

    def search(
        self,
        keys: EvaluationKeys,
        probe: bytes,
        threshold: float,
        should_stop: Callable[[], bool],
        exclude: npt.NDArray[np.bool_] | None = None,
    ) -> SearchOutput:
        rows, blocks = self.size, list(self._blocks)  # one consistent snapshot
        mask = check_search(self._params, keys, threshold, exclude, rows)
        opened = self.open_probe(probe)
        layout = new_layout(len(blocks), rows, self._params.slots)
        jobs = [(blocks[b], shift) for b, shift in zip(layout.order, layout.shifts, strict=True)]
        excluded = None
        if mask is not None:
            per_block = block_exclusions(mask, self._params.block_records)
            excluded = [per_block[b] for b in layout.order]
        out = self.score(keys, opened, threshold, jobs, should_stop, excluded)
        return SearchOutput(tuple(out), layout)

    def score(
        self,
        keys: EvaluationKeys,
        probe: OpenedProbe,
        threshold: float,
        jobs: Sequence[tuple[BlockT, int]],
        should_stop: Callable[[], bool],
        excluded: Sequence[npt.NDArray[np.bool_] | None] | None = None,
        share: RotationShare | None = None,
    ) -> list[bytes]:
        """Masked, rotated, re-randomized result ciphertexts for (block, shift) jobs, in
        order. The baby-step rotations of the query are computed once for all of them (as
        many as the blocks' largest split needs: see :meth:`_split`), by this engine alone
        or, with ``share``, together with the sharded engine's other workers
        (:mod:`fedmatch.he.rotshare`). ``excluded``, if given, holds per job the block's
        exclusion flags (block_records of them, in row order) or None for a block without
        excluded rows."""
        if excluded is not None and len(excluded) != len(jobs):
            raise InvalidInput("exclusions must name one entry per block")
        baby = max((self._split(block) for block, _ in jobs), default=1)
        rotations: Sequence[seal.Ciphertext]
        # The well-formedness terms conjugated (a key switch of probe data only, once per
        # query), for blocks whose conjugate sum the engine computed (see Sums).
        conjugated: list[tuple[seal.Ciphertext, float]] | None = None
        if share is None:
            rotations = self._rotations(probe.query, keys, should_stop, baby)
            malformation = self._malformation(probe, keys)
            excess = self._norm_excess(probe, keys)
        else:
            rotations = self._shared_rotations(probe.query, keys, should_stop, baby, share)
            malformation, conjugated, excess = self._shared_terms(probe, keys, should_stop, share)
        out = []
        constant: tuple[tuple[int, ...], float, seal.Plaintext] | None = None
        conj_thresholds: seal.Plaintext | None = None  # constant's, once a block needs it
        for start in range(0, len(jobs), self._group):
            _check_stop(should_stop)
            group = jobs[start : start + self._group]
            sums = self._rotated_products(rotations, group, keys, should_stop)
            for k, (acc, (_, shift)) in enumerate(zip(sums.sums, group, strict=True)):
                flags = None if excluded is None else excluded[start + k]
                applied, conj = sums.applied[k], sums.conjugates[k]
                if applied:
                    # The sum came out rotated by that much already: its rows moved with
                    # it, and only the rest of the shift is left (after the masks).
                    flags = None if flags is None else rotated_flags(flags, applied)
                    shift = (shift - applied) % self._params.slots
                if conj is not None and conjugated is None:
                    conjugated = self._conjugated_terms(malformation, keys)
                # One encode of the constant threshold per query, shared by the blocks.
                level = (tuple(acc.parms_id()), acc.scale)
                if constant is None or constant[:2] != level:
                    constant = (*level, self._threshold(acc, threshold))
                    conj_thresholds = None
                if conj is not None and conj_thresholds is None:
                    conj_thresholds = self._conjugate_plain(constant[2])
                acc = self._blend(
                    acc, malformation, keys, threshold, constant[2], flags, excess,
                    conj, conjugated, conj_thresholds,
                )  # fmt: skip
                self._rotate(acc, shift, keys)
                self._rerandomize(acc, keys)
                out.append(resultfmt.compress(acc, self._params))
        return out

    def padding_block(self, keys: EvaluationKeys, threshold: float) -> bytes:
        """A result block of decoys only, made like a block whose every row is excluded
        (no register data, no product: an encryption of zero, fresh negative decoys drawn
        like ordinary non-matches, then the same re-randomization)."""
        ps = self._params
        # The probe's level, and the scale of its products with the register.
        scale = ps.query_scale * ps.register_scale
        block = self._decoy_block(keys, self._ctx.first_parms_id(), scale, threshold)
        self._rerandomize(block, keys)
        return resultfmt.compress(block, self._params)

    def _rotations(
        self,
        query: seal.Ciphertext,
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
        count: int | None = None,
    ) -> list[seal.Ciphertext]:
        """The query rotated left by 0 .. count - 1 slots (default: all ``dp``)."""
        rotations = [query]
        for i in range(1, self._dp if count is None else count):
            if i % 16 == 0:
                _check_stop(should_stop)
            nxt = seal.Ciphertext()
            self._evaluator.rotate_vector(rotations[-1], 1, keys.galois_keys, nxt)
            rotations.append(nxt)
        return rotations

    def _shared_rotations(
        self,
        query: seal.Ciphertext,
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
        count: int,
        share: RotationShare,
    ) -> Sequence[seal.Ciphertext]:
        """The rotations of :meth:`_rotations`, this worker computing its share of them (an
        engine whose products read the rotations' words: KernelEngine)."""
        share.fail()
        raise HEError("this engine computes the query's rotations alone")

    def _products(
        self,
        rotations: Sequence[seal.Ciphertext],
        blocks: Sequence[BlockT],
        keys: EvaluationKeys,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[seal.Ciphertext]:
        """Per block, the sum over its diagonals of baby step times diagonal, giant steps
        combined (the block's scores before the threshold, at the product scale)."""
        raise NotImplementedError

    def _rotated_products(
        self,
        rotations: Sequence[seal.Ciphertext],
        jobs: Sequence[tuple[BlockT, int]],
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
    ) -> Sums:
        """The sums of :meth:`_products` for (block, shift) jobs, per job the left rotation
        its sum already comes out with, part of its shift, and its conjugate sum (an engine
        that rotates and conjugates while it sums, see KernelEngine; here neither: score()
        rotates after the masks and conjugates with a key switch)."""
        sums = self._products(rotations, [block for block, _ in jobs], keys, should_stop)
        return Sums(sums, [0] * len(sums), [None] * len(sums))

    def _zero_sum(
        self, rotations: Sequence[seal.Ciphertext], keys: EvaluationKeys
    ) -> seal.Ciphertext:
        """The sum of an all-zero block (not from unit-norm rows, but never crash on it):
        every score is 0, so an encryption of zero at the product level and scale."""
        acc = seal.Ciphertext()
        self._encryptor(keys).encrypt_zero(rotations[0].parms_id(), acc)
        acc.scale = rotations[0].scale * self._params.register_scale
        return acc

    def _malformation(
        self, probe: OpenedProbe, keys: EvaluationKeys
    ) -> list[tuple[seal.Ciphertext, float]]:
        """The probe's linear well-formedness terms, each zero (up to ~4e-7 of noise)
        exactly for a well-formed probe; :meth:`_garble` adds each, times fresh random
        plaintexts, to every block's scores. Only the probe is key-switched here.

        - ``w = 4q - sum_j rot(q, k_j * dp) - conj(q)`` over three ``k_j`` fresh per query
          in [1, slots / dp): zero exactly when the probe is real and replicated with
          period ``dp``, whatever its content. A probe that packs several people into its
          periods (32 templates of 128 in 4,096 slots), or uses the imaginary parts, got one
          full search per person and part for the price of one query (issue 15, attack 3).
          The real part ``3u - sum rot(u)`` vanishes only if every rotation equals ``u`` (a
          rotation keeps the norm: the triangle inequality is tight only for equal vectors),
          the imaginary part ``5v - sum rot(v)`` only for ``v = 0``. Random offsets, three
          of them: a pattern with a longer period (AAAA...BBBB) escapes a fixed offset of one
          period in all but two periods; here every comparison that crosses from one run to
          another garbles its periods, at least two per block, whose random positives then
          drown whatever real match the rest of the block holds.
        - ``z = q - q2``, the probe against its norm copy (brought to the query scale): the
          norm check of :meth:`_norm_excess` reads the copy, so the copy must be the probe.
          Its own random multiplier, so that no choice of copy cancels ``w``."""
        return [(w, low) for w, low in self._malformation_parts(probe, keys) if w is not None]

    def _malformation_parts(
        self, probe: OpenedProbe, keys: EvaluationKeys
    ) -> list[tuple[seal.Ciphertext | None, float]]:
        """:meth:`_malformation`'s two terms, replication then consistency, None for one
        that is not made (no norm copy, or exactly zero)."""
        parts: list[tuple[seal.Ciphertext | None, float]] = []
        builds = (self._replication, self._consistency)
        for build, low in zip(builds, _TERM_LOWS, strict=True):
            w = seal.Ciphertext()
            try:
                made = build(probe, keys, w)
            except RuntimeError as exc:
                # SEAL refuses to produce an exactly-zero ciphertext; 0 garbles nothing.
                if "transparent" not in str(exc):
                    raise
                made = False
            parts.append((w if made else None, low))
        return parts

    def _shared_terms(
        self,
        probe: OpenedProbe,
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
        share: RotationShare,
    ) -> tuple[
        list[tuple[seal.Ciphertext, float]],
        list[tuple[seal.Ciphertext, float]] | None,
        seal.Ciphertext | None,
    ]:
        """:meth:`_malformation`, its conjugates (when the blocks take conjugate sums, that
        is have no giant steps; else None) and :meth:`_norm_excess`, with the sharded
        engine's other workers (:mod:`fedmatch.he.rotshare`): this worker computes its part
        and writes it, then reads its peers'. Every term is a size-2 ciphertext at the
        probe's level (open_probe refuses a probe or norm copy that is not at the top level
        with two parts), so only the words and the scale travel."""
        query = probe.query
        shape = (2, query.coeff_modulus_size(), query.poly_modulus_degree())
        mine: dict[int, seal.Ciphertext] = {}
        try:
            header, words = share.terms(shape)
            owned: list[int] = []
            if share.computes(0):
                owned += [0, 1, 2, 3]
                for slot, (term, _) in enumerate(self._malformation_parts(probe, keys)):
                    if term is None:
                        continue
                    mine[slot] = term
                    if share.count == self._dp:
                        mine[2 + slot] = self._conjugated_terms([(term, 0.0)], keys)[0][0]
            if share.computes(1):
                owned.append(4)
                excess = self._norm_excess(probe, keys)
                if excess is not None:
                    mine[4] = excess
            for slot in owned:
                header[slot] = (0.0, 0.0)
                if slot in mine:
                    sealmem.read_ciphertext(mine[slot], words[slot])
                    header[slot] = (1.0, mine[slot].scale)
            share.publish(1)
        except BaseException:
            share.fail()
            raise
        share.wait(should_stop, round_=1)
        got: dict[int, seal.Ciphertext] = {}
        for slot in range(len(header)):
            if slot in mine:
                got[slot] = mine[slot]
            elif header[slot, 0] == 1.0:
                got[slot] = self._holding(query, words[slot])  # copied into SEAL
                got[slot].scale = float(header[slot, 1])
        terms = [(got[slot], _TERM_LOWS[slot]) for slot in (0, 1) if slot in got]
        conjugates = [(got[2 + slot], _TERM_LOWS[slot]) for slot in (0, 1) if 2 + slot in got]
        conjugated = conjugates if len(conjugates) == len(terms) and conjugates else None
        return terms, conjugated, got.get(4)

    def _holding(self, like: seal.Ciphertext, words: npt.NDArray[np.uint64]) -> seal.Ciphertext:
        """A new ciphertext holding ``words``, shaped like ``like`` (its level, size, NTT
        form and scale)."""
        ct = seal.Ciphertext()
        # Any evaluation gives a ciphertext with like's parms_id, size, NTT flag and scale
        # (sealapi binds no copy constructor); its words are then replaced.
        self._evaluator.negate(like, ct)
        sealmem.write_ciphertext(ct, self._ctx, words)
        return ct

    def _replication(self, probe: OpenedProbe, keys: EvaluationKeys, w: seal.Ciphertext) -> bool:
        """``w`` = the replication and realness term of :meth:`_malformation`."""
        ev, dp, slots, query = self._evaluator, self._dp, self._params.slots, probe.query
        ev.add(query, query, w)
        if slots > dp:
            ev.add_inplace(w, query)
            ev.add_inplace(w, query)  # 4q
            for _ in range(3):
                shifted = seal.Ciphertext()
                ev.negate(query, shifted)  # -q, rotated, added (SEAL binds no copy constructor)
                self._rotate(shifted, (1 + _random_below(slots // dp - 1)) * dp, keys)
                ev.add_inplace(w, shifted)
        else:
            ev.sub_inplace(w, query)  # one period fills the slots: only realness is checked
        conj = seal.Ciphertext()
        ev.complex_conjugate(query, keys.galois_keys, conj)
        ev.sub_inplace(w, conj)
        return True

    def _consistency(self, probe: OpenedProbe, keys: EvaluationKeys, z: seal.Ciphertext) -> bool:
        """``z`` = the probe minus its norm copy, at the query scale (False: no copy)."""
        if probe.norm_copy is None:
            return False
        ps = self._params
        one = seal.Plaintext()
        # Copy scale times this one's scale is the query scale (2^30 * 2^10 = 2^40).
        lift = ps.query_scale / ps.norm_scale
        self._encoder.encode([1.0 + 0j] * ps.slots, probe.norm_copy.parms_id(), lift, one)
        self._evaluator.multiply_plain(probe.norm_copy, one, z)
        self._evaluator.negate_inplace(z)
        self._evaluator.add_inplace(z, probe.query)
        return True

    def _norm_excess(self, probe: OpenedProbe, keys: EvaluationKeys) -> seal.Ciphertext | None:
        """``2 (||q2||^2 - 1)`` in every slot, real (the squared norm of each period of the
        probe's norm copy, summed by log2(dp) rotations), at the accumulators' scale; None
        without a copy. :meth:`_mask` adds it, times each row's mask and a fresh factor of
        2 to 8 of random sign, to the masked scores: an honest probe's excess is noise (at
        most ~2.8e-6, measured: a score moves by at most ~2e-5), a long probe's moves every
        score by 0.4 to 1.6 (norm 1.05) or 0.8 to 3.4 (norm 1.1) at random, and a norm of
        1.4 or more overflows the modulus: the whole block decrypts to noise.

        Why: a probe of norm 3 turned 0 matches into 351 (issue 15, attack 2); with its
        threshold chosen so, a requester could read bands of scores, and with them link
        positions across queries (attack 4). The library refuses a template whose norm is
        off by more than 1e-3 and normalizes exactly; this is the node's own check."""
        copy = probe.norm_copy
        if copy is None:
            return None
        ev = self._evaluator
        total = seal.Ciphertext()
        ev.square(copy, total)
        ev.relinearize_inplace(total, keys.relin_keys)
        step = 1
        while step < self._dp:
            ev.add_inplace(total, self._rotated(total, step, keys))
            step *= 2
        # 2 (N - 1) - its imaginary part taken away: the excess is added after the masks,
        # where an imaginary part would carry a row's noise into its slot partner's value
        # (and a large mask of one into the small mask of the other).
        two = seal.Plaintext()
        self._encoder.encode([2.0 + 0j] * self._params.slots, total.parms_id(), total.scale, two)
        conj = seal.Ciphertext()
        try:
            ev.complex_conjugate(total, keys.galois_keys, conj)
            ev.add_inplace(total, conj)
            ev.sub_plain_inplace(total, two)
        except RuntimeError as exc:
            if "transparent" not in str(exc):
                raise
            return None
        return total

    def _blend(
        self,
        acc: seal.Ciphertext,
        terms: Sequence[tuple[seal.Ciphertext, float]],
        keys: EvaluationKeys,
        threshold: float,
        thresholds: seal.Plaintext,
        flags: npt.NDArray[np.bool_] | None,
        excess: seal.Ciphertext | None,
        conj: seal.Ciphertext | None,
        conjugated: Sequence[tuple[seal.Ciphertext, float]] | None,
        conj_thresholds: seal.Plaintext | None,
    ) -> seal.Ciphertext:
        """A block's sums to its masked scores: :meth:`_garble`, then :meth:`_mask` (the
        kernel engine does both in one native pass where it can)."""
        self._garble(acc, terms, conj, conjugated)
        return self._mask(acc, thresholds, keys, threshold, flags, excess, conj, conj_thresholds)

    def _garble(
        self,
        acc: seal.Ciphertext,
        terms: Sequence[tuple[seal.Ciphertext, float]],
        conj: seal.Ciphertext | None = None,
        conjugated: Sequence[tuple[seal.Ciphertext, float]] | None = None,
    ) -> None:
        """Add ``rho * term`` to a block's scores for each well-formedness term, rho fresh
        per block, term and slot (both parts), of random sign and magnitude 2^low to
        2^(low + 2) (replication 2^2 to 2^4, consistency 2^4 to 2^6). A well-formed probe's
        terms are noise (at most ~1.6e-6 and ~8e-7, measured): a score moves by at most
        ~8e-5, below the 1e-4 the kernel resolves anyway; a packed or complex probe, whose
        terms are ~0.1 per slot, gets every score moved by ~0.4 to 1.6 at random, a long
        probe with an honest copy by ~3 to 12: signs that say nothing, many positive.
        With a conjugate sum ``conj`` (see Sums), ``conj(rho) * conj(term)`` is added to it
        (``conjugated``: the terms conjugated, in the same order): the conjugate of what
        the scores got, as the key-switched conjugate of the scores would hold."""
        ps, slots = self._params, self._params.slots
        if conj is not None and (conjugated is None or len(conjugated) != len(terms)):
            raise HEError("a conjugate sum needs the conjugated well-formedness terms")
        for index, (term, low) in enumerate(terms):
            plain, product = seal.Plaintext(), seal.Ciphertext()
            values = garbling_factors(low, slots)
            self._encode_values(values, term.parms_id(), ps.register_scale, plain)
            self._evaluator.multiply_plain(term, plain, product)
            self._evaluator.add_inplace(acc, product)
            if conj is not None and conjugated is not None:
                self._evaluator.multiply_plain(
                    conjugated[index][0], self._conjugate_plain(plain), product
                )
                self._evaluator.add_inplace(conj, product)

    def _conjugated_terms(
        self, terms: Sequence[tuple[seal.Ciphertext, float]], keys: EvaluationKeys
    ) -> list[tuple[seal.Ciphertext, float]]:
        """The well-formedness terms conjugated: key switches of the probe's data only."""
        out = []
        for term, low in terms:
            conj = seal.Ciphertext()
            self._evaluator.complex_conjugate(term, keys.galois_keys, conj)
            out.append((conj, low))
        return out

    def _conjugate_plain(self, plain: seal.Plaintext) -> seal.Plaintext:
        """The plaintext of ``plain``'s slots conjugated: its NTT words permuted
        (:func:`fedmatch.he.slotorder.conjugated`), no encode."""
        degree = self._params.poly_modulus_degree
        words = np.empty((plain.coeff_count() // degree, degree), dtype=np.uint64)
        sealmem.read_plaintext(plain, words)
        out = seal.Plaintext()
        # SEAL shapes the plaintext (level, size, NTT form, scale); the words are replaced.
        self._encoder.encode(0.0, plain.parms_id(), plain.scale, out)
        sealmem.write_plaintext(out, self._ctx, conjugated(words))
        return out

    def _threshold(self, acc: seal.Ciphertext, threshold: float) -> seal.Plaintext:
        """``t`` in every slot (both parts), at ``acc``'s level and scale."""
        plain = seal.Plaintext()
        value = complex(threshold, threshold)
        self._encoder.encode([value] * self._params.slots, acc.parms_id(), acc.scale, plain)
        return plain

    def _encode_values(
        self,
        values: npt.NDArray[np.complex128],
        parms_id: list[int],
        scale: float,
        plain: seal.Plaintext,
    ) -> None:
        """A block's fresh random slot values (masks, weights, garbling factors, decoys,
        flood) encoded into ``plain``: by the native encoder where it is faster than
        SEAL's (levels of primes below 2^30, the kernel set: ~0.3 ms against ~0.6 ms at
        four primes, :mod:`fedmatch.he.ckks_encode`), else by SEAL. Both give the same
        plaintext up to a coefficient's rounding of ``.5``, so the encoding error (std ~26
        in slot units at scale 1) is the same."""
        if self._params.kernel:
            # Imported here: it loads numba, which a default-set engine never does.
            from fedmatch.he import ckks_encode

            native = ckks_encode.native_encoder(self._params)
            if native.fast(parms_id):
                try:
                    native.encode(values, parms_id, scale, plain)
                    return
                except HEError:
                    pass  # beyond 2^62 per coefficient: SEAL's multi-precision path decides
        self._encoder.encode(values.astype(np.complex128).tolist(), parms_id, scale, plain)

    def _mask(
        self,
        acc: seal.Ciphertext,
        thresholds: seal.Plaintext,
        keys: EvaluationKeys,
        threshold: float,
        flags: npt.NDArray[np.bool_] | None = None,
        excess: seal.Ciphertext | None = None,
        conj: seal.Ciphertext | None = None,
        conj_thresholds: seal.Plaintext | None = None,
    ) -> seal.Ciphertext:
        """``r1*(a - t) + i*r2*(b - t)`` with fresh log-uniform masks, rescaled (``acc`` is
        used up; so is ``conj``, the block's conjugate sum if the engine computed it, see
        Sums, with ``conj_thresholds`` the thresholds conjugated), plus the norm excess
        (:meth:`_norm_excess`) times each row's mask and a fresh random factor;
        ``thresholds`` (from :meth:`_threshold`) holds ``t`` per slot. A row whose flag is
        set (block row order: slot s's real part is row s, its imaginary part row
        slots + s) gets the mask 0 and, after the rescale, a fresh negative decoy instead
        (see _DECOY_SCORE_SD): its score is multiplied away, whatever the probe's norm."""
        ev, ps = self._evaluator, self._params
        slots = ps.slots
        if flags is not None and flags.shape != (2 * slots,):
            raise InvalidInput("block exclusions must hold one flag per block record")
        # Threshold and masks at the product level, where the 110-bit modulus has room for
        # scale 2^60 times masks up to 2^47 (see fedmatch.he.params).
        parms_id = acc.parms_id()
        if flags is not None and bool(flags.all()):
            # Every row excluded: nothing of the scores is kept, and SEAL refuses a product
            # by the zero plaintext.
            return self._decoy_block(keys, parms_id, acc.scale, threshold)
        ev.sub_plain_inplace(acc, thresholds)
        if conj is None:
            conj = seal.Ciphertext()
            ev.complex_conjugate(acc, keys.galois_keys, conj)
        elif conj_thresholds is None:
            raise HEError("a conjugate sum needs the thresholds conjugated")
        else:
            ev.sub_plain_inplace(conj, conj_thresholds)
        r1, r2 = masks(ps, flags)
        plus, minus = seal.Plaintext(), seal.Plaintext()
        self._encode_values(((r1 + r2) / 2).astype(np.complex128), parms_id, 1.0, plus)
        self._encode_values(((r1 - r2) / 2).astype(np.complex128), parms_id, 1.0, minus)
        ev.multiply_plain_inplace(acc, plus)
        ev.multiply_plain_inplace(conj, minus)
        ev.add_inplace(acc, conj)
        if excess is not None:
            # Times the row's own mask (0 for an excluded row): the excess moves a score by
            # a fixed multiple of itself, in the units the mask gives every value. The masks
            # are 2^30 and more, so encoding at scale 1 keeps them exact enough.
            weights, product = seal.Plaintext(), seal.Ciphertext()
            self._encode_values(excess_weights(r1, r2), parms_id, 1.0, weights)
            ev.multiply_plain(excess, weights, product)
            ev.add_inplace(acc, product)
        return self._finish_mask(acc, threshold, flags)

    def _finish_mask(
        self, acc: seal.Ciphertext, threshold: float, flags: npt.NDArray[np.bool_] | None
    ) -> seal.Ciphertext:
        """The masked scores rescaled to the result level, decoys at the excluded rows."""
        self._rescale_to_result(acc)
        if flags is not None:
            self._evaluator.add_plain_inplace(acc, self._decoys(acc, threshold, flags))
        return acc

    def _rescale_to_result(self, ct: seal.Ciphertext) -> None:
        """Rescale until the result level (``ParamSet.result_moduli`` data primes) is
        reached: once for the default set, twice for the kernel set."""
        while ct.coeff_modulus_size() > self._params.result_moduli:
            self._evaluator.rescale_to_next_inplace(ct)

    def _decoy_block(
        self, keys: EvaluationKeys, parms_id: list[int], scale: float, threshold: float
    ) -> seal.Ciphertext:
        """What a block of only excluded rows masks to: a fresh encryption of zero at the
        level and scale a block's scores have before the masks (encoded at scale 1, they
        leave the scale as it is), rescaled, plus decoys in every slot."""
        result_id, result_scale = self._result_level(parms_id, scale)
        native = self._native_zero(keys, result_id)
        if native is not None:
            # Made at the result level directly (one level up and rescaled, as SEAL's
            # encryptions there are): not at the top level and rescaled twice, ~4 ms less.
            zero = native.encrypt_zero(result_id, result_scale)
        else:
            zero = seal.Ciphertext()
            self._encryptor(keys).encrypt_zero(parms_id, zero)
            zero.scale = scale
            self._rescale_to_result(zero)
        flags = np.ones(2 * self._params.slots, dtype=np.bool_)
        self._evaluator.add_plain_inplace(zero, self._decoys(zero, threshold, flags))
        return zero

    def _decoys(
        self, acc: seal.Ciphertext, threshold: float, flags: npt.NDArray[np.bool_]
    ) -> seal.Plaintext:
        """Fresh negative values like an ordinary non-match's at the flagged rows, 0
        elsewhere, at ``acc``'s level and scale."""
        slots = self._params.slots
        lo, hi = self._params.mask_bits
        decoys = -np.exp2(lo + (hi - lo) * _uniform(2 * slots)) * np.abs(
            threshold - _DECOY_SCORE_SD * _normal(2 * slots)
        )
        decoys[~flags] = 0.0
        plain = seal.Plaintext()
        values = decoys[:slots] + 1j * decoys[slots:]
        self._encode_values(values, acc.parms_id(), acc.scale, plain)
        return plain

    def _rotated(self, ct: seal.Ciphertext, step: int, keys: EvaluationKeys) -> seal.Ciphertext:
        """A new ciphertext: ``ct`` (probe data only) rotated left by ``step``, a step one
        rotation key takes (the kernel engine's is native where it can be)."""
        out = seal.Ciphertext()
        self._evaluator.rotate_vector(ct, step, keys.galois_keys, out)
        return out

    def _rotate(self, ct: seal.Ciphertext, shift: int, keys: EvaluationKeys) -> None:
        """``ct`` rotated left by ``shift`` in place: one key switch per nonzero digit of
        ``shift`` in the rotation base (a key exists for each digit times its power)."""
        base, power = self._params.rotation_base, 1
        while shift:
            shift, digit = divmod(shift, base)
            if digit:
                self._rotate_step(ct, digit * power, keys)
            power *= base

    def _rotate_step(self, ct: seal.Ciphertext, step: int, keys: EvaluationKeys) -> None:
        """``ct`` rotated left by ``step``, a step one rotation key takes, in place (the
        kernel engine's is native where it can be)."""
        self._evaluator.rotate_vector_inplace(ct, step, keys.galois_keys)

    def _rerandomize(self, ct: seal.Ciphertext, keys: EvaluationKeys) -> None:
        # Slot-domain noise above the computation's own noise (which depends on the
        # register) and well below a masked value, in a fresh public-key encryption so that
        # the ciphertext's randomness is new. The bound is what it is, not circuit privacy:
        # uniform noise of 2^16 against evaluation noise of ~2^10 (measured by
        # tests/unit/test_he.py::test_the_flood_bound_is_what_the_docs_say) hides the latter
        # only to a statistical distance of ~2^-7 per slot, not the 2^-40 the term usually
        # means. Widening the flood needs room below the
        # masked values (see fedmatch.he.params) and is open.
        ps, parms_id = self._params, ct.parms_id()
        bound = float(2**ps.flood_bits)
        noise = (2 * _uniform(ps.slots) - 1) + 1j * (2 * _uniform(ps.slots) - 1)
        native = self._native_zero(keys, parms_id)
        if native is not None:
            # The kernel set: SEAL's encryption computed natively with the flood folded in,
            # ~0.95 ms against ~2.9 ms (fedmatch.he.native_encrypt: same function, CSPRNG).
            native.add_to(ct, (bound * noise).astype(np.complex128))
            return
        plain = seal.Plaintext()
        self._encode_values((bound * noise).astype(np.complex128), parms_id, ct.scale, plain)
        # One public-key encryption of the noise: fresh randomness and the flooding together.
        fresh = seal.Ciphertext()
        self._encryptor(keys).encrypt(plain, fresh)
        self._evaluator.add_inplace(ct, fresh)

    def _native_zero(self, keys: EvaluationKeys, parms_id: list[int]) -> ZeroEncryptor | None:
        """The native encryptor of zero for ``keys`` if it covers ``parms_id`` (the kernel
        set below its top level, where it is faster than SEAL's: a block's re-randomization
        ~0.95 ms against ~2.9 ms, measured), else None: the default set keeps SEAL's (its
        50-60-bit primes do not take the uint32 NTT), and never loads numba."""
        if not self._params.kernel:
            return None
        native = self._zero_encryptors.get(keys.key_id)
        if native is None:
            from fedmatch.he.native_encrypt import ZeroEncryptor

            # The key's words are read once per key id, like its SEAL encryptor.
            native = ZeroEncryptor(self._params, keys.public_key)
            self._zero_encryptors[keys.key_id] = native
            while len(self._zero_encryptors) > 8:
                self._zero_encryptors.popitem(last=False)
        return native if native.fast(parms_id) else None

    def _result_level(self, parms_id: list[int], scale: float) -> tuple[list[int], float]:
        """Where :meth:`_rescale_to_result` takes a ciphertext at ``parms_id`` and
        ``scale``: the result level's parms_id and the scale SEAL's rescales leave."""
        data = self._ctx.get_context_data(parms_id)
        while len(data.parms().coeff_modulus()) > self._params.result_moduli:
            scale /= data.parms().coeff_modulus()[-1].value()
            data = data.next_context_data()
        return list(data.parms_id()), scale

    def _encryptor(self, keys: EvaluationKeys) -> seal.Encryptor:
        encryptor = self._encryptors.get(keys.key_id)
        if encryptor is None:
            encryptor = seal.Encryptor(self._ctx, keys.public_key)
            self._encryptors[keys.key_id] = encryptor
            while len(self._encryptors) > 8:
                self._encryptors.popitem(last=False)
        return encryptor


class PackedEngine(PackedBase[list[seal.Plaintext]]):
    """The packed search with SEAL's plaintext products: blocks of SEAL plaintexts (an
    :class:`EncodedBlock`, or in tests a plain list of diagonals without pre-rotation)."""

    def encode_block_rows(
        self, chunk: npt.NDArray[np.float32], baby_steps: int | None = None
    ) -> list[seal.Plaintext]:
        """The block's diagonals as SEAL plaintexts (see :meth:`PackedBase.encode_block_rows`),
        in an :class:`EncodedBlock`, which carries its split to :meth:`score`."""
        n1, diagonals = self._diagonals(chunk, baby_steps)
        parms_id = self._ctx.first_parms_id()
        plains = []
        for diagonal in diagonals:
            plain = seal.Plaintext()
            self._encoder.encode(diagonal.tolist(), parms_id, self._params.register_scale, plain)
            plains.append(plain)
        return EncodedBlock(plains, n1)

    def block_nbytes(self, block: list[seal.Plaintext]) -> int:
        # A plaintext's words: one 64-bit word per coefficient and modulus.
        return sum(8 * plain.coeff_count() for plain in block)

    def _products(
        self,
        rotations: Sequence[seal.Ciphertext],
        blocks: Sequence[list[seal.Plaintext]],
        keys: EvaluationKeys,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[seal.Ciphertext]:
        """Sum over diagonals of rotation x plaintext, for a group of blocks at once.

        Blocks of one split run together, giant step by giant step: the ``n1`` products of
        a giant step are summed, and the partial sums are combined by Horner's rule, so
        partial sum ``j`` ends up rotated left by ``j * n1`` (its diagonals were pre-rotated
        right by as much). The
        inner loop runs diagonal-major: each rotated query (262 KB) is used by every block
        of the group while it is still in cache, instead of streaming all rotations (33 MB
        at d = 128) once per block. Measured here this is what lets two workers scale."""
        sums: list[seal.Ciphertext | None] = [None] * len(blocks)
        splits: dict[int, list[int]] = {}
        for index, plains in enumerate(blocks):
            splits.setdefault(self._split(plains), []).append(index)
        for n1, members in splits.items():
            # Horner's rule over the giant steps, from the last: S = inner_j + L_n1(S). The
            # same rotation count as rotating each partial sum by j * n1, but every rotation
            # is by n1 (one key, hot in cache) and a block keeps a single running sum.
            for j in reversed(range(self._dp // n1)):
                _check_stop(should_stop)
                partial = self._giant_step(rotations, [blocks[m] for m in members], j, n1)
                for m, acc in zip(members, partial, strict=True):
                    total = sums[m]
                    if total is not None:
                        self._rotate(total, n1, keys)
                        if acc is not None:
                            self._evaluator.add_inplace(total, acc)
                    else:
                        sums[m] = acc
        out = []
        for acc in sums:
            out.append(self._zero_sum(rotations, keys) if acc is None else acc)
        return out

    def _giant_step(
        self,
        rotations: Sequence[seal.Ciphertext],
        blocks: Sequence[list[seal.Plaintext]],
        j: int,
        n1: int,
    ) -> list[seal.Ciphertext | None]:
        """Per block, the sum of its diagonals ``j * n1 .. j * n1 + n1 - 1`` times the baby
        steps (None if every one of those diagonals is zero)."""
        ev = self._evaluator
        sums: list[seal.Ciphertext | None] = [None] * len(blocks)
        term = seal.Ciphertext()
        for k in range(n1):
            rot = rotations[k]
            for b, plains in enumerate(blocks):
                plain = plains[j * n1 + k]
                # A diagonal of a nearly empty block can round to the zero polynomial, and
                # SEAL refuses to produce the transparent ciphertext a product would be.
                if plain.is_zero():
                    continue
                acc = sums[b]
                if acc is None:
                    acc = seal.Ciphertext()
                    ev.multiply_plain(rot, plain, acc)
                    sums[b] = acc
                else:
                    ev.multiply_plain(rot, plain, term)
                    ev.add_inplace(acc, term)
        return sums
