"""audit._merkle against pymerkle, an independent RFC 9162 implementation.

pymerkle counts leaves from 1 at its boundary; ours count from 0 (seq = index + 1).
Its consistency proofs use a different (non-RFC) layout, so for those each side
verifies the other's roots, and ours are compared with a direct transcription
of RFC 9162 §2.1.4.1.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import pytest
from pymerkle import InmemoryTree
from pymerkle import verify_consistency as pymerkle_verify_consistency

from audit import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from schemas import AuditError, ReasonCode


def _entries(n: int, salt: str = "") -> list[bytes]:
    return [f"entry {salt}{i}".encode() for i in range(n)]


def _rfc_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH of RFC 9162 §2.1.1, recursively, straight from the text."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_rfc_mth(leaves[:k]), _rfc_mth(leaves[k:]))


def _rfc_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF of RFC 9162 §2.1.4.1, recursively."""
    n = len(leaves)
    if m == n:
        return [] if whole else [_rfc_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*_rfc_subproof(m, leaves[:k], whole), _rfc_mth(leaves[k:])]
    return [*_rfc_subproof(m - k, leaves[k:], False), _rfc_mth(leaves[:k])]


def test_hashes_follow_rfc_9162_prefixes() -> None:
    left, right = b"a" * 32, b"b" * 32
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert MerkleTree().root() == root_of([]) == Frontier().root() == EMPTY_ROOT


def test_every_size_from_1_to_300_agrees_with_pymerkle() -> None:
    """Roots, frontiers and every inclusion proof; consistency from every earlier size."""
    entries = _entries(300)
    leaves = [leaf_hash(e) for e in entries]
    ours = MerkleTree(leaves)
    theirs = InmemoryTree()
    frontier = Frontier()
    rng = random.Random(9162)
    for n in range(1, 301):
        assert theirs.append_entry(entries[n - 1]) == n  # pymerkle: 1-based index
        frontier.append(leaves[n - 1])
        root = theirs.get_root()
        assert ours.root(n) == root == frontier.root() == root_of(leaves[:n]), n
        assert ours.frontier(n) == frontier
        for index in range(n):
            proof = ours.inclusion_proof(index, n)
            assert proof == theirs.prove_inclusion(index + 1, n).path[1:], (index, n)
            verify_inclusion(leaves[index], index, n, proof, root)
        olds = range(1, n + 1) if n <= 64 else rng.sample(range(1, n + 1), 24)
        for m in olds:
            proof = ours.consistency_proof(m, n)
            verify_consistency(m, n, theirs.get_root(m), root, proof)
            pymerkle_verify_consistency(ours.root(m), ours.root(n), theirs.prove_consistency(m, n))
            if n <= 64:
                assert proof == _rfc_subproof(m, leaves[:n], True), (m, n)


@pytest.mark.parametrize("size", [1023, 1024, 1025, 4097, 31_337, 100_000])
def test_large_sizes_agree_with_pymerkle_on_sampled_proofs(size: int) -> None:
    entries = _entries(size, salt=f"{size}:")
    leaves = [leaf_hash(e) for e in entries]
    ours = MerkleTree.from_leaf_bytes(b"".join(leaves))
    theirs = InmemoryTree()
    theirs.append_entries(entries)
    rng = random.Random(size)
    assert ours.root() == theirs.get_root()
    for n in sorted({size, *rng.sample(range(1, size + 1), 5)}):
        root = theirs.get_root(n)
        assert ours.root(n) == root
        for index in rng.sample(range(n), min(n, 20)):
            proof = ours.inclusion_proof(index, n)
            assert proof == theirs.prove_inclusion(index + 1, n).path[1:]
            verify_inclusion(leaves[index], index, n, proof, root)
        for m in rng.sample(range(1, n + 1), min(n, 10)):
            verify_consistency(m, n, theirs.get_root(m), root, ours.consistency_proof(m, n))
            pymerkle_verify_consistency(ours.root(m), root, theirs.prove_consistency(m, n))


def test_random_sizes_up_to_100000_agree_with_pymerkle() -> None:
    rng = random.Random(20250304)
    sizes = sorted(rng.sample(range(301, 100_001), 4))
    entries = _entries(sizes[-1], salt="r")
    leaves = [leaf_hash(e) for e in entries]
    ours = MerkleTree()
    theirs = InmemoryTree()
    done = 0
    for size in sizes:
        ours.extend(leaves[done:size])
        theirs.append_entries(entries[done:size])
        done = size
        assert ours.root() == theirs.get_root() == root_of(leaves[:size])
        for index in rng.sample(range(size), 10):
            assert ours.inclusion_proof(index) == theirs.prove_inclusion(index + 1).path[1:]


def test_a_tree_grown_in_steps_equals_one_built_at_once() -> None:
    leaves = [leaf_hash(e) for e in _entries(777)]
    grown = MerkleTree()
    frontier = Frontier()
    step = 0
    while grown.size < len(leaves):
        step = step % 13 + 1
        chunk = leaves[grown.size : grown.size + step]
        grown.extend(chunk)
        frontier.extend(chunk)
        assert frontier.root() == grown.root()
    built = MerkleTree.from_leaf_bytes(b"".join(leaves))
    assert all(grown.root(n) == built.root(n) for n in range(0, 778, 37))
    assert Frontier.from_bytes(frontier.size, frontier.to_bytes()) == frontier


# -- verification refuses what does not hold ------------------------------------------


def _rfc_verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, transcribed literally."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def test_inclusion_verification_accepts_exactly_what_the_rfc_text_accepts() -> None:
    """Ours walks per level; the RFC shifts bits. Same verdict on right and wrong inputs."""
    leaves = [leaf_hash(e) for e in _entries(70)]
    tree = MerkleTree(leaves)
    for n in range(1, 71):
        root = tree.root(n)
        for index in range(n):
            proof = tree.inclusion_proof(index, n)
            cases = [
                (index, n, proof),
                (index, n, proof[:-1]),
                (index, n, [*proof, root]),
                (index, n, proof[::-1]),
                ((index + 1) % n, n, proof),
                *((index, other, proof) for other in (n - 1, n + 1, n + 2) if other > 0),
            ]
            for at, size, path in cases:
                try:
                    verify_inclusion(leaves[index], at, size, path, root)
                    ours = True
                except AuditError:
                    ours = False
                assert ours == _rfc_verify_inclusion(leaves[index], at, size, path, root), (
                    index,
                    n,
                    at,
                    size,
                    len(path),
                )


def _tree(n: int = 11) -> tuple[list[bytes], MerkleTree]:
    leaves = [leaf_hash(e) for e in _entries(n)]
    return leaves, MerkleTree(leaves)


def _refused(call: object, *args: object, match: str | None = None) -> AuditError:
    with pytest.raises(AuditError, match=match) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.code == ReasonCode.AUDIT_TAMPERED
    assert caught.value.hint
    return caught.value


def test_inclusion_verification_refuses_every_wrong_input() -> None:
    leaves, tree = _tree()
    root = tree.root()
    proof = tree.inclusion_proof(4)
    verify_inclusion(leaves[4], 4, 11, proof, root)
    _refused(verify_inclusion, leaves[5], 4, 11, proof, root, match="not in the tree")
    _refused(verify_inclusion, leaves[4], 5, 11, proof, root)
    _refused(verify_inclusion, leaves[4], 4, 6, proof, root)
    # The size is bound to the root only by the signed checkpoint: sizes whose tree
    # has the same shape along this path (12, 16) cannot be told apart by the proof.
    _refused(verify_inclusion, leaves[4], 4, 11, proof, tree.root(10))
    _refused(verify_inclusion, leaves[4], 4, 11, [*proof, proof[0]], root, match="longer")
    _refused(verify_inclusion, leaves[4], 4, 11, proof[:-1], root, match="shorter")
    _refused(verify_inclusion, leaves[4], 11, 11, proof, root, match="outside")
    _refused(verify_inclusion, leaves[4], 4, 11, [b"short", *proof[1:]], root, match="32-byte")
    flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
    _refused(verify_inclusion, leaves[4], 4, 11, flipped, root)


def test_consistency_verification_refuses_forks_and_wrong_inputs() -> None:
    leaves, tree = _tree()
    proof = tree.consistency_proof(6, 11)
    verify_consistency(6, 11, tree.root(6), tree.root(), proof)
    forked = MerkleTree([*leaves[:3], leaf_hash(b"rewritten"), *leaves[4:]])
    _refused(
        verify_consistency, 6, 11, forked.root(6), tree.root(), proof, match="old root mismatch"
    )
    _refused(verify_consistency, 6, 11, tree.root(6), forked.root(), proof, match="new root")
    _refused(verify_consistency, 6, 11, tree.root(6), tree.root(), proof[:-1])
    _refused(verify_consistency, 6, 11, tree.root(6), tree.root(), [*proof, proof[0]])
    _refused(verify_consistency, 7, 11, tree.root(7), tree.root(), proof)
    _refused(verify_consistency, 12, 11, tree.root(6), tree.root(), proof, match="larger")
    # equal sizes: the proof is empty and the roots must be equal (else a fork)
    verify_consistency(11, 11, tree.root(), tree.root(), [])
    _refused(verify_consistency, 11, 11, tree.root(), forked.root(), [], match="forked")
    # from the empty tree: trivially consistent, but only with the empty root
    verify_consistency(0, 11, EMPTY_ROOT, tree.root(), [])
    _refused(verify_consistency, 0, 11, tree.root(1), tree.root(), [], match="empty root")
    # a power-of-two old size: the old root is implied, not sent
    assert len(tree.consistency_proof(8, 11)) == len(_rfc_subproof(8, leaves, True))
    verify_consistency(8, 11, tree.root(8), tree.root(), tree.consistency_proof(8, 11))


def test_proof_requests_outside_the_tree_are_refused() -> None:
    _, tree = _tree(5)
    with pytest.raises(AuditError, match="outside"):
        tree.inclusion_proof(5)
    with pytest.raises(AuditError, match="larger than the tree"):
        tree.root(6)
    with pytest.raises(AuditError, match="larger than new size"):
        tree.consistency_proof(4, 3)
    with pytest.raises(AuditError, match="32 bytes"):
        tree.extend([b"not a hash"])
    with pytest.raises(AuditError, match="2 hashes"):
        Frontier(3, [EMPTY_ROOT])
