"""The outbox is the audit log (docs/hub.md, "Nothing lost, nothing twice").

The uplink sends the log in batches from the first entry the broker has not acknowledged.
Each batch carries the checkpoint the device signed after the batch's last entry — read
from the index, where the recorder stored it with that entry: the uplink holds no key — and
the RFC 6962 consistency proof from the checkpoint of the batch before, so that the hub can
check that the log only grew. With them go the rows of the recordings the batch's entries
touched, as they are now.

The proof needs hashes of subtrees of the log's Merkle tree. Recomputing them from every
leaf for every batch would read the whole log each time (years of entries, on a Pi), so
complete subtrees of :attr:`SubtreeHashes.MEMO` leaves or more are remembered: once the log
holds them they never change — unless someone rewrites it, which the uplink then notices
(the checkpoint no longer follows from the one the hub holds), forgets what it remembered,
and reports, while sending what the log now says: the hub is the witness.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware.vault import merkle
from firmware.vault.audit import AuditError, AuditLog, entry_dict, verify_note
from firmware.vault.keys import KeyStore

log = logging.getLogger(__name__)

MAX_ENTRIES = 200
MAX_BYTES = 256 * 1024  # an entry's detail is at most 8 KiB (the control socket's limit): ≥ 30 entries


def _split(n: int) -> int:
    """The largest power of two smaller than n (n ≥ 2): where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


class SubtreeHashes:
    """RFC 6962 hashes of ranges of the log's leaves, read through ``read(start, end)``."""

    MEMO = 256

    def __init__(self, read: Callable[[int, int], list[bytes]]):
        self._read = read
        self._memo: dict[tuple[int, int], bytes] = {}

    def forget(self) -> None:
        self._memo.clear()

    def root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) — within the tree, ranges are aligned as RFC 6962 splits them."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0 and n >= self.MEMO:
            found = self._memo.get((start, n))
            if found is None:
                found = self._memo[(start, n)] = self._compute(start, end)
            return found
        return self._compute(start, end)

    def _compute(self, start: int, end: int) -> bytes:
        n = end - start
        if n <= self.MEMO:
            leaves = self._read(start, end)
            if len(leaves) != n:
                raise AuditError(f"the log has no entries {start}…{end - 1} any more")
            return merkle.root(leaves)
        k = _split(n)
        return merkle.node_hash(self.root(start, start + k), self.root(start + k, end))

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1 (``merkle.consistency_proof``)."""

        def sub(m: int, start: int, end: int, complete: bool) -> list[bytes]:
            n = end - start
            if m == n:
                return [] if complete else [self.root(start, end)]
            k = _split(n)
            if m <= k:
                return sub(m, start, start + k, complete) + [self.root(start + k, end)]
            return sub(m - k, start + k, end, False) + [self.root(start, start + k)]

        if old_size == 0 or old_size == new_size:
            return []
        return sub(old_size, 0, new_size, True)


@dataclass
class Batch:
    """Entries ``start … end - 1`` of the log, ready to publish on ``kiroku/v1/d/{id}/log``."""

    start: int  # the size of the checkpoint the proof starts from (what the broker acknowledged)
    end: int
    entries: list[dict]
    checkpoint: str  # signed at ``end``
    proof: list[bytes]
    recordings: list[dict]

    def payload(self) -> dict:
        return {"v": 1, "entries": self.entries, "checkpoint": self.checkpoint,
                "proof": {"old_size": self.start, "hashes": [base64.b64encode(h).decode() for h in self.proof]},
                "recordings": self.recordings}


class AuditReader:
    """The recorder's audit log and recordings, read-only, as the outbox needs them."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.keys = KeyStore(self.data_dir)
        self.audit = AuditLog(self.keys)
        self.tree = SubtreeHashes(self._leaves)
        self._conn: sqlite3.Connection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "AuditReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._conn is None:
            from firmware.vault.vault import DB_NAME, connect

            if not (self.data_dir / DB_NAME).exists():
                raise FileNotFoundError(f"no {DB_NAME} in {self.data_dir} yet: the recorder has not started here")
            self._conn = connect(self.data_dir, readonly=True)
        return self._conn

    @property
    def vkey(self) -> str:
        return (self.keys.root / "device.vkey").read_text().strip()

    def _leaves(self, start: int, end: int) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT leaf_hash FROM audit WHERE seq >= ? AND seq < ? ORDER BY seq",
                                              (start, end))]

    def size(self) -> int:
        """How many entries the log has."""
        row = self.db.execute("SELECT size FROM audit_state WHERE id = 1").fetchone()
        return row[0] if row else 0

    def checkpoint(self, size: int) -> str:
        return self.audit.checkpoint(self.db, size)

    def batch(self, start: int, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> Batch | None:
        """The entries from ``start`` on (None when there are none), with the checkpoint at the
        last and the proof from ``start``."""
        rows = self.db.execute("SELECT seq, at, actor, action, purpose, subject, detail FROM audit WHERE seq >= ?"
                               " ORDER BY seq LIMIT ?", (start, max_entries)).fetchall()
        entries, size = [], 0
        for row in rows:
            if row[0] != start + len(entries):
                break  # a hole: the log is not what it was; what comes before it still goes
            entry = entry_dict(row)
            size += len(json.dumps(entry, ensure_ascii=False).encode())
            if entries and size > max_bytes:
                break
            entries.append(entry)
        if not entries:
            return None
        end = start + len(entries)
        return Batch(start, end, entries, self.checkpoint(end), self.tree.consistency(start, end),
                     self.recordings(entries))

    def follows(self, previous: str | None, batch: Batch) -> bool:
        """Whether ``batch``'s checkpoint extends ``previous`` (the one the hub holds), as the
        hub will check it. When it does not, what was remembered is forgotten and the proof made
        again from the log itself, once: the answer is then the log's, not the memory's."""
        if previous is None or batch.start == 0:
            return True
        for attempt in range(2):
            try:
                vkey = self.vkey
                old, new = verify_note(previous, vkey), verify_note(batch.checkpoint, vkey)
            except (AuditError, OSError):
                return False
            if merkle.verify_consistency(old.size, new.size, old.root, new.root, batch.proof):
                return True
            if attempt == 0:
                self.tree.forget()
                batch.proof = self.tree.consistency(batch.start, batch.end)
        return False

    CALL_FIELDS = ("direction", "withheld", "external_e164", "external_raw", "city_e164", "city_raw",
                   "external_heard", "city_heard")
    _RECORDING_FIELDS = ("recording", "recording_id", "recordings", "recording_ids")

    def recordings(self, entries: list[dict]) -> list[dict]:
        """The recordings these entries touched (their subject, or named in their detail), as
        they are now: times, record class, section, marks with their notes, segments kept, open
        holds (what the hub copies to the evidence locker), and for a call its direction and
        parties' numbers (so that a request at the hub finds it by number)."""
        ids = set()
        for entry in entries:
            if entry["subject"]:
                ids.add(entry["subject"])
            for key in self._RECORDING_FIELDS:
                value = entry["detail"].get(key) if isinstance(entry["detail"], dict) else None
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str) and item:
                        ids.add(item)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        found = {}
        cur = self.db.execute(
            "SELECT r.id, r.record_class, r.mode, r.started_at, r.ended_at, r.started_wall_us, r.ended_wall_us,"
            " r.started_by, r.end_reason, r.section, r.clock_synchronised,"
            " (SELECT count(*) FROM segments s WHERE s.recording_id = r.id AND s.erased_at IS NULL) AS segments,"
            " (SELECT count(*) FROM segments s WHERE s.recording_id = r.id) AS segments_written,"
            " (SELECT count(*) FROM holds h WHERE h.recording_id = r.id AND h.released_at IS NULL) AS holds,"
            " c.direction, c.withheld, c.external_e164, c.external_raw, c.city_e164, c.city_raw,"
            " c.external_heard, c.city_heard"
            f" FROM recordings r LEFT JOIN calls c ON c.recording_id = r.id WHERE r.id IN ({marks})"
            " ORDER BY r.started_wall_us", sorted(ids))
        columns = [c[0] for c in cur.description]
        for row in cur.fetchall():
            rec = dict(zip(columns, row))
            rec["clock_synchronised"] = bool(rec["clock_synchronised"])
            if rec["direction"] is None:  # footage, or a call whose row is not written yet
                for key in self.CALL_FIELDS:
                    del rec[key]
            elif rec["withheld"] and rec["direction"] == "inbound":
                rec["external_e164"] = rec["external_raw"] = ""  # 非通知: not the hub's to know either
            rec["marks"] = []
            found[rec["id"]] = rec
        if found:
            for rid, at, by, note, section in self.db.execute(
                    f"SELECT recording_id, at, by, note, section FROM marks WHERE recording_id IN"
                    f" ({','.join('?' * len(found))}) ORDER BY id", list(found)):
                found[rid]["marks"].append({"at": at, "by": by, "note": note, "section": section})
        return list(found.values())
