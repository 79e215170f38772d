"""The JSON API under ``/api/v1``: everything the pages do, for scripts and the pages' own
scripts.

Every action a page's form posts to is registered here too, as the *same* view function
(``webui.actions``): one permission check, one validation, one audit entry, whichever way
it is called. A caller that is not logged in gets 401, a wrong role 403, a refused action
a JSON ``{"error", "code"}`` with 400/403/409. Writes need the CSRF token in the
``X-CSRFToken`` header: ``GET /api/v1/session`` gives one, ``POST /api/v1/session`` logs
in. The OpenAPI description at ``/api/v1/openapi.json`` is made from the routes
themselves, so it cannot leave one out.
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, current_app, g, jsonify, request
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from firmware.control import ControlError
from firmware.regulation import Ground
from firmware.hardware import Simulator
from webui import admin, auth, calls, console, disclosures, provisions, report, requests, settings, updates, viewing
from webui.actions import refuse
from webui.db import vault_db
from webui.permissions import LOGIN, MANAGER, OPERATOR, PUBLIC, SECTION_HEAD, SIMULATED, permission
from webui.requests import visible_requests

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def csrf_by_header():
    """Writes carry the session's CSRF token in the X-CSRFToken header — never in a form
    field, which a page on another site could post. A custom header cannot be sent across
    sites without a CORS preflight this server never grants, so the Referer check
    Flask-WTF adds for HTTPS forms (which scripts seldom send) is not needed here."""
    if request.method not in current_app.config["WTF_CSRF_METHODS"]:
        return None
    try:
        validate_csrf(request.headers.get("X-CSRFToken", ""))
    except ValidationError as exc:
        return jsonify({"error": f"{exc.args[0]} — GET /api/v1/session gives one; send it as X-CSRFToken",
                        "code": "csrf.invalid"}), 400
    return None


def _recorder_error(exc: ControlError):
    unreachable = "not running" in str(exc) or "did not answer" in str(exc)
    return jsonify({"error": str(exc)}), 503 if unreachable else 409


@bp.get("/status")
@permission(OPERATOR, MANAGER)
def status():
    """Recorder state, sign, status light, recording, faults, warnings."""
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
    """Simulated hardware only: act on the fake sensors (press the button, unplug the camera, …)."""
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
    """Viewing requests one may see: all (a manager), or one's own and one's section's."""
    columns = ("id", "number", "status", "purpose", "responsible_section", "created_at", "recording_ids")
    return jsonify([{c: r[c] for c in columns} for r in visible_requests()])


@bp.get("/audit")
@permission(MANAGER)
def audit_entries():
    """Audit log entries, newest first (filters: actor, subject, action, since and until as local dates,
    before: older than that seq — `older` names the next page) and the log's verification."""
    from webui.audit_view import query_entries

    return jsonify(query_entries(request.args))


@bp.get("/storage")
@permission(MANAGER)
def storage():
    """Capacity, projected retention per record class, holds, the last overwrite."""
    from webui.storage import vault_status

    return jsonify(vault_status())


@bp.get("/me")
@permission(LOGIN)
def me():
    """Who is logged in, and their roles."""
    return jsonify(_me())


def _me() -> dict | None:
    u = getattr(g, "user", None)
    if u is None:
        return None
    return {"username": u.username, "display_name": u.display_name, "section": u.section, "roles": sorted(u.roles)}


# -- session -----------------------------------------------------------------------------------

@bp.get("/session")
@permission(PUBLIC)
def session_info():
    """A CSRF token for the writes that follow, and who is logged in (or null)."""
    return jsonify({"csrf_token": generate_csrf(), "user": _me()})


@bp.post("/session")
@permission(PUBLIC)
def session_start():
    """Log in (username, password): failures are slowed, locked and logged as on the page.
    Answers with a new CSRF token: the one used to log in ends with the anonymous session."""
    from webui.actions import fields

    inputs = fields()
    try:
        auth.log_in((inputs.get("username") or "").strip().lower(), inputs.get("password") or "")
    except auth.LoginRefused as refused:
        refuse(refused.key, 401)
    return jsonify({"csrf_token": generate_csrf(), "user": _me()})


@bp.delete("/session")
@permission(PUBLIC)
def session_end():
    """Log out: the session and any footage keys it held end."""
    auth.log_out()
    return jsonify({"user": None})


# -- what only reads ---------------------------------------------------------------------------

@bp.get("/requests/<int:request_id>")
@permission(MANAGER, SECTION_HEAD)
def request_detail(request_id: int):
    """One viewing request with its opinions, decision and open viewing."""
    req = requests.load(request_id)
    if not requests.may_see(req):
        abort(404)
    return jsonify(requests.describe(req))


@bp.get("/people")
@permission(MANAGER)
def people():
    """Everyone with an account, their roles, and whether they operate this device."""
    return jsonify([admin.person_json(p) for p in admin._people()])


@bp.get("/sections")
@permission(MANAGER, SECTION_HEAD)
def sections():
    """The sections (課)."""
    return jsonify([{"id": r["id"], "name": r["name"]} for r in admin._sections()])


@bp.get("/settings")
@permission(MANAGER)
def settings_get():
    """The device's settings, as "section.key": value."""
    return jsonify(settings.describe(settings.current()))


@bp.get("/update")
@permission(MANAGER)
def update_get():
    """The running version and the latest update requests, each with its outcome."""
    return jsonify(updates.describe())


@bp.get("/duty")
@permission(OPERATOR, MANAGER)
def duty_get():
    """Who is signed on at this counter."""
    return jsonify({"device": current_app.config["KIROKU_DEVICE"], "on_duty": console.describe_duty()})


@bp.get("/provisions")
@permission(MANAGER)
def provisions_list():
    """The provision register, open records first."""
    return jsonify([provisions.describe(p) for p in provisions.register()])


@bp.get("/provisions/<int:provision_id>")
@permission(MANAGER)
def provision_detail(provision_id: int):
    """One provision record with its exports and running export jobs."""
    return jsonify(provisions.describe(provisions.load(provision_id)))


@bp.get("/disclosures")
@permission(MANAGER)
def disclosures_list():
    """The disclosure register (Art. 12), open records first, with deadlines and days remaining."""
    return jsonify([disclosures.describe(d) for d in disclosures.register()])


@bp.get("/disclosures/<int:disclosure_id>")
@permission(MANAGER)
def disclosure_detail(disclosure_id: int):
    """One disclosure request with its deadline, decision, handover exports and running export jobs."""
    return jsonify(disclosures.describe(disclosures.load(disclosure_id)))


@bp.get("/dashboard")
@permission(MANAGER)
def dashboard():
    """What the manager's dashboard shows: requests awaiting a decision, holds, the
    provisions needing attention (paperwork pending, committee footage not returned), the
    disclosure requests whose deadline is near or past, and the software's version with its
    last update."""
    counts = admin.counts()
    return jsonify({"recorder": admin.recorder_status(), "requests_pending": counts["pending"],
                    "holds": counts["holds"], "software": updates.summary(),
                    "provisions_needing_attention": [provisions.describe(p) for p in provisions.needing_attention()],
                    "disclosures_needing_attention": [disclosures.describe(d)
                                                      for d in disclosures.needing_attention()]})


# -- the pages' actions, the same views --------------------------------------------------------

def _name(view) -> str:
    """"requests.new" for webui.requests.new: how BODIES names a view."""
    return f"{view.__module__.rsplit('.', 1)[-1]}.{view.__name__}"


ACTIONS = [
    # (rule, method, view)
    ("/requests", "POST", requests.new),
    ("/requests/<int:request_id>/opinion", "POST", requests.opinion),
    ("/requests/<int:request_id>/decision", "POST", requests.decide),
    ("/requests/<int:request_id>/close", "POST", requests.close),
    ("/requests/<int:request_id>/scan", "POST", requests.attach_scan),
    ("/requests/<int:request_id>/scan", "GET", requests.scan),
    ("/requests/<int:request_id>/form.pdf", "GET", requests.form_pdf),
    ("/requests/<int:request_id>/unlock", "POST", viewing.unlock),
    ("/viewings/<viewing_id>", "GET", viewing.manifest),
    ("/viewings/<viewing_id>/part/<int:n>.mp4", "GET", viewing.part),
    ("/viewings/<viewing_id>/close", "POST", viewing.close),
    ("/people", "POST", admin.add_person),
    ("/people/<int:user_id>/operator", "POST", admin.set_operator),
    ("/people/<int:user_id>/disable", "POST", admin.disable),
    ("/people/<int:user_id>/unlock", "POST", admin.unlock_account),
    ("/sections", "POST", admin.add_section),
    ("/settings", "POST", settings.save),
    ("/update", "POST", updates.upload),
    ("/update/<update_id>/cancel", "POST", updates.cancel),
    ("/duty", "POST", console.duty),
    ("/account/password", "POST", auth.account),
    ("/provisions", "POST", provisions.new),
    ("/provisions/<int:provision_id>/paperwork", "POST", provisions.paperwork),
    ("/provisions/<int:provision_id>/scan", "POST", provisions.attach_scan),
    ("/provisions/<int:provision_id>/scan", "GET", provisions.scan),
    ("/provisions/<int:provision_id>/return", "POST", provisions.return_or_erasure),
    ("/provisions/<int:provision_id>/close", "POST", provisions.close),
    ("/provisions/<int:provision_id>/export", "POST", provisions.start_export),
    ("/provisions/<int:provision_id>/export/<job_id>", "GET", provisions.export_status),
    ("/provisions/<int:provision_id>/export/<job_id>/package", "GET", provisions.download),
    ("/disclosures", "POST", disclosures.new),
    ("/disclosures/<int:disclosure_id>/extension", "POST", disclosures.extend),
    ("/disclosures/<int:disclosure_id>/decision", "POST", disclosures.decide),
    ("/disclosures/<int:disclosure_id>/close", "POST", disclosures.close),
    ("/disclosures/<int:disclosure_id>/export", "POST", disclosures.start_export),
    ("/disclosures/<int:disclosure_id>/export/<job_id>", "GET", disclosures.export_status),
    ("/disclosures/<int:disclosure_id>/export/<job_id>/package", "GET", disclosures.download),
    ("/calls", "GET", calls.index),
    ("/report", "GET", report.index),
    ("/report/<int:year>.<kind>", "GET", report.download),
]
for _rule, _method, _view in ACTIONS:
    bp.add_url_rule(_rule, endpoint=f"{_name(_view).replace('.', '_')}_{_method.lower()}", view_func=_view,
                    methods=[_method])

# What the writes take (JSON object fields; the page's form has the same names).
BODIES = {
    "requests.new": {"recording": "list of recording ids", "purpose": " | ".join(requests.PURPOSES) + " (Art. 7)",
                     "reason": "text", "start": "ISO 8601 time (optional)", "end": "ISO 8601 time (optional)",
                     "responsible_section": "the section, when no recording is marked for one"},
    "requests.opinion": {"opinion": "agree | disagree", "note": "text"},
    "requests.decide": {"decision": "approved | rejected", "note": "text", "scope_recording": "list of recording ids",
                        "scope_start": "ISO 8601 time", "scope_end": "ISO 8601 time",
                        "valid_hours": "number, at most 336", "confirm_responsible": "true when declared",
                        "confirm_written": "true: the manager checked the signed form (the attached scan, or the"
                                           " paper while none is attached); needed to approve"},
    "requests.attach_scan": {"scan": "multipart file: PDF, PNG or JPEG, at most 10 MB"},
    "viewing.unlock": {"password": "the manager's passphrase"},
    "admin.add_person": {"username": "text", "display_name": "text", "section_id": "number",
                         "roles": "list of manager | section_head | operator", "password": "their first password",
                         "your_password": "yours, when adding a manager"},
    "admin.set_operator": {"designate": "true to designate, false to revoke"},
    "admin.add_section": {"name": "text"},
    "settings.save": {"<section>.<key>": "any of the settings GET /api/v1/settings lists"},
    "updates.upload": {"release": f"multipart file: a release made by image-build/release, at most "
                                  f"{updates.MAX_RELEASE // 2**20} MB"},
    "console.duty": {"on": "true to sign on, false to sign off"},
    "auth.account": {"old": "text", "new": "text", "confirm": "text"},
    "provisions.new": {"ground": " | ".join(Ground) + " (Art. 9)",
                       "recipient": "text", "reference": "the written request's reference (may wait when urgent)",
                       "request_date": "text", "recording": "recording id", "start": "ISO 8601 time",
                       "end": "ISO 8601 time", "note": "text"},
    "provisions.paperwork": {"reference": "text", "request_date": "text"},
    "provisions.attach_scan": {"scan": "multipart file: PDF, PNG or JPEG, at most 10 MB"},
    "provisions.return_or_erasure": {"kind": "return | erasure (first)", "outcome": "text (then)"},
    "provisions.start_export": {"password": "the manager's passphrase", "transport_passphrase": "12+ characters",
                                "mute": "spans S-E in seconds, space-separated", "blur_faces": "true/false",
                                "exact": "true to re-encode for an exact cut"},
    "disclosures.new": {"kind": "personal (本人開示) | public (情報公開)", "requester": "name (personal data)",
                        "contact": "text", "identity_check": " | ".join(disclosures.IDENTITY_CHECKS)
                        + " (required for personal)", "identity_note": "text (required for other)",
                        "received_on": "YYYY-MM-DD (default today)", "recording": "recording id",
                        "start": "ISO 8601 time", "end": "ISO 8601 time", "note": "text"},
    "disclosures.extend": {"days": "1–30", "reason": "text", "notified_on": "YYYY-MM-DD: the written notice"},
    "disclosures.decide": {"decision": " | ".join(disclosures.DECISIONS), "decided_on": "YYYY-MM-DD (default today)",
                           "note": "the reason (required unless full)"},
    "disclosures.close": {"withdrawn": "true to close an undecided request as withdrawn"},
    "disclosures.start_export": {"password": "the manager's passphrase", "blur_faces": "true/false",
                                 "blur": "regions X,Y,W,H[@S-E], space-separated",
                                 "mute": "spans S-E in seconds (other voices), space-separated",
                                 "exact": "true to re-encode for an exact cut",
                                 "transport_passphrase": "12+ characters"},
    "api.session_start": {"username": "text", "password": "text"},
    "api.recorder": {"section": "when marking: the responsible section", "note": "when marking: text"},
}


@bp.get("/openapi.json")
@permission(PUBLIC)
def openapi():
    """This description."""
    return jsonify(describe_api())


_RESPONSES = {
    "200": {"description": "done: the record as JSON"}, "201": {"description": "created"},
    "202": {"description": "started (an export): poll its status"},
    "400": {"description": "refused, the input: {error, code}"},
    "401": {"description": "not logged in (or a wrong log-in)"},
    "403": {"description": "not allowed for this role, or not yours to do (a wrong passphrase, your own request)"},
    "404": {"description": "no such record, or one you may not know of"},
    "409": {"description": "not now: already decided, closed, paperwork pending, …"},
    "410": {"description": "a viewing that has ended"},
    "413": {"description": "too large"},
    "507": {"description": "the data partition could not store it"},
    "503": {"description": "the recorder is not running, so nothing could be logged and nothing was done"},
}

_ROLE_WORDS = {PUBLIC: "anyone", LOGIN: "anyone logged in", MANAGER: "managers", OPERATOR: "operators of this device",
               SECTION_HEAD: "section heads", SIMULATED: "operators and managers, on simulated hardware only"}


def describe_api() -> dict:
    """OpenAPI 3.1, from the routes themselves: path, method, the view's docstring, who may call it."""
    paths: dict[str, dict] = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith(bp.url_prefix + "/"):
            continue
        view = current_app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        doc = " ".join((view.__doc__ or "").split())
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            levels = view.kiroku_permission
            op = {"summary": doc.split(". ")[0].rstrip(".") if doc else rule.endpoint, "description": doc
                  + f" Allowed for: {', '.join(_ROLE_WORDS[level] for level in sorted(levels))}.",
                  "operationId": f"{method.lower()}_{rule.endpoint.replace('.', '_')}",
                  "responses": _RESPONSES}
            params = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "integer" if f"<int:{name}>" in rule.rule else "string"}}
                      for name in sorted(rule.arguments)]
            if params:
                op["parameters"] = params
            body = BODIES.get(_name(view))
            if method != "GET" and body:
                op["requestBody"] = {"content": {"application/json": {"schema": {
                    "type": "object", "properties": {k: {"description": v} for k, v in body.items()}}}}}
            if method != "GET":
                op["security"] = [{"session": [], "csrf": []}] if PUBLIC not in levels else [{"csrf": []}]
            elif PUBLIC not in levels:
                op["security"] = [{"session": []}]
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "kiroku", "version": "1",
                 "description": "The counter recording appliance's local API. GET /api/v1/session for a CSRF token, "
                                "POST /api/v1/session to log in; the session cookie authenticates later calls; "
                                "writes carry the CSRF token in X-CSRFToken. Refusals are {error, code}."},
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken"}}},
    }
