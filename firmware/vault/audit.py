"""The audit log: append-only entries in an RFC 6962 Merkle tree, with a checkpoint signed
by the device key after every entry.

Checkpoints are C2SP tlog-checkpoint bodies in C2SP signed-note form::

    kiroku/counter-1
    42
    <base64 root hash>

    — kiroku/counter-1 <base64(key id || Ed25519 signature)>

so an auditor can verify one with the device's public key (``keys/device.vkey``) and any
signed-note tool. The latest checkpoint goes into every export and the annual report;
holding an old checkpoint, anyone can later check that the log on the device only grew
(``consistency``), or that one entry is in it (``inclusion``), offline.

``verify`` recomputes everything from the entries themselves and names the first entry
that was edited, deleted or moved.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware.vault import merkle, vouch
from firmware.vault.errors import AuditError
from firmware.vault.signed_note import key_id, parse_vkey

_DASH = "\u2014"


def canonical(entry: dict) -> bytes:
    """The bytes an entry's leaf hash covers: sorted-key, compact JSON in UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_dict(row) -> dict:
    seq, at, actor, action, purpose, subject, detail = row[:7]
    return {"seq": seq, "at": at, "actor": actor, "action": action, "purpose": purpose, "subject": subject,
            "detail": json.loads(detail)}


# -- checkpoints ------------------------------------------------------------------------------

def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, key: Ed25519PrivateKey) -> tuple[str, bytes]:
    text = checkpoint_text(origin, size, root)
    return text, key.sign(text.encode())


def signed_note(origin: str, size: int, root: bytes, signature: bytes, public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = base64.b64encode(key_id(origin, raw) + signature).decode()
    return f"{checkpoint_text(origin, size, root)}\n{_DASH} {origin} {sig}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def verify_note(note: str, vkey: str) -> Checkpoint:
    """Check a signed checkpoint against the device's verifier key; returns what it says."""
    name, raw, public = parse_vkey(vkey)
    text, sep, sigs = note.partition("\n\n")
    if not sep:
        raise AuditError("not a signed note (no blank line before the signatures)")
    text += "\n"
    wanted = key_id(name, raw)
    for line in sigs.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH or parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if blob[:4] != wanted:
            continue
        try:
            public.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise AuditError("the checkpoint's signature does not verify") from None
        lines = text.split("\n")
        if len(lines) < 4 or lines[0] != name:
            raise AuditError("the checkpoint is not for this device's log")
        try:
            return Checkpoint(lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True))
        except ValueError:
            raise AuditError("malformed checkpoint body") from None
    raise AuditError(f"the note carries no signature by {name}")


# -- the log ----------------------------------------------------------------------------------

class AuditLog:
    """The log inside ``kiroku.db``. Appends happen inside the caller's transaction, so an
    entry is committed together with the change it records, or not at all."""

    def __init__(self, keys):
        self._keys = keys
        self._signing: Ed25519PrivateKey | None = None

    @property
    def origin(self) -> str:
        return self._keys.signer_name

    def append(self, conn: sqlite3.Connection, *, actor: str, action: str, purpose: str = "",
               subject: str = "", detail: dict | None = None, at: datetime | None = None) -> int:
        if self._signing is None:
            self._signing = self._keys.signing_key()
        size, stack = conn.execute("SELECT size, stack FROM audit_state WHERE id = 1").fetchone()
        tree = merkle.CompactRange.from_bytes(size, stack)
        when = (at or datetime.now().astimezone()).isoformat(timespec="milliseconds")
        entry = {"seq": size, "at": when, "actor": actor, "action": action, "purpose": purpose,
                 "subject": subject, "detail": detail or {}}
        leaf = merkle.leaf_hash(canonical(entry))
        tree.append(leaf)
        root = tree.root()
        _, signature = sign_checkpoint(self.origin, tree.size, root, self._signing)
        conn.execute(
            "INSERT INTO audit (seq, at, actor, action, purpose, subject, detail, leaf_hash, root, signature)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (size, when, actor, action, purpose, subject, json.dumps(entry["detail"], ensure_ascii=False, sort_keys=True),
             leaf, root, signature),
        )
        conn.execute("UPDATE audit_state SET size = ?, stack = ? WHERE id = 1", (tree.size, tree.to_bytes()))
        return size

    def checkpoint(self, conn: sqlite3.Connection, size: int) -> str:
        """The checkpoint the device signed when the log had ``size`` entries (after entry
        ``size - 1``), as a signed note: what the uplink sends with a batch ending there. Reading
        it needs only the public key: the signature is the one stored with that entry."""
        row = conn.execute("SELECT root, signature FROM audit WHERE seq = ?", (size - 1,)).fetchone()
        if row is None:
            raise AuditError(f"the log has no entry {size - 1}")
        return signed_note(self.origin, size, row[0], row[1], self._keys.public_key())

    def latest_checkpoint(self, conn: sqlite3.Connection) -> str:
        row = conn.execute("SELECT seq, root, signature FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            raise AuditError("the log is empty")
        return signed_note(self.origin, row[0] + 1, row[1], row[2], self._keys.public_key())

    def entries(self, conn: sqlite3.Connection, *, actor: str | None = None, subject: str | None = None,
                action: str | None = None, limit: int = 1000, since: str | None = None, until: str | None = None,
                before: int | None = None, hide: tuple[str, ...] = ()) -> list[dict]:
        """The newest entries first. ``since``/``until``: local dates (YYYY-MM-DD, as written
        in each entry's time), both included; ``before``: only entries older than that seq
        (the next page); ``hide``: actions left out (unless asked for by ``action``)."""
        query = "SELECT seq, at, actor, action, purpose, subject, detail FROM audit"
        clauses, args = [], []
        if hide and action is None:
            clauses.append(f"action NOT IN ({', '.join('?' * len(hide))})")
            args += list(hide)
        for column, value in (("actor", actor), ("action", action)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            clauses.append("substr(at, 1, 10) >= ?")
            args.append(since)
        if until is not None:
            clauses.append("substr(at, 1, 10) <= ?")
            args.append(until)
        if before is not None:
            clauses.append("seq < ?")
            args.append(before)
        if subject is not None:
            # The subject itself, or an entry whose detail names it (a recording viewed under a request).
            clauses.append("(subject = ? OR instr(detail, ?) > 0)")
            args += [subject, json.dumps(subject, ensure_ascii=False)]
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY seq DESC LIMIT ?"
        return [entry_dict(r) for r in conn.execute(query, (*args, limit))]

    def verify(self, conn: sqlite3.Connection, checkpoint: Checkpoint | None = None) -> dict:
        """Recompute the tree from the entries; raise :class:`AuditError` at the first bad one.

        With ``checkpoint`` (one that left the device earlier), also check that today's
        log still contains exactly the log that checkpoint described.
        """
        public = self._keys.public_key()
        origin = self.origin
        tree = merkle.CompactRange()
        expected_seq = 0
        rows = conn.execute("SELECT seq, at, actor, action, purpose, subject, detail, leaf_hash, root, signature"
                            " FROM audit ORDER BY seq")
        pinned = None
        for row in rows:
            seq = row[0]
            if seq != expected_seq:
                raise AuditError(f"entry {expected_seq} is missing (the next entry is {seq})")
            try:
                entry = entry_dict(row)
            except ValueError:
                raise AuditError(f"entry {seq} is unreadable") from None
            leaf = merkle.leaf_hash(canonical(entry))
            if leaf != row[7]:
                raise AuditError(f"entry {seq} was altered (its content no longer matches its hash)")
            tree.append(leaf)
            root = tree.root()
            if root != row[8]:
                raise AuditError(f"entry {seq} does not continue the log (entries before it were changed or moved)")
            try:
                public.verify(row[9], checkpoint_text(origin, tree.size, root).encode())
            except InvalidSignature:
                raise AuditError(f"entry {seq}'s checkpoint is not signed by this device's key") from None
            if checkpoint is not None and tree.size == checkpoint.size:
                pinned = root
            expected_seq += 1
        if checkpoint is not None:
            if checkpoint.size > tree.size:
                raise AuditError(f"the log has {tree.size} entries but the checkpoint saw {checkpoint.size}: entries were removed")
            if pinned != checkpoint.root:
                raise AuditError(f"the first {checkpoint.size} entries differ from what the checkpoint recorded: the log was rewritten")
        state = conn.execute("SELECT size FROM audit_state WHERE id = 1").fetchone()
        if state is None:
            raise AuditError("the log's state row is gone (audit_state): the log was tampered with")
        if state[0] != tree.size:
            raise AuditError(f"the log's state says {state[0]} entries but {tree.size} are present")
        # The index vouches for the log's end, and the log for the index (vouch.py).
        differences = vouch.compare(conn)
        if differences:
            shown = "; ".join(str(d) for d in differences[:3])
            more = f" (and {len(differences) - 3} more: kiroku vault check names them all)" if len(differences) > 3 else ""
            raise AuditError(f"the index and the log disagree in {len(differences)} place(s): {shown}{more}")
        return {"entries": tree.size, "root": base64.b64encode(tree.root()).decode()}

    def leaves(self, conn: sqlite3.Connection, size: int | None = None) -> list[bytes]:
        query = "SELECT leaf_hash FROM audit ORDER BY seq"
        rows = [r[0] for r in conn.execute(query)]
        return rows if size is None else rows[:size]

    def inclusion(self, conn: sqlite3.Connection, seq: int) -> dict:
        """Everything needed to check offline that entry ``seq`` is in the log."""
        leaves = self.leaves(conn)
        if not 0 <= seq < len(leaves):
            raise AuditError(f"there is no entry {seq}")
        row = conn.execute("SELECT seq, at, actor, action, purpose, subject, detail FROM audit WHERE seq = ?",
                           (seq,)).fetchone()
        return {
            "entry": entry_dict(row),
            "tree_size": len(leaves),
            "proof": [base64.b64encode(h).decode() for h in merkle.inclusion_proof(seq, leaves)],
            "checkpoint": self.latest_checkpoint(conn),
        }

    def consistency(self, conn: sqlite3.Connection, old_size: int) -> dict:
        leaves = self.leaves(conn)
        if not 0 < old_size <= len(leaves):
            raise AuditError(f"the log has {len(leaves)} entries; cannot prove a prefix of {old_size}")
        return {
            "old_size": old_size,
            "new_size": len(leaves),
            "proof": [base64.b64encode(h).decode() for h in merkle.consistency_proof(old_size, leaves)],
            "checkpoint": self.latest_checkpoint(conn),
        }


def check_inclusion(bundle: dict, vkey: str) -> dict:
    """Offline: is this entry in the log the signed checkpoint describes?"""
    cp = verify_note(bundle["checkpoint"], vkey)
    entry = bundle["entry"]
    proof = [base64.b64decode(h) for h in bundle["proof"]]
    if cp.size != bundle["tree_size"]:
        raise AuditError("the proof is for a different tree size than the checkpoint")
    if not merkle.verify_inclusion(entry["seq"], cp.size, merkle.leaf_hash(canonical(entry)), proof, cp.root):
        raise AuditError(f"entry {entry['seq']} is not in the log as the checkpoint describes it")
    return entry


def check_consistency(old_note: str, bundle: dict, vkey: str) -> None:
    """Offline: does the newer checkpoint's log extend the older one's?"""
    old = verify_note(old_note, vkey)
    new = verify_note(bundle["checkpoint"], vkey)
    proof = [base64.b64decode(h) for h in bundle["proof"]]
    if old.size != bundle["old_size"] or new.size != bundle["new_size"]:
        raise AuditError("the proof does not belong to these checkpoints")
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise AuditError("the newer log does not extend the older one: it was rewritten")
