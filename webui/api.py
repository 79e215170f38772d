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


from flask import Blueprint, current_app, g, jsonify, request

from domain import disclosures, duty, people, provisions, requests
from firmware.control import CommandRefused, ControlError, RecorderBusy
from firmware.hardware import Simulator
from webui import apikit, exports, paperwork, queries, releases
from webui.db import vault_db
from webui.parsing import Form, Text, takes
from webui.permissions import AUDITOR, MANAGER, OPERATOR, SECTION_HEAD, SIMULATED, permission
from webui.services import context, control, recorder_status, state

bp = Blueprint("api", __name__, url_prefix=apikit.PREFIX)
apikit.install(bp)
paperwork.install(bp)



def _recorder_error(exc: ControlError):
    if isinstance(exc, RecorderBusy):
        return busy(exc)
    if isinstance(exc, CommandRefused) and "did not answer" not in str(exc):
        return jsonify({"error": str(exc)}), 409
    return jsonify({"error": str(exc)}), 503  # not running, not answering: try again later


def busy(exc: RecorderBusy):
    """503 with the reason in the reader's language, and when to ask again."""
    from webui.i18n import t

    return jsonify({"error": t("error.recorder_busy"), "detail": str(exc), "code": "recorder.busy"}), 503, \
        {"Retry-After": "1"}


@bp.get("/status")
@permission(OPERATOR, MANAGER)
def status():
    """Recorder state, sign, status light, recording, faults, warnings."""
    try:
        answer = control().status()
    except ControlError as exc:
        return _recorder_error(exc)
    state().audit.fold()  # the recorder is back: what waited for it goes into the log now
    return jsonify(answer)


MARK = Form(Text("section", "when marking: the responsible section"), Text("note", "when marking: text"))


@bp.post("/recorder/<action>")
@permission(OPERATOR)
@takes(MARK)
def recorder(action: str):
    """Start, stop, or mark an incident (with the responsible section) — as an operator."""
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




@bp.get("/audit")
@permission(MANAGER, AUDITOR)
def audit_entries():
    """Audit log entries, newest first (filters: actor, subject, action, since and until as local dates,
    before: older than that seq — `older` names the next page) and the log's verification."""
    return jsonify(queries.query_entries(request.args))


@bp.get("/storage")
@permission(MANAGER)
def storage():
    """Capacity, projected retention per record class, holds, the last overwrite."""
    return jsonify(queries.vault_status())


# -- what only reads ---------------------------------------------------------------------------



@bp.get("/people", endpoint="people")
@permission(MANAGER)
def people_list():
    """Everyone with an account, their roles, and whether they operate this device."""
    ctx = context()
    return jsonify([people.as_json(p) for p in people.everyone(ctx.db, ctx.device)])




@bp.get("/settings")
@permission(MANAGER)
def settings_get():
    """The device's settings, as "section.key": value."""
    return jsonify(queries.describe(queries.current()))


@bp.get("/update")
@permission(MANAGER)
def update_get():
    """The running version and the latest update requests, each with its outcome."""
    return jsonify(releases.describe())


@bp.get("/duty")
@permission(OPERATOR, MANAGER)
def duty_get():
    """Who is signed on at this counter."""
    return jsonify({"device": current_app.config["KIROKU_DEVICE"], "on_duty": duty.describe(context())})










@bp.get("/dashboard")
@permission(MANAGER)
def dashboard():
    """What the manager's dashboard shows: requests awaiting a decision, holds, the
    provisions needing attention (paperwork pending, committee footage not returned), the
    disclosure requests whose deadline is near or past, and the software's version with its
    last update."""
    ctx = context()
    return jsonify({"recorder": recorder_status(), "requests_pending": requests.pending_count(ctx.db),
                    "holds": ctx.recordings.open_holds(), "software": releases.summary(),
                    "provisions_needing_attention": [provisions.describe(ctx, p, exports.job_status)
                                                     for p in provisions.needing_attention(ctx.db)],
                    "disclosures_needing_attention": [disclosures.describe(ctx, d, exports.job_status)
                                                      for d in disclosures.needing_attention(ctx.db)]})


# -- the pages' actions, the same views --------------------------------------------------------

# (rule, method, the page's endpoint): the view registered under /api/v1 as well, by name, so
# that this module imports no other blueprint (``install``).
ACTIONS = [
    ("/people", "POST", "admin.add_person"),
    ("/people/<int:user_id>/operator", "POST", "admin.set_operator"),
    ("/people/<int:user_id>/disable", "POST", "admin.disable"),
    ("/people/<int:user_id>/unlock", "POST", "admin.unlock_account"),
    ("/sections", "POST", "admin.add_section"),
    ("/settings", "POST", "settings.save"),
    ("/update", "POST", "updates.upload"),
    ("/update/<update_id>/cancel", "POST", "updates.cancel"),
    ("/duty", "POST", "console.duty"),
    ("/account/password", "POST", "auth.account"),
    ("/calls", "GET", "calls.index"),
    ("/report", "GET", "report.index"),
    ("/report/<int:year>.<kind>", "GET", "report.download"),
]


def install(app) -> None:
    """Register the API, with the pages' actions under /api/v1 as the same view functions
    (after every blueprint is registered): one permission check, one validation, one audit
    entry, whichever way an action is called."""
    app.register_blueprint(bp)
    apikit.register_actions(app, bp, [*paperwork.ACTIONS, *ACTIONS])


