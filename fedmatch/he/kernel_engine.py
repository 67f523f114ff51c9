"""The packed search with the native product kernel for step 2, native key switches for the
query's baby steps and native per-block steps; SEAL for the rest.

:class:`KernelEngine` is :class:`fedmatch.he.engine.PackedBase` with two parts of its own:

- a block is a :class:`KernelBlock`: the NTT-form residues of its ``dp`` diagonals as
  ``uint32`` (dp x moduli x N, stored tile by tile for the kernel), encoded by SEAL's
  ``CKKSEncoder`` exactly as :class:`~fedmatch.he.engine.PackedEngine` encodes them (same
  diagonals, same scale, same level) and copied out of the plaintexts
  (:mod:`fedmatch.he.sealmem`), packed (:class:`fedmatch.he.kernel.PackedBlock`: the
  25-bit prime's high bits in the three 29-bit primes' spare top bits): 1,792 bytes per
  record at d = 128 with the kernel parameter set (14 bytes a coefficient), against the
  default set's SEAL plaintexts' 2,048 (2 moduli x 8 bytes);
- the products: the query's baby-step rotations are computed natively and hoisted
  (:mod:`fedmatch.he.keyswitch`: one decomposition per node of a tree of single-key
  steps, ~3x cheaper than SEAL's key switches), written once per query into one tiled
  ``uint32`` stack (:class:`RotationStack`; a sharded engine's workers each write their
  share, :mod:`fedmatch.he.rotshare`), the kernel (:mod:`fedmatch.he.kernel`) sums
  rotation times diagonal for a group of blocks, and each sum is written into a SEAL
  ciphertext shaped like the query (NTT form, top level, scale query x register). Giant
  steps, if the split has them, are combined by SEAL as in PackedEngine (Horner's rule,
  rotations by ``n1``).

Everything after the products is PackedBase's: the malformation garbling, the threshold,
the conjugate split and masks, exclusion decoys, the norm excess, the rescale, the random
rotation and the re-randomization. The sums are bit for bit SEAL's own
(tests/unit/test_kernel.py). Two steps move into the kernel for blocks without giant steps:
the random rotation (the sum comes out rotated) and the conjugate the masks need (summed
from the conjugated diagonals, see :class:`fedmatch.he.engine.Sums`), so that no key switch
touches those blocks' scores. For those blocks the garbling, threshold, masks and norm
excess run as one native pass over the words (:mod:`fedmatch.he.blend`) and the two
rescales natively (:mod:`fedmatch.he.native_rescale`), both SEAL's result word for word.

The kernel is compiled when the engine is built (``compile_seconds``), never in a query.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from fedmatch.errors import HEError
from fedmatch.he import blend, ckks_encode, kernel, keyswitch, native_rescale, sealmem
from fedmatch.he.engine import (
    PackedBase,
    Sums,
    _check_stop,
    choose_kernel_baby_steps,
    excess_weights,
    garbling_factors,
    kernel_rotation_cost,
    masks,
)
from fedmatch.he.keys import EvaluationKeys
from fedmatch.he.params import ParamSet
from fedmatch.he.rotshare import RotationShare
from fedmatch.he.slotorder import conjugated as conjugated_words
from fedmatch.he.slotorder import slot_order

__all__ = ["KernelBlock", "KernelEngine", "RotationStack", "place", "stack_shape"]


@dataclass(frozen=True, eq=False)
class KernelBlock:
    """One register block for the kernel: the NTT-form residues of its diagonals
    (pre-rotated for ``baby_steps``), tiled as the kernel reads them (coefficient
    ``t * tile + c`` of diagonal ``i`` modulo data prime ``l`` at ``[l, t, i, c]``, see
    :func:`fedmatch.he.kernel.tiled`) and packed (:class:`fedmatch.he.kernel.PackedBlock`:
    14 bytes a coefficient with the kernel set's 29, 29, 29 and 25-bit primes);
    ``nonzero[i]`` whether diagonal ``i`` has a nonzero residue."""

    residues: kernel.PackedBlock
    baby_steps: int
    nonzero: npt.NDArray[np.bool_]

    def giant_nonzero(self, j: int) -> bool:
        """Whether giant step ``j`` has a nonzero diagonal (else its partial sum is zero,
        which SEAL could not take as a ciphertext)."""
        n1 = self.baby_steps
        return bool(self.nonzero[j * n1 : (j + 1) * n1].any())


class RotationStack(list[seal.Ciphertext]):
    """The query's baby-step rotations (SEAL ciphertexts, left rotations by 0 .. n1 - 1)
    and their words, copied once per query, tiled as the kernel reads them:
    ``residues[l, t, k, part, c]`` (uint32)."""

    def __init__(
        self,
        rotations: Sequence[seal.Ciphertext],
        tile: int,
        residues: npt.NDArray[np.uint32] | None = None,
    ) -> None:
        """``rotations``' words copied into a new stack; or, given ``residues`` (a stack
        filled already, see :mod:`fedmatch.he.rotshare`), ``rotations`` is the query alone
        (what the engine needs besides the words: its level and scale)."""
        super().__init__(rotations)
        if residues is not None:
            self.residues = residues
            return
        first = rotations[0]
        self.residues = np.empty(stack_shape(first, len(rotations), tile), dtype=np.uint32)
        for k, rotation in enumerate(rotations):
            place(self.residues, k, rotation)

    def words(self, k: int) -> npt.NDArray[np.uint32]:
        """Rotation ``k``'s words (parts x moduli x N, SEAL's NTT order): what
        :func:`place_words` put in."""
        moduli, tiles, _, parts, tile = self.residues.shape
        slotted = self.residues[:, :, k].transpose(2, 0, 1, 3).reshape(parts, moduli, -1)
        out = np.empty_like(slotted)
        out[..., slot_order(tiles * tile)] = slotted
        return out


def stack_shape(query: seal.Ciphertext, count: int, tile: int) -> tuple[int, int, int, int, int]:
    """(moduli, tiles, rotations, parts, tile): a rotation stack's shape."""
    moduli, degree = query.coeff_modulus_size(), query.poly_modulus_degree()
    return moduli, degree // tile, count, query.size(), tile


def place(residues: npt.NDArray[np.uint32], k: int, rotation: seal.Ciphertext) -> None:
    """Rotation ``k``'s words into its place in a stack (``residues``, see RotationStack)."""
    _, _, _, parts, _ = residues.shape
    words = np.empty((parts, rotation.coeff_modulus_size(), rotation.poly_modulus_degree()),
                     dtype=np.uint32)  # fmt: skip
    sealmem.read_ciphertext(rotation, words)
    place_words(residues, k, words)


def place_words(residues: npt.NDArray[np.uint32], k: int, words: npt.NDArray[np.uint32]) -> None:
    """:func:`place` for a rotation's words (parts x moduli x N, SEAL's NTT order)."""
    # In slot order (as the blocks), (part, l, t, c) -> (l, t, part, c): this rotation's
    # place in every tile.
    kernel.place(residues, k, words, slot_order(words.shape[-1]))


class KernelEngine(PackedBase[KernelBlock]):
    """The packed search whose plaintext products run in the native kernel on ``threads``
    cores (default: every core this process may use)."""

    # Blocks per kernel call: the rotation tiles are read once per group (fedmatch.he.kernel).
    _group = kernel.GROUP

    def __init__(self, params: ParamSet, dimension: int, threads: int | None = None) -> None:
        super().__init__(params, dimension)
        self._moduli = kernel.KernelModuli.top_level(params)
        self._threads = threads or kernel.default_threads()
        self._tile = kernel.tile_for(params.poly_modulus_degree, self._threads)
        self.compile_seconds = kernel.warm_up(self._threads)
        # The native encoder of the per-block random plaintexts (PackedBase._encode_values)
        # and the native re-randomization's (PackedBase._rerandomize).
        self.encoder_compile_seconds, self.encrypt_compile_seconds = self.warm_natives()
        # The baby steps' key switches, native and hoisted (fedmatch.he.keyswitch), with
        # the rotation keys they use read out of SEAL once per requester key.
        self.keyswitch_compile_seconds = keyswitch.warm_up(params)
        self._hoister = keyswitch.Hoister(params)
        self._rotation_keys = keyswitch.KeyCache(params, self._dp)
        # The garbling, threshold and masks of a block with a conjugate sum in one native
        # pass (fedmatch.he.blend), with the query's words read once.
        blend.warm_up()
        self._blend_words: blend.QueryWords | None = None
        self._rescaler = native_rescale.Rescaler(params)

    def choose_baby_steps(self, blocks: int) -> int:
        """As PackedBase's, counting that a split with giant steps leaves each block's
        shift modulo dp and its conjugation to key switches (without, the kernel rotates
        and conjugates): :func:`fedmatch.he.engine.kernel_rotation_cost`."""
        return choose_kernel_baby_steps(self._dp, blocks, self._params.rotation_base)

    def _rotation_cost(self, baby_steps: int, blocks: int) -> int:
        base = self._params.rotation_base
        return round(kernel_rotation_cost(self._dp, baby_steps, blocks, base))

    def encode_block_rows(
        self, chunk: npt.NDArray[np.float32], baby_steps: int | None = None
    ) -> KernelBlock:
        """The block's diagonals encoded by SEAL (see :meth:`PackedBase.encode_block_rows`),
        kept as their uint32 residues."""
        n1, diagonals = self._diagonals(chunk, baby_steps)
        moduli, degree = self._moduli.moduli.shape[0], self._params.poly_modulus_degree
        residues = np.empty((len(diagonals), moduli, degree), dtype=np.uint32)
        parms_id = self._ctx.first_parms_id()
        plain = seal.Plaintext()
        for i, diagonal in enumerate(diagonals):
            self._encoder.encode(diagonal.tolist(), parms_id, self._params.register_scale, plain)
            if plain.coeff_count() != moduli * degree:
                raise HEError("a register diagonal did not encode at the top level")
            sealmem.read_plaintext(plain, residues[i])
        nonzero = np.asarray(residues.reshape(len(diagonals), -1).any(axis=1), dtype=np.bool_)
        # In slot order: the kernel rotates a block's sum as it computes it (kernel.products).
        ordered = residues[..., slot_order(degree)]
        stored = kernel.pack(kernel.tiled(ordered, self._tile), self._moduli)
        return KernelBlock(stored, n1, nonzero)

    def block_nbytes(self, block: KernelBlock) -> int:
        return int(block.residues.nbytes + block.nonzero.nbytes)

    def _rotations(
        self,
        query: seal.Ciphertext,
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
        count: int | None = None,
    ) -> RotationStack:
        """The query's baby-step rotations (0 .. count - 1), native and hoisted
        (:mod:`fedmatch.he.keyswitch`), straight into a new stack."""
        n1 = self._dp if count is None else count
        words = self._query_words(query)
        residues = np.empty(stack_shape(query, n1, self._tile), dtype=np.uint32)
        self._hoisted(words, range(n1), keys, residues, should_stop)
        return RotationStack([query], self._tile, residues)

    def _query_words(self, query: seal.Ciphertext) -> npt.NDArray[np.uint32]:
        """The query's words for the native rotations (an opened probe is size 2, in NTT
        form, at the top level: PackedBase refuses any other)."""
        if (
            query.size() != 2
            or not query.is_ntt_form()
            or list(query.parms_id()) != list(self._ctx.first_parms_id())
        ):
            raise HEError("the query is not a size-2 NTT-form ciphertext at the top level")
        words = np.empty((2, self._hoister.moduli, query.poly_modulus_degree()), dtype=np.uint32)
        sealmem.read_ciphertext(query, words)
        return words

    def _hoisted(
        self,
        words: npt.NDArray[np.uint32],
        indices: Sequence[int],
        keys: EvaluationKeys,
        residues: npt.NDArray[np.uint32],
        should_stop: Callable[[], bool],
    ) -> None:
        """Rotations ``indices`` of ``words`` into their places in ``residues``."""
        rotation_keys = self._rotation_keys.get(keys)
        for k, rotated in self._hoister.rotations(words, indices, rotation_keys, should_stop):
            place_words(residues, k, rotated)

    def _rotated(self, ct: seal.Ciphertext, step: int, keys: EvaluationKeys) -> seal.Ciphertext:
        """PackedBase's rotation of probe data (the norm check's) as a native key switch
        without hoisting (:meth:`_native_rotation`), else SEAL's."""
        words = self._native_rotation(ct, step, keys)
        if words is None:
            return super()._rotated(ct, step, keys)
        return self._holding(ct, words.astype(np.uint64))

    def _rotate_step(self, ct: seal.Ciphertext, step: int, keys: EvaluationKeys) -> None:
        """PackedBase's in-place rotation by one key's step (a giant step's, see _combine)
        as a native key switch (:meth:`_native_rotation`), else SEAL's: with giant steps
        (a worker with few blocks) these took ~20% of a query at 20,000 records, ~3.3 ms
        each against ~1.3."""
        words = self._native_rotation(ct, step, keys)
        if words is None:
            super()._rotate_step(ct, step, keys)
            return
        sealmem.write_ciphertext(ct, self._ctx, words.astype(np.uint64))

    def _native_rotation(
        self, ct: seal.Ciphertext, step: int, keys: EvaluationKeys
    ) -> npt.NDArray[np.uint32] | None:
        """``ct`` rotated left by ``step``, natively and without hoisting
        (:meth:`fedmatch.he.keyswitch.Hoister.exact`: SEAL's words bit for bit, ~1.3 ms
        against ~3.3 ms), when ``step`` is one of the baby steps' keys and ``ct`` a size-2
        NTT-form ciphertext at the top level; None for anything else (SEAL's then)."""
        rotation_keys = self._rotation_keys.get(keys)
        if (
            step not in rotation_keys
            or ct.size() != 2
            or not ct.is_ntt_form()
            or list(ct.parms_id()) != list(self._ctx.first_parms_id())
        ):
            return None
        words = np.empty((2, self._hoister.moduli, ct.poly_modulus_degree()), dtype=np.uint32)
        sealmem.read_ciphertext(ct, words)
        return self._hoister.exact(words, step, rotation_keys)

    def _shared_rotations(
        self,
        query: seal.Ciphertext,
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
        count: int,
        share: RotationShare,
    ) -> RotationStack:
        """This worker's share of the rotations into the shared stack (native and hoisted,
        as :meth:`_rotations`); then the whole stack once every peer has written its share."""
        try:
            residues = share.stack(stack_shape(query, count, self._tile))
            words = self._query_words(query)
            self._hoisted(words, share.part(count), keys, residues, should_stop)
            share.publish()
        except BaseException:
            share.fail()
            raise
        share.wait(should_stop)
        return RotationStack([query], self._tile, residues)

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
        """PackedBase's garbling and masks in one native pass (:mod:`fedmatch.he.blend`) for
        a block with its conjugate sum; PackedBase's own steps for anything else (a block
        with giant steps, every row excluded, or operands SEAL itself would refuse)."""
        if (
            conj is None
            or conjugated is None
            or conj_thresholds is None
            or (flags is not None and bool(flags.all()))
            or not self._blendable(acc, conj, terms, conjugated, excess, thresholds)
        ):
            return super()._blend(
                acc, terms, keys, threshold, thresholds, flags, excess,
                conj, conjugated, conj_thresholds,
            )  # fmt: skip
        query = self._blend_words
        sources = (terms, conjugated, excess, thresholds, conj_thresholds)
        if query is None or not query.matches(*sources):
            shape = (2, acc.coeff_modulus_size(), acc.poly_modulus_degree())
            query = blend.QueryWords.read(
                shape, terms, conjugated, excess, thresholds, conj_thresholds
            )
            self._blend_words = query
        ps, parms_id = self._params, list(acc.parms_id())
        # Drawn in PackedBase's order: the terms' factors, the masks, the excess weights.
        rhos = [
            self._value_words(garbling_factors(low, ps.slots), parms_id, ps.register_scale)
            for _, low in terms
        ]
        r1, r2 = masks(ps, flags)
        plus = self._value_words(((r1 + r2) / 2).astype(np.complex128), parms_id, 1.0)
        minus = self._value_words(((r1 - r2) / 2).astype(np.complex128), parms_id, 1.0)
        weights = (
            np.zeros_like(plus)
            if excess is None
            else self._value_words(excess_weights(r1, r2), parms_id, 1.0)
        )
        stacked = np.stack(rhos) if rhos else np.zeros((0, *plus.shape), dtype=np.uint32)
        words = blend.blend(
            acc, conj, query, stacked, conjugated_words(stacked),
            plus, minus, weights, self._moduli.moduli,
        )  # fmt: skip
        # PackedBase._finish_mask's rescales, native (the same words and scale as SEAL's).
        scale = acc.scale
        while words.shape[1] > ps.result_moduli:
            scale /= self._rescaler.last_prime(words.shape[1])
            words = self._rescaler.rescale(words)
        # acc takes the result level's shape by dropping primes (SEAL checks the scale
        # against the level it drops to: the final one is set first).
        acc.scale = scale
        while acc.coeff_modulus_size() > ps.result_moduli:
            self._evaluator.mod_switch_to_next_inplace(acc)
        sealmem.write_ciphertext(acc, self._ctx, words.astype(np.uint64))
        if flags is not None:
            self._evaluator.add_plain_inplace(acc, self._decoys(acc, threshold, flags))
        return acc

    def _blendable(
        self,
        acc: seal.Ciphertext,
        conj: seal.Ciphertext,
        terms: Sequence[tuple[seal.Ciphertext, float]],
        conjugated: Sequence[tuple[seal.Ciphertext, float]],
        excess: seal.Ciphertext | None,
        thresholds: seal.Plaintext,
    ) -> bool:
        """Whether every operand is where SEAL's steps would accept it: size 2, NTT form, at
        ``acc``'s (top) level and at the scales SEAL's sums require."""
        parms_id = list(acc.parms_id())
        if parms_id != list(self._ctx.first_parms_id()) or len(terms) != len(conjugated):
            return False
        scale = acc.scale
        products = [(t, t.scale * self._params.register_scale) for t, _ in (*terms, *conjugated)]
        products += [(conj, conj.scale)] + ([] if excess is None else [(excess, excess.scale)])
        return (
            acc.size() == 2
            and list(thresholds.parms_id()) == parms_id
            and math.isclose(thresholds.scale, scale, rel_tol=1e-9)
            and all(
                ct.size() == 2
                and ct.is_ntt_form()
                and list(ct.parms_id()) == parms_id
                and math.isclose(product_scale, scale, rel_tol=1e-9)
                for ct, product_scale in products
            )
        )

    def _value_words(
        self, values: npt.NDArray[np.complex128], parms_id: list[int], scale: float
    ) -> npt.NDArray[np.uint32]:
        """The NTT words of ``values`` encoded as PackedBase._encode_values encodes them."""
        native = ckks_encode.native_encoder(self._params)
        try:
            return native.ntt_words32(native.coefficients(values, scale), parms_id)
        except HEError:
            # Beyond 2^62 per coefficient: SEAL's encoder, as _encode_values falls back to.
            plain = seal.Plaintext()
            self._encode_values(values, parms_id, scale, plain)
            degree = self._params.poly_modulus_degree
            words = np.empty((plain.coeff_count() // degree, degree), dtype=np.uint32)
            sealmem.read_plaintext(plain, words)
            return words

    def _products(
        self,
        rotations: Sequence[seal.Ciphertext],
        blocks: Sequence[KernelBlock],
        keys: EvaluationKeys,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[seal.Ciphertext]:
        """The kernel's sums for a group of blocks, as SEAL ciphertexts; giant steps (if
        any) combined by Horner's rule, as PackedEngine does."""
        return self._summed([(block, 0) for block in blocks], rotations, keys, should_stop).sums

    def _rotated_products(
        self,
        rotations: Sequence[seal.Ciphertext],
        jobs: Sequence[tuple[KernelBlock, int]],
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
    ) -> Sums:
        """The sums, each rotated in the kernel by its job's shift (no key switch for the
        random rotation) when its block has no giant steps; with giant steps, by the
        shift's multiple of dp (the query's rotations repeat with period dp, the kernel has
        only the first n1), the rest left to score() after the masks. A block without giant
        steps comes with its conjugate sum (no key switch of its scores, see Sums)."""
        return self._summed(jobs, rotations, keys, should_stop, conjugates=True)

    def _summed(
        self,
        jobs: Sequence[tuple[KernelBlock, int]],
        rotations: Sequence[seal.Ciphertext],
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
        conjugates: bool = False,
    ) -> Sums:
        """The kernel's sums of ``jobs``; with ``conjugates``, also the conjugate sums of
        the blocks without giant steps (the kernel reads their diagonals' other half)."""
        stack = rotations
        if not isinstance(stack, RotationStack):
            stack = RotationStack(rotations, self._tile)
        out: list[seal.Ciphertext | None] = [None] * len(jobs)
        conj: list[seal.Ciphertext | None] = [None] * len(jobs)
        applied = [0] * len(jobs)
        splits: dict[int, list[int]] = {}
        for index, (block, _) in enumerate(jobs):
            splits.setdefault(block.baby_steps, []).append(index)
        order = slot_order(self._params.poly_modulus_degree)
        for n1, members in splits.items():
            _check_stop(should_stop)
            dp = self._dp
            shifts = [jobs[m][1] if n1 == dp else jobs[m][1] // dp * dp for m in members]
            blocks = [jobs[m][0].residues for m in members]
            with_conj = conjugates and n1 == dp
            # The sums come back in SEAL's NTT order (the kernel computes in slot order).
            conj_sums = None
            if with_conj:
                sums, conj_sums = kernel.products_with_conjugates(
                    stack.residues, n1, blocks, self._moduli, self._threads, shifts, order
                )
            else:
                sums = kernel.products(
                    stack.residues, n1, blocks, self._moduli, self._threads, shifts, order
                )
            for index, (m, shift) in enumerate(zip(members, shifts, strict=True)):
                block = jobs[m][0]
                out[m] = self._combine(stack, block, sums[index], keys, should_stop)
                if out[m] is None:
                    # A zero sum (every diagonal zero) is zero rotated by any shift, and its
                    # own conjugate: score() conjugates the encryption of zero it gets.
                    applied[m] = jobs[m][1]
                    continue
                applied[m] = shift
                if conj_sums is not None:
                    conj[m] = self._combine(stack, block, conj_sums[index], keys, should_stop)
        sums_out = [self._zero_sum(stack, keys) if acc is None else acc for acc in out]
        return Sums(sums_out, applied, conj)

    def _combine(
        self,
        rotations: Sequence[seal.Ciphertext],
        block: KernelBlock,
        words: npt.NDArray[np.uint64],
        keys: EvaluationKeys,
        should_stop: Callable[[], bool],
    ) -> seal.Ciphertext | None:
        """A block's giant-step sums (``words[j]``) as one SEAL ciphertext, ``S = inner_j +
        rot_n1(S)`` from the last giant step; None if every diagonal is zero. Stops between
        giant steps when asked (each costs a key switch)."""
        total: seal.Ciphertext | None = None
        for j in reversed(range(words.shape[0])):
            _check_stop(should_stop)
            partial = self._ciphertext(rotations[0], words[j]) if block.giant_nonzero(j) else None
            if total is None:
                total = partial
                continue
            self._rotate(total, block.baby_steps, keys)
            if partial is not None:
                self._evaluator.add_inplace(total, partial)
        return total

    def _ciphertext(self, like: seal.Ciphertext, words: npt.NDArray[np.uint64]) -> seal.Ciphertext:
        """A ciphertext holding ``words``, shaped like the query (its level, NTT form),
        at the product scale."""
        ct = self._holding(like, words)
        ct.scale = like.scale * self._params.register_scale
        return ct
