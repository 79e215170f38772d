"""The provision register (Art. 9–11): footage that leaves the city, why, to whom, and what
became of it. Managers only.

- A provision names its Art. 9 ground, the recipient, the written request (reference,
  date, scan) and the approved scope (one recording, a time range). Ground 5 (urgent, the
  mayor's judgement) may go before its paperwork (Art. 11(2)): the record says so and
  stays on the dashboard until the paperwork is in.
- The scope is on hold from the moment the record exists until it is closed.
- For the committee (ground 1), after its deliberation the manager records the request
  for return or erasure and its outcome (Art. 10(2)); such a record cannot be closed
  before that.
- Exports run in the background (``webui.exports``, shared with the disclosure register),
  sealed as they are written; the page shows their progress.
"""

from __future__ import annotations

import json

from flask import Blueprint, abort, g, jsonify, render_template, request, url_for

from firmware.regulation import Ground
from webui import auth, exports
from webui.actions import done, fields, refuse
from webui.db import get_db, transaction
from webui.permissions import MANAGER, permission
from webui.requests import _iso, fiscal_year, recordings_for_request, release_holds, scope_range

GROUNDS = tuple(Ground)  # Art. 9 (1)–(5): what a form may send (`in` an enum refuses a string before 3.12)

bp = Blueprint("provisions", __name__, url_prefix="/provisions")


def records(where: str = "1", params: tuple = (), order: str = "p.id") -> list:
    """Provision records with their approver's name: the one query the pages and the API read."""
    return get_db().execute(f"SELECT p.*, u.display_name AS approver FROM provisions p JOIN users u"
                            f" ON u.id = p.approved_by WHERE {where} ORDER BY {order}", params).fetchall()


def load(provision_id: int):
    rows = records("p.id = ?", (provision_id,))
    if not rows:
        abort(404)
    return rows[0]


def needing_attention() -> list:
    """Open records the manager must still act on: paperwork pending (Art. 11(2)), or the
    committee's footage not yet returned or erased (Art. 10(2))."""
    return records("p.status = 'open' AND (p.request_reference = ''"
                   " OR (p.ground = 'committee' AND p.return_done_at IS NULL))")


def register() -> list:
    """The whole register, open records first, newest first."""
    return records(order="p.status = 'closed', p.id DESC")


def age_days(created_at: str) -> int:
    from datetime import datetime

    return (datetime.now().astimezone() - datetime.fromisoformat(created_at)).days


@bp.get("/")
@permission(MANAGER)
def index():
    return render_template("provisions/index.html", provisions=register(), grounds=GROUNDS, age_days=age_days)


@bp.route("/new", methods=["GET", "POST"])
@permission(MANAGER)
def new():
    """Record a provision: its Art. 9 ground, the recipient, the written request (only an
    urgent one may follow later), one recording and the scope. The scope is held at once."""
    recordings = recordings_for_request()
    if request.method == "GET":
        return render_template("provisions/new.html", recordings=recordings, grounds=GROUNDS, form={})
    inputs = fields()
    form = {k: (inputs.get(k) or "").strip() for k in ("ground", "recipient", "reference", "request_date",
                                                        "recording", "start", "end", "note")}
    known = {r["id"]: r for r in recordings}

    def again(key: str):
        refuse(key, page=lambda: render_template("provisions/new.html", recordings=recordings, grounds=GROUNDS,
                                                 form=form))

    if form["ground"] not in GROUNDS:
        again("provision.ground_needed")
    if not form["recipient"] or len(form["recipient"]) > 300:
        again("provision.recipient_needed")
    if not form["reference"] and form["ground"] != "urgent":
        again("provision.reference_needed")
    if form["recording"] not in known:
        again("request.recordings_needed")
    scope = scope_range(form["start"], form["end"], [known[form["recording"]]])
    if scope is None:
        again("request.bad_range")
    start, end = scope
    db = get_db()
    fy = fiscal_year()
    number = f"{fy}-P{db.execute('SELECT count(*) FROM provisions WHERE fiscal_year = ?', (fy,)).fetchone()[0] + 1:03d}"
    auth.audit("provision.create", subject=number, purpose="provision",
               detail={"ground": form["ground"], "recipient": form["recipient"][:200], "recording": form["recording"],
                       "start": _iso(start), "end": _iso(end), "paperwork": "received" if form["reference"] else
                       "pending (Art. 11(2))"})
    from webui import control

    # Held before the record exists: no open provision is ever without its hold.
    holds = control().request("hold", reason="provision", recording_ids=[form["recording"]], reference=number,
                              by=g.user.username)["holds"]
    try:
        with transaction(db):
            provision_id = db.execute(
                "INSERT INTO provisions (number, fiscal_year, ground, recipient, request_reference, request_date,"
                " recording_id, start_wall_us, end_wall_us, approved_by, note, created_at, hold_ids)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, fy, form["ground"], form["recipient"], form["reference"][:200], form["request_date"][:40],
                 form["recording"], start, end, g.user.id, form["note"][:2000], auth.now_iso(),
                 json.dumps(holds))).lastrowid
    except Exception:
        release_holds(json.dumps(holds))
        raise
    return done(url_for("provisions.show", provision_id=provision_id), code=201, notice="provision.created",
                **describe(load(provision_id)))


@bp.get("/<int:provision_id>")
@permission(MANAGER)
def show(provision_id: int):
    p = load(provision_id)
    exports, jobs = _exports(provision_id), _jobs_of(provision_id)
    return render_template("provisions/show.html", p=p, grounds=GROUNDS, exports=exports, jobs=jobs, iso=_iso,
                           age_days=age_days, closable=_closable(p) is None)


@bp.post("/<int:provision_id>/paperwork")
@permission(MANAGER)
def paperwork(provision_id: int):
    """The written request arrived after an urgent provision (Art. 11(2)): its reference and date."""
    p = load(provision_id)
    inputs = fields()
    back = url_for("provisions.show", provision_id=provision_id)
    reference = (inputs.get("reference") or "").strip()[:200]
    if p["status"] != "open":
        refuse("provision.already_closed", 409, back=back)
    if not reference:
        refuse("provision.reference_needed", back=back)
    date = (inputs.get("request_date") or "").strip()[:40]
    auth.audit("provision.paperwork", subject=p["number"], purpose="provision",
               detail={"reference": reference, "date": date})
    get_db().execute("UPDATE provisions SET request_reference = ?, request_date = ? WHERE id = ?",
                     (reference, date, provision_id))
    return done(back, **describe(load(provision_id)))


@bp.post("/<int:provision_id>/scan")
@permission(MANAGER)
def attach_scan(provision_id: int):
    """Attach the scan of the written request (PDF, PNG or JPEG; multipart field "scan")."""
    from webui.requests import store_scan

    p = load(provision_id)
    back = url_for("provisions.show", provision_id=provision_id)
    if p["status"] != "open":
        refuse("provision.already_closed", 409, back=back)  # a closed record's paperwork stays as it was
    name, digest = store_scan(p["number"], back, "provision.scan")
    get_db().execute("UPDATE provisions SET scan_name = ?, scan_sha256 = ? WHERE id = ?", (name, digest, provision_id))
    return done(back, **describe(load(provision_id)))


@bp.get("/<int:provision_id>/scan")
@permission(MANAGER)
def scan(provision_id: int):
    """The attached scan of the written request."""
    from webui.requests import send_scan

    p = load(provision_id)
    return send_scan(p["number"], p["scan_name"], "provision.scan_download")


@bp.post("/<int:provision_id>/return")
@permission(MANAGER)
def return_or_erasure(provision_id: int):
    """Art. 10(2): the request to the committee for return or erasure (kind), then its outcome."""
    p = load(provision_id)
    back = url_for("provisions.show", provision_id=provision_id)
    if p["status"] != "open" or p["ground"] != "committee":
        refuse("provision.not_committee", 409, back=back)
    inputs = fields()
    kind, outcome = inputs.get("kind"), (inputs.get("outcome") or "").strip()[:1000]
    db = get_db()
    if p["return_requested_at"] is None:
        if kind not in ("return", "erasure"):
            refuse("provision.return_kind_needed", back=back)
        auth.audit("provision.return_request", subject=p["number"], purpose="provision", detail={"kind": kind})
        db.execute("UPDATE provisions SET return_kind = ?, return_requested_at = ? WHERE id = ?",
                   (kind, auth.now_iso(), provision_id))
    else:
        if not outcome:
            refuse("provision.outcome_needed", back=back)
        auth.audit("provision.return_done", subject=p["number"], purpose="provision",
                   detail={"kind": p["return_kind"], "outcome": outcome})
        db.execute("UPDATE provisions SET return_outcome = ?, return_done_at = ? WHERE id = ?",
                   (outcome, auth.now_iso(), provision_id))
    return done(back, **describe(load(provision_id)))


def _closable(p) -> str | None:
    if p["status"] != "open":
        return "provision.already_closed"
    if not p["request_reference"]:
        return "provision.paperwork_pending"
    if p["ground"] == "committee" and p["return_done_at"] is None:
        return "provision.return_pending"
    return None


@bp.post("/<int:provision_id>/close")
@permission(MANAGER)
def close(provision_id: int):
    """Close the record: its holds are released and its packages on the device deleted."""
    p = load(provision_id)
    problem = _closable(p)
    if problem:
        refuse(problem, 409, back=url_for("provisions.show", provision_id=provision_id))
    auth.audit("provision.close", subject=p["number"], purpose="provision")
    get_db().execute("UPDATE provisions SET status = 'closed', closed_at = ? WHERE id = ?", (auth.now_iso(),
                                                                                              provision_id))
    release_holds(p["hold_ids"])
    for job in _jobs_of(provision_id):
        _discard(job)
    return done(url_for("provisions.show", provision_id=provision_id), **describe(load(provision_id)))


def _exports(provision_id: int) -> list:
    return get_db().execute("SELECT e.*, u.display_name FROM provision_exports e JOIN users u ON u.id = e.by_id"
                            " WHERE provision_id = ? ORDER BY e.id", (provision_id,)).fetchall()


def describe(p) -> dict:
    """A provision record as the API shows it (what its page shows)."""
    return {
        "id": p["id"], "number": p["number"], "status": p["status"], "ground": p["ground"],
        "recipient": p["recipient"], "reference": p["request_reference"], "request_date": p["request_date"],
        "paperwork_pending": not p["request_reference"], "scan_sha256": p["scan_sha256"],
        "recording_id": p["recording_id"],
        "start": _iso(p["start_wall_us"]), "end": _iso(p["end_wall_us"]), "approver": p["approver"],
        "note": p["note"], "created_at": p["created_at"], "closed_at": p["closed_at"],
        "age_days": age_days(p["created_at"]), "return_kind": p["return_kind"],
        "return_requested_at": p["return_requested_at"], "return_outcome": p["return_outcome"],
        "return_done_at": p["return_done_at"], "closable": _closable(p) is None,
        "exports": [{"by": e["display_name"], "at": e["at"], "manifest_sha256": e["manifest_sha256"],
                     "audit_seq": e["audit_seq"], "clip_seconds": e["clip_seconds"], "sealed": bool(e["sealed"])}
                    for e in _exports(p["id"])],
        "jobs": [_job_status(j) for j in _jobs_of(p["id"])],
    }


# -- exports (webui/exports.py) -------------------------------------------------------------

def _jobs_of(provision_id: int) -> list:
    return exports.jobs_of("provisions", provision_id)


def _discard(job) -> None:
    exports.discard(job)


@bp.post("/<int:provision_id>/export")
@permission(MANAGER)
def start_export(provision_id: int):
    """Export the provision's scope as a signed package, in the background: the manager's
    passphrase (password), optionally a transport passphrase, mute spans, blur_faces, exact."""
    from firmware import export as ex

    p = load(provision_id)
    back = url_for("provisions.show", provision_id=provision_id)
    if p["status"] != "open":
        refuse("provision.already_closed", 409, back=back)
    opts = exports.options(fields(), subject=p["number"], purpose="provision", back=back,
                           recording_id=p["recording_id"])
    provision = ex.Provision(ground=p["ground"], recipient=p["recipient"], approver=p["approver"],
                             exporter=g.user.display_name or g.user.username, reference=p["request_reference"],
                             request_date=p["request_date"], number=p["number"])
    job = exports.start(register="provisions", record_id=provision_id, number=p["number"], purpose="provision",
                        table="provision_exports", provision=provision, recording_id=p["recording_id"],
                        start_us=p["start_wall_us"], end_us=p["end_wall_us"], opts=opts,
                        package_url=lambda job_id: url_for("provisions.download", provision_id=provision_id,
                                                           job_id=job_id))
    return done(back, code=202, notice="provision.export_started", **_job_status(job))


@bp.get("/<int:provision_id>/export/<job_id>.json")
@permission(MANAGER)
def export_status(provision_id: int, job_id: str):
    """An export's progress: state (running, done, failed), seconds done of total, the error."""
    return jsonify(_job_status(exports.find("provisions", provision_id, job_id)))


def _job_status(job) -> dict:
    return {**exports.status(job), "provision_id": job.record_id}


@bp.get("/<int:provision_id>/export/<job_id>/package")
@permission(MANAGER)
def download(provision_id: int, job_id: str):
    """The finished package (a ZIP, or the transport-sealed .zip.age)."""
    return exports.package(exports.find("provisions", provision_id, job_id))


cleanup = exports.cleanup
