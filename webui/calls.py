"""The call index on the admin page (a call recorder's device): search by number, date and
direction. Managers only: the numbers are personal information, and a search by number is
logged with the digits searched for, so an auditor can see who looked for whom.

The audio itself is opened the way footage is, through a written request and a viewing
session (Art. 7–8); this page shows metadata only.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, jsonify, render_template, request

from firmware.calls import index as call_index
from firmware.calls import numbers
from webui.actions import is_api, refuse
from webui.db import vault_db
from webui.permissions import MANAGER, permission
from webui.services import audit

bp = Blueprint("calls", __name__, url_prefix="/admin/calls")

DIRECTIONS = call_index.DIRECTIONS


def _day_us(text: str, *, end: bool = False) -> int | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").astimezone()
    except ValueError:
        refuse("calls.bad_date")
    return int(day.timestamp() * 1e6) + (86_400_000_000 if end else 0)


def search() -> tuple[dict, list[dict]]:
    """The query in the URL (number, from, to, direction), and the calls that match it."""
    args = request.args
    query = {"number": args.get("number", "").strip()[:40], "from": args.get("from", ""),
             "to": args.get("to", ""), "direction": args.get("direction", "")}
    if query["direction"] and query["direction"] not in DIRECTIONS:
        refuse("calls.bad_direction")
    if query["number"] and not numbers.search_key(query["number"]):
        refuse("calls.bad_number")
    since, until = _day_us(query["from"]), _day_us(query["to"], end=True)
    if since is not None and until is not None and until <= since:
        refuse("range.end_before_start", detail=f"to {query['to']} is before from {query['from']}")
    vdb = vault_db()
    if vdb is None:
        return query, []
    try:
        rows = call_index.search(vdb, number=query["number"], since_us=since, until_us=until,
                                 direction=query["direction"], limit=500)
    except Exception as exc:  # an index without a calls table: a counter device, not a call recorder
        if "no such table" in str(exc):
            return query, []
        raise
    # Every listing is logged before it is shown (it shows numbers): who looked, for what, and
    # how many calls it showed — with the digits searched for, so an auditor sees who looked for whom.
    audit("calls.search", detail={"number": numbers.search_key(query["number"]) if query["number"] else "",
                                       "from": query["from"], "to": query["to"], "direction": query["direction"],
                                       "found": len(rows)})
    return query, rows


@bp.get("/")
@permission(MANAGER)
def index():
    """External calls with their numbers, times, durations and outcome (metadata, never audio)."""
    query, rows = search()
    if is_api():
        return jsonify(rows)
    return render_template("calls/index.html", query=query, rows=rows, directions=DIRECTIONS)
