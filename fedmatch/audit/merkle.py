"""RFC 9162 (RFC 6962) Merkle tree hashing, proof generation and proof verification.

This module owns the tree arithmetic of the audit logs and nothing else: the leaf and node
hashes (SHA-256 with the 0x00 / 0x01 domain-separation prefixes), the Merkle Tree Hash (MTH)
of a list of leaf hashes, an append-only in-memory tree that can answer for any of its
historical sizes, and the two verifiers (inclusion, RFC 9162 §2.1.3.2; consistency,
§2.1.4.2). What a leaf *is* (entry encoding) and who signs a root belong to other modules.

Verifiers return ``None`` or raise :class:`AuditVerificationError`; they never return a
bool, so a caller cannot forget to look at the result. Messages name sizes, indices and
proof positions, never hash contents. Misuse of :class:`MerkleTree` itself (an index or size
the tree does not have) raises :class:`fedmatch.errors.InvalidInput`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.errors import InvalidInput

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: int = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256 of the empty string (RFC 9162 §2.1.1)."""

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right).

    Both children must be 32-byte hashes; anything else is a caller bug (most likely raw
    data passed where a hash was meant), so it is refused rather than hashed.
    """
    if len(left) != HASH_SIZE or len(right) != HASH_SIZE:
        raise InvalidInput(
            f"node_hash needs two {HASH_SIZE}-byte hashes, got {len(left)} and {len(right)} bytes"
        )
    return _node(left, right)


def _node(left: bytes | bytearray, right: bytes | bytearray) -> bytes:
    # Unchecked inner version for the hot paths, whose inputs are 32 bytes by construction.
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2): where MTH splits."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes (each 32 bytes); :data:`EMPTY_ROOT` for none."""
    tree = MerkleTree()
    tree.extend(leaf_hashes)
    return tree.root()


class MerkleTree:
    """An append-only RFC 9162 Merkle tree over 32-byte leaf hashes, held in memory.

    Storage: ``_levels[k]`` is a ``bytearray`` of the hashes of every *complete* perfect
    subtree of 2**k leaves, left to right, 32 bytes each: entry ``i`` covers leaves
    ``[i * 2**k, (i + 1) * 2**k)``. Those hashes never change once written (the tree only
    grows), which is what lets one structure answer for every historical size: in the MTH
    of any prefix, every left child is such a perfect, aligned subtree, so only the nodes on
    the prefix's right edge have to be hashed on demand (at most log2(n) hashes per call).
    About 64 bytes per leaf in total, with no per-hash Python objects.

    Not thread-safe: concurrent ``append``/``extend`` with any other call must be
    serialised by the caller (one writer, or a lock around the tree).
    """

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf *hash* (32 bytes; see :func:`leaf_hash`). Amortized O(1)."""
        if len(leaf_hash) != HASH_SIZE:
            raise InvalidInput(
                f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf_hash)} (pass leaf_hash(data))"
            )
        self._append(bytes(leaf_hash))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append several leaf hashes; all are checked first, so a bad one appends none."""
        batch = [bytes(h) for h in leaf_hashes]
        for i, h in enumerate(batch):
            if len(h) != HASH_SIZE:
                raise InvalidInput(
                    f"leaf hash {i} of the batch is {len(h)} bytes, expected {HASH_SIZE}; "
                    "nothing was appended"
                )
        for h in batch:
            self._append(h)

    def _append(self, h: bytes) -> None:
        levels = self._levels
        index = self._size
        levels[0] += h
        level = 0
        # The new leaf completes a perfect subtree at every level where its index (shifted)
        # is odd: combine with the left sibling, which is the previous entry of that row.
        while index & 1:
            h = _node(levels[level][-2 * HASH_SIZE : -HASH_SIZE], h)
            level += 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += h
            index >>= 1
        self._size += 1

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        if not 0 <= index < self._size:
            raise InvalidInput(f"leaf index {index} is outside a tree of {self._size} leaves")
        return self._perfect(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all); any ``0 <= size <= len``."""
        size = self._check_size("size", size)
        if size == 0:
            return EMPTY_ROOT
        return self._range(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf-side first (RFC 9162 §2.1.3.1)."""
        size = self._check_size("size", size)
        if not 0 <= index < size:
            raise InvalidInput(f"leaf index {index} is outside a tree of size {size}")
        proof: list[bytes] = []
        lo, hi = 0, size
        # Walk down from the root; the sibling of each step is the proof element of that
        # level. Proof order is bottom-up, hence the reverse at the end.
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._perfect(k.bit_length() - 1, lo // k))
                lo += k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) of RFC 6962 §2.1.2 (RFC 9162 §2.1.4.1).

        ``[]`` when ``size1 == 0`` or ``size1 == size2``: there is nothing to prove (the
        verifier refuses size1 == 0 outright, and wants an empty proof for equal sizes).
        """
        size2 = self._check_size("size2", size2)
        if not 0 <= size1 <= size2:
            raise InvalidInput(f"consistency proof needs 0 <= size1 <= size2, got {size1}, {size2}")
        if size1 == 0 or size1 == size2:
            return []
        proof: list[bytes] = []
        # SUBPROOF(m, D[lo:hi], b) unrolled: m counts the old leaves inside [lo, hi); b says
        # whether [lo, hi) is still a prefix of the whole tree (its old part then needs no
        # hash, the verifier has the old root).
        lo, hi, m, whole_old_prefix = 0, size2, size1, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._perfect(k.bit_length() - 1, lo // k))
                lo += k
                m -= k
                whole_old_prefix = False
        if not whole_old_prefix:
            proof.append(self._range(lo, hi))
        proof.reverse()
        return proof

    def _check_size(self, name: str, size: int | None) -> int:
        if size is None:
            return self._size
        if not 0 <= size <= self._size:
            raise InvalidInput(f"{name} {size} is outside 0..{self._size} (the tree's length)")
        return size

    def _perfect(self, level: int, i: int) -> bytes:
        # Hash of the complete subtree of 2**level leaves starting at leaf i * 2**level.
        start = i * HASH_SIZE
        return bytes(self._levels[level][start : start + HASH_SIZE])

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi), where lo is aligned as MTH's recursion aligns it.

        [lo, hi) splits into perfect subtrees, one per set bit of hi - lo from the largest
        down, each aligned because lo is a multiple of the largest; MTH is their right fold.
        """
        n = hi - lo
        parts: list[bytes] = []
        pos = lo
        for level in range(n.bit_length() - 1, -1, -1):
            if n >> level & 1:
                parts.append(self._perfect(level, pos >> level))
                pos += 1 << level
        h = parts.pop()
        while parts:
            h = _node(parts.pop(), h)
        return h


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise AuditVerificationError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    """(inner, border) hash counts of the inclusion proof of ``index`` in ``size`` leaves.

    Inner: levels where the path to the leaf and the path to the last leaf differ, each
    with a sibling. Border: above that, the leaf is on the right edge, and a sibling exists
    only where the path turns right (a set bit of the index).
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` leads to for ``leaf_hash`` at ``index`` of a tree of ``size``.

    Raises :class:`AuditVerificationError` if the arguments cannot form a proof (index out of
    range, wrong proof length, a hash that is not 32 bytes). The returned root still has to
    be compared with a trusted one; :func:`verify_inclusion` does both.
    """
    if index < 0 or size < 0:
        raise AuditVerificationError(f"negative leaf index {index} or tree size {size}")
    if index >= size:
        raise AuditVerificationError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf_hash)
    inner, border = _inclusion_shape(index, size)
    if len(proof) != inner + border:
        raise AuditVerificationError(
            f"inclusion proof has {len(proof)} hashes, tree of size {size} needs "
            f"{inner + border} for leaf index {index}"
        )
    for i, p in enumerate(proof):
        _check_hash(f"inclusion proof hash {i}", p)
    # RFC 9162 §2.1.3.2, literally. The length check above already guarantees the shape the
    # algorithm checks (sn reaching 0 exactly at the end); its own checks stay as a backstop.
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for p in proof:
        if sn == 0:
            raise AuditVerificationError("inclusion proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditVerificationError("inclusion proof is shorter than the tree is high")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2. Returns ``None``; raises :class:`AuditVerificationError` otherwise.
    """
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    _check_hash("root", root)
    if not hmac.compare_digest(computed, root):
        raise AuditVerificationError(
            f"inclusion proof for leaf index {index} does not lead to the root of the tree of "
            f"size {size}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1``/``root1``.

    RFC 9162 §2.1.4.2. Returns ``None``; raises :class:`AuditVerificationError` otherwise.
    A proof from size 0 is refused: it would prove nothing (every tree extends the empty
    one), so asking for it is a caller bug that should not pass silently.
    """
    if size1 < 0 or size2 < 0:
        raise AuditVerificationError(f"negative tree size in consistency check ({size1}, {size2})")
    if size1 > size2:
        raise AuditVerificationError(
            f"consistency proof from size {size1} to the smaller size {size2}"
        )
    if size1 == 0:
        raise AuditVerificationError(
            f"consistency proof from the empty tree (size 0 to {size2}) proves nothing"
        )
    if size1 == size2:
        # Deliberately no 32-byte check on the roots here: this agrees with the reference
        # verifier (transparency-dev/merkle), whose test vectors accept equal sizes with
        # equal roots of any length. Equal sizes need equal roots, whatever they are.
        if proof:
            raise AuditVerificationError(
                f"consistency proof between equal sizes {size1} must be empty, "
                f"has {len(proof)} hashes"
            )
        if not hmac.compare_digest(root1, root2):
            raise AuditVerificationError(f"roots differ for the same tree size {size1}")
        return
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    # Expected length, so a malformed proof gets a precise message. It is the inclusion
    # proof of leaf size1 - 1 in size2 leaves, minus the levels below the largest perfect
    # subtree ending at size1 (2**shift leaves), plus that subtree's hash unless it is the
    # whole old tree (then the verifier seeds with root1 instead).
    inner, border = _inclusion_shape(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    seeded_by_root1 = size1 == 1 << shift
    want = (0 if seeded_by_root1 else 1) + inner - shift + border
    if len(proof) != want:
        raise AuditVerificationError(
            f"consistency proof has {len(proof)} hashes, sizes {size1} -> {size2} need {want}"
        )
    for i, p in enumerate(proof):
        _check_hash(f"consistency proof hash {i}", p)
    # RFC 9162 §2.1.4.2, literally (step numbers in the comments).
    path = [bytes(root1), *proof] if seeded_by_root1 else [bytes(p) for p in proof]  # 2
    fn, sn = size1 - 1, size2 - 1  # 3
    while fn & 1:  # 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # 5
    for c in path[1:]:  # 6
        if sn == 0:
            raise AuditVerificationError("consistency proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # 7
        raise AuditVerificationError("consistency proof is shorter than the tree is high")
    if not hmac.compare_digest(fr, root1):
        raise AuditVerificationError(
            f"consistency proof {size1} -> {size2} does not lead to the old root (size {size1})"
        )
    if not hmac.compare_digest(sr, root2):
        raise AuditVerificationError(
            f"consistency proof {size1} -> {size2} does not lead to the new root (size {size2})"
        )
