"""The vault: where footage lives, sealed, indexed, kept as long as the rule says.

    <data>/kiroku.db                      the index and the audit log (SQLite, WAL)
    <data>/index-room                     room kept for the index when the card fills (``room.py``)
    <data>/keys/                          see ``keys.py``
    <data>/segments/CLASS/DAY/RECORDING/00000.age   a sealed fMP4 segment
                                        /00000.json  its metadata (for repair after a crash)

One process writes: the recorder. A segment is sealed as the muxer writes it (age, to its
day key), into ``.part``; when complete it is fsynced, its sidecar written, renamed into
place, the directory fsynced, and only then is its index row committed. A crash at any
moment leaves at most the segment in flight missing; ``recover()`` at start-up (and
``check(repair=True)``) makes files and index agree again (``check.py``).

This module opens the vault and writes it; reading the index is ``index.py``, the disk
policy and the sweep are ``retention.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, TypeVar

from firmware import clock, sqlite
from firmware.fsutil import atomic_write, fsync_dir, makedirs_durable
from firmware.store import Mark, Recording, SegmentInfo, StoreError
from firmware.vault import age, vouch
from firmware.vault.audit import AuditLog
from firmware.vault.check import Checks
from firmware.vault.errors import NotInitialised, VaultNotReady
from firmware.vault.index import Index, iso, local_day
from firmware.vault.keys import KeyStore
from firmware.vault.retention import Retention
from firmware.vault.room import IndexRoom, is_full

log = logging.getLogger(__name__)

DB_NAME = "kiroku.db"
T = TypeVar("T")
ROOM_FOR = frozenset({"fault", "recording.stop"})  # audit entries the index's room may be given up for


def connect(data_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    return sqlite.open_db(Path(data_dir) / DB_NAME, readonly=readonly)


MIGRATIONS = "firmware.vault"  # the package whose migrations/ kiroku.db follows


def migrate(conn: sqlite3.Connection, on_applied=None) -> sqlite.Schema:
    return sqlite.migrate(conn, MIGRATIONS, on_applied)


class _SealedFile:
    """The ciphertext side: bytes to the ``.part`` file, with a running hash of them."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                self.hash.update(view[:n])
                self.size += n
                view = view[n:]
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot write {self.path}: {exc.strerror}") from None
        return len(data)


class SealedSegment:
    """A segment being written. The muxer ``write``s plaintext; it is sealed (age, to the day
    key) chunk by chunk into ``.part``, so no plaintext ever reaches the disk. ``commit``
    makes the file real and indexes it; ``abort`` removes it."""

    def __init__(self, vault: "Vault", final: Path, recipient: age.X25519Recipient, key_day: str, record_class: str):
        self._vault = vault
        self.final = final
        self.part = final.with_name(final.name + ".part")
        self.key_day = key_day
        self.record_class = record_class
        self._fd = -1
        try:
            makedirs_durable(final.parent)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot create {self.part}: {exc.strerror}") from None
        self._out = _SealedFile(self._fd, self.part)
        try:
            self._writer = age.Writer(self._out, [recipient])
        except BaseException:
            self.abort()
            raise

    def write(self, data) -> int:
        return self._writer.write(data)

    def commit(self, info: SegmentInfo) -> SegmentInfo:
        try:
            self._writer.close()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            info.bytes, info.sha256 = self._out.size, self._out.hash.hexdigest()
            info.key_day, info.record_class = self.key_day, self.record_class
            info.path = str(self.final.relative_to(self._vault.data_dir))
            info.boot_id = clock.boot_id()
            atomic_write(self.final.with_suffix(".json"), json.dumps(asdict(info), indent=1).encode())
            os.replace(self.part, self.final)
            fsync_dir(self.final.parent)
        except OSError as exc:
            self.abort()
            raise StoreError(exc.errno, f"cannot commit {self.final}: {exc.strerror}") from None
        self._vault._index_segment(info)
        return info

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for path in (self.part, self.final.with_suffix(".json")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


class Vault(Index, Retention, Checks):
    """The recorder's store. Open it with :meth:`open`; one process writes at a time.

    Its parts: writing (here), the index's queries (``Index``), retention (``Retention``)
    and consistency (``Checks``)."""

    def __init__(self, data_dir: Path, retention=None, *, device: str = "counter-1",
                 now_wall_us: Callable[[], int] | None = None, clock_synchronised: Callable[[], bool] | None = None,
                 readonly: bool = False):
        from firmware.config import RetentionConfig

        self.data_dir = Path(data_dir)
        self.retention = retention or RetentionConfig()
        self.device = device
        self.keys = KeyStore(self.data_dir)
        self.audit_log = AuditLog(self.keys)
        self._now = now_wall_us or (lambda: time.time_ns() // 1000)
        self._synced = clock_synchronised or clock.clock_synchronised
        self._lock = threading.RLock()
        self.segments_root = self.data_dir / "segments"
        self.room = IndexRoom(self.data_dir)
        if readonly:  # another process reading (the web UI, the CLI): the recorder is the writer
            self.db = connect(self.data_dir, readonly=True)
            self.schema = sqlite.schema(self.db, MIGRATIONS)
        else:
            makedirs_durable(self.data_dir)
            self.db = connect(self.data_dir)
            self.schema = migrate(self.db, self._log_migration)  # warns of a newer release's index
            self.room.keep()

    def _log_migration(self, conn: sqlite3.Connection, before: int, number: int, name: str) -> None:
        """A change to the evidence's index is in the audit log, committed with the change
        (a device not yet set up has no key to sign it with, and nothing to change)."""
        if not self.keys.initialised:
            return
        from firmware import __version__

        self.audit_log.append(conn, actor="software", action="db.migrate", subject=DB_NAME,
                              detail={"script": name, "from": before, "to": number, "software": __version__})
        if name.startswith("0003_"):  # from here on every row is committed by an entry (vouch.py)
            self.audit_log.append(conn, actor="software", action=vouch.MARKER, subject=DB_NAME,
                                  detail=vouch.marker_detail(conn))
        log.info("%s migrated to schema %d (%s)", DB_NAME, number, name)

    @classmethod
    def open(cls, data_dir: Path, config=None, **kw) -> "Vault":
        if config is not None:
            kw.setdefault("device", config.device.id)
            return cls(data_dir, config.retention, **kw)
        return cls(data_dir, **kw)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def read_sealed(self, path: str) -> bytes:
        """A segment's file as stored, still sealed (``path`` relative to the data folder)."""
        return (self.data_dir / path).read_bytes()

    @property
    def ready(self) -> bool:
        return self.keys.initialised

    @contextmanager
    def transaction(self):
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # (a COMMIT that failed, on a full card, leaves it open)
                    self.db.execute("ROLLBACK")
                raise

    def _write(self, body: Callable[[sqlite3.Connection], T], *, may_use_room: bool = False) -> T:
        """``body(conn)`` in a transaction; if the card is full and this is what the room is for
        (``may_use_room``: a finished segment's row, a recording's end, an incident mark, a
        fault), once more with the room kept for the index given up (``room.py``). Anything
        else — a log-in's entry, a new recording — is refused with the card, and leaves the
        room for those."""
        try:
            with self.transaction() as conn:
                return body(conn)
        except sqlite3.OperationalError as exc:
            if not (may_use_room and is_full(exc) and self.room.give_up()):
                raise
        with self.transaction() as conn:
            return body(conn)

    def room_in_use(self) -> str | None:
        """Why no segment may begin now (the index's room is given up and the card has no
        space to set it aside again), or None."""
        if self.room.kept or self.room.keep():
            return None
        return ("the card is full: the room kept for the index is in use — erase or move what fills the data"
                " partition (kiroku vault status shows what the footage takes)")

    def log_head(self) -> dict | None:
        """The audit log's size and root now — the latest checkpoint in short, for the status
        (``kiroku ctl status``) so that it can be written down off the device."""
        with self._lock:
            row = self.db.execute("SELECT seq, root FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        import base64

        return {"entries": row[0] + 1, "root": base64.b64encode(row[1]).decode()}

    def audit(self, actor: str, action: str, *, purpose: str = "", subject: str = "", detail: dict | None = None) -> int:
        return self._write(lambda conn: self.audit_log.append(conn, actor=actor, action=action, purpose=purpose,
                                                              subject=subject, detail=detail),
                           may_use_room=action in ROOM_FOR)

    # -- the store the recorder writes to ----------------------------------------------
    def begin(self, rec: Recording) -> None:
        if not self.ready:
            raise VaultNotReady(2, "the vault is not set up: run `kiroku init` or the web UI's first-run page")
        self._write(lambda conn: self._begin(conn, rec))

    def _begin(self, conn, rec: Recording) -> None:
        conn.execute(
            "INSERT INTO recordings (id, device, record_class, mode, started_wall_us, started_at, started_by,"
            " section, clock_synchronised) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.id, rec.device, rec.record_class, rec.mode, rec.started_wall_us, rec.started_at, rec.started_by,
             rec.section, int(rec.clock_synchronised)),
        )
        seq = self.audit_log.append(conn, actor=rec.started_by, action="recording.start", subject=rec.id,
                                    detail={"device": rec.device, "mode": rec.mode, "class": rec.record_class})
        conn.execute("UPDATE recordings SET audit_seq = ? WHERE id = ?", (seq, rec.id))
        for mark in rec.marks:
            self._insert_mark(conn, rec.id, mark)

    def add_mark(self, recording_id: str, mark: Mark) -> None:
        self._write(lambda conn: self._insert_mark(conn, recording_id, mark), may_use_room=True)

    def _insert_mark(self, conn, recording_id: str, mark: Mark) -> None:
        conn.execute("INSERT INTO marks (recording_id, wall_us, at, by, note, section) VALUES (?, ?, ?, ?, ?, ?)",
                     (recording_id, mark.wall_us, mark.at, mark.by, mark.note, mark.section))
        if mark.section:  # the responsible section (Art. 2(6)) is who asks to view it later (Art. 8)
            conn.execute("UPDATE recordings SET section = ? WHERE id = ? AND section = ''", (mark.section, recording_id))
        # An incident keeps its recording until someone closes it (Art. 7(1): it may be verified).
        hold = None
        if not conn.execute("SELECT 1 FROM holds WHERE recording_id = ? AND reason = 'incident' AND released_at IS NULL",
                            (recording_id,)).fetchone():
            hold = conn.execute("INSERT INTO holds (recording_id, reason, created_at, created_by)"
                                " VALUES (?, 'incident', ?, ?)", (recording_id, mark.at, mark.by)).lastrowid
        seq = self.audit_log.append(conn, actor=mark.by, action="incident.mark", subject=recording_id,
                                    detail={"section": mark.section, "note_given": bool(mark.note)})
        if hold is not None:  # the mark's entry commits the hold it placed (vouch.py)
            conn.execute("UPDATE holds SET audit_seq = ? WHERE id = ?", (seq, hold))

    def end(self, rec: Recording) -> None:
        self._write(lambda conn: self._end(conn, rec), may_use_room=True)

    def _end(self, conn, rec: Recording) -> None:
        conn.execute("UPDATE recordings SET ended_wall_us = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                     (rec.ended_wall_us, rec.ended_at, rec.end_reason, rec.id))
        segments = conn.execute("SELECT count(*) FROM segments WHERE recording_id = ?", (rec.id,)).fetchone()[0]
        self.audit_log.append(conn, actor="recorder", action="recording.stop", subject=rec.id,
                              detail={"reason": rec.end_reason, "segments": segments})

    _CALL_COLUMNS = ("recording_id", "call_id", "direction", "trunk", "transport", "external_raw", "external_e164",
                     "city_raw", "city_e164", "withheld", "prefix_184", "prefix_186", "outside_line",
                     "invited_wall_us", "ringing_wall_us", "answered_wall_us", "ended_wall_us", "audio_wall_us",
                     "ring_ms", "talk_ms", "disposition", "sip_status", "end_reason", "ended_by", "holds", "codecs",
                     "packets_received", "packets_lost", "packets_duplicate", "packets_late", "loss_percent",
                     "gaps", "external_heard", "city_heard", "packets_undecodable", "packets_encrypted",
                     "sdp_errors", "reached")

    def index_call(self, row: dict, *, begin: Recording | None = None, ended: Recording | None = None,
                   dialog: dict | None = None) -> None:
        """A call's row in the index (the call recorder's), written as the call changes (it
        rings, is answered, a segment is sealed) and when it ends; ``begin``: its recording
        begins in the same transaction; ``dialog``: what a recorder starting again needs to go
        on with it (``call_dialogs``), kept with it. With ``ended``, its recording ends there
        too, and its dialog goes."""
        if begin is not None and not self.ready:
            raise VaultNotReady(2, "the vault is not set up: run `kiroku init` or the web UI's first-run page")
        self._write(lambda conn: self._index_call(conn, row, ended, dialog, begin), may_use_room=begin is None)

    def index_calls(self, calls: list[tuple[dict, Recording]]) -> None:
        """Calls that ended without ever ringing (refused, unanswered, a flood of INVITEs): each
        one's recording begun and ended with its row, all in one transaction."""
        if not self.ready:
            raise VaultNotReady(2, "the vault is not set up: run `kiroku init` or the web UI's first-run page")

        def body(conn):
            for row, rec in calls:
                self._index_call(conn, row, rec, None, rec)

        self._write(body)

    def _index_call(self, conn, row: dict, ended: Recording | None, dialog: dict | None,
                    begin: Recording | None = None) -> None:
        if begin is not None:
            self._begin(conn, begin)
        cols = self._CALL_COLUMNS
        conn.execute(f"INSERT OR REPLACE INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     tuple(row[c] for c in cols))
        if ended is None:
            if dialog is not None:
                conn.execute("INSERT OR REPLACE INTO call_dialogs (recording_id, state) VALUES (?, ?)",
                             (row["recording_id"], json.dumps(dialog, sort_keys=True)))
            return
        conn.execute("DELETE FROM call_dialogs WHERE recording_id = ?", (ended.id,))
        conn.execute("UPDATE recordings SET ended_wall_us = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                     (ended.ended_wall_us, ended.ended_at, ended.end_reason, ended.id))
        segments = conn.execute("SELECT count(*) FROM segments WHERE recording_id = ?", (ended.id,)).fetchone()[0]
        self.audit_log.append(conn, actor="call-recorder", action="recording.stop", subject=ended.id, detail={
            "reason": ended.end_reason, "segments": segments, "disposition": row["disposition"],
            "talk_ms": row["talk_ms"], "packets_lost": row["packets_lost"]})

    def call_dialogs(self) -> list[tuple[Recording, dict, int, int]]:
        """Calls a call recorder left in progress (stopped, or killed): each one's recording, its
        dialog as last kept, the next segment's number and how many samples its sealed segments
        hold (where its audio goes on)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT d.recording_id, d.state, (SELECT coalesce(max(s.seq) + 1, 0) FROM segments s"
                " WHERE s.recording_id = d.recording_id), (SELECT coalesce(sum(s.audio_samples), 0) FROM segments s"
                " WHERE s.recording_id = d.recording_id) FROM call_dialogs d JOIN recordings r ON r.id = d.recording_id"
                " WHERE r.ended_wall_us IS NULL ORDER BY d.recording_id").fetchall()
        names = {f.name for f in dataclasses.fields(Recording)} - {"marks", "segments", "started_us"}
        found = []
        for rid, state, next_seq, samples in rows:
            row = self.recording(rid)
            # the index keeps wall time; a boottime is made from it, as the writer makes its segments'
            boot = clock.boottime_us() - (time.time_ns() // 1000 - row["started_wall_us"])
            rec = Recording(started_us=boot, **{k: v for k, v in row.items() if k in names})
            rec.clock_synchronised = bool(rec.clock_synchronised)
            found.append((rec, json.loads(state), next_seq, samples))
        return found

    def sealing_problem(self, record_class: str = "footage") -> str | None:
        """What would stop a recording starting now from being sealed (a damaged key file, named
        with the fix), or ``None``: asked before the sign lights."""
        return self.keys.sealing_problem(record_class, local_day(clock.wall_us_at(clock.boottime_us())))

    def open_segment(self, rec: Recording, seq: int, start_us: int) -> SealedSegment:
        if not self.ready:
            raise VaultNotReady(2, "the vault is not set up: run `kiroku init` or the web UI's first-run page")
        day = local_day(clock.wall_us_at(start_us))
        full = self.room_in_use()
        if full:  # footage must not take the room the index needs to end this recording
            raise StoreError(28, full)
        try:
            recipient, created, key_name = self.keys.day_recipient(rec.record_class, day)
        except (OSError, NotInitialised) as exc:
            raise StoreError(getattr(exc, "errno", None) or 5, f"cannot make the day key: {exc}") from None
        if created:
            self._write(lambda conn: self._day_key_created(conn, rec, key_name, recipient))
        final = self.segments_root / rec.record_class / day / rec.id / f"{seq:05d}.age"
        return SealedSegment(self, final, recipient, key_name, rec.record_class)

    def _day_key_created(self, conn, rec: Recording, day: str, recipient) -> None:
        conn.execute("INSERT OR IGNORE INTO day_keys (record_class, day, recipient, created_at) VALUES (?, ?, ?, ?)",
                     (rec.record_class, day, str(recipient), iso(self._now())))
        entry = self.audit_log.append(conn, actor="recorder", action="key.day_created",
                                      subject=f"{rec.record_class}/{day}",
                                      detail={"recipients": len(self.keys.recipients())})
        conn.execute("UPDATE day_keys SET audit_seq = ? WHERE record_class = ? AND day = ? AND audit_seq IS NULL",
                     (entry, rec.record_class, day))

    def _index_segment(self, info: SegmentInfo) -> None:
        self._write(lambda conn: self._insert_segment(conn, info), may_use_room=True)
