"""RFC 9162 Merkle tree maths: hashes, roots, proofs and their verification.

Pure and synchronous: no I/O, no clock. Indices are 0-based leaf positions
(the log's ``seq`` is ``index + 1``), sizes are leaf counts.

- ``leaf_hash(entry) = SHA-256(0x00 ‖ entry)`` and
  ``node_hash(l, r) = SHA-256(0x01 ‖ l ‖ r)`` (RFC 9162 §2.1.1); the empty
  tree's root is ``SHA-256()``.
- ``Frontier`` is the compact state of a tree (the roots of its maximal
  perfect subtrees, O(log n) hashes): enough to append and to compute the
  root, which is all a writer needs.
- ``MerkleTree`` keeps every complete subtree hash level by level (about 64
  bytes per leaf) and answers any root, inclusion proof (§2.1.3.1) and
  consistency proof (§2.1.4.1) for any earlier size in O(log n) hashes.
- ``verify_inclusion`` and ``verify_consistency`` are the RFC 9162 §2.1.3.2
  and §2.1.4.2 algorithms. They return ``None`` or raise ``AuditError``;
  there is no boolean to forget to check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from schemas import AuditError, ReasonCode

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: RFC 9162: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_PROOF_HINT = (
    "the entry, proof or checkpoint was altered, or they come from different logs; "
    "ask the log operator for a fresh proof and keep this one as evidence"
)


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 ‖ entry)``."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _fail(message: str) -> AuditError:
    return AuditError(message, code=ReasonCode.AUDIT_TAMPERED, retriable=False, hint=_PROOF_HINT)


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise _fail(f"{name} is not a {HASH_SIZE}-byte SHA-256 hash")
    return bytes(value)


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(f"{name} must be a non-negative integer")
    return value


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The RFC 9162 root of ``leaves`` (leaf hashes), computed level by level.

    Pairing neighbours and carrying an odd last node up unchanged builds exactly
    the tree of RFC 9162's recursive definition (left subtrees are perfect).
    """
    level = list(leaves)
    if not level:
        return EMPTY_ROOT
    sha = _sha256
    while len(level) > 1:
        paired = [
            sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return bytes(level[0])


class Frontier:
    """The compact state of a Merkle tree: the roots of its maximal perfect subtrees.

    ``hashes`` are ordered left to right; their sizes are the binary digits of
    ``size`` from the highest. ``append`` is amortised one node hash per leaf.
    """

    __slots__ = ("_hashes", "_heights", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        size = _check_size("frontier size", size)
        heights = [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        if len(hashes) != len(heights):
            raise _fail(f"a frontier of size {size} has {len(heights)} hashes, not {len(hashes)}")
        self._hashes = [_check_hash("frontier hash", h) for h in hashes]
        self._heights = heights
        self._size = size

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) % HASH_SIZE:
            raise _fail("frontier bytes are not a whole number of hashes")
        return cls(size, [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)])

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def to_bytes(self) -> bytes:
        return b"".join(self._hashes)

    def copy(self) -> Frontier:
        clone = Frontier.__new__(Frontier)
        clone._hashes = list(self._hashes)
        clone._heights = list(self._heights)
        clone._size = self._size
        return clone

    def append(self, leaf: bytes) -> None:
        hashes, heights = self._hashes, self._heights
        node, height = leaf, 0
        while heights and heights[-1] == height:
            heights.pop()
            node = _sha256(b"\x01" + hashes.pop() + node).digest()
            height += 1
        hashes.append(node)
        heights.append(height)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        hashes, heights = self._hashes, self._heights
        sha = _sha256
        added = 0
        for leaf in leaves:
            node, height = leaf, 0
            while heights and heights[-1] == height:
                heights.pop()
                node = sha(b"\x01" + hashes.pop() + node).digest()
                height += 1
            hashes.append(node)
            heights.append(height)
            added += 1
        self._size += added

    def root(self) -> bytes:
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        node = hashes[-1]
        for left in reversed(hashes[:-1]):
            node = _sha256(b"\x01" + left + node).digest()
        return node

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


class MerkleTree:
    """Every complete subtree hash, level by level, in flat byte arrays.

    Level ``h`` holds the hashes of the aligned blocks of ``2**h`` leaves that
    are complete, so any RFC 9162 subtree is either stored or folds from
    O(log n) stored nodes. Memory is about 64 bytes per leaf.
    """

    __slots__ = ("_frozen", "_levels")

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._frozen: list[bytes] | None = None  # immutable copies for fast slicing
        self.extend(leaves)

    @classmethod
    def from_leaf_bytes(cls, data: bytes) -> MerkleTree:
        """A tree over concatenated 32-byte leaf hashes."""
        if len(data) % HASH_SIZE:
            raise _fail("leaf bytes are not a whole number of hashes")
        tree = cls()
        tree._levels[0] += data
        tree._build()
        return tree

    def _read(self) -> list[bytes]:
        """The levels as ``bytes`` (slicing bytes copies once; a bytearray slice twice)."""
        frozen = self._frozen
        if frozen is None:
            frozen = self._frozen = [bytes(level) for level in self._levels]
        return frozen

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def extend(self, leaves: Iterable[bytes]) -> None:
        level0 = self._levels[0]
        for leaf in leaves:
            if len(leaf) != HASH_SIZE:
                raise _fail("a leaf hash must be 32 bytes")
            level0 += leaf
        self._build()

    def extend_bytes(self, data: bytes) -> None:
        if len(data) % HASH_SIZE:
            raise _fail("leaf bytes are not a whole number of hashes")
        self._levels[0] += data
        self._build()

    def _build(self) -> None:
        """Hash every newly completed pair, level by level."""
        self._frozen = None
        levels = self._levels
        sha = _sha256
        height = 0
        while True:
            below = levels[height]
            pairs = len(below) // (2 * HASH_SIZE)
            if pairs == 0:
                return
            if height + 1 == len(levels):
                levels.append(bytearray())
            above = levels[height + 1]
            done = len(above) // HASH_SIZE
            if done == pairs:
                return
            view = memoryview(below)
            above += b"".join(
                [sha(b"\x01" + view[64 * i : 64 * i + 64]).digest() for i in range(done, pairs)]
            )
            view.release()
            height += 1

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise _fail(f"leaf index {index} is outside a tree of size {self.size}")
        return self._read()[0][HASH_SIZE * index : HASH_SIZE * (index + 1)]

    def leaves(self, start: int = 0, end: int | None = None) -> bytes:
        """Concatenated leaf hashes ``[start, end)``."""
        stop = self.size if end is None else end
        return bytes(self._levels[0][HASH_SIZE * start : HASH_SIZE * stop])

    def _subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for an RFC 9162 subtree (``lo`` aligned, ``lo < hi``)."""
        levels = self._read()
        n = hi - lo
        if n & (n - 1) == 0:
            height = n.bit_length() - 1
            start = HASH_SIZE * (lo >> height)
            return levels[height][start : start + HASH_SIZE]
        # The right spine: perfect subtrees of decreasing size, folded from the right.
        parts: list[bytes] = []
        while n & (n - 1):
            k = _split(n)
            height = k.bit_length() - 1
            start = HASH_SIZE * (lo >> height)
            parts.append(levels[height][start : start + HASH_SIZE])
            lo += k
            n -= k
        height = n.bit_length() - 1
        start = HASH_SIZE * (lo >> height)
        node = levels[height][start : start + HASH_SIZE]
        for left in reversed(parts):
            node = _sha256(b"\x01" + left + node).digest()
        return node

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        size = _check_size("tree size", size)
        if size > self.size:
            raise _fail(f"tree size {size} is larger than the tree ({self.size} leaves)")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[0:size]) (default: the whole tree)."""
        n = self._check_size(size)
        return EMPTY_ROOT if n == 0 else self._subtree(0, n)

    def frontier(self, size: int | None = None) -> Frontier:
        n = self._check_size(size)
        hashes: list[bytes] = []
        lo = 0
        for bit in range(n.bit_length() - 1, -1, -1):
            if n >> bit & 1:
                hashes.append(self._subtree(lo, lo + (1 << bit)))
                lo += 1 << bit
        return Frontier(n, hashes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf to root.

        Walked bottom-up: at each level the sibling of the path's node is a
        stored complete subtree, the partial right edge (folded), or absent
        (the node is carried up unchanged, as RFC 9162's left-complete shape has it).
        """
        n = self._check_size(size)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise _fail(f"leaf index {index} is outside a tree of size {n}")
        levels = self._read()
        path: list[bytes] = []
        last = n - 1
        node = index
        height = 0
        while last >> height:
            sibling = node ^ 1
            if sibling < n >> height:  # a complete subtree (always so on the left)
                offset = HASH_SIZE * sibling
                path.append(levels[height][offset : offset + HASH_SIZE])
            elif sibling << height < n:  # the partial right edge
                path.append(self._subtree(sibling << height, n))
            node >>= 1
            height += 1
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1.

        From an empty tree (``old_size == 0``) the proof is empty: every tree
        extends the empty one.
        """
        n = self._check_size(new_size)
        m = _check_size("old size", old_size)
        if m > n:
            raise _fail(f"old size {m} is larger than new size {n}")
        if m == 0 or m == n:
            return []
        path: list[bytes] = []
        lo, whole = 0, True
        while m != n:
            k = _split(n)
            if m <= k:
                path.append(self._subtree(lo + k, lo + n))
                n = k
            else:
                path.append(self._subtree(lo, lo + k))
                lo += k
                n -= k
                m -= k
                whole = False
        if not whole:
            path.append(self._subtree(lo, lo + n))
        path.reverse()
        return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: check that ``leaf`` is at ``index`` in the tree ``(size, root)``.

    Returns ``None``; raises ``AuditError`` (AUDIT_TAMPERED) if the proof does
    not hold. The walk is the RFC's, phrased per level: the path's node at
    level ``h`` is ``index >> h``; an odd node has its sibling on the left, an
    even one on the right if that sibling exists in a tree of ``size`` leaves,
    and otherwise is carried up unchanged (no proof hash is used).
    """
    leaf = _check_hash("leaf hash", leaf)
    root = _check_hash("root hash", root)
    index = _check_size("leaf index", index)
    size = _check_size("tree size", size)
    if index >= size:
        raise _fail(f"leaf index {index} is outside a tree of size {size}")
    path = list(proof)
    for position, sibling in enumerate(path):
        if type(sibling) is not bytes or len(sibling) != HASH_SIZE:
            path[position] = _check_hash("proof hash", sibling)
    last = size - 1
    node = leaf
    sha = _sha256
    used = 0
    height = 0
    try:
        while last >> height:
            here = index >> height
            if here & 1:
                node = sha(b"\x01" + path[used] + node).digest()
                used += 1
            elif (here ^ 1) << height < size:
                node = sha(b"\x01" + node + path[used]).digest()
                used += 1
            height += 1
    except IndexError:
        raise _fail("inclusion proof is shorter than the tree is deep") from None
    if used != len(path):
        raise _fail("inclusion proof is longer than the tree is deep")
    if node != root:
        raise _fail(
            f"inclusion proof does not lead to the root: entry {index + 1} is not in the "
            f"tree of size {size} with that root"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: check the tree ``(new_size, new_root)`` extends ``(old_size, old_root)``.

    Returns ``None``; raises ``AuditError`` (AUDIT_TAMPERED) if it does not.
    """
    old_size = _check_size("old size", old_size)
    new_size = _check_size("new size", new_size)
    old_root = _check_hash("old root", old_root)
    new_root = _check_hash("new root", new_root)
    path = [_check_hash("proof hash", p) for p in proof]
    if old_size > new_size:
        raise _fail(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        if old_root != EMPTY_ROOT:
            raise _fail("a tree of size 0 must have the empty root")
        if path:
            raise _fail("a consistency proof from the empty tree must be empty")
        return
    if old_size == new_size:
        if path:
            raise _fail("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise _fail(f"two different roots for the same size {old_size}: the log forked")
        return
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    if not path:
        raise _fail("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    sha = _sha256
    for c in path[1:]:
        if sn == 0:
            raise _fail("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = sha(b"\x01" + c + fr).digest()
            sr = sha(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _fail("consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise _fail(
            f"the tree of size {new_size} does not extend the tree of size {old_size} "
            "with that root (old root mismatch)"
        )
    if sr != new_root:
        raise _fail(
            f"the tree of size {new_size} does not extend the tree of size {old_size} "
            "(new root mismatch)"
        )
