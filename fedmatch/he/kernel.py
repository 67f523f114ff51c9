"""The native plaintext-product kernel: a block's encrypted scores as sums of the probe's
baby-step rotations times the register's diagonals, in RNS residues, with lazy reduction.

It computes exactly what SEAL's ``multiply_plain`` + ``add_inplace`` compute on ciphertexts
and plaintexts in NTT form (a product per coefficient and modulus, a sum, each mod q), with
the register stored as ``uint32`` residues (dp diagonals x moduli x N per block; with the
kernel set's primes packed into 14 bytes a coefficient, see :class:`PackedBlock`) instead of
SEAL plaintexts of ``uint64`` words, and one exact reduction per output instead of one per
product and sum:

- a product of two residues below q <= 2^30 is below 2^60; products are added into a uint64
  accumulator as long as it cannot overflow (``lazy_limits``: 16 products for a 30-bit
  prime, 64 for a 29-bit one), then the accumulator is folded (``hi * (2^32 mod q) + lo``,
  below 2^32 q, congruent) and the sum goes on (12 and 56 products per fold);
- the coefficients are cut in tiles (``tile_for``: half the ring degree on one core, a
  quarter on more), and blocks and rotations are stored tile by tile (``tiled``): a task
  reads one contiguous run of a block (dp x tile x 4 bytes) and the same tile of every
  baby-step rotation, so the register streams once per query, sequentially (stored
  coefficient-major instead, it ran 1.7x slower at dp = 128 and 4.5x at dp = 512,
  measured), and the rotations are read once per group of blocks. Runs as long as
  possible, two baby steps per pass (each accumulator loaded and stored once for two
  products) and accumulator rows padded off the 4 KB stride (``_ROW_PAD``) go together:
  with all three the kernel with conjugate sums takes ~3.4 ms a block at dp = 128 and
  ~15 ms at dp = 512 on one core, against ~8 and ~32 ms with tiles of 1,024 and 256
  coefficients, one step per pass and unpadded rows (measured here, 16 blocks, random
  shifts). Unpadded, longer tiles were slower: the eight rows then sit at one offset
  modulo 4 KB and every load after a store to another row waits for it (4K aliasing),
  which is what had made tiles that fit in L2 look better;
- tiles of all moduli are spread over the cores (numba ``prange``; ``threads`` per call, a
  serial compilation for one), a tile with its partner in the other half of the slot
  order, whose words the conjugate sums read (``products_with_conjugates``).

Compilation: numba compiles the kernel the first time it runs, ~5 s for the serial variant
and ~13.5 s for the parallel one here (``warm_up`` measures it; the engine calls it when it
starts, so no query pays it; one step per pass took ~4 and ~9 s). Compile time grows
with every inlined copy of a run: the run is inlined at two call sites and the unpacking
is a call (with four inlined runs and inlined unpacking it took ~20 s; with nothing
inlined ~8.5 s, and the kernel ran ~20% slower). Nothing is cached on
disk (``cache=False``): a node's image is read-only (the package directory cannot take a
cache), a cache under ``$HOME`` (the image's tmpfs) would be lost at every restart, and a
cache directory the service may write to is one from which it loads and runs machine code,
which nothing else in the node needs to be. ``NUMBA_CACHE_DIR`` is therefore irrelevant.
Each process compiles its own copy; the sharded engine compiles once, in the process that
then forks its workers (:mod:`fedmatch.he.sharded`), which run on one core each: the serial
variant (``_kernel_serial``), which needs no threading layer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from fedmatch.errors import HEError
from fedmatch.he import ckks_encode
from fedmatch.he.params import ParamSet

__all__ = [
    "GROUP",
    "KernelModuli",
    "PackedBlock",
    "compiled_specializations",
    "default_threads",
    "lazy_limits",
    "pack",
    "place",
    "products",
    "products_with_conjugates",
    "tile_for",
    "tiled",
    "warm_up",
]

# Blocks scored per kernel call: the kernel takes a tuple of this many blocks (numba
# compiles one tuple length; a short group is padded and the padding never read).
GROUP = 16
_U64_MAX = (1 << 64) - 1
_U64 = np.uint64(_U64_MAX)
# Words of padding after each accumulator row (see _accumulate): 512 bytes, which spreads
# the eight rows evenly over a 4 KB window at either tile size (rows of 32 and 16 KB).
_ROW_PAD = 64
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_ZERO = np.uint64(0)


def lazy_limits(q: int) -> tuple[int, int]:
    """(products a zero uint64 accumulator takes before it must be folded, products after
    each fold), for residues below ``q``. A fold leaves ``hi * (2^32 mod q) + lo`` <=
    (2^32 - 1) q."""
    if not 2 < q < 1 << 31:
        raise HEError("kernel moduli must be odd primes below 2^31")
    square = (q - 1) ** 2
    return _U64_MAX // square, (_U64_MAX - ((1 << 32) - 1) * q) // square


@dataclass(frozen=True)
class KernelModuli:
    """The data moduli of the level the kernel computes at, and their reduction constants."""

    moduli: npt.NDArray[np.uint64]
    fold: npt.NDArray[np.uint64]  # 2^32 mod q
    first: npt.NDArray[np.int64]
    later: npt.NDArray[np.int64]
    # Top bits of each word of the first moduli that carry the last modulus's high bits
    # (see pack); 0: every residue in a word of its own.
    spare: int = 0

    @classmethod
    def of(cls, moduli: Sequence[int]) -> KernelModuli:
        limits = [lazy_limits(q) for q in moduli]
        return cls(
            np.array(moduli, dtype=np.uint64),
            np.array([(1 << 32) % q for q in moduli], dtype=np.uint64),
            np.array([f for f, _ in limits], dtype=np.int64),
            np.array([later for _, later in limits], dtype=np.int64),
            _spare_bits(moduli),
        )

    @classmethod
    def top_level(cls, params: ParamSet) -> KernelModuli:
        """The moduli of a parameter set's top data level (where probes and products live)."""
        ctx = params.context()
        return cls.of([m.value() for m in ctx.first_context_data().parms().coeff_modulus()])


def _spare_bits(moduli: Sequence[int]) -> int:
    """The top bits every word of the first moduli leaves free, if together they hold what
    the last modulus's residues have above 16 bits (its low 16 then take a uint16): the
    kernel set's 29, 29, 29 and 25 bits pack into 14 bytes a coefficient instead of 16."""
    if len(moduli) < 2:
        return 0
    spare = min(32 - int(q - 1).bit_length() for q in moduli[:-1])
    high = int(moduli[-1] - 1).bit_length() - 16
    return spare if spare > 0 and spare * (len(moduli) - 1) >= high > 0 else 0


@dataclass(frozen=True, eq=False)
class PackedBlock:
    """A register block as the kernel stores it: ``words[l]`` the residues modulo the
    first moduli (tiled, see ``tiled``), their top ``spare`` bits holding the last
    modulus's bits 16 + spare * l and up, ``low[0]`` that modulus's low 16 bits; or, for
    moduli that do not pack (``spare`` 0), every modulus in ``words`` and ``low`` empty."""

    words: npt.NDArray[np.uint32]
    low: npt.NDArray[np.uint16]

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes + self.low.nbytes)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(moduli, N / tile, diagonals, tile): the block's residues unpacked."""
        limbs, tiles, dp, tile = self.words.shape
        return limbs + self.low.shape[0], tiles, dp, tile


def pack(residues: npt.NDArray[np.uint32], moduli: KernelModuli) -> PackedBlock:
    """A tiled block (moduli, N / tile, diagonals, tile; residues below their moduli) in
    the kernel's storage (:class:`PackedBlock`)."""
    if residues.dtype != np.uint32 or residues.ndim != 4:
        raise HEError("a register block does not have the kernel's shape")
    if residues.shape[0] != moduli.moduli.shape[0]:
        raise HEError("a register block has the wrong number of moduli")
    if not moduli.spare:
        empty = np.empty((0, *residues.shape[1:]), dtype=np.uint16)
        return PackedBlock(np.ascontiguousarray(residues), empty)
    spare = moduli.spare
    words = np.array(residues[:-1], dtype=np.uint32, order="C")  # a copy: bits are added
    last = residues[-1]
    for limb in range(words.shape[0]):
        high = (last >> np.uint32(16 + spare * limb)) & np.uint32((1 << spare) - 1)
        words[limb] |= high << np.uint32(32 - spare)
    low = np.ascontiguousarray((last & np.uint32(0xFFFF)).astype(np.uint16)[None])
    return PackedBlock(words, low)


def _unpack_run(words: Any, low: Any, at: int, i: int, cut: int, spare: int, out: Any) -> None:
    """The last modulus's residues of diagonal ``i`` in register tile ``at``, from
    coefficient ``cut`` on, into ``out`` (see PackedBlock)."""
    length = out.shape[0]
    source = low[0, at, i][cut:]
    top = np.uint32(32 - spare)
    if words.shape[0] == 3:
        # The kernel set's layout, in one pass (a pass per word cost ~0.1 s more per query
        # at 1M x 128, measured).
        w0, w1, w2 = words[0, at, i][cut:], words[1, at, i][cut:], words[2, at, i][cut:]
        s1, s2 = np.uint32(16 + spare), np.uint32(16 + 2 * spare)
        for c in range(length):
            out[c] = (
                np.uint32(source[c])
                | ((w0[c] >> top) << np.uint32(16))
                | ((w1[c] >> top) << s1)
                | ((w2[c] >> top) << s2)
            )
        return
    for c in range(length):
        out[c] = np.uint32(source[c])
    for limb in range(words.shape[0]):
        part = words[limb, at, i][cut:]
        to = np.uint32(16 + spare * limb)
        for c in range(length):
            out[c] |= (part[c] >> top) << to


_unpack_run_jit = numba.njit(inline="never", cache=False, boundscheck=False, error_model="numpy")(
    _unpack_run
)


def _run(
    acc: Any,
    own: Any,
    other: Any,
    xt: Any,
    xu: Any,
    at: int,
    length: int,
    conjugate: bool,
    mask: Any,
) -> None:
    """One contiguous run of two baby steps' products into a tile pair's accumulators
    (``acc[0/1]``: the sums of tiles t / t + half, ``acc[2/3]``: their conjugate sums, each
    two ciphertext parts): coefficients ``at .. at + length`` of the outputs; ``own[s]``
    and ``other[s]`` the register words step ``s`` (0, 1) reads in t's half and in the
    other half, ``xt[s]`` and ``xu[s]`` its rotation's words of tiles t and u (both parts),
    ``mask`` the residue's bits in a word (the rest carry another modulus's, see
    PackedBlock). Two steps per pass load and store each accumulator once for two products:
    the kernel takes 20-27% less time than with one step per pass (measured with tiles of
    1,024 and 2,048 at dp = 128 and 512)."""
    s_t0, s_t1 = acc[0, 0, at:], acc[0, 1, at:]
    s_u0, s_u1 = acc[1, 0, at:], acc[1, 1, at:]
    own0, other0, own1, other1 = own[0], other[0], own[1], other[1]
    xt0, xt1, xu0, xu1 = xt[0][0, at:], xt[0][1, at:], xu[0][0, at:], xu[0][1, at:]
    yt0, yt1, yu0, yu1 = xt[1][0, at:], xt[1][1, at:], xu[1][0, at:], xu[1][1, at:]
    # Every loop indexes slices from 0 up: an index LLVM cannot prove non-negative
    # (``c + cut``) keeps numba's negative-index wraparound, and the loop compiled to
    # gathers, 2-2.7x slower (measured). Each product is below 2^60, a step's pair below
    # 2^61: lazy_limits counts products, and the caller folds before a pair could overflow.
    if conjugate:
        # The conjugate of a diagonal is its other half (slot order): tile t's conjugate
        # sum reads the words tile t + half's sum reads, and the reverse.
        c_t0, c_t1 = acc[2, 0, at:], acc[2, 1, at:]
        c_u0, c_u1 = acc[3, 0, at:], acc[3, 1, at:]
        for c in range(length):
            d, e = np.uint64(own0[c] & mask), np.uint64(other0[c] & mask)
            f, g = np.uint64(own1[c] & mask), np.uint64(other1[c] & mask)
            a0, a1 = np.uint64(xt0[c]), np.uint64(xt1[c])
            b0, b1 = np.uint64(xu0[c]), np.uint64(xu1[c])
            h0, h1 = np.uint64(yt0[c]), np.uint64(yt1[c])
            k0, k1 = np.uint64(yu0[c]), np.uint64(yu1[c])
            s_t0[c] += a0 * d + h0 * f
            s_t1[c] += a1 * d + h1 * f
            s_u0[c] += b0 * e + k0 * g
            s_u1[c] += b1 * e + k1 * g
            c_t0[c] += a0 * e + h0 * g
            c_t1[c] += a1 * e + h1 * g
            c_u0[c] += b0 * d + k0 * f
            c_u1[c] += b1 * d + k1 * f
        return
    for c in range(length):
        d, e = np.uint64(own0[c] & mask), np.uint64(other0[c] & mask)
        f, g = np.uint64(own1[c] & mask), np.uint64(other1[c] & mask)
        s_t0[c] += np.uint64(xt0[c]) * d + np.uint64(yt0[c]) * f
        s_t1[c] += np.uint64(xt1[c]) * d + np.uint64(yt1[c]) * f
        s_u0[c] += np.uint64(xu0[c]) * e + np.uint64(yu0[c]) * g
        s_u1[c] += np.uint64(xu1[c]) * e + np.uint64(yu1[c]) * g


_run_jit = numba.njit(inline="always", cache=False, boundscheck=False, error_model="numpy")(_run)


def _accumulate(
    rot: Any,
    blocks: Any,
    lows: Any,
    spare: int,
    count: int,
    n1: int,
    giant: int,
    shifts: Any,
    conjugate: bool,
    moduli: Any,
    fold: Any,
    first: Any,
    later: Any,
    order: Any,
    out: Any,
) -> None:
    """``out[b, 0, j, p, l, order[t * tile + c]] = sum_{k < n1} rot[l, t, k, p, c] *
    blocks[b][l, t, j * n1 + k, c] mod q_l`` (the tiled layouts of ``tiled``; a block's
    last modulus from ``lows[b]`` and the words' top ``spare`` bits if ``spare``, see
    PackedBlock) when
    ``shifts[b]`` is 0. A block with shift ``r`` (only without giant steps, n1 = dp) is
    read in slot order (:mod:`fedmatch.he.slotorder`) and its sum comes out rotated left by
    ``r`` slots: ``sum_k rot[(k + r) mod dp] * d_k[(g + r) mod N/2]`` within each half, as
    rotating the product of the query's rotation ``k`` and diagonal ``k`` rotates both, and
    the query, replicated with period dp, rotated by ``k + r`` is its rotation by
    ``(k + r) mod dp``. With giant steps (n1 < dp) only multiples of dp are allowed, for
    which ``(k + r) mod n1 = k``.

    With ``conjugate``, ``out[b, 1]`` holds the same sums with every diagonal conjugated:
    in slot order the conjugate of a real-coefficient polynomial swaps the halves, so
    conjugated diagonal ``k`` at position g is diagonal ``k`` at g's partner in the other
    half. For a real probe that is the conjugate of the block's scores, with no key switch
    (see KernelEngine). A task computes a tile and its partner together, so each register
    word is read once for up to four products.

    Compiled by numba (see ``_kernel``); plain Python runs it too, slowly."""
    moduli_count, tiles, tile = rot.shape[0], rot.shape[1], rot.shape[4]
    half = tiles // 2  # tiles per half of the slot order (a rotation stays in its half)
    sums = 4 if conjugate else 2
    whole = moduli_count - 1 if spare else moduli_count  # moduli with words of their own
    kept = np.uint32((1 << (32 - spare)) - 1)
    everything = np.uint32(0xFFFFFFFF)
    for task in numba.prange(moduli_count * half):
        # Moduli vary fastest: a thread's share of tasks holds each modulus alike (the
        # packed one costs more, see PackedBlock).
        t = task // moduli_count
        limb = task - t * moduli_count
        u = t + half
        q, r = moduli[limb], fold[limb]
        barrett = _U64 // q  # floor(2^64 / q) for an odd q
        xs, xu = rot[limb, t], rot[limb, u]
        # Rows padded (_ROW_PAD): unpadded, the eight accumulator rows lie tile x 8 bytes
        # apart, a multiple of 4 KB, all at one offset modulo 4 KB, and a load after a
        # store to another row at that offset waits for it (4K aliasing): with tiles of
        # 1,024, 10-18% slower at dp = 128 (measured), and more with longer tiles.
        acc = np.empty((4, 2, tile + _ROW_PAD), np.uint64)
        # The packed modulus's residues of the two runs of a step's diagonal, unpacked per
        # run (rows 2 s and 2 s + 1 for step s of a pass).
        mine = np.empty((4, tile + 2 * _ROW_PAD), np.uint32)
        theirs = np.empty((4, tile + 3 * _ROW_PAD), np.uint32)
        # The second step of the last pass when n1 is odd: a product by zero.
        nothing = np.zeros((2, tile), np.uint32)
        for b in range(count):
            shift = shifts[b]
            # Output tile t reads the block's tile `ta` from `cut` on, then tile `tb` (and
            # tile u the same tiles of the other half).
            ahead, cut = shift // tile, shift % tile
            ta = (t + ahead) % half
            tb = (t + ahead + 1) % half
            words = blocks[b]
            reg = words[min(limb, whole - 1)]
            split = tile - cut
            for j in range(giant):
                acc[:sums] = _ZERO
                left = first[limb]
                for k in range(0, n1, 2):
                    if left < 2:
                        # Fold before the next pair could overflow (lazy_limits).
                        for a in range(sums):
                            for p in range(2):
                                row = acc[a, p]
                                for c in range(tile):
                                    v = row[c]
                                    row[c] = (v >> _S32) * r + (v & _M32)
                        left = later[limb]
                    i = j * n1 + k
                    # Step k + 1 (k itself again, times zero, past the last step).
                    i2 = i + 1 if k + 1 < n1 else i
                    kr, kr2 = (k + shift) % n1, (k + 1 + shift) % n1
                    xt = (xs[kr], xs[kr2] if k + 1 < n1 else nothing)
                    xv = (xu[kr], xu[kr2] if k + 1 < n1 else nothing)
                    if limb < whole:
                        ra = (reg[ta, i][cut:], reg[ta, i2][cut:])
                        oa = (reg[ta + half, i][cut:], reg[ta + half, i2][cut:])
                        rb = (reg[tb, i][:cut], reg[tb, i2][:cut])
                        ob = (reg[tb + half, i][:cut], reg[tb + half, i2][:cut])
                        mask = kept if spare else everything
                    else:
                        low = lows[b]
                        ra, rb = (mine[0, :split], mine[2, :split]), (mine[1, :cut], mine[3, :cut])
                        oa = (theirs[0, :split], theirs[2, :split])
                        ob = (theirs[1, :cut], theirs[3, :cut])
                        for step, d in ((0, i), (1, i2)):
                            _unpack_run_jit(words, low, ta, d, cut, spare, ra[step])
                            _unpack_run_jit(words, low, tb, d, 0, spare, rb[step])
                            _unpack_run_jit(words, low, ta + half, d, cut, spare, oa[step])
                            _unpack_run_jit(words, low, tb + half, d, 0, spare, ob[step])
                        mask = everything
                    # Two call sites of the inlined run, not four: numba's compile time
                    # grows with every inlined copy (~20 s with four, measured).
                    _run_jit(acc, ra, oa, xt, xv, 0, split, conjugate, mask)
                    _run_jit(acc, rb, ob, xt, xv, split, cut, conjugate, mask)
                    left -= 2
                for a in range(sums):
                    lo = (t if a % 2 == 0 else u) * tile
                    places = order[lo : lo + tile]
                    for p in range(2):
                        y = out[b, a // 2, j, p, limb]
                        row = acc[a, p]
                        for c in range(tile):
                            # Barrett's reduction (vectorized), not ``%`` (a division per
                            # word): the kernel ~3% faster (measured).
                            v = row[c]
                            v -= ckks_encode._mulhi_jit(v, barrett) * q
                            # Scattered to the caller's order here: numpy's scatter of the
                            # whole output afterwards cost ~0.7 ms a block (measured).
                            y[places[c]] = v - q if v >= q else v


_kernel: Callable[..., None] = numba.njit(
    parallel=True, nogil=True, cache=False, boundscheck=False, error_model="numpy"
)(_accumulate)
# The same on one core (prange as range), compiled apart: a sharded engine's workers each
# run on one core, and this needs no threading layer at all (no pool to hand the tasks
# to and wait for: ~0.1 s less per million records than the parallel one on one thread,
# measured in forked workers), which is also what makes forking the workers safe.
_kernel_serial: Callable[..., None] = numba.njit(
    parallel=False, nogil=True, cache=False, boundscheck=False, error_model="numpy"
)(_accumulate)


def _variant(threads: int) -> Callable[..., None]:
    """The kernel for ``threads`` cores (one: the serial one), with numba's thread count
    set for the parallel one."""
    if threads == 1:
        return _kernel_serial
    numba.set_num_threads(threads)
    return _kernel


def default_threads() -> int:
    """The cores this process may use (numba cannot use more than it started with)."""
    # numba sets NUMBA_NUM_THREADS at import (the environment's or the CPU count); its
    # type hints do not name it.
    started = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))
    return max(1, min(len(os.sched_getaffinity(0)), started))


def tile_for(degree: int, threads: int = 1) -> int:
    """Coefficients per task: half the ring degree on one core (a task is one modulus's
    whole tile pair), a quarter on more (twice the tasks, so that every thread gets some
    of each modulus: the packed one costs more, see PackedBlock). Long runs are what make
    the kernel fast (module doc); any dp."""
    if degree < 4 or degree & (degree - 1):
        raise HEError("the ring degree must be a power of two")
    return degree // 2 if threads <= 1 else degree // 4


def tiled(words: npt.NDArray[Any], tile: int) -> npt.NDArray[np.uint32]:
    """``words`` (rows x ... x moduli x N, natural layout: a block's diagonals, or the
    rotations' two parts) as the kernel stores them: moduli x (N / tile) x rows x ... x
    tile, uint32, contiguous (each task's run in one piece)."""
    *lead, moduli_count, degree = words.shape
    if degree % tile:
        raise HEError("the tile must divide the ring degree")
    split = words.reshape(*lead, moduli_count, degree // tile, tile)
    order = (len(lead), len(lead) + 1, *range(len(lead)), len(lead) + 2)
    return np.ascontiguousarray(split.transpose(order), dtype=np.uint32)


def _place(words: Any, order: Any, residues: Any, k: int) -> None:
    """``residues[l, t, k, p, c] = words[p, l, order[t * tile + c]]`` (see ``place``)."""
    moduli, tiles, _, parts, tile = residues.shape
    for limb in range(moduli):
        for t in range(tiles):
            base = t * tile
            for p in range(parts):
                row, target = words[p, limb], residues[limb, t, k, p]
                for c in range(tile):
                    target[c] = row[order[base + c]]


_place_jit = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")(_place)


def place(
    residues: npt.NDArray[np.uint32],
    k: int,
    words: npt.NDArray[np.uint32],
    order: npt.NDArray[np.int64],
) -> None:
    """Rotation ``k``'s words (parts x moduli x N, uint32) into a tiled rotation stack
    (``residues``: moduli x N / tile x rotations x parts x tile) in the order ``order``
    (``order[p]``: the word at position p, e.g. slot order), in one pass (numpy's gather
    and strided copy took ~0.25 ms a rotation, a fifth of a native rotation, measured)."""
    moduli, tiles, count, parts, tile = residues.shape
    if words.shape != (parts, moduli, tiles * tile) or order.shape != (tiles * tile,):
        raise HEError("a rotation does not have the stack's shape")
    if not 0 <= k < count or words.dtype != np.uint32 or residues.dtype != np.uint32:
        raise HEError("a rotation does not fit the stack")
    if not residues.flags.c_contiguous:
        raise HEError("a rotation stack must be contiguous")
    # Contiguous operands only: the one specialization warm_up compiles.
    _place_jit(np.ascontiguousarray(words), order, residues, k)


def products(
    rotations: npt.NDArray[np.uint32],
    n1: int,
    blocks: Sequence[PackedBlock | npt.NDArray[np.uint32]],
    moduli: KernelModuli,
    threads: int | None = None,
    shifts: Sequence[int] | None = None,
    order: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.uint64]:
    """Per block and giant step, the sum over the first ``n1`` baby steps of rotation times
    diagonal. ``rotations`` is tiled (moduli, N / tile, >= n1, 2, tile), each block tiled
    (moduli, N / tile, dp, tile) with dp a multiple of n1 (see ``tiled``; N / tile even),
    in the kernel's storage (``pack``; a plain array is packed first);
    the result is in the blocks' coefficient order, (blocks, dp / n1, 2, moduli, N), every
    word reduced. ``shifts`` (default all 0): per block, the left rotation its sum comes
    out with (any with n1 = dp, multiples of dp with giant steps), with every operand in
    slot order (see ``_accumulate``). ``order`` (default: as computed): the word at
    position p goes to position ``order[p]`` (e.g. :func:`fedmatch.he.slotorder.slot_order`
    to give sums computed in slot order back in SEAL's NTT order)."""
    return _products(rotations, n1, blocks, moduli, threads, shifts, False, order)[:, 0]


def products_with_conjugates(
    rotations: npt.NDArray[np.uint32],
    n1: int,
    blocks: Sequence[PackedBlock | npt.NDArray[np.uint32]],
    moduli: KernelModuli,
    threads: int | None = None,
    shifts: Sequence[int] | None = None,
    order: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """:func:`products`, and the same sums over the conjugated diagonals (every operand in
    slot order, see ``_accumulate``), in one pass over the register."""
    out = _products(rotations, n1, blocks, moduli, threads, shifts, True, order)
    return out[:, 0], out[:, 1]


def _products(
    rotations: npt.NDArray[np.uint32],
    n1: int,
    blocks: Sequence[PackedBlock | npt.NDArray[np.uint32]],
    moduli: KernelModuli,
    threads: int | None,
    shifts: Sequence[int] | None,
    conjugates: bool,
    order: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.uint64]:
    count_moduli, tiles, available, parts, tile = rotations.shape
    if parts != 2 or count_moduli != moduli.moduli.shape[0] or rotations.dtype != np.uint32:
        raise HEError("rotations do not have the kernel's shape")
    if not 0 < n1 <= available or not rotations.flags.c_contiguous:
        raise HEError("rotations must be contiguous and hold the baby steps")
    if tiles % 2:
        # A task computes a tile and its partner in the other half of the slot order.
        raise HEError("the tiles must split into the two halves of the slot order")
    stored = [b if isinstance(b, PackedBlock) else pack(b, moduli) for b in blocks]
    dp = stored[0].shape[2] if stored else n1
    if dp % n1:
        raise HEError("a block's diagonal count must be a multiple of the baby steps")
    for block in stored:
        if block.shape != (count_moduli, tiles, dp, tile) or block.words.dtype != np.uint32:
            raise HEError("a register block does not have the kernel's shape")
        if not (block.words.flags.c_contiguous and block.low.flags.c_contiguous):
            raise HEError("register blocks must be contiguous")
        if block.low.shape[0] != (1 if moduli.spare else 0) or block.low.dtype != np.uint16:
            raise HEError("a register block is not packed for these moduli")
    giant = dp // n1
    steps = np.zeros(GROUP * -(-len(stored) // GROUP), dtype=np.int64)
    if shifts is not None:
        if len(shifts) != len(stored):
            raise HEError("shifts must name one rotation per block")
        steps[: len(stored)] = shifts
        if giant != 1 and (steps % dp).any():
            # With giant steps the kernel holds only the first n1 of the query's rotations:
            # it can rotate by whole periods (dp) only.
            raise HEError("a block with giant steps is rotated in the kernel by multiples of dp")
        if ((steps < 0) | (steps >= tiles * tile // 2)).any():
            raise HEError("a shift must be a slot rotation (0 <= shift < N / 2)")
    places = _placement(order, tiles * tile)
    sums = 2 if conjugates else 1
    out = np.empty((len(stored), sums, giant, 2, count_moduli, tiles * tile), dtype=np.uint64)
    run = _variant(threads or default_threads())
    for start in range(0, len(stored), GROUP):
        group = list(stored[start : start + GROUP])
        count = len(group)
        padded = group + [group[0]] * (GROUP - count)
        run(
            rotations, tuple(b.words for b in padded), tuple(b.low for b in padded),
            moduli.spare, count, n1, giant, steps[start : start + GROUP], conjugates,
            moduli.moduli, moduli.fold, moduli.first, moduli.later, places,
            out[start : start + count],
        )  # fmt: skip
    return out


def _placement(order: npt.NDArray[np.int64] | None, degree: int) -> npt.NDArray[np.int64]:
    """``order`` checked (a permutation of 0 .. degree - 1: every output word written once)
    as the kernel's one specialization takes it (contiguous, read-only int64); the identity
    when None."""
    if order is None:
        places = np.arange(degree, dtype=np.int64)
    else:
        places = np.array(order, dtype=np.int64, copy=True)  # the caller's may change
        if places.shape != (degree,) or not np.array_equal(
            np.sort(places), np.arange(degree, dtype=np.int64)
        ):
            raise HEError("an output order must be a permutation of the ring's words")
    places.setflags(write=False)
    return places


_compile_seconds: dict[bool, float] = {}


def warm_up(threads: int | None = None) -> float:
    """Compile the kernel for ``threads`` cores (default: every core this process may use;
    one: the serial kernel) in this process, once, and return how long that took: what an
    engine pays at start so that no query does."""
    count = threads or default_threads()
    serial = count == 1
    if serial not in _compile_seconds:
        moduli = KernelModuli.of([536641537])
        rotations = np.zeros((1, 2, 1, 2, 64), dtype=np.uint32)
        started = time.perf_counter()
        products(rotations, 1, [np.zeros((1, 2, 1, 64), dtype=np.uint32)], moduli, count)
        order = np.arange(128)
        order.setflags(write=False)  # as slot_order's (numba types a read-only array apart)
        place(rotations, 0, np.zeros((2, 1, 128), dtype=np.uint32), order)
        _compile_seconds[serial] = time.perf_counter() - started
    return _compile_seconds[serial]


def compiled_specializations() -> int:
    """How many type specializations of the kernel (both variants) this process has
    compiled: one after :func:`warm_up`, and a query must not add another (it would
    compile in the query); the stack's placement counts with them."""
    return sum(len(getattr(k, "signatures", ())) for k in (_kernel, _kernel_serial, _place_jit))
