"""The vault's index (kiroku.db): what it holds — recordings, their segments, incident marks
and holds — read back for the recorder, the command line and the web UI.

``Index`` is a part of :class:`~firmware.vault.Vault` (its database, lock and clock are the
vault's); this module owns the queries and the index's times.
"""

from __future__ import annotations

from datetime import datetime, timezone

from firmware import clock
from firmware.store import SegmentInfo
from firmware.vault import age
from firmware.vault.vouch import segment_detail

MAX_SEGMENT_US = 120_000_000  # no segment is longer; bounds the time-range index scan


def iso(wall_us: int) -> str:
    return clock.iso(datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone())


def local_day(wall_us: int) -> str:
    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone().strftime("%Y-%m-%d")


class Index:
    """Recordings, segments, marks and holds, as the index has them."""

    def _insert_segment(self, conn, info: SegmentInfo, *, committed_by: int | None = None) -> None:
        """The segment's row, and the log entry that commits it (firmware/vault/vouch.py) —
        or, with ``committed_by``, the entry that already did (a row restored from the log)."""
        seq = committed_by if committed_by is not None else self.audit_log.append(
            conn, actor="recorder", action="segment.sealed", subject=info.path, detail=segment_detail(info))
        conn.execute(
            "INSERT INTO segments (recording_id, seq, record_class, key_day, path, start_wall_us, end_wall_us,"
            " start_mono_us, end_mono_us, boot_id, clock_synchronised, has_audio, video_frames, audio_samples,"
            " size, sha256, audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (info.recording_id, info.seq, info.record_class, info.key_day, info.path, info.start_wall_us,
             info.end_wall_us, info.start_us, info.end_us, info.boot_id, int(info.clock_synchronised),
             int(info.has_audio), info.video_frames, info.audio_samples, info.bytes, info.sha256, seq),
        )

    # -- holds ---------------------------------------------------------------------------
    def hold(self, *, reason: str, by: str, recording_id: str | None = None, start_wall_us: int | None = None,
             end_wall_us: int | None = None, reference: str = "") -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO holds (recording_id, start_wall_us, end_wall_us, reason, reference, created_at, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (recording_id, start_wall_us, end_wall_us, reason, reference, iso(self._now()), by))
            seq = self.audit_log.append(conn, actor=by, action="hold.create", subject=recording_id or "",
                                        detail={"hold": cur.lastrowid, "reason": reason, "reference": reference})
            conn.execute("UPDATE holds SET audit_seq = ? WHERE id = ?", (seq, cur.lastrowid))
            return cur.lastrowid

    def release_hold(self, hold_id: int, *, by: str) -> None:
        with self.transaction() as conn:
            row = conn.execute("SELECT recording_id, released_at FROM holds WHERE id = ?", (hold_id,)).fetchone()
            if row is None:
                raise KeyError(f"no hold {hold_id}")
            if row[1] is not None:
                raise ValueError(f"hold {hold_id} was already released")
            conn.execute("UPDATE holds SET released_at = ?, released_by = ? WHERE id = ?", (iso(self._now()), by, hold_id))
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
                (start_wall_us - MAX_SEGMENT_US, end_wall_us, start_wall_us, record_class)).fetchall()
        return [self._segment_info(r) for r in rows]

    def _segment_info(self, r) -> SegmentInfo:
        d = dict(zip((*self._SEGMENT_COLUMNS, "erased_at"), r))
        return SegmentInfo(
            recording_id=d["recording_id"], seq=d["seq"], start_us=d["start_mono_us"], end_us=d["end_mono_us"],
            start_wall_us=d["start_wall_us"], end_wall_us=d["end_wall_us"], started_at=iso(d["start_wall_us"]),
            ended_at=iso(d["end_wall_us"]), clock_synchronised=bool(d["clock_synchronised"]),
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
