"""The annual operations report's pages (Art. 14): the report of any fiscal year as it will be
published, and its files. What it counts and how it is printed is
``firmware.documents.report``."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, request
from markupsafe import Markup

from firmware.documents.report import Report, body_html, build, rows, to_csv, to_html, to_pdf
from webui.permissions import MANAGER, permission

bp = Blueprint("report", __name__, url_prefix="/admin/report")
_TYPES = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}


def _this_device(fy: int) -> Report:
    from firmware.config import load
    from firmware.paths import config_file

    data = Path(current_app.config["KIROKU_DATA"])
    return build([(data, load(config_file(data, None)).device.id)], fy)


def _year() -> int:
    from webui.actions import refuse
    from domain.times import fiscal_year

    text = request.args.get("year", "")
    if not text:
        return fiscal_year()
    if not text.isdigit() or not 2000 <= int(text) <= 2100:
        refuse("report.bad_year")
    return int(text)


@bp.get("/")
@permission(MANAGER)
def index():
    """The annual operations report (Art. 14) of any fiscal year, as it will be published."""
    from domain.times import fiscal_year

    fy = _year()
    report = _this_device(fy)
    from dataclasses import asdict

    from flask import jsonify

    from webui.actions import is_api

    if is_api():
        return jsonify({"fiscal_year": fy, "title": report.title, "generated_at": report.generated_at,
                        "devices": [asdict(f) for f in report.devices], "total": asdict(report.total),
                        "rows": [{"section": a, "item": b, "values": v} for a, b, v in rows(report)]})
    return render_template("admin/report.html", body=Markup(body_html(report)), year=fy,
                           years=list(range(fiscal_year(), fiscal_year() - 6, -1)))


@bp.get("/<int:year>.<kind>")
@permission(MANAGER)
def download(year: int, kind: str):
    """The report as PDF, CSV or HTML, for publication."""
    from flask import abort

    from webui.services import audit

    if kind not in _TYPES or not 2000 <= year <= 2100:
        abort(404)
    audit("report.download", subject=str(year), detail={"format": kind})
    report = _this_device(year)
    data = {"pdf": to_pdf, "csv": to_csv, "html": lambda r: to_html(r).encode("utf-8")}[kind](report)
    response = Response(data, mimetype=_TYPES[kind])
    response.headers["Content-Disposition"] = f'attachment; filename="kiroku-report-{year}.{kind}"'
    return response
