"""Viewing sessions (Art. 8(2)): the manager unlocks, the section head watches the approved
scope — and only that — in the browser.

- Unlocking: the manager types their passphrase; their key opens the day keys the
  approved segments are sealed to, and is then forgotten. The day keys live only in
  this process's memory, in the viewing session, until it closes: at the approval's
  window end, when the manager closes it, when the viewer logs out or their session
  expires. Nothing decrypted is written anywhere: each part is decrypted in memory when
  the player asks for it, cut to the approved range without re-encoding when a segment
  straddles its edge, and streamed.
- The player (``static/player.js``) appends the parts to a Media Source; seeking fetches
  the part that holds the time asked for. The server sees which parts are asked for:
  the first is logged as the start of viewing, any jump as a seek.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, url_for

from firmware.media.cut import trim
from webui import auth, keys
from webui.actions import done, fields, refuse
from webui.db import get_db, transaction, vault_db
from webui.permissions import MANAGER, SECTION_HEAD, permission

bp = Blueprint("viewing", __name__)


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
    data_dir: str = ""  # the device whose footage it is (one web process serves one; tests run several)
    lock: threading.Lock = field(default_factory=threading.Lock)


_open: dict[str, Viewing] = {}
_registry_lock = threading.Lock()


def _forget(viewing_id: str) -> Viewing | None:
    with _registry_lock:
        viewing = _open.pop(viewing_id, None)
    if viewing is not None:
        viewing.day_keys = {}  # the only references to the day keys: they go with the viewing
    return viewing


def _close(viewing_id: str, reason: str, db=None, actor: str | None = None) -> None:
    """End a viewing: drop its keys, record why, and log it."""
    db = db or get_db()
    viewing = _forget(viewing_id)
    changed = db.execute("UPDATE viewings SET closed_at = ?, close_reason = ? WHERE id = ? AND closed_at IS NULL",
                         (time.time(), reason, viewing_id)).rowcount
    if changed:
        row = db.execute("SELECT q.number, q.purpose FROM viewings v JOIN requests q ON q.id = v.request_id"
                         " WHERE v.id = ?", (viewing_id,)).fetchone()
        auth.audit("viewing.close", subject=row["number"], purpose=row["purpose"], actor=actor,
                   detail={"reason": reason, "keys_dropped": viewing is not None})


def close_for_request(request_id: int, reason: str) -> None:
    for row in get_db().execute("SELECT id FROM viewings WHERE request_id = ? AND closed_at IS NULL", (request_id,)):
        _close(row["id"], reason)


def drop_keys_of_session(sid: str) -> None:
    """A session ended (log-out, idle, expiry): the viewings opened in it end with it."""
    with _registry_lock:
        bound = [v.id for v in _open.values() if v.session_id == sid]
    for viewing_id in bound:
        _close(viewing_id, "viewer's session ended")


def sweep(app) -> None:
    """Close viewings whose window has ended or whose viewer's session is over, even if no
    one touches them again (run every half minute by the web process)."""
    from webui.auth import IDLE
    from webui.db import connect

    with _registry_lock:
        viewings = [v for v in _open.values() if v.data_dir == str(app.config["KIROKU_DATA"])]
    if not viewings:
        return
    db = connect(app.config["KIROKU_DATA"])
    try:
        with app.app_context():
            now = time.time()
            for v in viewings:
                reason = None
                if now >= v.closes_at:
                    reason = "window ended"
                elif v.session_id is not None:
                    row = db.execute("SELECT ended_at, last_seen FROM sessions WHERE id = ?", (v.session_id,)).fetchone()
                    if row is None or row["ended_at"] is not None or now - row["last_seen"] > IDLE:
                        reason = "viewer's session ended"
                if reason:
                    _close(v.id, reason, db=db, actor="web")
    finally:
        db.close()


def start_sweeper(app, every: float = 30.0) -> threading.Thread:
    def loop():
        while not _stop_sweeper.wait(every):
            try:
                sweep(app)
            except Exception:  # the next round tries again
                import logging

                logging.getLogger(__name__).exception("viewing sweep failed")

    thread = threading.Thread(target=loop, name="viewing-sweeper", daemon=True)
    thread.start()
    return thread


_stop_sweeper = threading.Event()


def _scope_parts(decision) -> list[Part]:
    """The kept segments of the approved recordings that overlap the approved time range."""
    vdb = vault_db()
    if vdb is None:
        return []
    ids = json.loads(decision["scope_recording_ids"])
    start, end = decision["scope_start_wall_us"], decision["scope_end_wall_us"]
    marks = ",".join("?" * len(ids))
    rows = vdb.execute(
        f"SELECT path, record_class, key_day, start_wall_us, end_wall_us FROM segments"
        f" WHERE recording_id IN ({marks}) AND erased_at IS NULL AND start_wall_us < ? AND end_wall_us > ?"
        f" ORDER BY start_wall_us", (*ids, end, start)).fetchall()
    parts, position = [], 0.0
    for n, r in enumerate(rows):
        cut_from = max(0, start - r["start_wall_us"]) / 1e6
        cut_to = (min(end, r["end_wall_us"]) - r["start_wall_us"]) / 1e6
        parts.append(Part(n, r["path"], (r["record_class"], r["key_day"]), position, cut_to - cut_from,
                          _when(max(start, r["start_wall_us"])), cut_from,
                          cut_to if end < r["end_wall_us"] else None))
        position += cut_to - cut_from
    return parts


def _when(wall_us: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone().isoformat(timespec="milliseconds")


@bp.post("/requests/<int:request_id>/unlock")
@permission(MANAGER)
def unlock(request_id: int):
    """The manager opens the approved scope's day keys with their passphrase: the viewing
    session for the requester begins, and ends with the approval's window."""
    from webui.requests import load, valid_window

    req = load(request_id)
    back = url_for("requests.show", request_id=request_id)
    if req["requester_id"] == g.user.id:
        refuse("request.own", 403, back=back)
    decision = get_db().execute("SELECT * FROM decisions WHERE request_id = ?", (request_id,)).fetchone()
    if req["status"] != "approved" or not valid_window(decision):
        refuse("viewing.not_approved", 409, back=back)
    identity = keys.unlock_for(fields().get("password") or "", subject=req["number"], purpose=req["purpose"],
                               back=back)
    parts = _scope_parts(decision)
    if not parts:
        refuse("viewing.nothing_in_scope", 409, back=back)
    store = keys.keystore()
    day_keys = {}
    try:
        for part in parts:
            if part.key not in day_keys:
                day_keys[part.key] = store.open_day_key(part.key[0], part.key[1], identity)
    except Exception as exc:  # a day key destroyed or not made for this manager
        auth.audit("key.unlock_failed", subject=req["number"], purpose=req["purpose"], detail={"error": str(exc)[:200]})
        refuse("viewing.key_unavailable", 409, back=back)
    finally:
        del identity  # the manager's own key is not kept: only the day keys of this scope
    viewing_id = secrets.token_urlsafe(24)
    closes_at = decision["valid_until"]
    auth.audit("key.unlock", subject=req["number"], purpose=req["purpose"],
               detail={"day_keys": [f"{c}/{d}" for c, d in day_keys], "segments": len(parts),
                       "recordings": json.loads(decision["scope_recording_ids"])})
    for old in get_db().execute("SELECT id FROM viewings WHERE request_id = ? AND closed_at IS NULL", (request_id,)):
        _close(old["id"], "replaced by a new unlock")
    with transaction(get_db()) as db:
        if db.execute("SELECT status FROM requests WHERE id = ?", (request_id,)).fetchone()[0] != "approved":
            refuse("viewing.not_approved", 409, back=back)  # closed meanwhile
        db.execute("INSERT INTO viewings (id, request_id, unlocked_by, viewer_id, opened_at, closes_at)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (viewing_id, request_id, g.user.id, req["requester_id"], time.time(),
                                                  closes_at))
        with _registry_lock:
            _open[viewing_id] = Viewing(viewing_id, request_id, req["number"], req["purpose"], req["requester_id"],
                                        closes_at, parts, json.loads(decision["scope_recording_ids"]), day_keys,
                                        data_dir=str(current_app.config["KIROKU_DATA"]))
    return done(back, code=201, notice="viewing.opened", id=viewing_id, request_id=request_id, closes_at=closes_at,
                segments=len(parts))


@bp.post("/viewings/<viewing_id>/close")
@permission(MANAGER, SECTION_HEAD)
def close(viewing_id: str):
    """End a viewing now: its keys are dropped."""
    row = get_db().execute("SELECT v.*, q.number, q.purpose FROM viewings v JOIN requests q ON q.id = v.request_id"
                           " WHERE v.id = ?", (viewing_id,)).fetchone()
    if row is None:
        abort(404)
    if not (g.user.is_manager or row["viewer_id"] == g.user.id):
        auth.audit_refusal("viewing.close", subject=row["number"])
        abort(404)
    _close(viewing_id, "closed by " + g.user.username)
    return done(url_for("requests.show", request_id=row["request_id"]), closed=viewing_id)


def _viewing(viewing_id: str) -> Viewing:
    """The viewer's own, open viewing, in the session that first opened it — or 404
    (never a hint that another one exists)."""
    with _registry_lock:
        viewing = _open.get(viewing_id)
        if viewing is not None and viewing.viewer_id == g.user.id and viewing.session_id is None:
            viewing.session_id = g.session_id
    if viewing is None:
        abort(404)
    if viewing.viewer_id != g.user.id or viewing.session_id != g.session_id:
        auth.audit_refusal("viewing", subject=viewing.number)  # someone else's, or another browser's
        abort(404)
    if time.time() >= viewing.closes_at:
        _close(viewing_id, "window ended")
        abort(410)
    return viewing


@bp.get("/viewings/<viewing_id>")
@permission(SECTION_HEAD)
def player(viewing_id: str):
    viewing = _viewing(viewing_id)
    return render_template("viewing/player.html", viewing=viewing)


@bp.get("/viewings/<viewing_id>/manifest.json")
@permission(SECTION_HEAD)
def manifest(viewing_id: str):
    """The viewing's timeline: its parts, their lengths and wall-clock starts."""
    viewing = _viewing(viewing_id)
    return jsonify({
        "number": viewing.number, "closes_at": viewing.closes_at, "codecs": _codecs(viewing),
        "duration": round(sum(p.duration_s for p in viewing.parts), 3),
        "parts": [{"n": p.n, "start": round(p.start_s, 3), "duration": round(p.duration_s, 3), "wall": p.wall_start}
                  for p in viewing.parts],
    })


@bp.get("/viewings/<viewing_id>/part/<int:n>.mp4")
@permission(SECTION_HEAD)
def part(viewing_id: str, n: int):
    """Part n of the timeline as a fragmented MP4, decrypted in memory and cut to the scope
    (204 when no keyframe lies inside it). The first play and every jump are logged."""
    viewing = _viewing(viewing_id)
    if not 0 <= n < len(viewing.parts):
        abort(404)
    p = viewing.parts[n]
    with viewing.lock:
        previous = viewing.last_part
        # Logged before a byte of footage leaves: if the log cannot be written, nothing is shown.
        detail = {"at": p.wall_start, "recordings": viewing.recording_ids}
        if previous is None:
            auth.audit("view.play", subject=viewing.number, purpose=viewing.purpose, detail=detail)
        elif n not in (previous, previous + 1):
            auth.audit("view.seek", subject=viewing.number, purpose=viewing.purpose,
                       detail={**detail, "from_part": previous, "to_part": n})
        viewing.last_part = n
    data = _decrypted(viewing, p)
    start = p.start_s
    if p.trimmed:
        data, begins = trim(data, p.cut_from_s, p.cut_to_s)
        if not data:
            return Response(status=204)  # no keyframe inside the range: nothing to show without showing more
        start += begins - p.cut_from_s  # the cut starts at a keyframe, a little after the range does
    response = Response(data, mimetype="video/mp4")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Kiroku-Start"] = f"{start:.3f}"
    return response


def _decrypted(viewing: Viewing, p: Part) -> bytes:
    from pathlib import Path

    from firmware.vault import age

    key = viewing.day_keys.get(p.key)
    if key is None:
        abort(410)  # closed while this request was on its way
    sealed = (Path(current_app.config["KIROKU_DATA"]) / p.path).read_bytes()
    return age.decrypt(sealed, [key])  # verified whole before it is returned


def _codecs(viewing: Viewing) -> str:
    """The MSE codec string of the scope's first part (the camera's profile and level)."""
    from firmware.media.mp4 import open_segment

    data = _decrypted(viewing, viewing.parts[0]) if viewing.parts else b""
    with open_segment(data) as c:
        if not c.streams.video:  # a call: sound only
            return "mp4a.40.2"
        extradata = c.streams.video[0].codec_context.extradata or b"\x01\x42\xc0\x1e"
        codecs = "avc1.%02x%02x%02x" % (extradata[1], extradata[2], extradata[3])
        if c.streams.audio:
            codecs += ", mp4a.40.2"
    return codecs
