"""The city's annual operations report (Art. 14) at the hub: any fiscal year, as it will be
published — every device by its place, and the city in total, with each device's last
witnessed checkpoint — and its files (PDF, CSV, HTML). What it counts is ``hub.report``'s;
how it is printed is ``firmware.documents.report``'s, so a device's report and the city's
read alike."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, abort, jsonify, render_template, request
from markupsafe import Markup

from domain.times import fiscal_year, reiwa
from firmware.documents.report import body_html, rows, to_csv, to_html, to_pdf
from hub import report
from webui.actions import is_api, refuse
from webui.permissions import AUDITOR, MANAGER, permission
from webui.services import audit, context

bp = Blueprint("hub_report", __name__, url_prefix="/hub/report")
TYPES = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}
YEARS_SHOWN = 6  # this fiscal year and the five before it


def _year() -> int:
    text = request.args.get("year", "")
    if not text:
        return fiscal_year()
    if not text.isdigit() or not 2000 <= int(text) <= 2100:
        refuse("report.bad_year")
    return int(text)


@bp.get("/")
@permission(MANAGER, AUDITOR)
def index():
    """The city's annual operations report (Art. 14) of a fiscal year (?year=2026): per device, by place, and in
    total, with each device's last witnessed checkpoint."""
    fy = _year()
    built = report.build(context().db, fy)
    if is_api():
        return jsonify({"fiscal_year": fy, "title": built.title, "generated_at": built.generated_at,
                        "devices": [asdict(f) for f in built.devices], "total": asdict(built.total),
                        "rows": [{"section": a, "item": b, "values": v} for a, b, v in rows(built)]})
    return render_template("hub/report.html", body=Markup(body_html(built)), year=fy, devices=len(built.devices),
                           years=list(range(fiscal_year(), fiscal_year() - YEARS_SHOWN, -1)), reiwa=reiwa)


@bp.get("/<int:year>.<kind>")
@permission(MANAGER, AUDITOR)
def download(year: int, kind: str):
    """The city's report as PDF, CSV or HTML, for publication."""
    if kind not in TYPES or not 2000 <= year <= 2100:
        abort(404)
    audit("report.download", subject=str(year), detail={"format": kind})
    built = report.build(context().db, year)
    data = {"pdf": to_pdf, "csv": to_csv, "html": lambda r: to_html(r).encode("utf-8")}[kind](built)
    response = Response(data, mimetype=TYPES[kind])
    response.headers["Content-Disposition"] = f'attachment; filename="kiroku-city-report-{year}.{kind}"'
    return response
