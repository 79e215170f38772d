"""The audit logs at the hub, for the manager and the auditor: the hub's own (people,
designations, enrollments, log-ins), verified on every visit, and each device's as it
published it, with the witness's verdict on every checkpoint."""

from __future__ import annotations

import json

from flask import Blueprint, jsonify, render_template, request

from firmware.vault.audit import AuditError
from hub import devices
from webui.actions import is_api
from webui.permissions import AUDITOR, MANAGER, permission
from webui.services import audit, context, state

bp = Blueprint("hub_audit", __name__, url_prefix="/hub/audit")
LIMIT = 200


def _entries(rows) -> list[dict]:
    return [{"seq": r["seq"], "at": r["at"], "actor": r["actor"], "action": r["action"], "purpose": r["purpose"],
             "subject": r["subject"], "detail": json.loads(r["detail"])} for r in rows]


def _filters():
    return {k: request.args.get(k) or None for k in ("actor", "action", "subject")}


def _where(filters: dict) -> tuple[str, list]:
    clauses, args = [], []
    for column, value in filters.items():
        if value:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


@bp.get("/")
@permission(MANAGER, AUDITOR)
def index():
    """The hub's own audit log, newest first, and its verification."""
    ctx = context()
    audit("audit.view", detail={k: v for k, v in request.args.items() if k in ("actor", "action", "subject")})
    site = state()
    try:
        verified = {"ok": True, **site.audit.verify(ctx.db)}
    except AuditError as exc:
        verified = {"ok": False, "error": str(exc)}
    where, args = _where(_filters())
    entries = _entries(ctx.db.all(f"SELECT * FROM audit{where} ORDER BY seq DESC LIMIT ?", (*args, LIMIT)))
    body = {"verification": verified, "entries": entries, "checkpoint": site.audit.checkpoint(ctx.db),
            "vkey": site.audit.vkey}
    if is_api():
        return jsonify(body)
    return render_template("hub/audit.html", device=None, devices=devices.overview(ctx.db, include_removed=True),
                           filters=request.args, **body)


@bp.get("/devices/<device_id>")
@permission(MANAGER, AUDITOR)
def device_log(device_id: str):
    """A device's audit log as it published it, newest first, with the witness's checkpoints."""
    ctx = context()
    audit("audit.view", subject=device_id, detail={k: v for k, v in request.args.items()
                                                   if k in ("actor", "action", "subject")})
    filters = _filters()
    where, args = _where(filters)
    where = (where + " AND" if where else " WHERE") + " device = ?"
    if not filters["action"] and not is_api():  # one per segment (the index's commitments): the page lists them when chosen
        where += " AND action <> 'segment.sealed'"
    entries = _entries(ctx.db.all(f"SELECT * FROM device_log{where} ORDER BY seq DESC LIMIT ?",
                                  (*args, device_id, LIMIT)))
    body = {"device": device_id, "entries": entries, "checkpoints": devices.checkpoints(ctx.db, device_id)}
    if is_api():
        return jsonify(body)
    return render_template("hub/audit.html", devices=devices.overview(ctx.db, include_removed=True),
                           filters=request.args, verification=None, checkpoint=None, vkey=None, **body)
