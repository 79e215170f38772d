"""The audit browser: the device's log, filtered by person, recording or request, with the
chain's verification status (recomputed on every visit, from the entries themselves)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, render_template, request

from webui.permissions import MANAGER, permission

bp = Blueprint("audit", __name__, url_prefix="/admin/audit")


def _vault():
    from firmware.vault import Vault

    return Vault(Path(current_app.config["KIROKU_DATA"]), readonly=True)


def query_entries(args) -> dict:
    from firmware.vault.audit import AuditError

    vault = _vault()
    try:
        try:
            verified = {"ok": True, **vault.audit_log.verify(vault.db)}
        except AuditError as exc:
            verified = {"ok": False, "error": str(exc)}
        try:
            limit = max(1, min(int(args.get("limit", 200)), 2000))
        except ValueError:
            limit = 200
        entries = vault.audit_log.entries(vault.db, actor=args.get("actor") or None,
                                          subject=args.get("subject") or None, action=args.get("action") or None,
                                          limit=limit)
        checkpoint = vault.audit_log.latest_checkpoint(vault.db) if verified.get("entries") else ""
    finally:
        vault.close()
    return {"verification": verified, "entries": entries, "checkpoint": checkpoint}


@bp.get("/")
@permission(MANAGER)
def index():
    from webui import auth

    auth.audit("audit.view", detail={k: v for k, v in request.args.items() if k in ("actor", "subject", "action")})
    result = query_entries(request.args)
    return render_template("admin/audit.html", filters=request.args, **result)
