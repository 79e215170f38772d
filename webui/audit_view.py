"""The audit browser: the device's log, filtered by person, recording or request, with the
chain's verification status (recomputed on every visit, from the entries themselves)."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, current_app, render_template, request

from webui.permissions import MANAGER, permission

bp = Blueprint("audit", __name__, url_prefix="/admin/audit")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FILTERS = ("actor", "subject", "action", "since", "until", "before")


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
        try:
            before = int(args["before"]) if args.get("before") else None
        except ValueError:
            before = None
        if before is not None and not 0 <= before < 2**63:
            before = None  # SQLite's integers: a larger one is no entry's
        dates = {k: args.get(k) if _DATE.fullmatch(args.get(k) or "") else None for k in ("since", "until")}
        entries = vault.audit_log.entries(vault.db, actor=args.get("actor") or None,
                                          subject=args.get("subject") or None, action=args.get("action") or None,
                                          limit=limit + 1, before=before, **dates)  # one more: is there a next page?
        actions = [r[0] for r in vault.db.execute("SELECT DISTINCT action FROM audit ORDER BY action")]
        checkpoint = vault.audit_log.latest_checkpoint(vault.db) if verified.get("entries") else ""
    finally:
        vault.close()
    older = entries[limit - 1]["seq"] if len(entries) > limit else None
    entries = entries[:limit]
    return {"verification": verified, "entries": entries, "checkpoint": checkpoint, "actions": actions,
            "older": older}


@bp.get("/")
@permission(MANAGER)
def index():
    from webui import auth

    auth.audit("audit.view", detail={k: v for k, v in request.args.items() if k in _FILTERS})
    result = query_entries(request.args)
    return render_template("admin/audit.html", filters=request.args, action_label=_action_label,
                           detail_text=_detail_text, filters_query=_filters_query, **result)


def _filters_query(**changes) -> str:
    """This page's filters as a query string, with ``changes`` (None drops one)."""
    from urllib.parse import urlencode

    query = {k: v for k, v in request.args.items() if k in _FILTERS and v}
    for k, v in changes.items():
        if v is None:
            query.pop(k, None)
        else:
            query[k] = v
    return urlencode(query)


def _detail_text(detail) -> str:
    import json

    return json.dumps(detail, ensure_ascii=False, indent=1, sort_keys=True)


def _action_label(action: str) -> str:
    """An action in the page's language; one this page has no words for stays as its code."""
    from webui import i18n

    key = "action." + action
    return i18n.t(key) if key in i18n.MESSAGES else action
