"""The viewing-request pages (Art. 7–8): file, give an opinion, decide, close, the scan and
the printable form. The workflow is ``domain.requests``; a view parses, acts, answers."""

from __future__ import annotations

import io
import json

from flask import Blueprint, render_template, request, send_file, url_for

from domain import people, requests
from domain.times import local, reiwa
from webui.actions import done, refusing
from webui import picking, scans
from webui.parsing import ISO_TIME, Choice, Flag, Form, Number, Text, Texts, takes
from webui.permissions import MANAGER, SECTION_HEAD, permission
from webui.services import audit, context

bp = Blueprint("requests", __name__, url_prefix="/requests")

NEW = Form(
    Choice("purpose", requests.PURPOSES, " | ".join(requests.PURPOSES) + " (Art. 7)", refuse="request.purpose_needed"),
    Text("reason", "text", required=True, max=requests.MAX_REASON, refuse="request.reason_needed"),
    Texts("recording", "list of recording ids", required=True, refuse="request.recordings_needed"),
    Text("start", f"{ISO_TIME} (optional)"), Text("end", f"{ISO_TIME} (optional)"),
    Text("responsible_section", "the section, when no recording is marked for one"),
)
OPINION = Form(Choice("opinion", requests.OPINIONS, " | ".join(requests.OPINIONS), refuse="request.opinion_needed"),
               Text("note", "text", strip=False, cut=requests.MAX_NOTE))
DECISION = Form(
    Choice("decision", requests.DECISIONS, " | ".join(requests.DECISIONS), refuse="request.decision_needed"),
    Text("note", "text", strip=False), Texts("scope_recording", "list of recording ids"),
    Text("scope_start", ISO_TIME, strip=False), Text("scope_end", ISO_TIME, strip=False),
    Number("valid_hours", f"hours, at most {requests.MAX_VALID_HOURS}", high=requests.MAX_VALID_HOURS,
           integer=False, refuse="request.bad_scope"),
    Flag("confirm_responsible", "true when declared", default=False),
    Flag("confirm_written", "true: the manager checked the signed form (the attached scan, or the paper while none"
                            " is attached); needed to approve", default=False),
)


def _show(request_id: int) -> str:
    return url_for("requests.show", request_id=request_id)


def _answer(request_id: int, **kw):
    ctx = context()
    return done(_show(request_id), **kw, **requests.describe(ctx, requests.load(ctx, request_id)))


@bp.get("/")
@permission(MANAGER, SECTION_HEAD)
def index():
    return render_template("requests/index.html", requests=requests.visible(context()))


def _new_page(form: dict, code: int = 200):
    ctx = context()
    wanted = picking.wanted(request.args)
    return render_template("requests/new.html", recordings=picking.recordings(ctx, wanted),
                           wanted=wanted, has_marks=requests.has_marks, sections=people.section_names(ctx.db), form=form,
                           purposes=requests.PURPOSES), code


@bp.route("/new", methods=["GET", "POST"])
@permission(SECTION_HEAD)
@takes(NEW)
def new():
    """File a viewing request: recordings, an optional time range, the Art. 7 purpose, the reason."""
    if request.method == "GET":
        return _new_page({})
    typed = {k: (request.form.get(k) or "").strip() for k in ("purpose", "reason", "start", "end",
                                                              "responsible_section")}
    typed["recording"] = request.form.getlist("recording")  # what was ticked stays ticked on a refusal
    with refusing(page=lambda: _new_page(typed)[0]):
        v = NEW.parse()
        request_id = requests.file(context(), requests.NewRequest(
            v.purpose, v.reason, v.recording, v.start, v.end, v.responsible_section))
    return _answer(request_id, code=201, notice="request.filed")


@bp.get("/<int:request_id>")
@permission(MANAGER, SECTION_HEAD)
def show(request_id: int):
    ctx = context()
    req = requests.seen(ctx, request_id)
    opinions, decision, viewing = requests.record(ctx, request_id)
    return render_template("requests/show.html", req=req, opinions=opinions, decision=decision, viewing=viewing,
                           ended_at=None if viewing is not None else requests.last_viewing_ended(ctx, request_id),
                           recording_ids=json.loads(req["recording_ids"]), iso=local, reiwa=reiwa,
                           scope_ids=json.loads(decision["scope_recording_ids"]) if decision else [],
                           in_window=requests.valid_window(decision),
                           can_give_opinion=requests.can_give_opinion(ctx, req),
                           opinion_needed=req["requester_section"] not in requests.responsible(req))


@bp.post("/<int:request_id>/opinion")
@permission(SECTION_HEAD)
@takes(OPINION)
def opinion(request_id: int):
    """The responsible section head's opinion on another section's request (Art. 8(3))."""
    ctx = context()
    req = requests.seen(ctx, request_id)
    with refusing(back=_show(request_id)):
        requests.asked_for_opinion(ctx, req)  # before what was sent is read
        v = OPINION.parse()
        requests.give_opinion(ctx, req, v.opinion, v.note)
    return _answer(request_id)


@bp.post("/<int:request_id>/decide")
@permission(MANAGER)
@takes(DECISION)
def decide(request_id: int):
    """Approve (naming the exact scope and a validity window) or reject, with a note."""
    ctx = context()
    req = requests.load(ctx, request_id)
    with refusing(back=_show(request_id)):
        v = DECISION.parse()
        requests.decide(ctx, req, requests.Decision(
            v.decision, v.note, v.scope_recording, v.scope_start, v.scope_end, v.valid_hours,
            v.confirm_responsible, v.confirm_written))
    return _answer(request_id)


@bp.post("/<int:request_id>/close")
@permission(MANAGER)
def close(request_id: int):
    """Close a request: its viewing ends and its holds are released."""
    ctx = context()
    with refusing(back=_show(request_id)):
        requests.close(ctx, requests.load(ctx, request_id))
    return _answer(request_id)


@bp.post("/<int:request_id>/scan")
@permission(MANAGER, SECTION_HEAD)
@takes(scans.SCAN)
def attach_scan(request_id: int):
    """Attach the signed, sealed paper form, scanned (PDF, PNG or JPEG; multipart field "scan")."""
    ctx = context()
    req = requests.load(ctx, request_id)
    with refusing(back=_show(request_id)):
        requests.attach_scan(ctx, req, scans.SCAN.parse().scan)
    return _answer(request_id)


@bp.get("/<int:request_id>/scan")
@permission(MANAGER, SECTION_HEAD)
def scan(request_id: int):
    """The attached scan of the signed form."""
    req = requests.seen(context(), request_id)
    return scans.send(req["number"], req["scan_name"], "request.scan_download")


@bp.get("/<int:request_id>/form.pdf")
@permission(MANAGER, SECTION_HEAD)
def form_pdf(request_id: int):
    """The request as a printable form (PDF, Japanese) with signature and seal fields."""
    from webui.forms import request_form_pdf

    req = requests.seen(context(), request_id)
    pdf = request_form_pdf(req, json.loads(req["recording_ids"]), local, reiwa)
    audit("request.form_print", subject=req["number"])
    return send_file(io.BytesIO(pdf), mimetype="application/pdf", download_name=f"viewing-request-{req['number']}.pdf")
