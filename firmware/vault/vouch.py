"""The index and the audit log vouch for each other.

The audit log is a Merkle tree whose every checkpoint the device signs, so an entry cannot be
changed or taken out of the middle without the change showing. Its *end* is another matter:
cut the log short and rebuild ``audit_state`` from the remaining leaves, and what is left is a
perfectly good log of fewer entries. A witness off the device (the city hub) catches that; on
the device, the index is the witness. Every row of evidence is committed by an entry in the
same transaction, and carries that entry's sequence number (``audit_seq``, migration 0003):

    segments    segment.sealed   its path, size, SHA-256, times, day key — the file's identity
    recordings  recording.start  subject: the recording's id
    holds       hold.create      detail.hold: the hold's id (or incident.mark: the recording)
    day_keys    key.day_created  subject: CLASS/DAY

So a log shorter than what the index refers to, an index row that differs from the entry that
committed it (a segment swapped, copied over another or relabelled into another time), a
committed row that has gone (a whole recording deleted, files and rows) and a row that no
entry committed are each named here, by ``kiroku audit verify`` (and the audit page) and by
``kiroku vault check``. Rows indexed before version 3 carry no sequence number; the
``index.committed`` entry the upgrade wrote says up to which row id that is allowed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

SEGMENT_FIELDS = {  # the segment.sealed entry's detail → the segments column it vouches for
    "recording": "recording_id", "seq": "seq", "path": "path", "class": "record_class", "day": "key_day",
    "start_wall_us": "start_wall_us", "end_wall_us": "end_wall_us", "size": "size", "sha256": "sha256",
}
TABLES = ("recordings", "segments", "holds", "day_keys")
MARKER = "index.committed"


@dataclass
class Discrepancy:
    """One way the index and the log disagree."""

    kind: str  # cut | differs | missing | uncommitted
    subject: str
    detail: str
    held: bool = False  # it concerns a recording a hold was placed on

    def __str__(self) -> str:
        return f"{self.subject}: {self.detail}"


def segment_detail(info) -> dict:
    """What a segment.sealed entry commits of a segment (a ``SegmentInfo``): the fields the
    index's row is checked against (``SEGMENT_FIELDS``), and what else an export needs to cut
    it (its sensor times, frames and samples, clock and boot) — so that the city hub, which
    witnesses the log, can cut an export from the evidence locker's copy without the device."""
    return {"recording": info.recording_id, "seq": info.seq, "path": info.path, "class": info.record_class,
            "day": info.key_day, "start_wall_us": info.start_wall_us, "end_wall_us": info.end_wall_us,
            "size": info.bytes, "sha256": info.sha256, "start_us": info.start_us, "end_us": info.end_us,
            "frames": info.video_frames, "samples": info.audio_samples, "audio": info.has_audio,
            "synced": info.clock_synchronised, "boot": info.boot_id}


def commits(detail: dict, info) -> bool:
    """Whether a segment.sealed entry's ``detail`` commits this segment: every field it states
    is the segment's, and it states at least those the index is checked against (an entry
    written before the export fields were added states only those)."""
    mine = segment_detail(info)
    return set(SEGMENT_FIELDS) <= detail.keys() and all(mine.get(k) == v for k, v in detail.items())


def legacy_marker(conn: sqlite3.Connection) -> dict:
    """The row ids up to which rows may lack a sequence number (made before version 3), per table."""
    row = conn.execute("SELECT detail FROM audit WHERE action = ? ORDER BY seq LIMIT 1", (MARKER,)).fetchone()
    detail = json.loads(row[0]) if row else {}
    return {t: int(detail.get(t) or 0) for t in TABLES}


def marker_detail(conn: sqlite3.Connection) -> dict:
    """For the ``index.committed`` entry an upgrade writes: the last row of each table now."""
    return {t: conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {t}").fetchone()[0] for t in TABLES}


def _has_columns(conn: sqlite3.Connection) -> bool:
    return any(r[1] == "audit_seq" for r in conn.execute("PRAGMA table_info(segments)"))


def _log_size(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq) + 1, 0) FROM audit").fetchone()[0]


def _describe(table: str, row) -> str:
    return {"recordings": f"recording {row[1]}", "segments": f"segment {row[1]}", "holds": f"hold {row[1]}",
            "day_keys": f"day key {row[1]}"}[table]


_KEYS = {  # how each table's row is named: rowid, name, audit_seq
    "recordings": "SELECT rowid, id, audit_seq FROM recordings",
    "segments": "SELECT rowid, path, audit_seq FROM segments",
    "holds": "SELECT rowid, id, audit_seq FROM holds",
    "day_keys": "SELECT rowid, record_class || '/' || day, audit_seq FROM day_keys",
}


def _references(conn: sqlite3.Connection, size: int, limit: int | None) -> list[Discrepancy]:
    """Rows that refer past the log's end, and rows no entry committed."""
    found: list[Discrepancy] = []
    legacy = legacy_marker(conn)
    for table, query in _KEYS.items():
        cap = "" if limit is None else f" LIMIT {int(limit)}"
        for row in conn.execute(f"{query} WHERE audit_seq >= ? ORDER BY audit_seq{cap}", (size,)):
            found.append(Discrepancy("cut", _describe(table, row),
                                     f"committed by log entry {row[2]}, but the log ends at entry {size - 1}:"
                                     " entries were removed from its end"))
        for row in conn.execute(f"{query} WHERE audit_seq IS NULL AND rowid > ?{cap}", (legacy[table],)):
            found.append(Discrepancy("uncommitted", _describe(table, row),
                                     "in the index, but no log entry committed it (added behind the log's back)"))
    return found


def quick(conn: sqlite3.Connection) -> list[Discrepancy]:
    """What can be told cheaply (the recorder, at start and after each sweep): rows referring
    past the log's end, rows nothing committed, and committed segments missing from the index
    (by count). When something is found, :func:`compare` names it all."""
    if not _has_columns(conn):
        return []
    size = _log_size(conn)
    found = _references(conn, size, limit=20)
    entries = conn.execute("SELECT count(*) FROM audit WHERE action = 'segment.sealed'").fetchone()[0]
    rows = conn.execute("SELECT count(*) FROM segments WHERE audit_seq IS NOT NULL").fetchone()[0]
    if found or entries != rows:
        return compare(conn)
    return []


def compare(conn: sqlite3.Connection) -> list[Discrepancy]:
    """Every difference between the index and the log, each named."""
    if not _has_columns(conn):
        return []
    size = _log_size(conn)
    found = _references(conn, size, limit=None)
    entries = {seq: (action, subject, json.loads(detail)) for seq, action, subject, detail in conn.execute(
        "SELECT seq, action, subject, detail FROM audit WHERE action IN"
        " ('segment.sealed', 'recording.start', 'hold.create', 'incident.mark', 'key.day_created')")}
    held = {subject: seq for seq, (action, subject, detail) in entries.items()
            if action in ("hold.create", "incident.mark") and subject}

    def note(d: Discrepancy, recording: str) -> Discrepancy:
        if recording in held:
            d.held, d.detail = True, d.detail + f" — it was placed under a hold (entry {held[recording]})"
        return d

    # segments
    columns = ", ".join(SEGMENT_FIELDS.values())
    rows = {r[0]: r[1:] for r in conn.execute(
        f"SELECT audit_seq, {columns} FROM segments WHERE audit_seq IS NOT NULL AND audit_seq < ?", (size,))}
    for seq, values in rows.items():
        action, _subject, detail = entries.get(seq, (None, None, {}))
        path, recording = values[2], values[0]
        if action != "segment.sealed":
            found.append(note(Discrepancy("differs", f"segment {path}", f"its row names log entry {seq}, which"
                                          " did not commit a segment"), recording))
            continue
        differ = [key for key, value in zip(SEGMENT_FIELDS, values) if detail.get(key) != value]
        if differ:
            found.append(note(Discrepancy("differs", f"segment {path}", f"its row differs from log entry {seq}"
                                          f" in {', '.join(differ)} (the file or its row was replaced or"
                                          " relabelled)"), recording))
    for seq, (action, subject, detail) in entries.items():
        if action == "segment.sealed" and seq not in rows:
            found.append(note(Discrepancy("missing", f"segment {subject}",
                                          f"committed by log entry {seq} (recording {detail.get('recording')}),"
                                          " but not in the index"), detail.get("recording", "")))
    # recordings, holds and day keys: their rows still there, and each row's entry its own
    named = {
        "recordings": ("SELECT id, audit_seq FROM recordings", ("recording.start",),
                       lambda a, s, d: s),
        "holds": ("SELECT id, audit_seq FROM holds", ("hold.create", "incident.mark"),
                  lambda a, s, d: d.get("hold") if a == "hold.create" else None),
        "day_keys": ("SELECT record_class || '/' || day, audit_seq FROM day_keys", ("key.day_created",),
                     lambda a, s, d: s),
    }
    for table, (query, actions, key_of) in named.items():
        present = {r[0]: r[1] for r in conn.execute(query)}
        by_seq = {seq: name for name, seq in present.items() if seq is not None}
        for seq, name in by_seq.items():
            if seq >= size:
                continue  # named above: the log was cut
            action, subject, detail = entries.get(seq, (None, None, {}))
            if action not in actions or (key_of(action, subject, detail) not in (None, name)):
                found.append(Discrepancy("differs", _describe(table, (None, name)),
                                         f"its row names log entry {seq}, which did not commit it"))
        if table == "recordings":
            continue  # a recording's footage is its segments, each committed and looked for above
        for seq, (action, subject, detail) in entries.items():
            if action not in actions:
                continue
            name = key_of(action, subject, detail)
            if name is not None and name not in present:
                d = Discrepancy("missing", _describe(table, (None, name)),
                                f"committed by log entry {seq}, but not in the index")
                found.append(d)
    return found
