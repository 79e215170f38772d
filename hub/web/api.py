"""The hub's JSON API under ``/api/v1``: what its pages show, for scripts, and the one call a
device makes (``POST /api/v1/enroll``, with its one-time code). Sessions, CSRF by header and
the OpenAPI description are every site's (``webui.apikit``); the pages' actions are registered
here too, as the same views, as on a device."""

from __future__ import annotations

import json

from flask import Blueprint, jsonify, request

from hub import devices, enroll
from webui import apikit, paperwork, picking
from webui.permissions import AUDITOR, MANAGER, PUBLIC, SECTION_HEAD, permission
from webui.services import context, state

bp = Blueprint("api", __name__, url_prefix=apikit.PREFIX)
apikit.install(bp)
paperwork.install(bp)


@bp.get("/devices")
@permission(MANAGER, AUDITOR)
def devices_list():
    """Every enrolled device: online, state, sign, faults, clock, retention, its witnessed checkpoint, open alerts."""
    return jsonify([devices.as_api(d) for d in devices.overview(context().db)])


@bp.get("/alerts")
@permission(MANAGER, AUDITOR)
def alerts():
    """Open alerts, newest first, with their device's place."""
    return jsonify(devices.open_alerts(context().db))


@bp.get("/recordings")
@permission(MANAGER, SECTION_HEAD)
def recordings():
    """Every device's recordings (metadata, never footage), newest first: {id: DEVICE/ID, device, place,
    record_class, started_at, ended_at, section, marks}, and for a call {direction, external_display,
    city_display}. A request names them by that id. ?day=YYYY-MM-DD and ?number= (a call's number,
    typed any way) narrow them as the forms' picker does."""
    wanted = picking.wanted(request.args)
    return jsonify([{**{k: r[k] for k in ("id", "device", "place", "record_class", "started_at", "ended_at",
                                         "section")}, "marks": json.loads(r["marks"]),
                     **{k: r[k] for k in ("direction", "external_display", "city_display") if k in r}}
                    for r in picking.recordings(context(), wanted)])








def no_session(view):
    """A call authenticated by what it is sent, never by a session cookie: no CSRF token to check."""
    view.kiroku_no_session = True
    return view


@bp.post("/enroll")
@permission(PUBLIC)
@no_session
def enroll_device():
    """A device joins the city with its one-time code: {code, device, kind, place, vkey} → its broker account,
    the CA, the managers' public keys (docs/hub.md)."""
    body = request.get_json(silent=True)
    try:
        answer = enroll.enroll(context(), state(), body, request.remote_addr or "")
    except enroll.EnrollRefused as refused:
        return jsonify({"error": str(refused), "code": refused.code}), refused.status
    return jsonify(answer), 201


ACTIONS = [
    ("/enrollments", "POST", "hub.make_code"),
    ("/devices/<device_id>/remove", "POST", "hub.remove"),
    ("/devices/<device_id>/lines", "POST", "hub.set_lines"),
    ("/alerts/<int:alert_id>/acknowledge", "POST", "hub.acknowledge"),
    ("/people", "GET", "hub_people.index"),
    ("/people", "POST", "hub_people.add_person"),
    ("/people/<int:user_id>/operator", "POST", "hub_people.set_operator"),
    ("/people/<int:user_id>/disable", "POST", "hub_people.disable"),
    ("/people/<int:user_id>/unlock", "POST", "hub_people.unlock_account"),
    ("/sections", "POST", "hub_people.add_section"),
    ("/audit", "GET", "hub_audit.index"),
    ("/audit/devices/<device_id>", "GET", "hub_audit.device_log"),
    ("/report", "GET", "hub_report.index"),
    ("/report/<int:year>.<kind>", "GET", "hub_report.download"),
    ("/account/password", "POST", "auth.account"),
]


def install(app) -> None:
    """The API, with the pages' actions under /api/v1 too (after every blueprint is registered)."""
    apikit.register_actions(app, bp, [*paperwork.ACTIONS, *ACTIONS])
