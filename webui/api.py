"""The JSON API under ``/api/v1``; the pages use it, and so can scripts.

Its OpenAPI description is served at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from firmware.control import ControlError
from firmware.hardware import Simulator
from webui.permissions import PUBLIC, SIMULATED, permission

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _recorder_unreachable(exc: ControlError):
    return jsonify({"error": str(exc)}), 503


@bp.get("/status")
@permission(PUBLIC)
def status():
    from webui import control

    try:
        return jsonify(control().status())
    except ControlError as exc:
        return _recorder_unreachable(exc)


@bp.post("/simulator/<action>")
@permission(SIMULATED)
def simulator(action: str):
    from webui import control

    if action not in Simulator.ACTIONS:
        return jsonify({"error": f"unknown action {action!r}", "actions": list(Simulator.ACTIONS)}), 404
    try:
        return jsonify(control().request("sim", action=action))
    except ControlError as exc:
        if "not running" in str(exc) or "did not answer" in str(exc):
            return _recorder_unreachable(exc)
        return jsonify({"error": str(exc)}), 409


@bp.get("/openapi.json")
@permission(PUBLIC)
def openapi():
    return jsonify(OPENAPI)


_STATUS_SCHEMA = {"type": "object", "description": "the recorder's status, as `kiroku ctl status --json` prints it"}

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "kiroku", "version": "1", "description": "The counter recording appliance's local API."},
    "paths": {
        "/api/v1/status": {
            "get": {
                "summary": "Recorder state, sign, status light, current recording and faults",
                "responses": {
                    "200": {"description": "status", "content": {"application/json": {"schema": _STATUS_SCHEMA}}},
                    "503": {"description": "the recorder is not running"},
                },
            }
        },
        "/api/v1/simulator/{action}": {
            "post": {
                "summary": "Simulated hardware only: act on the fake sensors (press the button, unplug a device…)",
                "parameters": [{"name": "action", "in": "path", "required": True,
                                "schema": {"type": "string", "enum": list(Simulator.ACTIONS)}}],
                "security": [{"csrf": []}],
                "responses": {
                    "200": {"description": "status after the action",
                            "content": {"application/json": {"schema": _STATUS_SCHEMA}}},
                    "400": {"description": "missing or wrong CSRF token"},
                    "404": {"description": "not simulated hardware, or unknown action"},
                    "503": {"description": "the recorder is not running"},
                },
            }
        },
    },
    "components": {"securitySchemes": {"csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken"}}},
}
