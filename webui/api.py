"""The JSON API under ``/api/v1``: the pages use it, and so can scripts.

The same permission checks guard it as the pages (``webui.permissions``); a caller that
is not logged in gets 401, a wrong role 403. Writes need the CSRF token in the
``X-CSRFToken`` header, as the pages send it. The OpenAPI description is served at
``/api/v1/openapi.json``.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from firmware.control import ControlError
from firmware.hardware import Simulator
from webui.db import vault_db
from webui.permissions import LOGIN, MANAGER, OPERATOR, PUBLIC, SECTION_HEAD, SIMULATED, permission
from webui.requests import visible_requests

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _recorder_error(exc: ControlError):
    unreachable = "not running" in str(exc) or "did not answer" in str(exc)
    return jsonify({"error": str(exc)}), 503 if unreachable else 409


@bp.get("/status")
@permission(OPERATOR, MANAGER)
def status():
    from webui import control

    try:
        return jsonify(control().status())
    except ControlError as exc:
        return _recorder_error(exc)


@bp.post("/recorder/<action>")
@permission(OPERATOR)
def recorder(action: str):
    """Start, stop, or mark an incident (with the responsible section) — as an operator."""
    from webui import control

    if action not in ("start", "stop", "mark"):
        return jsonify({"error": "start, stop or mark"}), 404
    fields = {"by": g.user.username}
    if action == "mark":
        body = request.get_json(silent=True)
        if body is None:
            body = request.form
        if not hasattr(body, "get"):
            return jsonify({"error": "send a JSON object: {\"section\": …, \"note\": …}"}), 400
        section, note = body.get("section", ""), body.get("note", "")
        if not isinstance(section, str) or not isinstance(note, str):
            return jsonify({"error": "section and note are text"}), 400
        fields.update(section=section[:80], note=note[:500])
    try:
        return jsonify(control().request(action, **fields))
    except ControlError as exc:
        return _recorder_error(exc)


@bp.post("/simulator/<action>")
@permission(SIMULATED)
def simulator(action: str):
    from webui import control

    if action not in Simulator.ACTIONS:
        return jsonify({"error": f"unknown action {action!r}", "actions": list(Simulator.ACTIONS)}), 404
    try:
        return jsonify(control().request("sim", action=action))
    except ControlError as exc:
        return _recorder_error(exc)


@bp.get("/recordings")
@permission(OPERATOR, MANAGER, SECTION_HEAD)
def recordings():
    """Recordings' metadata: times, segments, marks, section. Never footage."""
    vdb = vault_db()
    if vdb is None:
        return jsonify([])
    rows = vdb.execute(
        "SELECT r.id, r.device, r.started_at, r.ended_at, r.end_reason, r.section,"
        " (SELECT count(*) FROM segments s WHERE s.recording_id = r.id AND s.erased_at IS NULL) AS segments,"
        " (SELECT count(*) FROM marks m WHERE m.recording_id = r.id) AS marks"
        " FROM recordings r WHERE r.record_class = 'footage' ORDER BY r.started_wall_us DESC LIMIT 200").fetchall()
    return jsonify([dict(r) for r in rows])


@bp.get("/requests")
@permission(MANAGER, SECTION_HEAD)
def requests_list():
    columns = ("id", "number", "status", "purpose", "responsible_section", "created_at", "recording_ids")
    return jsonify([{c: r[c] for c in columns} for r in visible_requests()])


@bp.get("/audit")
@permission(MANAGER)
def audit_entries():
    from webui.audit_view import query_entries

    return jsonify(query_entries(request.args))


@bp.get("/storage")
@permission(MANAGER)
def storage():
    from webui.storage import vault_status

    return jsonify(vault_status())


@bp.get("/me")
@permission(LOGIN)
def me():
    u = g.user
    return jsonify({"username": u.username, "display_name": u.display_name, "section": u.section,
                    "roles": sorted(u.roles)})


@bp.get("/openapi.json")
@permission(PUBLIC)
def openapi():
    return jsonify(OPENAPI)


def _op(summary: str, roles: str, responses: dict | None = None, **extra) -> dict:
    base = {"summary": summary, "description": f"Allowed for: {roles}.",
            "responses": {"200": {"description": "OK"}, "401": {"description": "not logged in"},
                          "403": {"description": "not allowed for this role"}, **(responses or {})}}
    base.update(extra)
    return base


OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "kiroku", "version": "1",
             "description": "The counter recording appliance's local API. Log in through /login; the session cookie "
                            "authenticates API calls; writes need the CSRF token in X-CSRFToken."},
    "paths": {
        "/api/v1/status": {"get": _op("Recorder state, sign, status light, recording, faults, warnings",
                                      "operators of this device, managers", {"503": {"description": "recorder down"}})},
        "/api/v1/recorder/{action}": {"post": _op(
            "Start or stop recording, or mark an incident (body: section, note)", "operators of this device",
            parameters=[{"name": "action", "in": "path", "required": True,
                         "schema": {"type": "string", "enum": ["start", "stop", "mark"]}}])},
        "/api/v1/simulator/{action}": {"post": _op(
            "Simulated hardware only: act on the fake sensors", "operators and managers, simulated hardware only",
            {"404": {"description": "not simulated hardware, or unknown action"}},
            parameters=[{"name": "action", "in": "path", "required": True,
                         "schema": {"type": "string", "enum": list(Simulator.ACTIONS)}}])},
        "/api/v1/recordings": {"get": _op("Recordings' metadata (never footage)", "operators, managers, section heads")},
        "/api/v1/requests": {"get": _op("Viewing requests one may see", "managers (all), section heads (their own "
                                                                         "and their section's)")},
        "/api/v1/audit": {"get": _op("Audit log entries (filters: actor, subject, action) and its verification",
                                     "managers")},
        "/api/v1/storage": {"get": _op("Capacity, projected retention per class, holds, last overwrite", "managers")},
        "/api/v1/me": {"get": _op("Who is logged in, and their roles", "anyone logged in")},
    },
    "components": {"securitySchemes": {
        "session": {"type": "apiKey", "in": "cookie", "name": "session"},
        "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken"}}},
    "security": [{"session": []}],
}
