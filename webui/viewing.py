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

import io
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

from flask import Blueprint, Response, abort, flash, g, jsonify, redirect, render_template, request, url_for

from webui import auth, keys
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
    cut_to_s: float
    trimmed: bool


@dataclass
class Viewing:
    id: str
    request_id: int
    number: str
    purpose: str
    viewer_id: int
    closes_at: float
    parts: list[Part]
    day_keys: dict = field(default_factory=dict)
    last_part: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_open: dict[str, Viewing] = {}
_registry_lock = threading.Lock()


def _forget(viewing_id: str) -> None:
    with _registry_lock:
        viewing = _open.pop(viewing_id, None)
    if viewing is not None:
        viewing.day_keys.clear()  # the keys go with the session


def _close(viewing_id: str, reason: str) -> None:
    _forget(viewing_id)
    get_db().execute("UPDATE viewings SET closed_at = ?, close_reason = ? WHERE id = ? AND closed_at IS NULL",
                     (time.time(), reason, viewing_id))


def close_for_request(request_id: int, reason: str) -> None:
    for row in get_db().execute("SELECT id FROM viewings WHERE request_id = ? AND closed_at IS NULL", (request_id,)):
        _close(row["id"], reason)


def drop_keys_of_session(sid: str) -> None:
    """A viewer's session ended (log-out, idle, expiry): their viewings end with it."""
    row = get_db().execute("SELECT user_id FROM sessions WHERE id = ?", (sid,)).fetchone()
    if row is None:
        return
    for v in get_db().execute("SELECT id FROM viewings WHERE viewer_id = ? AND closed_at IS NULL", (row["user_id"],)):
        _close(v["id"], "viewer's session ended")


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
                          _when(max(start, r["start_wall_us"])), cut_from, cut_to,
                          trimmed=cut_from > 0 or r["start_wall_us"] + cut_to * 1e6 < r["end_wall_us"]))
        position += cut_to - cut_from
    return parts


def _when(wall_us: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone().isoformat(timespec="seconds")


@bp.post("/requests/<int:request_id>/unlock")
@permission(MANAGER)
def unlock(request_id: int):
    from webui.requests import load, valid_window

    req = load(request_id)
    decision = get_db().execute("SELECT * FROM decisions WHERE request_id = ?", (request_id,)).fetchone()
    if req["status"] != "approved" or not valid_window(decision):
        flash("viewing.not_approved", "error")
        return redirect(url_for("requests.show", request_id=request_id))
    try:
        identity = keys.unlock(g.user.username, request.form.get("password", ""))
    except keys.WrongPassphrase:
        auth.audit("key.unlock_failed", subject=req["number"], purpose=req["purpose"])
        flash("viewing.wrong_password", "error")
        return redirect(url_for("requests.show", request_id=request_id))
    parts = _scope_parts(decision)
    if not parts:
        flash("viewing.nothing_in_scope", "error")
        return redirect(url_for("requests.show", request_id=request_id))
    store = keys.keystore()
    day_keys = {}
    try:
        for part in parts:
            if part.key not in day_keys:
                day_keys[part.key] = store.open_day_key(part.key[0], part.key[1], identity)
    except Exception as exc:  # a day key destroyed or not made for this manager
        flash("viewing.key_unavailable", "error")
        auth.audit("key.unlock_failed", subject=req["number"], purpose=req["purpose"], detail={"error": str(exc)[:200]})
        return redirect(url_for("requests.show", request_id=request_id))
    finally:
        del identity  # the manager's own key is not kept: only the day keys of this scope
    viewing_id = secrets.token_urlsafe(24)
    closes_at = decision["valid_until"]
    with transaction(get_db()) as db:
        db.execute("UPDATE viewings SET closed_at = ?, close_reason = 'replaced' WHERE request_id = ? AND closed_at IS NULL",
                   (time.time(), request_id))
        db.execute("INSERT INTO viewings (id, request_id, unlocked_by, viewer_id, opened_at, closes_at)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (viewing_id, request_id, g.user.id, req["requester_id"], time.time(),
                                                  closes_at))
    with _registry_lock:
        for old in [k for k, v in _open.items() if v.request_id == request_id]:
            _open.pop(old)
        _open[viewing_id] = Viewing(viewing_id, request_id, req["number"], req["purpose"], req["requester_id"],
                                    closes_at, parts, day_keys)
    auth.audit("key.unlock", subject=req["number"], purpose=req["purpose"],
               detail={"day_keys": [f"{c}/{d}" for c, d in day_keys], "segments": len(parts)})
    flash("viewing.opened", "info")
    return redirect(url_for("requests.show", request_id=request_id))


@bp.post("/viewings/<viewing_id>/close")
@permission(MANAGER, SECTION_HEAD)
def close(viewing_id: str):
    row = get_db().execute("SELECT v.*, q.number, q.purpose FROM viewings v JOIN requests q ON q.id = v.request_id"
                           " WHERE v.id = ?", (viewing_id,)).fetchone()
    if row is None or not (g.user.is_manager or row["viewer_id"] == g.user.id):
        abort(404)
    _close(viewing_id, "closed by " + g.user.username)
    auth.audit("viewing.close", subject=row["number"], purpose=row["purpose"])
    return redirect(url_for("requests.show", request_id=row["request_id"]))


def _viewing(viewing_id: str) -> Viewing:
    """The viewer's own, open viewing — or 404 (never a hint that another one exists)."""
    with _registry_lock:
        viewing = _open.get(viewing_id)
    if viewing is None or viewing.viewer_id != g.user.id:
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
    viewing = _viewing(viewing_id)
    if not 0 <= n < len(viewing.parts):
        abort(404)
    p = viewing.parts[n]
    data = _decrypted(viewing, p)
    if p.trimmed:
        data = trim(data, p.cut_from_s, p.cut_to_s)
        if not data:
            return Response(status=204)  # no keyframe inside the range: nothing to show without showing more
    with viewing.lock:
        previous, viewing.last_part = viewing.last_part, n
    if previous is None:
        auth.audit("view.play", subject=viewing.number, purpose=viewing.purpose, detail={"at": p.wall_start})
    elif n not in (previous, previous + 1):
        auth.audit("view.seek", subject=viewing.number, purpose=viewing.purpose,
                   detail={"to": p.wall_start, "from_part": previous, "to_part": n})
    response = Response(data, mimetype="video/mp4")
    response.headers["Cache-Control"] = "no-store"
    return response


def _decrypted(viewing: Viewing, p: Part) -> bytes:
    from pathlib import Path

    from flask import current_app

    from firmware.vault import age

    sealed = (Path(current_app.config["KIROKU_DATA"]) / p.path).read_bytes()
    return age.decrypt(sealed, [viewing.day_keys[p.key]])  # verified whole before it is returned


def _codecs(viewing: Viewing) -> str:
    """The MSE codec string of the scope's first part (the camera's profile and level)."""
    import av

    data = _decrypted(viewing, viewing.parts[0]) if viewing.parts else b""
    with av.open(io.BytesIO(data)) as c:
        extradata = c.streams.video[0].codec_context.extradata or b"\x01\x42\xc0\x1e"
        codecs = "avc1.%02x%02x%02x" % (extradata[1], extradata[2], extradata[3])
        if c.streams.audio:
            codecs += ", mp4a.40.2"
    return codecs


def trim(mp4: bytes, keep_from: float, keep_to: float) -> bytes:
    """Cut a segment to [keep_from, keep_to) seconds without re-encoding.

    The picture starts at the first keyframe at or after ``keep_from`` (a frame before it
    would show time outside the approved range); frames from ``keep_to`` on are dropped;
    the sound is cut to the same span. Timestamps start again at zero.
    """
    import av

    eps = 1e-6
    with av.open(io.BytesIO(mp4)) as inp:
        starts = [float(p.pts * p.time_base) for p in inp.demux(video=0)
                  if p.dts is not None and p.is_keyframe and float(p.pts * p.time_base) >= keep_from - eps]
    if not starts or starts[0] >= keep_to - eps:
        return b""  # no keyframe inside the range: nothing can be shown without showing more
    begin = starts[0]
    out_buf = io.BytesIO()
    with av.open(io.BytesIO(mp4)) as inp:
        out = av.open(out_buf, "w", format="mp4",
                      options={"movflags": "frag_keyframe+empty_moov+default_base_moof+delay_moov"})
        streams = {s.index: (out.add_stream_from_template(s) if hasattr(out, "add_stream_from_template")
                             else out.add_stream(template=s))
                   for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            t = float(packet.pts * packet.time_base)
            if t < begin - eps or t >= keep_to - eps:
                continue
            shift = int(round(begin / packet.time_base))
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
        out.close()
    return out_buf.getvalue()
