"""Native, hoisted key switches: the kernel set's baby-step rotations of a query without
SEAL's ``rotate_vector``.

SEAL rotates a ciphertext ``(c0, c1)`` (NTT form, primes ``q_0 .. q_(L-1)``, special prime
``P``) by Galois element ``g`` as ``Evaluator::apply_galois_inplace`` and
``switch_key_inplace`` do (SEAL 4):

1. ``c0`` and ``c1`` are permuted (the automorphism ``X -> X^g`` is a permutation of NTT
   words: :func:`galois_permutation`, SEAL's ``GaloisTool::generate_table_ntt``);
2. the permuted ``c1`` is decomposed: each row ``J`` out of NTT form (its coefficients in
   ``[0, q_J)``), reduced modulo every prime ``I`` of ``q_0 .. q_(L-1), P`` and back into NTT
   form (row ``J`` modulo ``q_J`` is ``c1``'s own row);
3. ``acc_k[I] = sum_J digit_J[I] * key_J[k][I]`` for both key parts ``k``;
4. the mod-down: ``acc_k[P]`` out of NTT form, centred (``+ floor(P / 2)``), reduced modulo
   each ``q_I``, into NTT form, and ``(acc_k[I] - that) * P^-1 mod q_I`` added to part
   ``k``.

Step 2 costs most of a key switch (16 NTTs and 4 inverse ones at the kernel set's top level
against 10 in steps 3-4) and does not depend on ``g``. Hoisting does it once per ciphertext
and permutes the decomposition for every rotation instead (:class:`Hoister`). The permuted
digit is the automorphism of digit ``J`` with coefficients in ``(-q_J, q_J)`` (a
negated coefficient ``a`` becomes ``-a`` rather than SEAL's ``q_J - a``): the same
residue modulo ``q_J``, so the same key switch, with a key-switching noise of the same
bound (``sum_J |digit_J| |e_J| / P``, ``|digit_J| < q_J`` either way). Without hoisting
(:meth:`Hoister.exact`: permuted, then decomposed) the result is SEAL's bit for bit
(tests/unit/test_keyswitch.py); hoisted, it decrypts to SEAL's within the mod-down's
rounding (at most N + 1 per coefficient, far below a slot unit; tested).

Rotations the keys cannot reach in one switch (keys exist for ``d * base^i``, ``d <
base``: :meth:`fedmatch.he.params.ParamSet.rotation_steps`) come from a tree
(:func:`hoisting_tree`): rotation ``k``'s parent is ``k`` with its lowest nonzero base-``b``
digit cleared, so every child of a node is one key away from it and shares its
decomposition. The 127 baby steps at d = 128 take 16 decompositions and 127 hoisted
switches instead of 127 full key switches.

The arithmetic: primes below 2^30 on uint32 words (:mod:`fedmatch.he.ckks_encode`'s NTTs),
the special prime on uint64 words (128-bit sums reduced once, the vectorized lazy 64-bit
NTTs). The keys are stored moved by the inverse of their permutation, so that the products
run on contiguous words and only the result is permuted (:meth:`Hoister._switch`). Per
rotation ~0.58 ms against SEAL's ~3.1 ms (the key products ~0.17 ms, the special prime's
inverse NTT ~0.1, the mod-down ~0.3, the permutation ~0.06), a decomposition ~0.68 ms; the
127 baby steps at d = 128 take ~0.11 s against ~0.42 s (one process, this machine; 0.8,
0.9 and 0.13 s before the NTTs' narrow stages were vectorized).

Only what the node holds anyway enters: the query and the requester's public rotation
keys (the same words SEAL uses, read once per key: :class:`KeyCache`); no secret and no
register data. The rotations are public functions of what the requester sent, as SEAL's
are, so a requester that crafts its keys or query learns nothing here it could not compute
itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.errors import DeadlineExceeded, HEError
from fedmatch.he import ckks_encode, native_rescale, sealmem
from fedmatch.he.keys import EvaluationKeys
from fedmatch.he.params import ParamSet

__all__ = [
    "Decomposed",
    "Hoister",
    "KeyCache",
    "RotationKeys",
    "galois_permutation",
    "hoisting_tree",
    "key_steps",
    "warm_up",
]

_S32 = np.uint64(32)


def galois_permutation(galois_elt: int, degree: int) -> npt.NDArray[np.int64]:
    """``table`` with ``rotated[i] = words[table[i]]`` for NTT-form words: SEAL 4's
    ``GaloisTool::generate_table_ntt``."""
    bits = degree.bit_length() - 1
    i = np.arange(degree, 2 * degree, dtype=np.int64)
    reversed_i = _bit_reverse(i, bits + 1)
    raw = ((galois_elt * reversed_i) >> 1) & (degree - 1)
    return _bit_reverse(raw, bits)


def _bit_reverse(values: npt.NDArray[np.int64], bits: int) -> npt.NDArray[np.int64]:
    out = np.zeros_like(values)
    v = values.copy()
    for _ in range(bits):
        out = (out << 1) | (v & 1)
        v >>= 1
    return out


def hoisting_tree(steps: Iterable[int], base: int) -> dict[int, int]:
    """``parent[k]`` for every rotation ``k`` in ``steps`` and their ancestors (0 is the
    root, not a key): ``k`` with its lowest nonzero base-``base`` digit cleared, so that
    ``k - parent[k]`` is a single key's step and every child of a node shares its
    decomposition."""
    parent: dict[int, int] = {}
    for step in steps:
        k = step
        while k and k not in parent:
            power = 1
            while (k // power) % base == 0:
                power *= base
            parent[k] = k - (k // power) % base * power
            k = parent[k]
    return parent


# -- native steps ---------------------------------------------------------------------------


def _key_products(
    data: Any,
    special: Any,
    key_data: Any,
    key_special: Any,
    moduli: Any,
    barrett: Any,
    p: Any,
    ratio: Any,
    out_data: Any,
    out_special: Any,
) -> None:
    """Step 3: ``out_data[k, I] = sum_J data[J, I] * key_data[J, k, I] mod q_I`` (uint32
    words, 64-bit sums of at most 4 products below 2^60, one Barrett reduction),
    ``out_special[k] = sum_J special[J] * key_special[J, k] mod P`` (128-bit sums, one
    Barrett reduction with ``ratio`` = floor(2^128 / P), SEAL's ``barrett_reduce_128``).
    Word by word over contiguous rows: vectorized."""
    digits, count, n = data.shape
    sums = np.empty((2, n), dtype=np.uint64)
    for i in range(count):
        q = np.uint64(moduli[i])
        b = barrett[i]
        sums[:] = 0
        for d in range(digits):
            src = data[d, i]
            for k in range(2):
                key = key_data[d, k, i]
                acc = sums[k]
                for j in range(n):
                    acc[j] += np.uint64(src[j]) * np.uint64(key[j])
        for k in range(2):
            acc = sums[k]
            target = out_data[k, i]
            for j in range(n):
                x = acc[j]
                r = x - ckks_encode._mulhi_jit(x, b) * q
                target[j] = np.uint32(r - q if r >= q else r)
    lows = np.zeros((2, n), dtype=np.uint64)
    highs = np.zeros((2, n), dtype=np.uint64)
    for d in range(digits):
        src64 = special[d]
        for k in range(2):
            key64 = key_special[d, k]
            lo, hi = lows[k], highs[k]
            for j in range(n):
                x, w = src64[j], key64[j]
                before = lo[j]
                lo[j] = before + x * w
                hi[j] += ckks_encode._mulhi_jit(x, w) + np.uint64(lo[j] < before)
    r0, r1 = ratio[0], ratio[1]
    for k in range(2):
        lo, hi = lows[k], highs[k]
        target64 = out_special[k]
        for j in range(n):
            x0, x1 = lo[j], hi[j]
            # SEAL's barrett_reduce_128: the top word of x * ratio, then x - that * P.
            carry = ckks_encode._mulhi_jit(x0, r0)
            t_lo = x0 * r1
            t_hi = ckks_encode._mulhi_jit(x0, r1)
            s1 = t_lo + carry
            s3 = t_hi + np.uint64(s1 < t_lo)
            u_lo = x1 * r0
            u_hi = ckks_encode._mulhi_jit(x1, r0)
            carry2 = u_hi + np.uint64(s1 + u_lo < s1)
            estimate = x1 * r1 + s3 + carry2
            r = x0 - estimate * p
            r = r - p if r >= p else r
            target64[j] = r - p if r >= p else r


def _permute(y: Any, c0: Any, perm: Any, moduli: Any, out: Any) -> None:
    """``out[k, I] = y[k, I][perm]`` plus, for part 0, ``c0[I][perm]`` (mod q_I)."""
    parts, count, n = out.shape
    for k in range(parts):
        for i in range(count):
            q = np.uint32(moduli[i])
            source, target = y[k, i], out[k, i]
            if k == 0:
                row = c0[i]
                for j in range(n):
                    src = perm[j]
                    t = source[src] + row[src]
                    target[j] = t - q if t >= q else t
            else:
                for j in range(n):
                    target[j] = source[perm[j]]


_jit = numba.njit(nogil=True, cache=False, boundscheck=False, error_model="numpy")
_key_products_jit = _jit(_key_products)
_permute_jit = _jit(_permute)


# -- keys and tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """The top data level's uint32 NTT tables and the special prime's uint64 ones, with
    the mod-down constants."""

    degree: int
    moduli: npt.NDArray[np.uint64]  # q_0 .. q_(L-1)
    inverses: npt.NDArray[np.float64]
    barrett: npt.NDArray[np.uint64]  # floor(2^64 / q_I)
    level: ckks_encode.NTTTables  # q_0 .. q_(L-1), uint32 tables
    p: np.uint64
    p_level: ckks_encode.NTTTables  # P alone, uint64 tables
    p_forward: tuple[npt.NDArray[np.uint64], ...]  # P's forward tables, one row per digit
    p_inverse: tuple[npt.NDArray[np.uint64], ...]  # P's inverse tables, one row per part
    others: tuple[tuple[list[int], tuple[npt.NDArray[Any], ...]], ...]  # per digit J
    ratio: npt.NDArray[np.uint64]  # floor(2^128 / P), low word first
    mod_down: native_rescale.DivideRound  # by P, on q_0 .. q_(L-1)


def _tables(params: ParamSet) -> _Tables:
    encoder = ckks_encode.native_encoder(params)
    ctx = params.context()
    top = list(ctx.first_parms_id())
    level = encoder.tables(top)
    if not level.small:
        raise HEError("native key switching needs data primes below 2^30")
    key_id = list(ctx.key_parms_id())
    key_level = encoder.tables(key_id)
    p = int(key_level.moduli[-1])
    moduli = [int(q) for q in level.moduli]
    if len(key_level.moduli) != len(moduli) + 1 or p >= 1 << 62:
        raise HEError("native key switching needs one special prime below 2^62")
    pl, count = key_level.row(len(moduli)), len(moduli)
    return _Tables(
        degree=params.poly_modulus_degree,
        moduli=level.moduli,
        inverses=1.0 / level.moduli.astype(np.float64),
        barrett=np.array([(1 << 64) // q for q in moduli], dtype=np.uint64),
        level=level,
        p=np.uint64(p),
        p_level=pl,
        p_forward=(
            np.repeat(pl.roots, count, axis=0),
            np.repeat(pl.shoup, count, axis=0),
            np.repeat(pl.moduli, count),
        ),
        p_inverse=(
            np.repeat(pl.inv_roots, 2, axis=0),
            np.repeat(pl.inv_shoup, 2, axis=0),
            np.repeat(pl.moduli, 2),
            np.repeat(pl.n_inv, 2),
            np.repeat(pl.n_inv_shoup, 2),
        ),
        others=tuple(
            (o, (level.roots32[o], level.shoup32[o], level.moduli[o]))
            for o in ([i for i in range(count) if i != j] for j in range(count))
        ),
        ratio=np.array([(1 << 128) // p % (1 << 64), (1 << 128) // p >> 64], dtype=np.uint64),
        mod_down=native_rescale.DivideRound.of(p, level, count),
    )  # fmt: skip


_TABLES: dict[str, _Tables] = {}
_TABLES_LOCK = threading.Lock()


def _tables_for(params: ParamSet) -> _Tables:
    with _TABLES_LOCK:
        tables = _TABLES.get(params.name)
        if tables is None:
            tables = _tables(params)
            _TABLES[params.name] = tables
    return tables


@dataclass(frozen=True)
class _Key:
    """One Galois element's NTT permutation and its key as words, moved by the inverse
    permutation (see :meth:`Hoister._switch`): data primes uint32 ``[J, k, I, j]``, the
    special prime uint64 ``[J, k, j]``."""

    perm: npt.NDArray[np.int64]
    data: npt.NDArray[np.uint32]
    special: npt.NDArray[np.uint64]

    @property
    def nbytes(self) -> int:
        return int(self.perm.nbytes + self.data.nbytes + self.special.nbytes)


class RotationKeys:
    """A requester's rotation keys for some steps, read out of SEAL's ``GaloisKeys`` once
    (1.6 MB a step at the kernel set: the data primes' words as uint32, the special
    prime's as uint64)."""

    def __init__(self, params: ParamSet, galois_keys: seal.GaloisKeys, steps: Iterable[int]):
        tables = _tables_for(params)
        self._keys: dict[int, _Key] = {}
        two_n = 2 * tables.degree
        count = tables.moduli.size
        key_moduli = np.append(tables.moduli, np.uint64(tables.p))
        for step in sorted(set(steps)):
            elt = pow(3, step, two_n)
            if not galois_keys.has_key(elt):
                raise HEError("rotation keys lack a step the native rotations need")
            parts = galois_keys.key(elt)
            if len(parts) != count:
                raise HEError("a rotation key has the wrong number of parts")
            words = np.empty((count, 2, count + 1, tables.degree), dtype=np.uint64)
            for j, part in enumerate(parts):
                ct = part.data()
                if ct.size() != 2 or not ct.is_ntt_form() or ct.coeff_modulus_size() != count + 1:
                    raise HEError("a rotation key is not a size-2 NTT-form key-level ciphertext")
                sealmem.read_public_key(part, words[j])
            if bool((words >= key_moduli[None, None, :, None]).any()):
                raise HEError("a rotation key has a word beyond its modulus")
            perm = galois_permutation(elt, tables.degree)
            # Stored moved by the inverse permutation (word perm[j] holds word j): the key
            # products then run unpermuted (Hoister._switch).
            moved = np.empty_like(words)
            moved[..., perm] = words
            self._keys[step] = _Key(
                perm=perm,
                data=moved[:, :, :count].astype(np.uint32),
                special=np.ascontiguousarray(moved[:, :, count]),
            )

    def __contains__(self, step: object) -> bool:
        return step in self._keys

    def key(self, step: int) -> _Key:
        key = self._keys.get(step)
        if key is None:
            raise HEError("no native rotation key for this step")
        return key

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes for k in self._keys.values())


@dataclass(frozen=True)
class Decomposed:
    """A ciphertext's ``c0`` and its ``c1``'s decomposition (step 2): ``data[J, I]`` digit
    ``J`` modulo ``q_I`` (uint32, NTT form), ``special[J]`` modulo ``P`` (uint64)."""

    c0: npt.NDArray[np.uint32]
    data: npt.NDArray[np.uint32]
    special: npt.NDArray[np.uint64]


class Hoister:
    """Native rotations of top-level ciphertexts of a kernel parameter set (module doc)."""

    def __init__(self, params: ParamSet) -> None:
        self._params = params
        self._t = _tables_for(params)

    @property
    def moduli(self) -> int:
        return int(self._t.moduli.size)

    def decompose(self, words: npt.NDArray[np.uint32]) -> Decomposed:
        """Step 2 for ``words`` (2 x L x N, NTT form, top level)."""
        t = self._t
        count, n = t.moduli.size, t.degree
        if words.shape != (2, count, n):
            raise HEError("a native rotation takes a size-2 ciphertext at the top level")
        c1 = words[1]
        coeffs = np.array(c1, dtype=np.uint32, copy=True)
        lv = t.level
        ckks_encode._inverse_small_jit(
            coeffs, lv.inv_roots32, lv.inv_shoup32, lv.moduli, lv.n_inv32, lv.n_inv_shoup32
        )
        data = np.empty((count, count, n), dtype=np.uint32)
        wide = coeffs.astype(np.int64)
        for j, (others, tables) in enumerate(t.others):
            # Digit J's coefficients (below q_J) modulo every prime: the encoder's reduction.
            ckks_encode._reduce_small_jit(wide[j], t.moduli, t.inverses, data[j])
            data[j, j] = c1[j]
            rows = np.ascontiguousarray(data[j, others])
            ckks_encode._forward_small_jit(rows, *tables)
            data[j, others] = rows
        special = coeffs.astype(np.uint64)
        ckks_encode._forward_jit(special, *t.p_forward)
        return Decomposed(np.ascontiguousarray(words[0]), data, special)

    def rotate(self, source: Decomposed, step: int, keys: RotationKeys) -> npt.NDArray[np.uint32]:
        """``source`` rotated left by ``step`` (one key: ``step in keys``), 2 x L x N."""
        return self._switch(source, keys.key(step))

    def _switch(self, source: Decomposed, key: _Key) -> npt.NDArray[np.uint32]:
        """Steps 3 and 4 with the key's words stored permuted by the inverse of its
        permutation (:class:`RotationKeys`): ``sum_J perm(D_J) K_J = perm(sum_J D_J
        perm^-1(K_J))``, and the mod-down commutes with the permutation (the automorphism
        on coefficients is a signed permutation; the centring is odd for an odd P), so the
        products run on contiguous words and only the result is permuted."""
        t = self._t
        count, n = t.moduli.size, t.degree
        acc = np.empty((2, count, n), dtype=np.uint32)
        last = np.empty((2, n), dtype=np.uint64)
        _key_products_jit(
            source.data, source.special, key.data, key.special,
            t.moduli, t.barrett, t.p, t.ratio, acc, last,
        )  # fmt: skip
        ckks_encode._inverse_jit(last, *t.p_inverse)
        y = t.mod_down.apply(acc, last)
        out = np.empty((2, count, n), dtype=np.uint32)
        _permute_jit(y, source.c0, key.perm, t.moduli, out)
        return out

    def exact(
        self, words: npt.NDArray[np.uint32], step: int, keys: RotationKeys
    ) -> npt.NDArray[np.uint32]:
        """``words`` rotated left by ``step`` without hoisting: permuted, then decomposed
        (SEAL's order of steps, so SEAL's result bit for bit)."""
        key = keys.key(step)
        permuted = self.decompose(np.ascontiguousarray(words[:, :, key.perm]))
        # In _switch's frame: the decomposition moved back by the inverse permutation,
        # c0 as it is (_switch permutes it).
        inverse = np.argsort(key.perm)
        source = Decomposed(
            np.ascontiguousarray(words[0]),
            np.ascontiguousarray(permuted.data[..., inverse]),
            np.ascontiguousarray(permuted.special[..., inverse]),
        )
        return self._switch(source, key)

    def rotations(
        self,
        words: npt.NDArray[np.uint32],
        steps: Iterable[int],
        keys: RotationKeys,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[tuple[int, npt.NDArray[np.uint32]]]:
        """``(k, words rotated left by k)`` for each of ``steps`` (0: the words themselves),
        through the hoisting tree; ``should_stop`` is asked before each decomposition."""
        wanted = set(steps)
        parent = hoisting_tree(wanted, self._params.rotation_base)
        children: dict[int, list[int]] = {}
        for k, p in parent.items():
            children.setdefault(p, []).append(k)
        if 0 in wanted:
            yield 0, words
        pending: list[tuple[int, npt.NDArray[np.uint32]]] = [(0, words)]
        while pending:
            node, node_words = pending.pop()
            kids = children.get(node)
            if not kids:
                continue
            _check_stop(should_stop)
            source = self.decompose(node_words)
            for kid in sorted(kids):
                rotated = self.rotate(source, kid - node, keys)
                if kid in wanted:
                    yield kid, rotated
                if kid in children:
                    pending.append((kid, rotated))


def key_steps(dp: int, base: int) -> list[int]:
    """The single-key steps the hoisting tree of rotations below ``dp`` uses: ``d *
    base^i < dp``."""
    steps, power = [], 1
    while power < dp:
        steps += [d * power for d in range(1, base) if d * power < dp]
        power *= base
    return steps


class KeyCache:
    """The :class:`RotationKeys` of the last few requester keys an engine searched for
    (~2.2 MB per step: 32 MB at dp = 128; reading them out of SEAL takes ~30 ms)."""

    def __init__(self, params: ParamSet, dp: int, keep: int = 2) -> None:
        self._params, self._keep = params, keep
        self._steps = key_steps(dp, params.rotation_base)
        self._keys: OrderedDict[str, RotationKeys] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, keys: EvaluationKeys) -> RotationKeys:
        with self._lock:
            found = self._keys.get(keys.key_id)
            if found is not None:
                self._keys.move_to_end(keys.key_id)
                return found
        built = RotationKeys(self._params, keys.galois_keys, self._steps)
        with self._lock:
            self._keys[keys.key_id] = built
            while len(self._keys) > self._keep:
                self._keys.popitem(last=False)
        return built


def _check_stop(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise DeadlineExceeded("search stopped while rotating the query")


_compiled: set[str] = set()


def warm_up(params: ParamSet) -> float:
    """Compile the native key switch and build ``params``' tables in this process (once),
    on zero words with every array type a query uses; returns the seconds it took."""
    if params.name in _compiled:
        return 0.0
    started = time.perf_counter()
    t = _tables_for(params)
    count, n = t.moduli.size, t.degree
    hoister = Hoister(params)
    key = _Key(
        perm=np.arange(n, dtype=np.int64),
        data=np.zeros((count, 2, count, n), dtype=np.uint32),
        special=np.zeros((count, 2, n), dtype=np.uint64),
    )
    source = hoister.decompose(np.zeros((2, count, n), dtype=np.uint32))
    hoister._switch(source, key)
    _compiled.add(params.name)
    return time.perf_counter() - started
