"""The disclosure register (Art. 12): requests for footage under the personal-information
protection rules (本人開示: the recorded person asks for their own) and under the
information-disclosure ordinance (情報公開: anyone asks for an administrative document).
Managers only: the requester's name and contact are personal data.

- A record names its kind, the requester, how a 本人開示 requester proved who they are
  (APPI Art. 77(2); not asked for 情報公開), the scope (one recording, a time range), and
  the day the request was received. The scope is on hold (reason ``disclosure``) from
  the moment the record exists until it is closed.
- The statutory deadline for the decision (``DEADLINES``, the one place the day counts
  live) is counted from the day of receipt, which itself is not counted (民法 Art. 140):
  the last day is the receipt date plus N days.

  * 本人開示 — 個人情報の保護に関する法律 (APPI) Art. 83(1): 開示決定等 within 30 days of
    the request; Art. 83(2): extendable by at most 30 days for a justifiable reason, the
    requester told in writing, without delay, of the new period and the reason.
  * 情報公開 — information-disclosure ordinances typically give 15 days, extendable by at
    most 30 days with written notice (check the city's ordinance, 一宮市情報公開条例, and
    change ``DEADLINES`` if it differs).

  A deadline falling on a weekend or holiday is not moved to the next working day (which
  the law allows): the register shows the earlier, safe day. Days a requester spends
  correcting a defective request (補正, APPI Art. 83(1) proviso) are not deducted either.
  The day counts in force when a record is made are stored with it, so changing the
  constants never moves an existing deadline.
- One extension may be recorded, before the original deadline passes, with its reason and
  the date of the written notice. Open undecided requests due within ``DUE_SOON_DAYS`` or
  overdue are on the dashboard.
- The decision is one of ``DECISIONS``; any but full disclosure states its reason. What is
  handed over is a signed export package (``webui.exports``, the provisions' path) with
  bystanders masked: automatic face blurring, manual blur regions (when the requester's
  own face must stay visible — the detector blurs every face) and muted time ranges for
  other people's voices (the whole sound is muted there: voices are not separated).
- The requester's name is kept out of the audit log, which is append-only: the log says
  what was done and under which number; the register says for whom.

Register actions are logged with the Art. 7(4) purpose ("business"): answering a request
the law gives a citizen is the city's business, not a provision under Art. 9.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

from flask import Blueprint, abort, g, jsonify, render_template, request, url_for

from firmware.deadlines import deadline, original_deadline, today
from firmware.deadlines import parse_date as _date

from webui import auth, exports
from webui.actions import done, fields, flag, refuse
from webui.db import get_db, transaction
from webui.permissions import MANAGER, permission
from webui.requests import _iso, fiscal_year, recordings_for_request, release_holds, scope_range

bp = Blueprint("disclosures", __name__, url_prefix="/disclosures")

PURPOSE = "disclosure"  # in the audit log: Art. 12, not one of Art. 7's purposes
KINDS = ("personal", "public")  # 本人開示, 情報公開
# kind: (days to decide, at most this many days more by a recorded extension)
DEADLINES = {
    "personal": (30, 30),  # APPI Art. 83(1), 83(2)
    "public": (15, 30),  # information-disclosure ordinance (typical; the city's may differ)
}
DUE_SOON_DAYS = 7  # on the dashboard this many days before the deadline
IDENTITY_CHECKS = ("licence", "my_number", "passport", "residence_card", "other")  # APPI Art. 77(2)
DECISIONS = ("full", "partial", "refused", "not_held", "no_confirm")  # APPI Art. 82, 79, 81
DISCLOSING = ("full", "partial")  # decisions after which something is handed over


# -- reading the register -----------------------------------------------------------------------

def records(where: str = "1", params: tuple = (), order: str = "d.id") -> list:
    """Disclosure records with the names of who received and decided them: the one query the
    pages and the API read."""
    return get_db().execute(f"SELECT d.*, r.display_name AS receiver, x.display_name AS decider FROM disclosures d"
                            f" JOIN users r ON r.id = d.received_by LEFT JOIN users x ON x.id = d.decided_by"
                            f" WHERE {where} ORDER BY {order}", params).fetchall()


def load(disclosure_id: int):
    rows = records("d.id = ?", (disclosure_id,))
    if not rows:
        abort(404)
    return rows[0]


def register() -> list:
    """The whole register, open records first, newest first."""
    return records(order="d.status = 'closed', d.id DESC")


def pending(d) -> bool:
    """Open and not yet decided: its deadline runs."""
    return d["status"] == "open" and d["decision"] is None and not d["withdrawn"]


def days_remaining(d) -> int | None:
    """Days left to decide (0 on the last day, negative once overdue); None once decided or closed."""
    return (deadline(d) - today()).days if pending(d) else None


def overdue(d) -> bool:
    left = days_remaining(d)
    return left is not None and left < 0


def in_time(d) -> bool | None:
    """Whether the decision was made by the deadline (None while undecided)."""
    return None if d["decided_on"] is None else date.fromisoformat(d["decided_on"]) <= deadline(d)


def needing_attention() -> list:
    """Open undecided requests whose deadline is near or past, most urgent first."""
    due = [d for d in records("d.status = 'open' AND d.decision IS NULL AND d.withdrawn = 0")
           if days_remaining(d) <= DUE_SOON_DAYS]
    return sorted(due, key=deadline)


def _exports(disclosure_id: int) -> list:
    return get_db().execute("SELECT e.*, u.display_name FROM disclosure_exports e JOIN users u ON u.id = e.by_id"
                            " WHERE disclosure_id = ? ORDER BY e.id", (disclosure_id,)).fetchall()


def _closable(d, withdrawn: bool = False) -> str | None:
    if d["status"] != "open":
        return "disclosure.already_closed"
    if d["decision"] is None and not withdrawn:
        return "disclosure.undecided"
    if d["decision"] in DISCLOSING and not _exports(d["id"]):
        return "disclosure.handover_pending"
    return None


def describe(d) -> dict:
    """A disclosure record as the API shows it (what its page shows)."""
    return {
        "id": d["id"], "number": d["number"], "status": d["status"], "kind": d["kind"],
        "requester": d["requester"], "contact": d["contact"], "identity_check": d["identity_check"],
        "identity_note": d["identity_note"], "recording_id": d["recording_id"],
        "start": _iso(d["start_wall_us"]), "end": _iso(d["end_wall_us"]), "received_on": d["received_on"],
        "received_by": d["receiver"], "deadline": deadline(d).isoformat(), "deadline_days": d["deadline_days"],
        "extension_days": d["extension_days"], "extension_reason": d["extension_reason"],
        "extension_notified_on": d["extension_notified_on"], "days_remaining": days_remaining(d),
        "overdue": overdue(d), "decision": d["decision"], "decided_on": d["decided_on"],
        "decision_note": d["decision_note"], "decided_by": d["decider"], "decided_in_time": in_time(d),
        "withdrawn": bool(d["withdrawn"]), "note": d["note"], "created_at": d["created_at"],
        "closed_at": d["closed_at"], "closable": _closable(d) is None,
        "exports": [{"by": e["display_name"], "at": e["at"], "manifest_sha256": e["manifest_sha256"],
                     "audit_seq": e["audit_seq"], "clip_seconds": e["clip_seconds"], "sealed": bool(e["sealed"])}
                    for e in _exports(d["id"])],
        "jobs": [_job_status(j) for j in _jobs_of(d["id"])],
    }


# -- pages and actions --------------------------------------------------------------------------

def _page_helpers() -> dict:
    return {"kinds": KINDS, "checks": IDENTITY_CHECKS, "decisions": DECISIONS, "deadlines": DEADLINES,
            "deadline": deadline, "days_remaining": days_remaining, "overdue": overdue, "in_time": in_time,
            "iso": _iso, "due_soon": DUE_SOON_DAYS}


@bp.get("/")
@permission(MANAGER)
def index():
    return render_template("disclosures/index.html", disclosures=register(), **_page_helpers())


@bp.route("/new", methods=["GET", "POST"])
@permission(MANAGER)
def new():
    """Record a disclosure request: its kind (personal | public), the requester and contact, the
    identity check (本人開示 only), the day received, one recording and the scope. The scope
    is held at once; the deadline runs from the day received."""
    recordings = recordings_for_request()

    def page(form):
        return render_template("disclosures/new.html", recordings=recordings, form=form,
                               today=today().isoformat(), **_page_helpers())

    if request.method == "GET":
        return page({})
    inputs = fields()
    form = {k: (inputs.get(k) or "").strip() for k in ("kind", "requester", "contact", "identity_check",
                                                        "identity_note", "received_on", "recording", "start", "end",
                                                        "note")}
    known = {r["id"]: r for r in recordings}

    def again(key: str):
        refuse(key, page=lambda: page(form))

    if form["kind"] not in KINDS:
        again("disclosure.kind_needed")
    if not form["requester"] or len(form["requester"]) > 200 or len(form["contact"]) > 300:
        again("disclosure.requester_needed")
    if form["kind"] == "personal":
        if form["identity_check"] not in IDENTITY_CHECKS:
            again("disclosure.identity_needed")
        if form["identity_check"] == "other" and not form["identity_note"]:
            again("disclosure.identity_note_needed")
    else:
        form["identity_check"] = form["identity_note"] = ""  # 情報公開: anyone may ask
    received = _date(form["received_on"]) if form["received_on"] else today()
    if received is None or received > today() or received < today() - timedelta(days=366):
        again("disclosure.bad_received")
    if form["recording"] not in known:
        again("request.recordings_needed")
    scope = scope_range(form["start"], form["end"], [known[form["recording"]]])
    if scope is None:
        again("request.bad_range")
    start, end = scope
    days = DEADLINES[form["kind"]][0]
    db = get_db()
    fy = fiscal_year()
    count = db.execute("SELECT count(*) FROM disclosures WHERE fiscal_year = ?", (fy,)).fetchone()[0]
    number = f"{fy}-D{count + 1:03d}"
    # The requester's name stays out of the append-only log: personal data, kept in the register.
    auth.audit("disclosure.create", subject=number, purpose=PURPOSE,
               detail={"kind": form["kind"], "identity_check": form["identity_check"] or None,
                       "recording": form["recording"], "start": _iso(start), "end": _iso(end),
                       "received_on": received.isoformat(),
                       "deadline": (received + timedelta(days=days)).isoformat()})
    from webui import control

    # Held before the record exists: no open request is ever without its hold.
    holds = control().request("hold", reason="disclosure", recording_ids=[form["recording"]], reference=number,
                              by=g.user.username)["holds"]
    try:
        with transaction(db):
            disclosure_id = db.execute(
                "INSERT INTO disclosures (number, fiscal_year, kind, requester, contact, identity_check, identity_note,"
                " recording_id, start_wall_us, end_wall_us, received_on, deadline_days, received_by, note, created_at,"
                " hold_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, fy, form["kind"], form["requester"], form["contact"], form["identity_check"] or None,
                 form["identity_note"][:500], form["recording"], start, end, received.isoformat(), days, g.user.id,
                 form["note"][:2000], auth.now_iso(), json.dumps(holds))).lastrowid
    except Exception:
        release_holds(json.dumps(holds))
        raise
    return done(url_for("disclosures.show", disclosure_id=disclosure_id), code=201, notice="disclosure.created",
                **describe(load(disclosure_id)))


@bp.get("/<int:disclosure_id>")
@permission(MANAGER)
def show(disclosure_id: int):
    d = load(disclosure_id)
    return render_template("disclosures/show.html", d=d, exports=_exports(disclosure_id), jobs=_jobs_of(disclosure_id),
                           sound_only=exports.sound_only(d["recording_id"]),
                           closable=_closable(d) is None, original_deadline=original_deadline(d),
                           extendable=_extendable(d) is None, max_extension=DEADLINES[d["kind"]][1],
                           today=today().isoformat(), **_page_helpers())


def _extendable(d) -> str | None:
    if not pending(d):
        return "disclosure.not_pending"
    if d["extension_days"]:
        return "disclosure.already_extended"
    if today() > original_deadline(d):
        return "disclosure.extension_late"
    return None


@bp.post("/<int:disclosure_id>/extension")
@permission(MANAGER)
def extend(disclosure_id: int):
    """Extend the deadline once, before it passes (APPI Art. 83(2)): days (at most 30), the
    reason, and the date the requester was told in writing (notified_on)."""
    d = load(disclosure_id)
    back = url_for("disclosures.show", disclosure_id=disclosure_id)
    problem = _extendable(d)
    if problem:
        refuse(problem, 409, back=back)
    inputs = fields()
    try:
        days = int(inputs.get("days") or "")
    except ValueError:
        days = 0
    reason = (inputs.get("reason") or "").strip()[:2000]
    notified = _date(inputs.get("notified_on") or "")
    if not 1 <= days <= DEADLINES[d["kind"]][1]:
        refuse("disclosure.bad_extension", back=back)
    if not reason:
        refuse("disclosure.extension_reason_needed", back=back)
    if notified is None or notified > today() or notified < date.fromisoformat(d["received_on"]):
        refuse("disclosure.notice_date_needed", back=back)
    new_deadline = original_deadline(d) + timedelta(days=days)
    auth.audit("disclosure.extend", subject=d["number"], purpose=PURPOSE,
               detail={"days": days, "reason": reason[:500], "notified_on": notified.isoformat(),
                       "deadline": new_deadline.isoformat()})
    get_db().execute("UPDATE disclosures SET extension_days = ?, extension_reason = ?, extension_notified_on = ?,"
                     " extended_at = ? WHERE id = ?", (days, reason, notified.isoformat(), auth.now_iso(),
                                                        disclosure_id))
    return done(back, notice="disclosure.extended", **describe(load(disclosure_id)))


@bp.post("/<int:disclosure_id>/decision")
@permission(MANAGER)
def decide(disclosure_id: int):
    """Record the decision (full | partial | refused | not_held | no_confirm), its date
    (decided_on, default today) and, for any but full disclosure, the reason (note)."""
    d = load(disclosure_id)
    back = url_for("disclosures.show", disclosure_id=disclosure_id)
    if not pending(d):
        refuse("disclosure.not_pending", 409, back=back)
    inputs = fields()
    decision = inputs.get("decision")
    note = (inputs.get("note") or "").strip()[:2000]
    decided = _date(inputs.get("decided_on") or "") if inputs.get("decided_on") else today()
    if decision not in DECISIONS:
        refuse("disclosure.decision_needed", back=back)
    if decision != "full" and not note:
        refuse("disclosure.reason_needed", back=back)
    if decided is None or decided > today() or decided < date.fromisoformat(d["received_on"]):
        refuse("disclosure.bad_decided_on", back=back)
    auth.audit("disclosure.decide", subject=d["number"], purpose=PURPOSE,
               detail={"decision": decision, "decided_on": decided.isoformat(), "deadline": deadline(d).isoformat(),
                       "in_time": decided <= deadline(d)})
    db = get_db()
    with transaction(db):
        if db.execute("SELECT decision FROM disclosures WHERE id = ?", (disclosure_id,)).fetchone()[0] is not None:
            refuse("disclosure.not_pending", 409, back=back)  # decided meanwhile, in another window
        db.execute("UPDATE disclosures SET decision = ?, decided_on = ?, decision_note = ?, decided_by = ?"
                   " WHERE id = ?", (decision, decided.isoformat(), note, g.user.id, disclosure_id))
    return done(back, **describe(load(disclosure_id)))


@bp.post("/<int:disclosure_id>/close")
@permission(MANAGER)
def close(disclosure_id: int):
    """Close the record: after the decision (and, when something is disclosed, its handover
    export), or withdrawn (true) by the requester before it. Its holds are released and its
    packages on the device deleted."""
    d = load(disclosure_id)
    back = url_for("disclosures.show", disclosure_id=disclosure_id)
    withdrawn = flag(fields(), "withdrawn", default=False) and d["decision"] is None
    problem = _closable(d, withdrawn)
    if problem:
        refuse(problem, 409, back=back)
    auth.audit("disclosure.close", subject=d["number"], purpose=PURPOSE,
               detail={"decision": d["decision"], "withdrawn": withdrawn})
    get_db().execute("UPDATE disclosures SET status = 'closed', withdrawn = ?, closed_at = ? WHERE id = ?",
                     (int(withdrawn), auth.now_iso(), disclosure_id))
    release_holds(d["hold_ids"])
    for job in _jobs_of(disclosure_id):
        exports.discard(job)
    return done(back, **describe(load(disclosure_id)))


# -- the handover: an export with the others masked (webui/exports.py) ---------------------------

def _jobs_of(disclosure_id: int) -> list:
    return exports.jobs_of("disclosures", disclosure_id)


def _job_status(job) -> dict:
    return {**exports.status(job), "disclosure_id": job.record_id}


KIND_BASIS = {  # what the package's manifest and cover sheet say the handover rests on
    "personal": "第12条 本人開示（個人情報の保護に関する法律第76条・第82条）",
    "public": "第12条 情報公開（情報公開条例による行政文書の開示）",
}


@bp.post("/<int:disclosure_id>/export")
@permission(MANAGER)
def start_export(disclosure_id: int):
    """Export what is disclosed as a signed package, others masked, in the background: the
    manager's passphrase (password), blur_faces (true/false), blur regions, mute spans (other
    voices), exact, optionally a transport passphrase. Only after a full or partial disclosure."""
    from firmware import export as ex

    d = load(disclosure_id)
    back = url_for("disclosures.show", disclosure_id=disclosure_id)
    if d["status"] != "open":
        refuse("disclosure.already_closed", 409, back=back)
    if d["decision"] not in DISCLOSING:
        refuse("disclosure.nothing_to_hand_over", 409, back=back)

    def masked(r) -> None:
        if d["decision"] == "partial" and not (r.faces or r.blur or r.mute):
            refuse("disclosure.masking_needed", back=back)

    opts = exports.options(fields(), subject=d["number"], purpose=PURPOSE, back=back, regions=True, check=masked,
                           recording_id=d["recording_id"])
    # Not a provision under Art. 9: the package names its own basis, a disclosure decision (Art. 12).
    provision = ex.Provision(ground="disclosure", recipient=f"{d['requester']}（開示請求者）", approver=d["decider"] or "",
                             exporter=g.user.display_name or g.user.username,
                             reference=f"{d['number']} 開示決定 {d['decided_on']}", request_date=d["received_on"],
                             number=d["number"], note=KIND_BASIS[d["kind"]])
    job = exports.start(register="disclosures", record_id=disclosure_id, number=d["number"], purpose=PURPOSE,
                        table="disclosure_exports", provision=provision, recording_id=d["recording_id"],
                        start_us=d["start_wall_us"], end_us=d["end_wall_us"], opts=opts,
                        package_url=lambda job_id: url_for("disclosures.download", disclosure_id=disclosure_id,
                                                           job_id=job_id),
                        log_detail=lambda detail: {**detail, "recipient": "", "disclosure": d["kind"]})
    return done(back, code=202, notice="provision.export_started", **_job_status(job))


@bp.get("/<int:disclosure_id>/export/<job_id>.json")
@permission(MANAGER)
def export_status(disclosure_id: int, job_id: str):
    """A handover export's progress: state (running, done, failed), seconds done of total, the error."""
    return jsonify(_job_status(exports.find("disclosures", disclosure_id, job_id)))


@bp.get("/<int:disclosure_id>/export/<job_id>/package")
@permission(MANAGER)
def download(disclosure_id: int, job_id: str):
    """The finished handover package (a ZIP, or the transport-sealed .zip.age)."""
    return exports.package(exports.find("disclosures", disclosure_id, job_id))
