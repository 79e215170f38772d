"""The witness: each checkpoint a device publishes is checked against the last good one.

A batch from a device's uplink (docs/hub.md) carries audit entries, the checkpoint the
device signed after the last of them, and an RFC 6962 consistency proof from the batch
before. It is good when

- the checkpoint's signature verifies with the device's key (received at enrollment);
- it does not shrink the log, and an equal size has the same root;
- the consistency proof takes the last good checkpoint to this one;
- the entries are the leaves that take the last good tree to this root (so the mirror
  the hub keeps is the log the device signed, entry by entry).

Anything else is a problem in words, and the last good checkpoint stays the one the hub
cites. Pure functions: the consumer keeps the state (``hub.consumer``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from firmware.vault import merkle
from firmware.vault.audit import AuditError, canonical, verify_note


@dataclass(frozen=True)
class State:
    """The last good checkpoint of a device's log, and the tree's compact range there."""

    size: int
    root: bytes
    frontier: bytes  # merkle.CompactRange.to_bytes() at ``size``


@dataclass(frozen=True)
class Verdict:
    size: int
    root: bytes
    problem: str  # "" when the batch is good
    state: State | None  # the new last good state (unchanged when there is a problem)
    leaves: dict[int, bytes]  # seq → leaf hash of the batch's entries

    @property
    def consistent(self) -> bool:
        return not self.problem


EMPTY = State(0, merkle.root([]), merkle.CompactRange().to_bytes())


def leaf(entry: dict) -> bytes:
    return merkle.leaf_hash(canonical(entry))


def check(state: State | None, vkey: str, note: str, proof: dict | None, entries: list[dict]) -> Verdict:
    """Judge one batch against ``state`` (None: nothing witnessed yet)."""
    state = state or EMPTY
    leaves = {}
    for entry in entries:
        leaves[entry["seq"]] = leaf(entry)
    try:
        cp = verify_note(note, vkey)
    except AuditError as exc:
        return Verdict(0, b"", f"checkpoint: {exc}", None, leaves)

    def bad(problem: str) -> Verdict:
        return Verdict(cp.size, cp.root, problem, None, leaves)

    if cp.size < state.size:
        return bad(f"the log shrank from {state.size} to {cp.size} entries: entries were removed")
    if cp.size == state.size:
        if cp.root != state.root:
            return bad(f"a checkpoint of {cp.size} entries with another root: the log was rewritten")
        return Verdict(cp.size, cp.root, "", state, leaves)
    if state.size > 0:
        hashes = []
        try:
            if proof is None or int(proof.get("old_size", -1)) != state.size:
                return bad(f"no consistency proof from the last witnessed size ({state.size})")
            hashes = [base64.b64decode(h, validate=True) for h in proof.get("hashes", [])]
        except (ValueError, TypeError, AttributeError):
            return bad("the consistency proof is unreadable")
        if not merkle.verify_consistency(state.size, cp.size, state.root, cp.root, hashes):
            return bad(f"the log of {cp.size} entries does not extend the {state.size} witnessed before: "
                       "it was rewritten")
    tree = merkle.CompactRange.from_bytes(state.size, state.frontier)
    for seq in range(state.size, cp.size):
        if seq not in leaves:
            return bad(f"entry {seq} is missing from the batch")
        tree.append(leaves[seq])
    if tree.root() != cp.root:
        return bad("the entries published do not hash into the signed checkpoint: they were altered")
    return Verdict(cp.size, cp.root, "", State(cp.size, cp.root, tree.to_bytes()), leaves)
