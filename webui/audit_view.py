"""The audit browser: the device's log, filtered by person, recording or request, with the
chain's verification status (recomputed on every visit, from the entries themselves)."""

from __future__ import annotations


from flask import Blueprint, render_template, request

from webui.permissions import AUDITOR, MANAGER, permission
from webui.queries import FILTERS, query_entries

bp = Blueprint("audit", __name__, url_prefix="/admin/audit")


@bp.get("/")
@permission(MANAGER, AUDITOR)
def index():
    from webui.services import audit

    audit("audit.view", detail={k: v for k, v in request.args.items() if k in FILTERS})
    result = query_entries(request.args, hide=("segment.sealed",))  # one per segment: shown when chosen
    return render_template("admin/audit.html", filters=request.args, action_label=_action_label,
                           detail_text=_detail_text, filters_query=_filters_query, **result)


def _filters_query(**changes) -> str:
    """This page's filters as a query string, with ``changes`` (None drops one)."""
    from urllib.parse import urlencode

    query = {k: v for k, v in request.args.items() if k in FILTERS and v}
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
