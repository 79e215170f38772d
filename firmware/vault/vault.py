"""The vault: where footage lives, sealed, indexed, kept as long as the rule says.

    <data>/kiroku.db                      the index and the audit log (SQLite, WAL)
    <data>/keys/                          see ``keys.py``
    <data>/segments/CLASS/DAY/RECORDING/00000.age   a sealed fMP4 segment
                                        /00000.json  its metadata (for repair after a crash)

One process writes: the recorder. A segment is sealed as the muxer writes it (age, to its
day key), into ``.part``; when complete it is fsynced, its sidecar written, renamed into
place, the directory fsynced, and only then is its index row committed. A crash at any
moment leaves at most the segment in flight missing; ``recover()`` at start-up (and
``check(repair=True)``) makes files and index agree again.

Disk policy in one sentence: when the vault passes its high-water mark, the oldest
segments that are past their class's minimum retention and not on hold are overwritten
until it is back under the low-water mark, and a day's key is destroyed once none of
its segments is kept; nothing younger or held is ever touched, and when nothing can be
erased, recording does not start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from firmware import clock, sqlite
from firmware.fsutil import atomic_write, fsync_dir, makedirs_durable
from firmware.store import Mark, Recording, SegmentInfo, StoreError
from firmware.vault import age
from firmware.vault.audit import AuditLog
from firmware.vault.errors import NotInitialised, VaultNotReady
from firmware.vault.keys import KeyStore, overwrite_and_unlink

log = logging.getLogger(__name__)

DB_NAME = "kiroku.db"
_DAY_US = 86_400_000_000
_ERASE_BATCH = 200
_MAX_SEGMENT_US = 120_000_000  # no segment is longer; bounds the time-range index scan


def _iso(wall_us: int) -> str:
    return clock.iso(datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone())


def _local_day(wall_us: int) -> str:
    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone().strftime("%Y-%m-%d")


def connect(data_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    return sqlite.open_db(Path(data_dir) / DB_NAME, readonly=readonly)


MIGRATIONS = "firmware.vault"  # the package whose migrations/ kiroku.db follows


def migrate(conn: sqlite3.Connection, on_applied=None) -> sqlite.Schema:
    return sqlite.migrate(conn, MIGRATIONS, on_applied)


@dataclass
class Finding:
    """One thing ``check`` found, and whether ``repair`` fixed it."""

    kind: str  # part | orphan | missing | damaged | unfinished | key
    path: str
    detail: str
    fixed: bool = False


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


class Vault:
    """The recorder's store. Open it with :meth:`open`; one process writes at a time."""

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
        if readonly:  # another process reading (the web UI, the CLI): the recorder is the writer
            self.db = connect(self.data_dir, readonly=True)
            self.schema = sqlite.schema(self.db, MIGRATIONS)
        else:
            makedirs_durable(self.data_dir)
            self.db = connect(self.data_dir)
            self.schema = migrate(self.db, self._log_migration)  # warns of a newer release's index

    def _log_migration(self, conn: sqlite3.Connection, before: int, number: int, name: str) -> None:
        """A change to the evidence's index is in the audit log, committed with the change
        (a device not yet set up has no key to sign it with, and nothing to change)."""
        if not self.keys.initialised:
            return
        from firmware import __version__

        self.audit_log.append(conn, actor="software", action="db.migrate", subject=DB_NAME,
                              detail={"script": name, "from": before, "to": number, "software": __version__})
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

    @property
    def ready(self) -> bool:
        return self.keys.initialised

    @contextmanager
    def transaction(self):
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def audit(self, actor: str, action: str, *, purpose: str = "", subject: str = "", detail: dict | None = None) -> int:
        with self.transaction() as conn:
            return self.audit_log.append(conn, actor=actor, action=action, purpose=purpose, subject=subject,
                                         detail=detail)

    # -- the store the recorder writes to ----------------------------------------------
    def begin(self, rec: Recording) -> None:
        if not self.ready:
            raise VaultNotReady(2, "the vault is not set up: run `kiroku init` or the web UI's first-run page")
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO recordings (id, device, record_class, mode, started_wall_us, started_at, started_by,"
                " section, clock_synchronised) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.id, rec.device, rec.record_class, rec.mode, rec.started_wall_us, rec.started_at, rec.started_by,
                 rec.section, int(rec.clock_synchronised)),
            )
            self.audit_log.append(conn, actor=rec.started_by, action="recording.start", subject=rec.id,
                                  detail={"device": rec.device, "mode": rec.mode, "class": rec.record_class})
            for mark in rec.marks:
                self._insert_mark(conn, rec.id, mark)

    def add_mark(self, recording_id: str, mark: Mark) -> None:
        with self.transaction() as conn:
            self._insert_mark(conn, recording_id, mark)

    def _insert_mark(self, conn, recording_id: str, mark: Mark) -> None:
        conn.execute("INSERT INTO marks (recording_id, wall_us, at, by, note, section) VALUES (?, ?, ?, ?, ?, ?)",
                     (recording_id, mark.wall_us, mark.at, mark.by, mark.note, mark.section))
        if mark.section:  # the responsible section (Art. 2(6)) is who asks to view it later (Art. 8)
            conn.execute("UPDATE recordings SET section = ? WHERE id = ? AND section = ''", (mark.section, recording_id))
        # An incident keeps its recording until someone closes it (Art. 7(1): it may be verified).
        if not conn.execute("SELECT 1 FROM holds WHERE recording_id = ? AND reason = 'incident' AND released_at IS NULL",
                            (recording_id,)).fetchone():
            conn.execute("INSERT INTO holds (recording_id, reason, created_at, created_by) VALUES (?, 'incident', ?, ?)",
                         (recording_id, mark.at, mark.by))
        self.audit_log.append(conn, actor=mark.by, action="incident.mark", subject=recording_id,
                              detail={"section": mark.section, "note_given": bool(mark.note)})

    def end(self, rec: Recording) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE recordings SET ended_wall_us = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                         (rec.ended_wall_us, rec.ended_at, rec.end_reason, rec.id))
            segments = conn.execute("SELECT count(*) FROM segments WHERE recording_id = ?", (rec.id,)).fetchone()[0]
            self.audit_log.append(conn, actor="recorder", action="recording.stop", subject=rec.id,
                                  detail={"reason": rec.end_reason, "segments": segments})

    _CALL_COLUMNS = ("recording_id", "call_id", "direction", "trunk", "transport", "external_raw", "external_e164",
                     "city_raw", "city_e164", "withheld", "prefix_184", "prefix_186", "outside_line",
                     "invited_wall_us", "ringing_wall_us", "answered_wall_us", "ended_wall_us", "audio_wall_us",
                     "ring_ms", "talk_ms", "disposition", "sip_status", "end_reason", "ended_by", "holds", "codecs",
                     "packets_received", "packets_lost", "packets_duplicate", "packets_late", "loss_percent")

    def index_call(self, row: dict, *, ended: Recording | None = None) -> None:
        """A call's row in the index (the call recorder's), written when the call begins and
        again when it ends; with ``ended``, its recording ends in the same transaction."""
        cols = self._CALL_COLUMNS
        with self.transaction() as conn:
            conn.execute(f"INSERT OR REPLACE INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         tuple(row[c] for c in cols))
            if ended is None:
                return
            conn.execute("UPDATE recordings SET ended_wall_us = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                         (ended.ended_wall_us, ended.ended_at, ended.end_reason, ended.id))
            segments = conn.execute("SELECT count(*) FROM segments WHERE recording_id = ?", (ended.id,)).fetchone()[0]
            self.audit_log.append(conn, actor="call-recorder", action="recording.stop", subject=ended.id, detail={
                "reason": ended.end_reason, "segments": segments, "disposition": row["disposition"],
                "talk_ms": row["talk_ms"], "packets_lost": row["packets_lost"]})

    def open_segment(self, rec: Recording, seq: int, start_us: int) -> SealedSegment:
        if not self.ready:
            raise VaultNotReady(2, "the vault is not set up: run `kiroku init` or the web UI's first-run page")
        day = _local_day(clock.wall_us_at(start_us))
        try:
            recipient, created = self.keys.day_recipient(rec.record_class, day)
        except (OSError, NotInitialised) as exc:
            raise StoreError(getattr(exc, "errno", None) or 5, f"cannot make the day key: {exc}") from None
        if created:
            with self.transaction() as conn:
                conn.execute("INSERT OR IGNORE INTO day_keys (record_class, day, recipient, created_at) VALUES (?, ?, ?, ?)",
                             (rec.record_class, day, str(recipient), _iso(self._now())))
                self.audit_log.append(conn, actor="recorder", action="key.day_created", subject=f"{rec.record_class}/{day}",
                                      detail={"recipients": len(self.keys.recipients())})
        final = self.segments_root / rec.record_class / day / rec.id / f"{seq:05d}.age"
        return SealedSegment(self, final, recipient, day, rec.record_class)

    def _index_segment(self, info: SegmentInfo) -> None:
        with self.transaction() as conn:
            self._insert_segment(conn, info)

    @staticmethod
    def _insert_segment(conn, info: SegmentInfo) -> None:
        conn.execute(
            "INSERT INTO segments (recording_id, seq, record_class, key_day, path, start_wall_us, end_wall_us,"
            " start_mono_us, end_mono_us, boot_id, clock_synchronised, has_audio, video_frames, audio_samples,"
            " size, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (info.recording_id, info.seq, info.record_class, info.key_day, info.path, info.start_wall_us,
             info.end_wall_us, info.start_us, info.end_us, info.boot_id, int(info.clock_synchronised),
             int(info.has_audio), info.video_frames, info.audio_samples, info.bytes, info.sha256),
        )

    # -- holds -------------------------------------------------------------------------
    def hold(self, *, reason: str, by: str, recording_id: str | None = None, start_wall_us: int | None = None,
             end_wall_us: int | None = None, reference: str = "") -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO holds (recording_id, start_wall_us, end_wall_us, reason, reference, created_at, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (recording_id, start_wall_us, end_wall_us, reason, reference, _iso(self._now()), by))
            self.audit_log.append(conn, actor=by, action="hold.create", subject=recording_id or "",
                                  detail={"hold": cur.lastrowid, "reason": reason, "reference": reference})
            return cur.lastrowid

    def release_hold(self, hold_id: int, *, by: str) -> None:
        with self.transaction() as conn:
            row = conn.execute("SELECT recording_id, released_at FROM holds WHERE id = ?", (hold_id,)).fetchone()
            if row is None:
                raise KeyError(f"no hold {hold_id}")
            if row[1] is not None:
                raise ValueError(f"hold {hold_id} was already released")
            conn.execute("UPDATE holds SET released_at = ?, released_by = ? WHERE id = ?", (_iso(self._now()), by, hold_id))
            self.audit_log.append(conn, actor=by, action="hold.release", subject=row[0] or "", detail={"hold": hold_id})

    def holds(self, *, open_only: bool = True) -> list[dict]:
        query = "SELECT id, recording_id, start_wall_us, end_wall_us, reason, reference, created_at, created_by," \
                " released_at FROM holds"
        if open_only:
            query += " WHERE released_at IS NULL"
        keys = ("id", "recording_id", "start_wall_us", "end_wall_us", "reason", "reference", "created_at",
                "created_by", "released_at")
        with self._lock:
            return [dict(zip(keys, r)) for r in self.db.execute(query + " ORDER BY id")]

    # -- queries -----------------------------------------------------------------------
    def recordings(self, limit: int = 1000) -> list[dict]:
        keys = ("id", "device", "record_class", "mode", "started_at", "started_by", "ended_at", "end_reason",
                "segments", "bytes", "marks", "held")
        query = """
            SELECT r.id, r.device, r.record_class, r.mode, r.started_at, r.started_by, r.ended_at, r.end_reason,
                   (SELECT count(*) FROM segments s WHERE s.recording_id = r.id AND s.erased_at IS NULL),
                   (SELECT coalesce(sum(size), 0) FROM segments s WHERE s.recording_id = r.id AND s.erased_at IS NULL),
                   (SELECT count(*) FROM marks m WHERE m.recording_id = r.id),
                   EXISTS (SELECT 1 FROM holds h WHERE h.recording_id = r.id AND h.released_at IS NULL)
            FROM recordings r ORDER BY r.started_wall_us DESC LIMIT ?"""
        with self._lock:
            return [dict(zip(keys, r)) for r in self.db.execute(query, (limit,))]

    _SEGMENT_COLUMNS = ("recording_id", "seq", "record_class", "key_day", "path", "start_wall_us", "end_wall_us",
                        "start_mono_us", "end_mono_us", "boot_id", "clock_synchronised", "has_audio",
                        "video_frames", "audio_samples", "size", "sha256")

    def recording(self, recording_id: str) -> dict | None:
        """One recording's row (``None`` if there is no such recording)."""
        with self._lock:
            cur = self.db.execute("SELECT * FROM recordings WHERE id = ?", (recording_id,))
            row = cur.fetchone()
            return None if row is None else dict(zip([c[0] for c in cur.description], row))

    def segments(self, recording_id: str, *, with_erased: bool = False) -> list[SegmentInfo]:
        """The recording's segments in order; with ``with_erased`` also those already
        overwritten (their times remain in the index; ``erased_at`` says when)."""
        kept = "" if with_erased else " AND erased_at IS NULL"
        with self._lock:
            rows = self.db.execute(f"SELECT {', '.join(self._SEGMENT_COLUMNS)}, erased_at FROM segments"
                                   f" WHERE recording_id = ?{kept} ORDER BY seq", (recording_id,)).fetchall()
        return [self._segment_info(r) for r in rows]

    def segments_between(self, start_wall_us: int, end_wall_us: int, record_class: str = "footage") -> list[SegmentInfo]:
        """Kept segments overlapping [start, end): a bounded index range scan at any index size."""
        with self._lock:
            rows = self.db.execute(
                f"SELECT {', '.join(self._SEGMENT_COLUMNS)} FROM segments"
                " WHERE start_wall_us >= ? AND start_wall_us < ? AND end_wall_us > ? AND record_class = ?"
                " AND erased_at IS NULL ORDER BY start_wall_us",
                (start_wall_us - _MAX_SEGMENT_US, end_wall_us, start_wall_us, record_class)).fetchall()
        return [self._segment_info(r) for r in rows]

    def _segment_info(self, r) -> SegmentInfo:
        d = dict(zip((*self._SEGMENT_COLUMNS, "erased_at"), r))
        return SegmentInfo(
            recording_id=d["recording_id"], seq=d["seq"], start_us=d["start_mono_us"], end_us=d["end_mono_us"],
            start_wall_us=d["start_wall_us"], end_wall_us=d["end_wall_us"], started_at=_iso(d["start_wall_us"]),
            ended_at=_iso(d["end_wall_us"]), clock_synchronised=bool(d["clock_synchronised"]),
            video_frames=d["video_frames"], audio_samples=d["audio_samples"], has_audio=bool(d["has_audio"]),
            record_class=d["record_class"], key_day=d["key_day"], path=d["path"], boot_id=d["boot_id"],
            bytes=d["size"], sha256=d["sha256"], erased_at=d.get("erased_at"))

    def open_segment_plaintext(self, info: SegmentInfo, opener: age.X25519Identity) -> bytes:
        """Decrypt one segment in memory (a manager's or the recovery identity opens the day key).

        The whole segment is verified before anything is returned: nothing half-authentic
        leaves this function, and nothing decrypted touches the disk.
        """
        day_identity = self.keys.open_day_key(info.record_class, info.key_day, opener)
        return age.decrypt((self.data_dir / info.path).read_bytes(), [day_identity])

    # -- space and retention -------------------------------------------------------------
    def usage(self) -> dict:
        with self._lock:
            rows = self.db.execute("SELECT record_class, count(*), coalesce(sum(size), 0), min(start_wall_us)"
                                   " FROM segments WHERE erased_at IS NULL GROUP BY record_class").fetchall()
        by_class = {c: {"segments": n, "bytes": b, "oldest_wall_us": o} for c, n, b, o in rows}
        used = sum(v["bytes"] for v in by_class.values())
        st = os.statvfs(self.data_dir)
        free = st.f_bavail * st.f_frsize
        reserve = self.retention.reserve_mb * 2**20
        capacity = max(0, used + free - reserve)
        if self.retention.capacity_mb:
            capacity = min(capacity, self.retention.capacity_mb * 2**20)
        return {"capacity": capacity, "used": used, "free": max(0, capacity - used), "filesystem_free": free,
                "by_class": by_class}

    def min_days(self, record_class: str) -> int:
        return getattr(self.retention, f"{record_class}_min_days")

    def max_days(self, record_class: str) -> int:
        return getattr(self.retention, f"{record_class}_max_days")

    def _erasable(self, conn, now: int, *, record_class: str | None, older_than: dict[str, int], limit: int):
        """Kept segments past their minimum retention and not on hold, oldest first."""
        clauses = " OR ".join("(s.record_class = ? AND s.end_wall_us < ?)" for _ in older_than)
        args: list = [x for cls, cutoff in older_than.items() for x in (cls, cutoff)]
        query = f"""
            SELECT s.id, s.path, s.size, s.record_class, s.key_day, s.start_wall_us, s.end_wall_us
            FROM segments s
            WHERE s.erased_at IS NULL AND ({clauses})
              AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.released_at IS NULL AND h.recording_id = s.recording_id)
              AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.released_at IS NULL AND h.recording_id IS NULL
                              AND h.start_wall_us < s.end_wall_us AND h.end_wall_us > s.start_wall_us)
            ORDER BY s.end_wall_us LIMIT ?"""
        return conn.execute(query, (*args, limit)).fetchall()

    def sweep(self, *, need_bytes: int = 0) -> dict:
        """Erase what the disk policy says to erase; returns what was done.

        ``need_bytes``: make at least this much room below the low-water mark as well (the
        recorder asks before it lights the sign).
        """
        if self.retention.require_clock_sync and not self._synced():
            return {"erased": 0, "bytes": 0, "skipped": "the wall clock is not synchronised"}
        now = self._now()
        total = {"erased": 0, "bytes": 0, "days_destroyed": []}
        # 1. Anything past an optional maximum retention goes, space or not.
        expired = {c: now - self.max_days(c) * _DAY_US for c in ("footage", "call") if self.max_days(c)}
        if expired:
            self._erase_until(expired, now, None, total, reason="maximum retention")
        # 2. Above the high-water mark: the oldest expired segments, down to the low-water mark.
        u = self.usage()
        high = self.retention.high_water * u["capacity"]
        target = min(self.retention.low_water * u["capacity"], u["capacity"] - need_bytes)
        if u["used"] > high or (need_bytes and u["used"] > target):
            eligible = {c: now - self.min_days(c) * _DAY_US for c in ("footage", "call")}
            self._erase_until(eligible, now, u["used"] - target, total, reason="overwrite")
        if total["erased"]:
            log.info("overwrote %d segments (%d bytes); destroyed day keys: %s", total["erased"], total["bytes"],
                     ", ".join(total["days_destroyed"]) or "none")
        return total

    def _erase_until(self, older_than: dict[str, int], now: int, need: int | None, total: dict, reason: str) -> None:
        freed = 0
        while need is None or freed < need:
            with self.transaction() as conn:
                rows = self._erasable(conn, now, record_class=None, older_than=older_than, limit=_ERASE_BATCH)
                if need is not None:
                    picked, running = [], 0
                    for row in rows:
                        if freed + running >= need:
                            break
                        picked.append(row)
                        running += row[2]
                    rows = picked
                if not rows:
                    return
                stamp = _iso(now)
                conn.executemany("UPDATE segments SET erased_at = ?, erase_reason = ? WHERE id = ?",
                                 [(stamp, reason, r[0]) for r in rows])
                by_class: dict[str, list] = {}
                for r in rows:
                    by_class.setdefault(r[3], []).append(r)
                shred: list[tuple[str, str]] = []
                for cls, group in by_class.items():
                    days = self._shreddable_days(conn, cls, {r[4] for r in group}, now)
                    shred += [(cls, d) for d in days]
                    conn.execute("INSERT INTO overwrites (at, record_class, segments, bytes, oldest_wall_us,"
                                 " newest_wall_us, days_destroyed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (stamp, cls, len(group), sum(r[2] for r in group), min(r[5] for r in group),
                                  max(r[6] for r in group), ",".join(days)))
                    for day in days:
                        conn.execute("UPDATE day_keys SET destroyed_at = ? WHERE record_class = ? AND day = ?",
                                     (stamp, cls, day))
                    self.audit_log.append(conn, actor="recorder", action="retention.overwrite", subject=cls,
                                          detail={"segments": len(group), "bytes": sum(r[2] for r in group),
                                                  "reason": reason, "oldest": _iso(min(r[5] for r in group)),
                                                  "newest": _iso(max(r[6] for r in group)), "keys_destroyed": days})
                    total["days_destroyed"] += [f"{cls}/{d}" for d in days]
            # Committed: now make it so on disk (recover() finishes this after a crash).
            for r in rows:
                self._erase_file(self.data_dir / r[1])
            for cls, day in shred:
                self.keys.destroy_day_key(cls, day)
            batch = sum(r[2] for r in rows)
            freed += batch
            total["erased"] += len(rows)
            total["bytes"] += batch

    def _shreddable_days(self, conn, record_class: str, days: set[str], now: int) -> list[str]:
        today = _local_day(now)
        found = []
        for day in sorted(days):
            if day >= today:
                continue  # today's key is still in use
            kept = conn.execute("SELECT 1 FROM segments WHERE record_class = ? AND key_day = ? AND erased_at IS NULL"
                                    " LIMIT 1", (record_class, day)).fetchone()
            if not kept:
                found.append(day)
        return found

    @staticmethod
    def _erase_file(path: Path) -> None:
        try:
            overwrite_and_unlink(path, limit=age.CHUNK)
        except FileNotFoundError:
            pass
        try:
            path.with_suffix(".json").unlink()
        except FileNotFoundError:
            pass

    def room_for(self, nbytes: int) -> bool:
        """Whether a recording of about ``nbytes`` can be kept, erasing expired footage if needed."""
        u = self.usage()
        if u["free"] >= nbytes:
            return True
        self.sweep(need_bytes=nbytes)
        return self.usage()["free"] >= nbytes

    def status(self, *, bitrate_guess: float = 4_000_000 / 8, own_class: str = "footage") -> dict:
        """Capacity, use and the retention the card can hold, per record class: the class this
        device records (``own_class``, at ``bitrate_guess`` until there is history) and any other
        that holds segments — a counter has no calls to warn about, nor a call recorder footage."""
        u = self.usage()
        now = self._now()
        classes = {}
        with self._lock:
            for cls in ("footage", "call"):
                if cls != own_class and not u["by_class"].get(cls, {}).get("segments"):
                    continue
                info = u["by_class"].get(cls, {"segments": 0, "bytes": 0, "oldest_wall_us": None})
                window = now - 14 * _DAY_US
                size, seconds, first = self.db.execute(
                    "SELECT coalesce(sum(size), 0), coalesce(sum(end_wall_us - start_wall_us), 0) / 1e6,"
                    " min(start_wall_us) FROM segments WHERE record_class = ? AND start_wall_us >= ?",
                    (cls, window)).fetchone()
                rate = size / seconds if seconds > 60 else bitrate_guess
                history_days = max(1.0, (now - first) / _DAY_US) if first else 0
                hours = seconds / 3600 / history_days if history_days >= 1 and seconds else self.retention.hours_per_day
                daily = rate * hours * 3600
                others = sum(v["bytes"] for k, v in u["by_class"].items() if k != cls)
                projected = (u["capacity"] - others) / daily if daily else None
                minimum = self.min_days(cls)
                classes[cls] = {
                    "segments": info["segments"], "bytes": info["bytes"],
                    "oldest": _iso(info["oldest_wall_us"]) if info["oldest_wall_us"] else None,
                    "bytes_per_second": round(rate), "hours_per_day": round(hours, 2),
                    "projected_days": None if projected is None else round(projected, 1),
                    "min_days": minimum,
                    "warning": projected is not None and projected < minimum + self.retention.warn_margin_days,
                }
            last = self.db.execute("SELECT at, record_class, segments, bytes, days_destroyed FROM overwrites"
                                   " ORDER BY id DESC LIMIT 1").fetchone()
            open_holds = self.db.execute("SELECT count(*) FROM holds WHERE released_at IS NULL").fetchone()[0]
        return {
            "capacity": u["capacity"], "used": u["used"], "free": u["free"], "classes": classes,
            "holds": open_holds, "clock_synchronised": self._synced(),
            "last_overwrite": None if last is None else dict(zip(("at", "record_class", "segments", "bytes",
                                                                  "days_destroyed"), last)),
        }

    # -- consistency -------------------------------------------------------------------------
    def check(self, *, repair: bool = False) -> list[Finding]:
        """Files and index, compared; with ``repair``, made to agree without losing a complete segment."""
        findings: list[Finding] = []
        with self._lock:
            rows = {r[0]: r for r in self.db.execute(
                "SELECT path, size, sha256, erased_at, id, record_class, key_day FROM segments")}
        on_disk = {str(p.relative_to(self.data_dir)) for p in self.segments_root.glob("*/*/*/*.age")}
        for part in sorted(self.segments_root.glob("*/*/*/*.part")):
            f = Finding("part", str(part.relative_to(self.data_dir)), "a segment left unfinished by a crash")
            if repair:
                part.unlink()
                part.with_name(part.name.removesuffix(".age.part") + ".json").unlink(missing_ok=True)
                f.fixed = True
            findings.append(f)
        for rel in sorted(on_disk - set(rows)):
            findings.append(self._orphan(rel, repair))
        for rel, (path, size, sha, erased, seg_id, cls, day) in sorted(rows.items()):
            full = self.data_dir / rel
            if erased:
                if full.exists():
                    f = Finding("unfinished", rel, "erased in the index but still on disk (an interrupted overwrite)")
                    if repair:
                        self._erase_file(full)
                        f.fixed = True
                    findings.append(f)
                continue
            if rel not in on_disk:
                f = Finding("missing", rel, "in the index but not on disk")
                if repair:
                    self._mark_lost(seg_id, rel, "missing")
                    f.fixed = True
                findings.append(f)
                continue
            actual = full.stat().st_size
            if actual != size or _sha256(full) != sha:
                f = Finding("damaged", rel, f"size {actual} / hash differ from the index (expected {size} bytes)")
                if repair:
                    self._quarantine(full)
                    self._mark_lost(seg_id, rel, "damaged")
                    f.fixed = True
                findings.append(f)
                continue
            if not (self.keys.root / "day" / cls / f"{day}.age").exists():
                findings.append(Finding("key", rel, f"its {cls} day key for {day} is gone: it cannot be opened"))
        with self._lock:
            open_recs = self.db.execute(
                "SELECT r.id, (SELECT max(end_wall_us) FROM segments s WHERE s.recording_id = r.id)"
                " FROM recordings r WHERE r.ended_wall_us IS NULL").fetchall()
        for rec_id, last_end in open_recs:
            f = Finding("unfinished", rec_id, "a recording without an end (the recorder stopped unexpectedly)")
            if repair:
                end = last_end or self._now()
                with self.transaction() as conn:
                    conn.execute("UPDATE recordings SET ended_wall_us = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                                 (end, _iso(end), "the recorder stopped unexpectedly", rec_id))
                    self.audit_log.append(conn, actor="recorder", action="recording.stop", subject=rec_id,
                                          detail={"reason": "the recorder stopped unexpectedly", "repaired": True})
                f.fixed = True
            findings.append(f)
        if repair and any(f.fixed for f in findings):
            self.audit("recorder", "vault.repair", detail={
                "fixed": [{"kind": f.kind, "path": f.path} for f in findings if f.fixed]})
        return findings

    def recover(self) -> list[Finding]:
        """At start-up: finish or undo what a crash can have interrupted, and only that.

        Cheap at any index size: it looks only at unfinished recordings' folders, the last
        overwrite batches and day keys marked destroyed — not at every segment's hash
        (that is ``kiroku vault check``).
        """
        findings: list[Finding] = []
        with self._lock:
            open_recs = self.db.execute(
                "SELECT r.id, r.record_class, (SELECT max(end_wall_us) FROM segments s WHERE s.recording_id = r.id)"
                " FROM recordings r WHERE r.ended_wall_us IS NULL").fetchall()
            indexed = {r[0] for r in self.db.execute(
                "SELECT path FROM segments WHERE recording_id IN (SELECT id FROM recordings WHERE ended_wall_us IS NULL)")}
            erased = [r[0] for r in self.db.execute(
                "SELECT path FROM segments WHERE erased_at IS NOT NULL ORDER BY id DESC LIMIT ?", (4 * _ERASE_BATCH,))]
            destroyed = self.db.execute("SELECT record_class, day FROM day_keys WHERE destroyed_at IS NOT NULL").fetchall()
        for rec_id, cls, last_end in open_recs:
            for folder in self.segments_root.glob(f"{cls}/*/{rec_id}"):
                for part in sorted(folder.glob("*.part")):
                    part.unlink()
                    folder.joinpath(part.name.removesuffix(".age.part") + ".json").unlink(missing_ok=True)
                    findings.append(Finding("part", str(part.relative_to(self.data_dir)),
                                            "a segment left unfinished by a crash: removed", fixed=True))
                for sealed in sorted(folder.glob("*.age")):
                    rel = str(sealed.relative_to(self.data_dir))
                    if rel not in indexed:
                        findings.append(self._orphan(rel, repair=True))
            end = self.db.execute("SELECT max(end_wall_us) FROM segments WHERE recording_id = ?", (rec_id,)).fetchone()[0]
            if not (end or last_end) and cls == "call":  # a call that never got audio ends where it began
                end = self.db.execute("SELECT started_wall_us FROM recordings WHERE id = ?", (rec_id,)).fetchone()[0]
            end = end or last_end or self._now()
            with self.transaction() as conn:
                conn.execute("UPDATE recordings SET ended_wall_us = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                             (end, _iso(end), "the recorder stopped unexpectedly", rec_id))
                conn.execute(  # its call (if it is one) ends there too, answered or not as it was
                    "UPDATE calls SET ended_wall_us = ?, end_reason = 'recorder_stopped',"
                    " talk_ms = CASE WHEN answered_wall_us IS NULL THEN 0 ELSE max(0, (? - answered_wall_us) / 1000) END,"
                    " disposition = coalesce(disposition, CASE WHEN answered_wall_us IS NULL THEN 'failed'"
                    " ELSE 'answered' END) WHERE recording_id = ? AND ended_wall_us IS NULL", (end, end, rec_id))
                self.audit_log.append(conn, actor="recorder", action="recording.stop", subject=rec_id,
                                      detail={"reason": "the recorder stopped unexpectedly", "recovered": True})
            findings.append(Finding("unfinished", rec_id, "a recording without an end: closed", fixed=True))
        for rel in erased:
            if (self.data_dir / rel).exists():
                self._erase_file(self.data_dir / rel)
                findings.append(Finding("unfinished", rel, "an interrupted overwrite: finished", fixed=True))
        for cls, day in destroyed:
            if self.keys.destroy_day_key(cls, day):
                findings.append(Finding("key", f"{cls}/{day}", "an interrupted key destruction: finished", fixed=True))
        return findings

    def _orphan(self, rel: str, repair: bool) -> Finding:
        full = self.data_dir / rel
        sidecar = full.with_suffix(".json")
        f = Finding("orphan", rel, "on disk but not in the index")
        try:
            info = SegmentInfo(**json.loads(sidecar.read_text()))
        except (OSError, ValueError, TypeError):
            f.detail += "; no readable metadata beside it"
            if repair:
                self._quarantine(full)
                f.detail += " — moved to quarantine/"
                f.fixed = True
            return f
        if info.bytes != full.stat().st_size or info.sha256 != _sha256(full):
            f.detail += "; its content does not match its metadata"
            if repair:
                self._quarantine(full)
                f.fixed = True
            return f
        f.detail += " (complete: the crash came between the rename and the index)"
        if repair:
            with self.transaction() as conn:
                self._insert_segment(conn, info)
                self.audit_log.append(conn, actor="recorder", action="vault.reindex", subject=info.recording_id,
                                      detail={"seq": info.seq, "path": rel})
            f.fixed = True
        return f

    def _mark_lost(self, seg_id: int, rel: str, reason: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE segments SET erased_at = ?, erase_reason = ? WHERE id = ?",
                         (_iso(self._now()), reason, seg_id))
            self.audit_log.append(conn, actor="recorder", action="vault.segment_lost", subject=rel,
                                  detail={"reason": reason})

    def _quarantine(self, full: Path) -> None:
        target = self.data_dir / "quarantine" / full.relative_to(self.segments_root)
        makedirs_durable(target.parent)
        os.replace(full, target)
        fsync_dir(full.parent)
        sidecar = full.with_suffix(".json")
        if sidecar.exists():
            os.replace(sidecar, target.with_suffix(".json"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
