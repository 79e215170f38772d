"""The provision register's pages (Art. 9–11). Managers only. The workflow is
``domain.provisions``; exports run in the background (``domain.exports``) and the page shows
their progress."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template, request, url_for

from domain import provisions
from domain.times import local
from webui import exports, picking, scans
from webui.actions import done, refusing
from webui.parsing import ISO_TIME, Choice, Form, Text, takes
from webui.permissions import MANAGER, permission
from webui.services import context

bp = Blueprint("provisions", __name__, url_prefix="/provisions")

NEW = Form(
    Choice("ground", provisions.GROUNDS, " | ".join(provisions.GROUNDS) + " (Art. 9)",
           refuse="provision.ground_needed"),
    Text("recipient", "text", required=True, max=300, refuse="provision.recipient_needed"),
    Text("reference", "the written request's reference (may wait when urgent)"),
    Text("request_date", "text"), Text("recording", "recording id"),
    Text("start", ISO_TIME), Text("end", ISO_TIME), Text("note", "text"),
)
PAPERWORK = Form(Text("reference", "text"), Text("request_date", "text"))
RETURN = Form(Choice("kind", provisions.RETURN_KINDS, "return | erasure (first)", required=False),
              Text("outcome", "text (then)"))


def _show(provision_id: int) -> str:
    return url_for("provisions.show", provision_id=provision_id)


def describe(p) -> dict:
    return provisions.describe(context(), p, exports.job_status)


def _answer(provision_id: int, **kw):
    ctx = context()
    return done(_show(provision_id), **kw, **describe(provisions.load(ctx, provision_id)))


@bp.get("/")
@permission(MANAGER)
def index():
    return render_template("provisions/index.html", provisions=provisions.register(context().db),
                           grounds=provisions.GROUNDS, age_days=provisions.age_days)


def _new_page(form: dict):
    wanted = picking.wanted(request.args)
    return render_template("provisions/new.html", recordings=picking.recordings(context(), wanted), wanted=wanted,
                           grounds=provisions.GROUNDS, form=form)


@bp.route("/new", methods=["GET", "POST"])
@permission(MANAGER)
@takes(NEW)
def new():
    """Record a provision: its Art. 9 ground, the recipient, the written request (only an
    urgent one may follow later), one recording and the scope. The scope is held at once."""
    if request.method == "GET":
        return _new_page({})
    typed = {k: (request.form.get(k) or "").strip() for k in ("ground", "recipient", "reference", "request_date",
                                                              "recording", "start", "end", "note")}
    with refusing(page=lambda: _new_page(typed)):
        v = NEW.parse()
        provision_id = provisions.create(context(), provisions.NewProvision(
            v.ground, v.recipient, v.reference, v.request_date, v.recording, v.start, v.end, v.note))
    return _answer(provision_id, code=201, notice="provision.created")


@bp.get("/<int:provision_id>")
@permission(MANAGER)
def show(provision_id: int):
    ctx = context()
    p = provisions.load(ctx, provision_id)
    return render_template("provisions/show.html", p=p, grounds=provisions.GROUNDS,
                           exports=provisions.exports_of(ctx.db, provision_id),
                           jobs=ctx.jobs.of(provisions.REGISTER, provision_id), iso=local,
                           age_days=provisions.age_days, closable=provisions.closable(p) is None)


@bp.post("/<int:provision_id>/paperwork")
@permission(MANAGER)
@takes(PAPERWORK)
def paperwork(provision_id: int):
    """The written request arrived after an urgent provision (Art. 11(2)): its reference and date."""
    ctx = context()
    p = provisions.load(ctx, provision_id)
    with refusing(back=_show(provision_id)):
        v = PAPERWORK.parse()
        provisions.paperwork(ctx, p, v.reference, v.request_date)
    return _answer(provision_id)


@bp.post("/<int:provision_id>/scan")
@permission(MANAGER)
@takes(scans.SCAN)
def attach_scan(provision_id: int):
    """Attach the scan of the written request (PDF, PNG or JPEG; multipart field "scan")."""
    ctx = context()
    p = provisions.load(ctx, provision_id)
    with refusing(back=_show(provision_id)):
        provisions.attach_scan(ctx, p, scans.SCAN.parse().scan)
    return _answer(provision_id)


@bp.get("/<int:provision_id>/scan")
@permission(MANAGER)
def scan(provision_id: int):
    """The attached scan of the written request."""
    p = provisions.load(context(), provision_id)
    return scans.send(p["number"], p["scan_name"], "provision.scan_download")


@bp.post("/<int:provision_id>/return")
@permission(MANAGER)
@takes(RETURN)
def return_or_erasure(provision_id: int):
    """Art. 10(2): the request to the committee for return or erasure (kind), then its outcome."""
    ctx = context()
    p = provisions.load(ctx, provision_id)
    with refusing(back=_show(provision_id)):
        v = RETURN.parse()
        provisions.return_or_erasure(ctx, p, v.kind or None, v.outcome)
    return _answer(provision_id)


@bp.post("/<int:provision_id>/close")
@permission(MANAGER)
def close(provision_id: int):
    """Close the record: its holds are released and its packages on the device deleted."""
    ctx = context()
    with refusing(back=_show(provision_id)):
        provisions.close(ctx, provisions.load(ctx, provision_id))
    return _answer(provision_id)


@bp.post("/<int:provision_id>/export")
@permission(MANAGER)
@takes(exports.PROVISION)
def start_export(provision_id: int):
    """Export the provision's scope as a signed package, in the background: the manager's
    passphrase (password), optionally a transport passphrase, mute spans, blur_faces, exact."""
    ctx = context()
    p = provisions.load(ctx, provision_id)
    with refusing(back=_show(provision_id)):
        job = provisions.start_export(ctx, p, exports.asked(exports.PROVISION))
    job.session = g.session_id or ""  # the one that may take an unsealed package once as it is
    return done(_show(provision_id), code=202, notice="provision.export_started", **exports.job_status(job))


@bp.get("/<int:provision_id>/export/<job_id>.json")
@permission(MANAGER)
def export_status(provision_id: int, job_id: str):
    """An export's progress: state (running, done, failed), seconds done of total, the error."""
    return jsonify(exports.job_status(context().jobs.find(provisions.REGISTER, provision_id, job_id)))


@bp.route("/<int:provision_id>/export/<job_id>/package", methods=["GET", "POST"])
@permission(MANAGER)
@takes(exports.AGAIN)
def download(provision_id: int, job_id: str):
    """The finished package (a ZIP, or the transport-sealed .zip.age); taken again, or from
    another session, with the manager's passphrase (POST password)."""
    job = context().jobs.find(provisions.REGISTER, provision_id, job_id)
    return exports.download(job, back=_show(provision_id))
