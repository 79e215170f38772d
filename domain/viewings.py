"""Viewing sessions (Art. 8(2)): the manager unlocks, the requester watches the approved
scope — and only that.

- Unlocking: the manager types their passphrase; their key opens the day keys the approved
  segments are sealed to, and is then forgotten. The day keys live only in memory, in the
  viewing (a :class:`Registry`, one per web application), until it closes: at the
  approval's window end, when the manager closes it, when the viewer logs out or their
  session expires. Nothing decrypted is written anywhere: each part is decrypted in memory
  when the player asks for it and cut to the approved range without re-encoding when a
  segment straddles its edge.
- The first part asked for is logged as the start of viewing, any jump as a seek; both
  before a byte of footage leaves.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from domain import keys
from domain import requests as requests_
from domain.db import column
from domain.errors import Gone, NotFound, Refused, refuse
from firmware.media.cut import trim
from firmware.media.mp4 import open_segment
from firmware.vault import age


@dataclass
class Part:
    n: int
    path: str
    key: tuple[str, str]  # (record class, day)
    start_s: float  # position on the viewing's timeline
    duration_s: float
    wall_start: str
    cut_from_s: float  # within the segment: keep [cut_from, cut_to)
    cut_to_s: float | None  # None: to the segment's end
    track: int = 0  # which of the viewing's tracks it plays on (see scope_parts)
    place: str = ""  # its device's place (at the hub), to label its track

    @property
    def trimmed(self) -> bool:
        return self.cut_from_s > 0 or self.cut_to_s is not None


@dataclass
class Viewing:
    id: str
    request_id: int
    number: str
    purpose: str
    viewer_id: int
    closes_at: float
    parts: list[Part]
    recording_ids: list[str] = field(default_factory=list)
    day_keys: dict = field(default_factory=dict)
    last_part: int | None = None
    session_id: str | None = None  # the viewer's session that first opened it; it ends with that session
    lock: threading.Lock = field(default_factory=threading.Lock)


class Registry:
    """The open viewings of one web application, with their day keys: in memory only."""

    def __init__(self):
        self._open: dict[str, Viewing] = {}
        self._lock = threading.Lock()

    def _forget(self, viewing_id: str) -> Viewing | None:
        with self._lock:
            viewing = self._open.pop(viewing_id, None)
        if viewing is not None:
            viewing.day_keys = {}  # the only references to the day keys: they go with the viewing
        return viewing

    def close(self, ctx, viewing_id: str, reason: str, actor: str | None = None) -> None:
        """End a viewing: drop its keys, record why, and log it."""
        viewing = self._forget(viewing_id)
        changed = ctx.db.execute("UPDATE viewings SET closed_at = ?, close_reason = ? WHERE id = ?"
                                 " AND closed_at IS NULL", (time.time(), reason, viewing_id)).rowcount
        if changed:
            row = ctx.db.one("SELECT q.number, q.purpose FROM viewings v JOIN requests q ON q.id = v.request_id"
                             " WHERE v.id = ?", (viewing_id,))
            ctx.log("viewing.close", subject=row["number"], purpose=row["purpose"], actor=actor,
                    detail={"reason": reason, "keys_dropped": viewing is not None})

    def close_for_request(self, ctx, request_id: int, reason: str) -> None:
        for row in ctx.db.all("SELECT id FROM viewings WHERE request_id = ? AND closed_at IS NULL", (request_id,)):
            self.close(ctx, row["id"], reason)

    def drop_keys_of_session(self, ctx, sid: str) -> None:
        """A session ended (log-out, idle, expiry): the viewings opened in it end with it."""
        with self._lock:
            bound = [v.id for v in self._open.values() if v.session_id == sid]
        for viewing_id in bound:
            self.close(ctx, viewing_id, "viewer's session ended")

    def add(self, viewing: Viewing) -> None:
        with self._lock:
            self._open[viewing.id] = viewing

    def claim(self, viewing_id: str, viewer_id: int, session_id: str | None) -> Viewing | None:
        """The open viewing ``viewing_id``; the first time its viewer asks, it is bound to the
        session they ask from."""
        with self._lock:
            viewing = self._open.get(viewing_id)
            if viewing is not None and viewing.viewer_id == viewer_id and viewing.session_id is None:
                viewing.session_id = session_id
        return viewing

    def clear(self) -> None:
        with self._lock:
            self._open.clear()

    def sweep(self, ctx, idle: float) -> None:
        """Close viewings whose window has ended or whose viewer's session is over, even if no
        one touches them again (the web process runs this every half minute)."""
        with self._lock:
            viewings = list(self._open.values())
        now = time.time()
        for v in viewings:
            reason = None
            if now >= v.closes_at:
                reason = "window ended"
            elif v.session_id is not None:
                row = ctx.db.one("SELECT ended_at, last_seen FROM sessions WHERE id = ?", (v.session_id,))
                if row is None or row["ended_at"] is not None or now - row["last_seen"] > idle:
                    reason = "viewer's session ended"
            if reason:
                self.close(ctx, v.id, reason, actor="web")


def _when(wall_us: int) -> str:
    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone().isoformat(timespec="milliseconds")


def track_of(row) -> tuple[str, str]:
    """A segment's track: its device (at the hub, where a scope can span several) and its record
    class. Counter footage and a call of one case play side by side, each on a timeline of its
    own, never one after the other in a single player."""
    return (column(row, "device"), row["record_class"])


def scope_parts(ctx, decision) -> list[Part]:
    """The kept segments of the approved recordings that overlap the approved time range, each
    placed on its track's timeline."""
    ids = json.loads(decision["scope_recording_ids"])
    start, end = decision["scope_start_wall_us"], decision["scope_end_wall_us"]
    parts, tracks, position = [], {}, {}
    for n, r in enumerate(ctx.recordings.segments_in(ids, start, end)):
        track = tracks.setdefault(track_of(r), len(tracks))
        cut_from = max(0, start - r["start_wall_us"]) / 1e6
        cut_to = (min(end, r["end_wall_us"]) - r["start_wall_us"]) / 1e6
        at = position.get(track, 0.0)
        parts.append(Part(n, r["path"], (r["record_class"], r["key_day"]), at, cut_to - cut_from,
                          _when(max(start, r["start_wall_us"])), cut_from,
                          cut_to if end < r["end_wall_us"] else None, track, column(r, "place")))
        position[track] = at + cut_to - cut_from
    return parts


def unlock(ctx, req, password: str) -> Viewing:
    """The manager opens the approved scope's day keys with their passphrase: the viewing for
    the requester begins, and ends with the approval's window."""
    if req["requester_id"] == ctx.actor.id:
        refuse("request.own", 403)
    decision = requests_.decision_of(ctx.db, req["id"])
    if req["status"] != "approved" or not requests_.valid_window(decision):
        refuse("viewing.not_approved", 409)
    identity = keys.unlock_for(ctx, password, subject=req["number"], purpose=req["purpose"])
    parts = scope_parts(ctx, decision)
    if not parts:
        refuse("viewing.nothing_in_scope", 409)
    day_keys = {}
    try:
        for part in parts:
            if part.key not in day_keys:
                day_keys[part.key] = ctx.keys.open_day_key(part.key[0], part.key[1], identity)
    except Exception as exc:  # a day key destroyed or not made for this manager
        ctx.log("key.unlock_failed", subject=req["number"], purpose=req["purpose"], detail={"error": str(exc)[:200]})
        if isinstance(exc, Refused):
            raise  # the keys' own words (at the hub: which device and day, and why)
        refuse("viewing.key_unavailable", 409)
    finally:
        del identity  # the manager's own key is not kept: only the day keys of this scope
    viewing_id = secrets.token_urlsafe(24)
    closes_at = decision["valid_until"]
    scope_ids = json.loads(decision["scope_recording_ids"])
    ctx.log("key.unlock", subject=req["number"], purpose=req["purpose"],
            detail={"day_keys": [f"{c}/{d}" for c, d in day_keys], "segments": len(parts), "recordings": scope_ids})
    registry = ctx.viewings
    for old in ctx.db.all("SELECT id FROM viewings WHERE request_id = ? AND closed_at IS NULL", (req["id"],)):
        registry.close(ctx, old["id"], "replaced by a new unlock")
    viewing = Viewing(viewing_id, req["id"], req["number"], req["purpose"], req["requester_id"], closes_at, parts,
                      scope_ids, day_keys)
    with ctx.db.transaction() as db:
        if db.scalar("SELECT status FROM requests WHERE id = ?", (req["id"],)) != "approved":
            refuse("viewing.not_approved", 409)  # closed meanwhile
        db.execute("INSERT INTO viewings (id, request_id, unlocked_by, viewer_id, opened_at, closes_at)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (viewing_id, req["id"], ctx.actor.id, req["requester_id"], time.time(),
                                                  closes_at))
        registry.add(viewing)
    return viewing


def close(ctx, viewing_id: str) -> int:
    """End a viewing now (its viewer or a manager): its keys are dropped. Returns its request's id."""
    row = ctx.db.one("SELECT v.*, q.number, q.purpose FROM viewings v JOIN requests q ON q.id = v.request_id"
                     " WHERE v.id = ?", (viewing_id,))
    if row is None:
        raise NotFound(f"viewing {viewing_id}")
    if not (ctx.actor.is_manager or row["viewer_id"] == ctx.actor.id):
        ctx.refused("viewing.close", row["number"])
        raise NotFound(f"viewing {viewing_id}")
    ctx.viewings.close(ctx, viewing_id, "closed by " + ctx.actor.username)
    return row["request_id"]


def own(ctx, viewing_id: str, session_id: str | None) -> Viewing:
    """The viewer's own, open viewing, in the session that first opened it — or NotFound
    (never a hint that another one exists); Gone once its window has ended."""
    viewing = ctx.viewings.claim(viewing_id, ctx.actor.id, session_id)
    if viewing is None:
        raise NotFound(f"viewing {viewing_id}")
    if viewing.viewer_id != ctx.actor.id or viewing.session_id != session_id:
        ctx.refused("viewing", viewing.number)  # someone else's, or another browser's
        raise NotFound(f"viewing {viewing_id}")
    if time.time() >= viewing.closes_at:
        ctx.viewings.close(ctx, viewing_id, "window ended")
        raise Gone(f"viewing {viewing_id}")
    return viewing


def timeline(ctx, viewing: Viewing) -> dict:
    """The viewing's timeline: its parts, their lengths and wall-clock starts, and the codecs —
    and, where the scope spans several tracks (a counter's footage and a call, at the hub), each
    track with its own parts, codecs and duration, to be played side by side. The top level
    then describes the first track, so a single-track player still plays it."""
    tracks = []
    for number in sorted({p.track for p in viewing.parts}):
        parts = [p for p in viewing.parts if p.track == number]
        tracks.append({
            "track": number, "codecs": codecs(ctx, viewing, parts[0]), "sound_only": parts[0].key[0] == "call",
            "device": _device_of(parts[0]), "place": parts[0].place, "duration": round(sum(p.duration_s for p in parts), 3),
            "parts": [{"n": p.n, "start": round(p.start_s, 3), "duration": round(p.duration_s, 3),
                       "wall": p.wall_start, "track": p.track} for p in parts]})
    first = tracks[0] if tracks else {"codecs": "", "duration": 0.0, "parts": []}
    return {"number": viewing.number, "closes_at": viewing.closes_at, "codecs": first["codecs"],
            "duration": first["duration"], "parts": first["parts"], "tracks": tracks}


def _device_of(part: Part) -> str:
    """The device a part's day key belongs to, at the hub (``DEVICE/DAY``); "" on a device."""
    return part.key[1].split("/", 1)[0] if "/" in part.key[1] else ""


def part(ctx, viewing: Viewing, n: int) -> tuple[bytes, float]:
    """Part ``n`` as a fragmented MP4 decrypted in memory and cut to the scope, with where on
    the timeline it starts (``b""`` when no keyframe lies inside the scope). Its play or seek
    is logged first: if the log cannot be written, nothing is shown."""
    if not 0 <= n < len(viewing.parts):
        raise NotFound(f"part {n}")
    p = viewing.parts[n]
    with viewing.lock:
        previous = viewing.last_part
        detail = {"at": p.wall_start, "recordings": viewing.recording_ids}
        if previous is None:
            ctx.log("view.play", subject=viewing.number, purpose=viewing.purpose, detail=detail)
        elif n not in (previous, previous + 1):
            ctx.log("view.seek", subject=viewing.number, purpose=viewing.purpose,
                    detail={**detail, "from_part": previous, "to_part": n})
        viewing.last_part = n
    data = decrypted(ctx, viewing, p)
    start = p.start_s
    if p.trimmed:
        data, begins = trim(data, p.cut_from_s, p.cut_to_s)
        if not data:
            return b"", start  # no keyframe inside the range: nothing to show without showing more
        start += begins - p.cut_from_s  # the cut starts at a keyframe, a little after the range does
    return data, start


def decrypted(ctx, viewing: Viewing, p: Part) -> bytes:
    key = viewing.day_keys.get(p.key)
    if key is None:
        raise Gone(f"viewing {viewing.id}")  # closed while this request was on its way
    return age.decrypt(ctx.recordings.read_sealed(p.path), [key])  # verified whole before it is returned


def codecs(ctx, viewing: Viewing, first: Part | None = None) -> str:
    """The MSE codec string of a track's first part (the camera's profile and level)."""
    first = first or (viewing.parts[0] if viewing.parts else None)
    data = decrypted(ctx, viewing, first) if first is not None else b""
    with open_segment(data) as c:
        if not c.streams.video:  # a call: sound only
            return "mp4a.40.2"
        extradata = c.streams.video[0].codec_context.extradata or b"\x01\x42\xc0\x1e"
        result = "avc1.%02x%02x%02x" % (extradata[1], extradata[2], extradata[3])
        if c.streams.audio:
            result += ", mp4a.40.2"
    return result
