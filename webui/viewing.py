"""The viewing pages (Art. 8(2)): the manager unlocks, the section head watches the approved
scope in the browser. The workflow, and the keys held in memory, are ``domain.viewings``.

The player (``static/player.js``) appends the parts to a Media Source; seeking fetches the
part that holds the time asked for. Each part is decrypted in memory when asked for, cut
to the approved range, and streamed: nothing decrypted is written anywhere.
"""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, Response, g, jsonify, render_template, url_for

from domain import accounts, requests, viewings
from webui.actions import done, refusing
from webui.parsing import Form, Text, takes
from webui.permissions import MANAGER, SECTION_HEAD, permission
from webui.services import context, make_context, state

bp = Blueprint("viewing", __name__)
log = logging.getLogger(__name__)

UNLOCK = Form(Text("password", "the manager's passphrase", strip=False))


@bp.post("/requests/<int:request_id>/unlock")
@permission(MANAGER)
@takes(UNLOCK)
def unlock(request_id: int):
    """The manager opens the approved scope's day keys with their passphrase: the viewing
    session for the requester begins, and ends with the approval's window."""
    ctx = context()
    req = requests.load(ctx, request_id)
    with refusing(back=url_for("requests.show", request_id=request_id)):
        viewing = viewings.unlock(ctx, req, UNLOCK.parse().password)
    return done(url_for("requests.show", request_id=request_id), code=201, notice="viewing.opened", id=viewing.id,
                request_id=request_id, closes_at=viewing.closes_at, segments=len(viewing.parts))


@bp.post("/viewings/<viewing_id>/close")
@permission(MANAGER, SECTION_HEAD)
def close(viewing_id: str):
    """End a viewing now: its keys are dropped."""
    request_id = viewings.close(context(), viewing_id)
    return done(url_for("requests.show", request_id=request_id), closed=viewing_id)


def _own(viewing_id: str) -> viewings.Viewing:
    return viewings.own(context(), viewing_id, g.session_id)


@bp.get("/viewings/<viewing_id>")
@permission(SECTION_HEAD)
def player(viewing_id: str):
    return render_template("viewing/player.html", viewing=_own(viewing_id))


@bp.get("/viewings/<viewing_id>/manifest.json")
@permission(SECTION_HEAD)
def manifest(viewing_id: str):
    """The viewing's timeline: its parts, their lengths and wall-clock starts."""
    return jsonify(viewings.timeline(context(), _own(viewing_id)))


@bp.get("/viewings/<viewing_id>/part/<int:n>.mp4")
@permission(SECTION_HEAD)
def part(viewing_id: str, n: int):
    """Part n of the timeline as a fragmented MP4, decrypted in memory and cut to the scope
    (204 when no keyframe lies inside it). The first play and every jump are logged."""
    data, start = viewings.part(context(), _own(viewing_id), n)
    if not data:
        return Response(status=204)  # no keyframe inside the range: nothing to show without showing more
    response = Response(data, mimetype="video/mp4")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Kiroku-Start"] = f"{start:.3f}"
    return response


def sweep(app) -> None:
    """Close viewings whose window has ended or whose viewer's session is over (every half
    minute, on a connection of its own: the device's web.db, or one of the hub's pool)."""
    site = state(app)
    db = site.open_database()
    try:
        site.viewings.sweep(make_context(app, db, None), accounts.IDLE)
    finally:
        site.close_database(db)


def start_sweeper(app, every: float = 30.0) -> threading.Thread:
    stop = state(app).stop

    def loop():
        while not stop.wait(every):
            try:
                sweep(app)
            except Exception:  # the next round tries again
                if not stop.is_set():  # not the connections closing under a sweep at shutdown
                    log.exception("viewing sweep failed")

    thread = threading.Thread(target=loop, name="viewing-sweeper", daemon=True)
    thread.start()
    return thread
