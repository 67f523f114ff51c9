"""Tests of fedmatch.audit.merkle: RFC 9162 / RFC 6962 tree hashing, proofs and verifiers.

Three independent sources of truth: the reference verifier's test vectors
(transparency-dev/merkle, 196 files under <repo>/../shared/data/merkle-vectors), the
certificate-transparency known-answer roots and node hashes, and a deliberately naive
recursive implementation written here straight from the RFC 6962 definitions (MTH, PATH,
PROOF/SUBPROOF) that the property tests compare against.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from fedmatch.errors import FedmatchError, InvalidInput

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTOR_DIR = REPO_ROOT.parent / "shared" / "data" / "merkle-vectors"
VECTOR_COUNT = 196
VECTOR_FILES = sorted(VECTOR_DIR.rglob("*.json")) if VECTOR_DIR.is_dir() else []

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


# --- a naive reference, straight from RFC 6962 §2.1 ------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _naive_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes, recursively."""
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return leaves[0]
    k = _naive_split(n)
    return _h(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:]))


def naive_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = _naive_split(n)
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [naive_mth(leaves)]
    k = _naive_split(n)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], b), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


def naive_inclusion_root(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes | None:
    """The root a proof leads to, recomputed by walking PATH's recursion top-down (the last
    proof element is the top-level sibling); None when the proof has the wrong shape."""
    if not 0 <= index < size:
        return None
    remaining = list(proof)

    def rec(i: int, n: int) -> bytes | None:
        if n == 1:
            return leaf
        if not remaining:
            return None
        sibling = remaining.pop()
        k = _naive_split(n)
        if i < k:
            sub = rec(i, k)
            return None if sub is None else _h(b"\x01" + sub + sibling)
        sub = rec(i - k, n - k)
        return None if sub is None else _h(b"\x01" + sibling + sub)

    root = rec(index, size)
    return None if root is None or remaining else root


def naive_consistency_accepts(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """Whether the proof rebuilds both roots, walking SUBPROOF's recursion top-down."""
    if not 0 < size1 <= size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    remaining = list(proof)

    def rec(m: int, n: int, b: bool) -> tuple[bytes, bytes] | None:
        """(old hash, new hash) of the node holding m old leaves out of n."""
        if m == n and b:
            return root1, root1
        if not remaining:
            return None
        top = remaining.pop()
        if m == n:
            return top, top
        k = _naive_split(n)
        if m <= k:
            sub = rec(m, k, b)
            return None if sub is None else (sub[0], _h(b"\x01" + sub[1] + top))
        sub = rec(m - k, n - k, False)
        if sub is None:
            return None
        return _h(b"\x01" + top + sub[0]), _h(b"\x01" + top + sub[1])

    got = rec(size1, size2, True)
    return got is not None and not remaining and got == (root1, root2)


# --- helpers ---------------------------------------------------------------------------------


def make_leaves(n: int, seed: int) -> list[bytes]:
    return [leaf_hash(seed.to_bytes(8, "big") + i.to_bytes(4, "big")) for i in range(n)]


def make_tree(leaves: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree()
    tree.extend(leaves)
    return tree


def flip_bit(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def inclusion_fails(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    try:
        verify_inclusion(leaf, index, size, proof, root)
    except AuditVerificationError:
        return True
    return False


def consistency_fails(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    try:
        verify_consistency(size1, size2, proof, root1, root2)
    except AuditVerificationError:
        return True
    return False


# --- the reference verifier's vectors --------------------------------------------------------


def _b64(value: object) -> bytes:
    assert isinstance(value, str)
    return base64.b64decode(value, validate=True)


def _proof(value: object) -> list[bytes]:
    if value is None:
        return []
    assert isinstance(value, list)
    return [_b64(item) for item in value]


def test_all_reference_vectors_are_present() -> None:
    assert len(VECTOR_FILES) == VECTOR_COUNT, (
        f"expected {VECTOR_COUNT} Merkle vectors under {VECTOR_DIR}, found {len(VECTOR_FILES)}"
    )


@pytest.mark.parametrize(
    "path", VECTOR_FILES, ids=[p.relative_to(VECTOR_DIR).as_posix() for p in VECTOR_FILES]
)
def test_reference_vector(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict)
    want_err = case["wantErr"]
    assert isinstance(want_err, bool)
    if "leafIdx" in case:
        index, size = case["leafIdx"], case["treeSize"]
        assert isinstance(index, int) and isinstance(size, int)
        leaf, root, proof = _b64(case["leafHash"]), _b64(case["root"]), _proof(case["proof"])
        assert inclusion_fails(leaf, index, size, proof, root) is want_err, case["desc"]
    else:
        size1, size2 = case["size1"], case["size2"]
        assert isinstance(size1, int) and isinstance(size2, int)
        root1, root2, proof = _b64(case["root1"]), _b64(case["root2"]), _proof(case["proof"])
        assert consistency_fails(size1, size2, proof, root1, root2) is want_err, case["desc"]


# --- known answers (certificate-transparency / transparency-dev testonly data) ----------------

CT_LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
# Roots of the first 1..8 leaves.
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# Hashes of the perfect subtrees of the 8-leaf tree, by level: NODES[k][i] covers leaves
# [i * 2**k, (i + 1) * 2**k).
CT_NODES = [
    [
        bytes.fromhex(h)
        for h in (
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        )
    ],
    [
        bytes.fromhex(h)
        for h in (
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        )
    ],
    [
        bytes.fromhex(h)
        for h in (
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        )
    ],
    [bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
L, N1, N2 = CT_NODES[0], CT_NODES[1], CT_NODES[2]
# (index, size, proof) and (size1, size2, proof) of the reference proof tests, in node terms.
CT_INCLUSION = [
    (0, 8, [L[1], N1[1], N2[1]]),
    (5, 8, [L[4], N1[3], N2[0]]),
    (2, 3, [N1[0]]),
    (1, 5, [L[0], N1[1], L[4]]),
    (0, 1, []),
]
CT_CONSISTENCY = [
    (1, 8, [L[1], N1[1], N2[1]]),
    (6, 8, [N1[2], N1[3], N2[0]]),
    (2, 5, [N1[1], L[4]]),
    (6, 7, [N1[2], L[6], N2[0]]),
    (4, 8, [N2[1]]),
    (3, 3, []),
]


def ct_tree() -> MerkleTree:
    return make_tree([leaf_hash(data) for data in CT_LEAF_INPUTS])


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MerkleTree().root() == EMPTY_ROOT
    assert root_of([]) == EMPTY_ROOT
    assert HASH_SIZE == len(EMPTY_ROOT) == 32


def test_known_answer_roots() -> None:
    tree = ct_tree()
    leaves = [leaf_hash(data) for data in CT_LEAF_INPUTS]
    assert tree.root(0) == EMPTY_ROOT
    for size in range(1, 9):
        want = CT_ROOTS[size - 1]
        assert tree.root(size) == want, size
        assert root_of(leaves[:size]) == want, size
        assert naive_mth(leaves[:size]) == want, size
        assert make_tree(leaves[:size]).root() == want, size


def test_known_answer_node_hashes() -> None:
    tree = ct_tree()
    assert [tree.leaf(i) for i in range(8)] == CT_NODES[0]
    for level, row in enumerate(CT_NODES):
        for i, want in enumerate(row):
            assert tree._perfect(level, i) == want, (level, i)


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_known_answer_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    tree = ct_tree()
    assert tree.inclusion_proof(index, size) == proof
    verify_inclusion(tree.leaf(index), index, size, proof, CT_ROOTS[size - 1])


@pytest.mark.parametrize(("size1", "size2", "proof"), CT_CONSISTENCY)
def test_known_answer_consistency_proofs(size1: int, size2: int, proof: list[bytes]) -> None:
    tree = ct_tree()
    assert tree.consistency_proof(size1, size2) == proof
    verify_consistency(size1, size2, proof, CT_ROOTS[size1 - 1], CT_ROOTS[size2 - 1])


# --- exhaustive cross-checks against the naive reference on small trees ----------------------


def test_all_proofs_match_the_naive_reference_up_to_40_leaves() -> None:
    leaves = make_leaves(40, seed=7)
    tree = make_tree(leaves)
    for size in range(1, 41):
        root = naive_mth(leaves[:size])
        assert tree.root(size) == root
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == naive_path(index, leaves[:size]), (index, size)
            assert root_from_inclusion_proof(leaves[index], index, size, proof) == root
        for size1 in range(1, size + 1):
            cproof = tree.consistency_proof(size1, size)
            want = [] if size1 == size else naive_subproof(size1, leaves[:size], True)
            assert cproof == want, (size1, size)
            verify_consistency(size1, size, cproof, tree.root(size1), root)


def test_historical_roots_of_a_larger_tree() -> None:
    leaves = make_leaves(5000, seed=11)
    tree = MerkleTree()
    for h in leaves:
        tree.append(h)
    assert len(tree) == 5000
    for size in (1, 2, 3, 1023, 1024, 1025, 2047, 3333, 4095, 4096, 4097, 4999, 5000):
        assert tree.root(size) == naive_mth(leaves[:size]), size
    root = tree.root()
    for index in (0, 1, 2047, 4095, 4096, 4999):
        assert tree.inclusion_proof(index) == naive_path(index, leaves)
        verify_inclusion(leaves[index], index, 5000, tree.inclusion_proof(index), root)


# --- properties ------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=300)
seeds = st.integers(min_value=0, max_value=2**32)


@PROPERTY_SETTINGS
@given(n=sizes, seed=seeds, data=st.data())
def test_root_matches_naive_mth(n: int, seed: int, data: st.DataObject) -> None:
    leaves = make_leaves(n, seed)
    tree = make_tree(leaves)
    assert len(tree) == n
    assert tree.root() == naive_mth(leaves) == root_of(leaves)
    size = data.draw(st.integers(0, n), label="historical size")
    assert tree.root(size) == naive_mth(leaves[:size])


@PROPERTY_SETTINGS
@given(n=sizes, seed=seeds, data=st.data())
def test_every_honest_inclusion_proof_verifies(n: int, seed: int, data: st.DataObject) -> None:
    leaves = make_leaves(n, seed)
    tree = make_tree(leaves)
    root = tree.root()
    for index in range(n):
        verify_inclusion(leaves[index], index, n, tree.inclusion_proof(index), root)
    # A historical size answers from the same stored hashes.
    size = data.draw(st.integers(1, n), label="historical size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index, size)
    assert proof == naive_path(index, leaves[:size])
    verify_inclusion(leaves[index], index, size, proof, naive_mth(leaves[:size]))


@PROPERTY_SETTINGS
@given(n=sizes, seed=seeds, data=st.data())
def test_honest_consistency_proofs_verify(n: int, seed: int, data: st.DataObject) -> None:
    leaves = make_leaves(n, seed)
    tree = make_tree(leaves)
    pairs = data.draw(
        st.lists(st.tuples(st.integers(1, n), st.integers(1, n)), min_size=1, max_size=20),
        label="size pairs",
    )
    for a, b in pairs:
        size1, size2 = min(a, b), max(a, b)
        proof = tree.consistency_proof(size1, size2)
        verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))
        if size1 < size2:
            assert proof == naive_subproof(size1, leaves[:size2], True)


@PROPERTY_SETTINGS
@given(n=sizes, seed=seeds, data=st.data())
def test_tampered_inclusion_proofs_fail(n: int, seed: int, data: st.DataObject) -> None:
    leaves = make_leaves(n, seed)
    tree = make_tree(leaves)
    root = tree.root()
    index = data.draw(st.integers(0, n - 1), label="index")
    leaf = leaves[index]
    proof = tree.inclusion_proof(index)
    verify_inclusion(leaf, index, n, proof, root)

    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
        flipped = [*proof[:pos], flip_bit(proof[pos], bit), *proof[pos + 1 :]]
        assert inclusion_fails(leaf, index, n, flipped, root)
        assert inclusion_fails(leaf, index, n, proof[:pos] + proof[pos + 1 :], root)
    extra = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE), label="extra")
    at = data.draw(st.integers(0, len(proof)), label="insert at")
    assert inclusion_fails(leaf, index, n, [*proof[:at], extra, *proof[at:]], root)

    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="root bit")
    assert inclusion_fails(leaf, index, n, proof, flip_bit(root, bit))
    assert inclusion_fails(flip_bit(leaf, bit), index, n, proof, root)

    # Another index of the same tree always fails: same length and same left/right turns
    # would mean the same position in the same shape, i.e. the same index.
    other = data.draw(st.integers(0, n).filter(lambda i: i != index), label="wrong index")
    assert inclusion_fails(leaf, other, n, proof, root)

    # A wrong size fails unless it gives the proof the very same shape (same length, same
    # turns), which the proof cannot rule out: it does not commit to the size. The recursive
    # reference decides which case this is.
    wrong = data.draw(st.integers(0, 2 * n + 2).filter(lambda s: s != n), label="wrong size")
    expected = naive_inclusion_root(leaf, index, wrong, proof)
    assert inclusion_fails(leaf, index, wrong, proof, root) is (expected != root)
    if expected is None:  # a different shape is always caught
        assert inclusion_fails(leaf, index, wrong, proof, root)


@PROPERTY_SETTINGS
@given(n=sizes.filter(lambda n: n >= 2), seed=seeds, data=st.data())
def test_tampered_consistency_proofs_fail(n: int, seed: int, data: st.DataObject) -> None:
    leaves = make_leaves(n, seed)
    tree = make_tree(leaves)
    size2 = data.draw(st.integers(2, n), label="size2")
    size1 = data.draw(st.integers(1, size2 - 1), label="size1")
    root1, root2 = tree.root(size1), tree.root(size2)
    proof = tree.consistency_proof(size1, size2)
    verify_consistency(size1, size2, proof, root1, root2)
    assert proof, "size1 < size2 always needs at least one hash"

    pos = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
    flipped = [*proof[:pos], flip_bit(proof[pos], bit), *proof[pos + 1 :]]
    assert consistency_fails(size1, size2, flipped, root1, root2)
    assert consistency_fails(size1, size2, proof[:pos] + proof[pos + 1 :], root1, root2)
    extra = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE), label="extra")
    at = data.draw(st.integers(0, len(proof)), label="insert at")
    assert consistency_fails(size1, size2, [*proof[:at], extra, *proof[at:]], root1, root2)

    assert consistency_fails(size1, size2, proof, flip_bit(root1, bit), root2)
    assert consistency_fails(size1, size2, proof, root1, flip_bit(root2, bit))
    assert consistency_fails(size1, size2, proof, root2, root1)

    # Wrong sizes: like inclusion, a size that leaves the proof's shape unchanged cannot be
    # told apart; the recursive reference says which case this is, and we must agree with it.
    wrong1 = data.draw(st.integers(0, size2 + 2).filter(lambda s: s != size1), label="size1'")
    wrong2 = data.draw(st.integers(0, 2 * size2 + 2).filter(lambda s: s != size2), label="size2'")
    for s1, s2 in ((wrong1, size2), (size1, wrong2), (wrong1, wrong2)):
        accepted = naive_consistency_accepts(s1, s2, proof, root1, root2)
        assert consistency_fails(s1, s2, proof, root1, root2) is not accepted, (s1, s2)


@PROPERTY_SETTINGS
@given(n=sizes, seed=seeds, data=st.data())
def test_rewriting_an_earlier_leaf_breaks_consistency(
    n: int, seed: int, data: st.DataObject
) -> None:
    leaves = make_leaves(n, seed)
    old = make_tree(leaves)
    size1 = data.draw(st.integers(1, n), label="old size")
    changed = data.draw(st.integers(0, size1 - 1), label="rewritten leaf")
    grown = data.draw(st.integers(0, 40), label="leaves appended after")
    forged_leaves = list(leaves[:size1])
    forged_leaves[changed] = leaf_hash(b"rewritten" + changed.to_bytes(4, "big"))
    forged_leaves += make_leaves(grown, seed + 1)
    forged = make_tree(forged_leaves)
    size2 = len(forged)

    old_root = old.root(size1)
    # The forger's own honest-looking proof, and the honest log's proof, both fail.
    for proof in (forged.consistency_proof(size1), old.consistency_proof(size1, min(n, size2))):
        assert consistency_fails(size1, size2, proof, old_root, forged.root())


# --- edge cases and errors -------------------------------------------------------------------


def test_single_leaf_tree() -> None:
    h = leaf_hash(b"only")
    tree = make_tree([h])
    assert tree.root() == h == root_of([h])
    assert tree.inclusion_proof(0) == []
    verify_inclusion(h, 0, 1, [], h)
    assert tree.consistency_proof(1) == []
    verify_consistency(1, 1, [], h, h)
    with pytest.raises(AuditVerificationError):
        verify_inclusion(h, 0, 1, [h], h)


def test_equal_sizes_need_an_empty_proof_and_equal_roots() -> None:
    tree = make_tree(make_leaves(5, seed=1))
    root = tree.root()
    assert tree.consistency_proof(5, 5) == []
    verify_consistency(5, 5, [], root, root)
    with pytest.raises(AuditVerificationError, match="equal sizes 5 must be empty, has 1"):
        verify_consistency(5, 5, [root], root, root)
    with pytest.raises(AuditVerificationError, match="roots differ for the same tree size 5"):
        verify_consistency(5, 5, [], root, tree.root(4))


def test_consistency_size_rules_in_order() -> None:
    root = make_tree(make_leaves(3, seed=2)).root()
    with pytest.raises(AuditVerificationError, match="from size 3 to the smaller size 2"):
        verify_consistency(3, 2, [], root, root)
    with pytest.raises(AuditVerificationError, match="empty tree"):
        verify_consistency(0, 3, [root], EMPTY_ROOT, root)
    # Size 0 is refused even against itself.
    with pytest.raises(AuditVerificationError, match="empty tree"):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(AuditVerificationError, match="has 0 hashes, sizes 2 -> 3 need 1"):
        verify_consistency(2, 3, [], root, root)
    with pytest.raises(AuditVerificationError, match="root1 is 31 bytes"):
        verify_consistency(2, 3, [root], root[:31], root)


def test_inclusion_shape_errors() -> None:
    leaves = make_leaves(70, seed=3)
    tree = make_tree(leaves)
    root = tree.root()
    proof = tree.inclusion_proof(0)
    assert len(proof) == 7
    with pytest.raises(
        AuditVerificationError, match="inclusion proof has 6 hashes, tree of size 70 needs 7"
    ):
        verify_inclusion(leaves[0], 0, 70, proof[:6], root)
    with pytest.raises(AuditVerificationError, match="leaf index 70 is outside a tree of size 70"):
        verify_inclusion(leaves[0], 70, 70, proof, root)
    with pytest.raises(AuditVerificationError, match="negative"):
        verify_inclusion(leaves[0], -1, 70, proof, root)
    with pytest.raises(AuditVerificationError, match="leaf hash is 0 bytes"):
        verify_inclusion(b"", 0, 70, proof, root)
    with pytest.raises(AuditVerificationError, match="root is 33 bytes"):
        verify_inclusion(leaves[0], 0, 70, proof, root + b"\x00")
    with pytest.raises(AuditVerificationError, match="inclusion proof hash 2 is 31 bytes"):
        verify_inclusion(leaves[0], 0, 70, [*proof[:2], proof[2][:31], *proof[3:]], root)
    with pytest.raises(AuditVerificationError, match="leaf index 0 is outside a tree of size 0"):
        root_from_inclusion_proof(leaves[0], 0, 0, [])
    assert root_from_inclusion_proof(leaves[0], 0, 70, proof) == root


def test_messages_never_quote_hashes() -> None:
    leaves = make_leaves(9, seed=4)
    tree = make_tree(leaves)
    root, proof = tree.root(), tree.inclusion_proof(3)
    forged = flip_bit(root, 0)
    with pytest.raises(AuditVerificationError) as caught:
        verify_inclusion(leaves[3], 3, 9, proof, forged)
    text = str(caught.value)
    for h in (root, forged, leaves[3], *proof):
        assert h.hex() not in text and base64.b64encode(h).decode() not in text
    assert isinstance(caught.value, FedmatchError)


def test_tree_rejects_out_of_range_arguments() -> None:
    tree = make_tree(make_leaves(10, seed=5))
    with pytest.raises(InvalidInput):
        tree.root(11)
    with pytest.raises(InvalidInput):
        tree.root(-1)
    with pytest.raises(InvalidInput):
        tree.leaf(10)
    with pytest.raises(InvalidInput):
        tree.leaf(-1)
    with pytest.raises(InvalidInput):
        tree.inclusion_proof(10)  # index == size
    with pytest.raises(InvalidInput):
        tree.inclusion_proof(4, 4)
    with pytest.raises(InvalidInput):
        tree.inclusion_proof(0, 11)  # size > len
    with pytest.raises(InvalidInput):
        tree.inclusion_proof(-1)
    with pytest.raises(InvalidInput):
        tree.consistency_proof(5, 11)
    with pytest.raises(InvalidInput):
        tree.consistency_proof(6, 5)
    with pytest.raises(InvalidInput):
        tree.consistency_proof(-1, 5)
    with pytest.raises(InvalidInput):
        MerkleTree().inclusion_proof(0)
    # Nothing to prove: the RFC's generator has no case for these, they give [].
    assert tree.consistency_proof(0) == []
    assert tree.consistency_proof(0, 0) == []
    assert tree.consistency_proof(7, 7) == []


def test_tree_rejects_wrong_length_leaf_hashes_atomically() -> None:
    tree = MerkleTree()
    with pytest.raises(InvalidInput):
        tree.append(b"raw data, not a hash")
    good = make_leaves(3, seed=6)
    with pytest.raises(InvalidInput, match="leaf hash 2 of the batch is 31 bytes"):
        tree.extend([good[0], good[1], good[2][:31]])
    assert len(tree) == 0
    tree.extend(iter(good))
    assert len(tree) == 3 and tree.root() == naive_mth(good)


def test_hash_functions() -> None:
    assert leaf_hash(b"") == CT_NODES[0][0]
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = CT_NODES[0][0], CT_NODES[0][1]
    assert node_hash(left, right) == CT_NODES[1][0]
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    with pytest.raises(InvalidInput):
        node_hash(left, right[:16])
