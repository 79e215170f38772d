"""Consistency: the files on disk and the index, compared (``kiroku vault check``) and made to
agree — without losing a complete segment — after a crash (``recover`` at start-up) or on
request (``check(repair=True)``).

``Checks`` is a part of :class:`~firmware.vault.Vault`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from firmware.fsutil import fsync_dir, makedirs_durable
from firmware.store import SegmentInfo
from firmware.vault import vouch
from firmware.vault.index import iso
from firmware.vault.retention import ERASE_BATCH


@dataclass
class Finding:
    """One thing ``check`` found, and whether ``repair`` fixed it."""

    # part | orphan | missing | damaged | unfinished | key | log (the index and the log differ)
    # | recording (in progress: not a problem)
    kind: str
    path: str
    detail: str
    fixed: bool = False


class Checks:
    """What ``kiroku vault check`` and the recorder's start-up run."""

    def check(self, *, repair: bool = False, live: bool = False) -> list[Finding]:
        """Files and index, compared; with ``repair``, made to agree without losing a complete segment.

        ``live``: the recorder is running, so a recording without an end is the one being
        made, and its folder is still being written — a ``recording`` finding, not a fault."""
        findings: list[Finding] = []
        # The files before the index: a segment the recorder seals meanwhile is then indexed
        # and on disk by the time it is looked at, not an orphan.
        on_disk = {str(p.relative_to(self.data_dir)) for p in self.segments_root.glob("*/*/*/*.age")}
        with self._lock:
            rows = {r[0]: r for r in self.db.execute(
                "SELECT path, size, sha256, erased_at, id, record_class, key_day FROM segments")}
            open_recs = self.db.execute(
                "SELECT r.id, (SELECT max(end_wall_us) FROM segments s WHERE s.recording_id = r.id)"
                " FROM recordings r WHERE r.ended_wall_us IS NULL").fetchall()
        in_progress = {rec_id for rec_id, _ in open_recs} if live and not repair else set()

        def being_written(rel: str) -> bool:
            return Path(rel).parent.name in in_progress

        for part in sorted(self.segments_root.glob("*/*/*/*.part")):
            if being_written(str(part.relative_to(self.data_dir))):
                continue
            f = Finding("part", str(part.relative_to(self.data_dir)), "a segment left unfinished by a crash")
            if repair:
                part.unlink()
                part.with_name(part.name.removesuffix(".age.part") + ".json").unlink(missing_ok=True)
                f.fixed = True
            findings.append(f)
        for rel in sorted(on_disk - set(rows)):
            if not being_written(rel):
                findings.append(self._orphan(rel, repair))
        for rel, (_path, size, sha, erased, seg_id, cls, day) in sorted(rows.items()):
            full = self.data_dir / rel
            if erased:
                if full.exists():
                    f = Finding("unfinished", rel, "erased in the index but still on disk (an interrupted overwrite)")
                    if repair:
                        self._erase_file(full)
                        f.fixed = True
                    findings.append(f)
                continue
            if rel not in on_disk and not full.exists():
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
        with self._lock:  # the index against the log that committed it: nothing here repairs that
            findings += [Finding("log", d.subject, ("UNDER HOLD: " if d.held else "") + d.detail)
                         for d in vouch.compare(self.db)]
        for rec_id, last_end in open_recs:
            if rec_id in in_progress:
                findings.append(Finding("recording", rec_id, "being recorded now (in progress)"))
                continue
            f = Finding("unfinished", rec_id, "a recording without an end (the recorder stopped unexpectedly)")
            if repair:
                end = last_end or self._now()
                with self.transaction() as conn:
                    self._close_open(conn, rec_id, end, repaired=True)
                f.fixed = True
            findings.append(f)
        if repair and any(f.fixed for f in findings):
            self.audit("recorder", "vault.repair", detail={
                "fixed": [{"kind": f.kind, "path": f.path} for f in findings if f.fixed]})
        return findings

    def _close_open(self, conn, rec_id: str, end: int, **how) -> None:
        """End a recording its recorder left open, at ``end``: its call (if it is one) ends
        there too, answered or not as it was, and its kept dialog goes (nothing takes it up)."""
        conn.execute("UPDATE recordings SET ended_wall_us = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                     (end, iso(end), "the recorder stopped unexpectedly", rec_id))
        conn.execute(
            "UPDATE calls SET ended_wall_us = ?, end_reason = 'recorder_stopped',"
            " talk_ms = CASE WHEN answered_wall_us IS NULL THEN 0 ELSE max(0, (? - answered_wall_us) / 1000) END,"
            " disposition = coalesce(disposition, CASE WHEN answered_wall_us IS NULL THEN 'failed'"
            " ELSE 'answered' END) WHERE recording_id = ? AND ended_wall_us IS NULL", (end, end, rec_id))
        conn.execute("DELETE FROM call_dialogs WHERE recording_id = ?", (rec_id,))
        self.audit_log.append(conn, actor="recorder", action="recording.stop", subject=rec_id,
                              detail={"reason": "the recorder stopped unexpectedly", **how})

    def close_left_call(self, rec_id: str) -> None:
        """A call whose kept dialog cannot be taken up: closed at its last sealed segment."""
        with self._lock:
            end = self.db.execute("SELECT coalesce(max(s.end_wall_us), r.started_wall_us) FROM recordings r"
                                  " LEFT JOIN segments s ON s.recording_id = r.id WHERE r.id = ?", (rec_id,)).fetchone()[0]
        with self.transaction() as conn:
            self._close_open(conn, rec_id, end, recovered=True)

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
                "SELECT path FROM segments WHERE erased_at IS NOT NULL ORDER BY id DESC LIMIT ?", (4 * ERASE_BATCH,))]
            destroyed = self.db.execute("SELECT record_class, day FROM day_keys WHERE destroyed_at IS NOT NULL").fetchall()
            # a call whose dialog is kept goes on when its recorder starts again (Vault.call_dialogs)
            going_on = {r[0] for r in self.db.execute("SELECT recording_id FROM call_dialogs")}
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
            if rec_id in going_on:
                findings.append(Finding("recording", rec_id, "a call in progress when its recorder stopped: it goes on"
                                                             " when the call recorder starts"))
                continue
            end = self.db.execute("SELECT max(end_wall_us) FROM segments WHERE recording_id = ?", (rec_id,)).fetchone()[0]
            if not (end or last_end) and cls == "call":  # a call that never got audio ends where it began
                end = self.db.execute("SELECT started_wall_us FROM recordings WHERE id = ?", (rec_id,)).fetchone()[0]
            end = end or last_end or self._now()
            with self.transaction() as conn:
                self._close_open(conn, rec_id, end, recovered=True)
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
        committed = self.db.execute("SELECT seq, detail FROM audit WHERE action = 'segment.sealed' AND subject = ?"
                                    " ORDER BY seq DESC LIMIT 1", (rel,)).fetchone()
        if committed is not None and vouch.commits(json.loads(committed[1]), info):
            # Its row went, its entry did not: the log says what the row was (vouch.py).
            f.detail += f" (complete, and committed by log entry {committed[0]}: its row was removed)"
        else:
            committed = None
            f.detail += " (complete: the crash came between the rename and the index)"
        if repair:
            with self.transaction() as conn:
                self._insert_segment(conn, info, committed_by=committed[0] if committed else None)
                self.audit_log.append(conn, actor="recorder", action="vault.reindex", subject=info.recording_id,
                                      detail={"seq": info.seq, "path": rel,
                                              "restored_from_entry": committed[0] if committed else None})
            f.fixed = True
        return f

    def _mark_lost(self, seg_id: int, rel: str, reason: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE segments SET erased_at = ?, erase_reason = ? WHERE id = ?",
                         (iso(self._now()), reason, seg_id))
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
