"""The hub's own audit log: who changed the register of people, designated an operator, enrolled
or removed a device, logged in. The same form as a device's (``firmware.vault.audit``): entries
in an RFC 6962 tree, a checkpoint signed by the hub's Ed25519 key after every entry, in the
hub's database (``audit``, ``audit_state``), each entry written in the same transaction as
nothing else — it is written first, and an action whose entry cannot be written is not taken.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.export.verify import HUB_LOG
from firmware.fsutil import atomic_write, makedirs_durable
from firmware.vault import merkle
from firmware.vault.audit import canonical, checkpoint_text, sign_checkpoint, signed_note
from firmware.vault.errors import AuditError
from firmware.vault.signed_note import make_vkey

ORIGIN = HUB_LOG  # "kiroku/hub": how `kiroku verify` knows a package the hub signed


def signing_key(folder: Path) -> Ed25519PrivateKey:
    """The hub's signing key (``hub.key`` in the hub's folder), made once."""
    path = Path(folder) / "hub.key"
    if not path.exists():
        makedirs_durable(path.parent)
        key = Ed25519PrivateKey.generate()
        atomic_write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o600)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


class HubAudit:
    """``domain.context.AuditLog`` at the hub. ``database()`` gives a connection (a context manager)."""

    def __init__(self, database, key: Ed25519PrivateKey, origin: str = ORIGIN):
        self.database, self.key, self.origin = database, key, origin

    @property
    def vkey(self) -> str:
        return make_vkey(self.origin, self.key.public_key())

    def record(self, actor: str, action: str, *, subject: str = "", purpose: str = "",
               detail: dict | None = None) -> int:
        # Appends are serialised by the state row's lock, not the registers' (Database.transaction):
        # a register's transaction logs its change before it commits, holding that lock meanwhile.
        with self.database() as db, db.conn.transaction():
            row = db.one("SELECT size, frontier FROM audit_state WHERE id = 1 FOR UPDATE")
            tree = merkle.CompactRange.from_bytes(row["size"], bytes(row["frontier"]))
            seq = tree.size
            entry = {"seq": seq, "at": datetime.now().astimezone().isoformat(timespec="milliseconds"), "actor": actor,
                     "action": action, "purpose": purpose, "subject": subject, "detail": detail or {}}
            leaf = merkle.leaf_hash(canonical(entry))
            tree.append(leaf)
            root = tree.root()
            _, signature = sign_checkpoint(self.origin, tree.size, root, self.key)
            note = signed_note(self.origin, tree.size, root, signature, self.key.public_key())
            db.execute("INSERT INTO audit (seq, at, actor, action, purpose, subject, detail, leaf_hash)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (seq, entry["at"], actor, action, purpose, subject,
                        json.dumps(entry["detail"], ensure_ascii=False, sort_keys=True), leaf))
            db.execute("UPDATE audit_state SET size = ?, frontier = ?, checkpoint = ? WHERE id = 1",
                       (tree.size, tree.to_bytes(), note))
        return seq

    def inclusion(self, db, seq: int) -> dict:
        """Everything needed to check offline that entry ``seq`` is in the hub's log (as a device's
        ``AuditLog.inclusion``): the entry, the path to the root, the checkpoint it is under."""
        import base64

        from firmware.vault.audit import entry_dict

        state = db.one("SELECT size, checkpoint FROM audit_state WHERE id = 1")
        leaves = [bytes(r["leaf_hash"]) for r in db.all("SELECT leaf_hash FROM audit WHERE seq < ? ORDER BY seq",
                                                        (state["size"],))]
        if not 0 <= seq < len(leaves):
            raise AuditError(f"there is no entry {seq}")
        row = db.one("SELECT seq, at, actor, action, purpose, subject, detail FROM audit WHERE seq = ?", (seq,))
        return {"entry": entry_dict(row), "tree_size": len(leaves),
                "proof": [base64.b64encode(h).decode() for h in merkle.inclusion_proof(seq, leaves)],
                "checkpoint": state["checkpoint"]}

    def checkpoint(self, db) -> str:
        return db.scalar("SELECT checkpoint FROM audit_state WHERE id = 1") or ""

    def verify(self, db) -> dict:
        """Recompute the tree from the entries; AuditError at the first one that does not fit."""
        tree = merkle.CompactRange()
        for n, row in enumerate(db.all("SELECT seq, at, actor, action, purpose, subject, detail, leaf_hash"
                                       " FROM audit ORDER BY seq")):
            if row["seq"] != n:
                raise AuditError(f"entry {n} is missing (the next entry is {row['seq']})")
            entry = {"seq": row["seq"], "at": row["at"], "actor": row["actor"], "action": row["action"],
                     "purpose": row["purpose"], "subject": row["subject"], "detail": json.loads(row["detail"])}
            leaf = merkle.leaf_hash(canonical(entry))
            if leaf != bytes(row["leaf_hash"]):
                raise AuditError(f"entry {n} was altered (its content no longer matches its hash)")
            tree.append(leaf)
        state = db.one("SELECT size, checkpoint FROM audit_state WHERE id = 1")
        if state is not None and state["size"]:
            if state["size"] != tree.size:
                raise AuditError(f"the log's state says {state['size']} entries but {tree.size} are present")
            lines = state["checkpoint"].split("\n")
            if checkpoint_text(self.origin, tree.size, tree.root()) != "\n".join(lines[:3]) + "\n":
                raise AuditError("the entries do not hash into the signed checkpoint")
        return {"entries": tree.size, "root": tree.root().hex()}
