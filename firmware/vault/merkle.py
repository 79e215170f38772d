"""RFC 6962 / RFC 9162 Merkle trees: hashes, inclusion and consistency proofs."""

from __future__ import annotations

import hashlib


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: list[bytes]) -> bytes:
    """MTH over leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


class CompactRange:
    """The roots of the full subtrees covering leaves [0, size): enough to append and to
    compute the root, without keeping every leaf."""

    def __init__(self, size: int = 0, stack: list[bytes] | None = None):
        self.size = size
        self.stack = list(stack or [])
        if len(self.stack) != bin(size).count("1"):
            raise ValueError("compact range does not match its size")

    def append(self, leaf: bytes) -> None:
        self.stack.append(leaf)
        self.size += 1
        merges = (self.size & -self.size).bit_length() - 1  # trailing zeros of the new size
        for _ in range(merges):
            right = self.stack.pop()
            left = self.stack.pop()
            self.stack.append(node_hash(left, right))

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        r = self.stack[-1]
        for h in reversed(self.stack[:-1]):
            r = node_hash(h, r)
        return r

    def to_bytes(self) -> bytes:
        return b"".join(self.stack)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> "CompactRange":
        return cls(size, [data[i:i + 32] for i in range(0, len(data), 32)])


def inclusion_proof(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1."""
    n = len(leaves)
    if n <= 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_proof(index, leaves[:k]) + [root(leaves[k:])]
    return inclusion_proof(index - k, leaves[k:]) + [root(leaves[:k])]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def consistency_proof(old_size: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1: the tree of ``old_size`` leaves is a prefix."""

    def sub(m: int, d: list[bytes], complete: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if complete else [root(d)]
        k = _split(n)
        if m <= k:
            return sub(m, d[:k], complete) + [root(d[k:])]
        return sub(m - k, d[k:], False) + [root(d[:k])]

    if old_size == 0 or old_size == len(leaves):
        return []
    return sub(old_size, leaves, True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2."""
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        proof = [old_root] + proof
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
