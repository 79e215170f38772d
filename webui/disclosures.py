"""The disclosure register's pages (Art. 12: 本人開示 and 情報公開). Managers only: the
requester's name and contact are personal data. The workflow, with its statutory deadlines,
is ``domain.disclosures``; the handover is an export with bystanders masked."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template, request, url_for

from domain import disclosures
from domain.times import local
from webui import exports, picking
from webui.actions import done, refusing
from webui.parsing import ISO_TIME, Choice, Flag, Form, Number, Text, takes
from webui.permissions import MANAGER, permission
from webui.services import context

bp = Blueprint("disclosures", __name__, url_prefix="/disclosures")

NEW = Form(
    Choice("kind", disclosures.KINDS, "personal (本人開示) | public (情報公開)", refuse="disclosure.kind_needed"),
    Text("requester", "name (personal data)", required=True, max=200, refuse="disclosure.requester_needed"),
    Text("contact", "text", max=300, refuse="disclosure.requester_needed"),
    Text("identity_check", " | ".join(disclosures.IDENTITY_CHECKS) + " (required for personal)"),
    Text("identity_note", "text (required for other)"),
    Text("received_on", "YYYY-MM-DD (default today)"), Text("recording", "recording id"),
    Text("start", ISO_TIME), Text("end", ISO_TIME), Text("note", "text"),
)
EXTENSION = Form(Number("days", "1–30", low=1, high=30, refuse="disclosure.bad_extension"), Text("reason", "text"),
                 Text("notified_on", "YYYY-MM-DD: the written notice", strip=False))
DECISION = Form(Choice("decision", disclosures.DECISIONS, " | ".join(disclosures.DECISIONS),
                       refuse="disclosure.decision_needed"),
                Text("decided_on", "YYYY-MM-DD (default today)", strip=False),
                Text("note", "the reason (required unless full)"))
CLOSE = Form(Flag("withdrawn", "true to close an undecided request as withdrawn", default=False))


def _show(disclosure_id: int) -> str:
    return url_for("disclosures.show", disclosure_id=disclosure_id)


def describe(d) -> dict:
    return disclosures.describe(context(), d, exports.job_status)


def _answer(disclosure_id: int, **kw):
    return done(_show(disclosure_id), **kw, **describe(disclosures.load(context(), disclosure_id)))


def _page_helpers() -> dict:
    return {"kinds": disclosures.KINDS, "checks": disclosures.IDENTITY_CHECKS, "decisions": disclosures.DECISIONS,
            "deadlines": disclosures.DEADLINES, "deadline": disclosures.deadline,
            "days_remaining": disclosures.days_remaining, "overdue": disclosures.overdue,
            "in_time": disclosures.in_time, "iso": local, "due_soon": disclosures.DUE_SOON_DAYS}


@bp.get("/")
@permission(MANAGER)
def index():
    return render_template("disclosures/index.html", disclosures=disclosures.register(context().db),
                           **_page_helpers())


def _new_page(form: dict):
    wanted = picking.wanted(request.args)
    return render_template("disclosures/new.html", recordings=picking.recordings(context(), wanted), wanted=wanted,
                           form=form,
                           today=disclosures.today().isoformat(), **_page_helpers())


@bp.route("/new", methods=["GET", "POST"])
@permission(MANAGER)
@takes(NEW)
def new():
    """Record a disclosure request: its kind (personal | public), the requester and contact, the
    identity check (本人開示 only), the day received, one recording and the scope. The scope
    is held at once; the deadline runs from the day received."""
    if request.method == "GET":
        return _new_page({})
    typed = {k: (request.form.get(k) or "").strip() for k in (
        "kind", "requester", "contact", "identity_check", "identity_note", "received_on", "recording", "start", "end",
        "note")}
    with refusing(page=lambda: _new_page(typed)):
        v = NEW.parse()
        disclosure_id = disclosures.create(context(), disclosures.NewDisclosure(
            v.kind, v.requester, v.contact, v.identity_check, v.identity_note, v.received_on, v.recording, v.start,
            v.end, v.note))
    return _answer(disclosure_id, code=201, notice="disclosure.created")


@bp.get("/<int:disclosure_id>")
@permission(MANAGER)
def show(disclosure_id: int):
    ctx = context()
    d = disclosures.load(ctx, disclosure_id)
    return render_template("disclosures/show.html", d=d, exports=disclosures.exports_of(ctx.db, disclosure_id),
                           jobs=ctx.jobs.of(disclosures.REGISTER, disclosure_id),
                           sound_only=ctx.recordings.sound_only(d["recording_id"]),
                           closable=disclosures.closable(ctx.db, d) is None,
                           original_deadline=disclosures.original_deadline(d),
                           extendable=disclosures.extendable(d) is None,
                           max_extension=disclosures.DEADLINES[d["kind"]][1],
                           today=disclosures.today().isoformat(), **_page_helpers())


@bp.post("/<int:disclosure_id>/extension")
@permission(MANAGER)
@takes(EXTENSION)
def extend(disclosure_id: int):
    """Extend the deadline once, before it passes (APPI Art. 83(2)): days (at most 30), the
    reason, and the date the requester was told in writing (notified_on)."""
    ctx = context()
    d = disclosures.load(ctx, disclosure_id)
    with refusing(back=_show(disclosure_id)):
        v = EXTENSION.parse()
        disclosures.extend(ctx, d, v.days, v.reason, v.notified_on)
    return _answer(disclosure_id, notice="disclosure.extended")


@bp.post("/<int:disclosure_id>/decision")
@permission(MANAGER)
@takes(DECISION)
def decide(disclosure_id: int):
    """Record the decision (full | partial | refused | not_held | no_confirm), its date
    (decided_on, default today) and, for any but full disclosure, the reason (note)."""
    ctx = context()
    d = disclosures.load(ctx, disclosure_id)
    with refusing(back=_show(disclosure_id)):
        v = DECISION.parse()
        disclosures.decide(ctx, d, v.decision, v.decided_on, v.note)
    return _answer(disclosure_id)


@bp.post("/<int:disclosure_id>/close")
@permission(MANAGER)
@takes(CLOSE)
def close(disclosure_id: int):
    """Close the record: after the decision (and, when something is disclosed, its handover
    export), or withdrawn (true) by the requester before it. Its holds are released and its
    packages on the device deleted."""
    ctx = context()
    d = disclosures.load(ctx, disclosure_id)
    with refusing(back=_show(disclosure_id)):
        disclosures.close(ctx, d, CLOSE.parse().withdrawn)
    return _answer(disclosure_id)


@bp.post("/<int:disclosure_id>/export")
@permission(MANAGER)
@takes(exports.DISCLOSURE)
def start_export(disclosure_id: int):
    """Export what is disclosed as a signed package, others masked, in the background: the
    manager's passphrase (password), blur_faces (true/false), blur regions, mute spans (other
    voices), exact, optionally a transport passphrase. Only after a full or partial disclosure."""
    ctx = context()
    d = disclosures.load(ctx, disclosure_id)
    with refusing(back=_show(disclosure_id)):
        job = disclosures.start_export(ctx, d, exports.asked(exports.DISCLOSURE))
    job.session = g.session_id or ""  # the one that may take an unsealed package once as it is
    return done(_show(disclosure_id), code=202, notice="provision.export_started", **exports.job_status(job))


@bp.get("/<int:disclosure_id>/export/<job_id>.json")
@permission(MANAGER)
def export_status(disclosure_id: int, job_id: str):
    """A handover export's progress: state (running, done, failed), seconds done of total, the error."""
    return jsonify(exports.job_status(context().jobs.find(disclosures.REGISTER, disclosure_id, job_id)))


@bp.route("/<int:disclosure_id>/export/<job_id>/package", methods=["GET", "POST"])
@permission(MANAGER)
@takes(exports.AGAIN)
def download(disclosure_id: int, job_id: str):
    """The finished handover package (a ZIP, or the transport-sealed .zip.age); taken again,
    or from another session, with the manager's passphrase (POST password)."""
    job = context().jobs.find(disclosures.REGISTER, disclosure_id, job_id)
    return exports.download(job, back=_show(disclosure_id))
