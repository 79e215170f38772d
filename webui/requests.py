"""Written viewing requests (Art. 7–8): file, give an opinion, decide.

- A section head files a request: recordings or a time range, the Art. 7 purpose, the
  reason. It gets a number and a printable form (PDF, Japanese, with signature and seal
  fields); the signed scan can be attached ("in writing", Art. 8(1)).
- The head of *another* section may request too; then the responsible section's head is
  asked for an opinion first, which the manager sees (Art. 8(3)).
- The manager approves or rejects, with a note; an approval names the exact scope and
  a validity window. Recordings under an open request are held, and released when it
  closes.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from flask import Blueprint, abort, current_app, g, render_template, request, send_file, url_for

from webui import auth
from webui.actions import done, fields, flag, refuse
from webui.db import get_db, transaction, vault_db
from webui.permissions import MANAGER, SECTION_HEAD, permission

bp = Blueprint("requests", __name__, url_prefix="/requests")

PURPOSES = ("trouble", "maintenance", "business")  # Art. 7 (1), (2), (4)
OPEN = ("awaiting_opinion", "submitted", "approved")
MAX_SCAN = 10 * 2**20
SCAN_TYPES = {b"%PDF": ".pdf", b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg"}


def fiscal_year(now: datetime | None = None) -> int:
    now = now or datetime.now().astimezone()
    return now.year if now.month >= 4 else now.year - 1


def reiwa(year: int) -> str:
    return f"令和{year - 2018}年度"


def _wall_us(text: str) -> int | None:
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.astimezone()
        value = int(dt.timestamp() * 1e6)
    except (ValueError, OverflowError, OSError):
        return None
    return value if 0 < value < 2**62 else None


def _iso(wall_us: int | None) -> str:
    if wall_us is None:
        return ""
    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def recordings_for_request() -> list:
    vdb = vault_db()
    if vdb is None:
        return []
    # Footage and calls alike (Art. 7–8 govern both); a call that never had audio has nothing to view.
    return vdb.execute(
        "SELECT r.id, r.record_class, r.started_at, r.ended_at, r.started_wall_us, r.ended_wall_us, r.section,"
        " (SELECT count(*) FROM marks m WHERE m.recording_id = r.id) AS marks"
        " FROM recordings r WHERE r.record_class = 'footage'"
        " OR EXISTS (SELECT 1 FROM segments s WHERE s.recording_id = r.id AND s.erased_at IS NULL)"
        " ORDER BY r.started_wall_us DESC LIMIT 200").fetchall()


def scope_range(start_text: str, end_text: str, recordings) -> tuple[int, int] | None:
    """The time range (wall µs) typed in a form, defaulting to and kept within the chosen
    recordings (one still running ends now); ``None`` if it is not a range."""
    first = min(r["started_wall_us"] for r in recordings)
    last = max(r["ended_wall_us"] or int(time.time() * 1e6) for r in recordings)
    start = _wall_us(start_text) if start_text else first
    end = _wall_us(end_text) if end_text else last
    if start is None or end is None or end <= start:
        return None
    return max(start, first), min(end, last)


def load(request_id: int):
    row = get_db().execute(
        "SELECT q.*, u.display_name AS requester, s.name AS requester_section FROM requests q"
        " JOIN users u ON u.id = q.requester_id JOIN sections s ON s.id = q.requester_section_id WHERE q.id = ?",
        (request_id,)).fetchone()
    if row is None:
        auth.audit_refusal("request", subject=f"#{request_id}")  # as one that is not theirs: alike in time
        abort(404)
    return row


def responsible(req) -> list[str]:
    return json.loads(req["responsible_sections"])


def not_theirs(req) -> NoReturn:
    """404 for a request this person may not see (others do not learn that it exists), and
    the attempt in the audit log."""
    auth.audit_refusal("request", subject=req["number"])
    abort(404)


def may_see(req) -> bool:
    """The manager, the requester, and the responsible sections' heads (for their opinion)."""
    user = g.user
    return user.is_manager or req["requester_id"] == user.id or (
        user.is_section_head and user.section in responsible(req))


@bp.get("/")
@permission(MANAGER, SECTION_HEAD)
def index():
    return render_template("requests/index.html", requests=visible_requests())


def visible_requests() -> list:
    """What the logged-in person may see: all (a manager), or their own and their section's."""
    query = "SELECT q.*, u.display_name AS requester FROM requests q JOIN users u ON u.id = q.requester_id"
    if g.user.is_manager:
        return get_db().execute(query + " ORDER BY q.id DESC").fetchall()
    return get_db().execute(query + " WHERE q.requester_id = ? OR ? IN (SELECT value FROM json_each("
                                    "q.responsible_sections)) ORDER BY q.id DESC",
                            (g.user.id, g.user.section or "")).fetchall()


@bp.route("/new", methods=["GET", "POST"])
@permission(SECTION_HEAD)
def new():
    """File a viewing request: recordings, an optional time range, the Art. 7 purpose, the reason."""
    sections = [r["name"] for r in get_db().execute("SELECT name FROM sections ORDER BY name")]
    recordings = recordings_for_request()
    if request.method == "GET":
        return render_template("requests/new.html", recordings=recordings, sections=sections, form={},
                               purposes=PURPOSES)
    inputs = fields()
    form = {k: (inputs.get(k) or "").strip() for k in ("purpose", "reason", "start", "end", "responsible_section")}
    chosen = sorted(set(inputs.getlist("recording")))
    known = {r["id"]: r for r in recordings}

    def again(key: str):
        refuse(key, page=lambda: render_template("requests/new.html", recordings=recordings, sections=sections,
                                                 form=form, purposes=PURPOSES))

    if form["purpose"] not in PURPOSES:
        again("request.purpose_needed")
    if not form["reason"] or len(form["reason"]) > 2000:
        again("request.reason_needed")
    if not chosen or not all(c in known for c in chosen):
        again("request.recordings_needed")
    scope = scope_range(form["start"], form["end"], [known[c] for c in chosen])
    if scope is None:
        again("request.bad_range")
    start, end = scope
    # The responsible sections are those the recordings were marked for (Art. 2(6)); only
    # when no mark tells does the requester declare one, and the manager must confirm it.
    marked = sorted({known[c]["section"] for c in chosen if known[c]["section"]})
    declared = not marked
    sections_concerned = marked or [form["responsible_section"]]
    if declared and form["responsible_section"] not in sections:
        again("request.responsible_needed")
    status = "awaiting_opinion" if any(s != g.user.section for s in sections_concerned) else "submitted"
    db = get_db()
    fy = fiscal_year()
    number = f"{fy}-{db.execute('SELECT count(*) FROM requests WHERE fiscal_year = ?', (fy,)).fetchone()[0] + 1:04d}"
    auth.audit("request.file", subject=number, purpose=form["purpose"],
               detail={"recordings": sorted(chosen), "responsible_sections": sections_concerned,
                       "declared": declared, "status": status})
    from webui import control

    # Held before the request exists: no open request is ever without its holds.
    holds = control().request("hold", reason="request", recording_ids=sorted(chosen), reference=number,
                              by=g.user.username)["holds"]
    try:
        with transaction(db):
            request_id = db.execute(
                "INSERT INTO requests (number, fiscal_year, requester_id, requester_section_id, responsible_section,"
                " responsible_sections, responsible_declared, purpose, reason, recording_ids, range_start_wall_us,"
                " range_end_wall_us, status, created_at, hold_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, fy, g.user.id, g.user.section_id, "、".join(sections_concerned),
                 json.dumps(sections_concerned), int(declared), form["purpose"], form["reason"],
                 json.dumps(sorted(chosen)), start, end, status, auth.now_iso(), json.dumps(holds))).lastrowid
    except Exception:
        release_holds(json.dumps(holds))
        raise
    return done(url_for("requests.show", request_id=request_id), code=201, notice="request.filed",
                **describe(load(request_id)))


def _record(request_id: int):
    """A request's opinions, its decision, and its open viewing (if any)."""
    db = get_db()
    opinions = db.execute("SELECT o.*, u.display_name FROM opinions o JOIN users u ON u.id = o.by_id"
                          " WHERE request_id = ? ORDER BY o.id", (request_id,)).fetchall()
    decision = db.execute("SELECT d.*, u.display_name FROM decisions d JOIN users u ON u.id = d.by_id"
                          " WHERE request_id = ?", (request_id,)).fetchone()
    viewing = db.execute("SELECT * FROM viewings WHERE request_id = ? AND closed_at IS NULL AND closes_at > ?"
                         " ORDER BY opened_at DESC LIMIT 1", (request_id, time.time())).fetchone()
    return opinions, decision, viewing


@bp.get("/<int:request_id>")
@permission(MANAGER, SECTION_HEAD)
def show(request_id: int):
    req = load(request_id)
    if not may_see(req):
        not_theirs(req)
    opinions, decision, viewing = _record(request_id)
    ended = None if viewing is not None else get_db().execute(
        "SELECT closed_at, closes_at FROM viewings WHERE request_id = ? ORDER BY opened_at DESC LIMIT 1",
        (request_id,)).fetchone()  # the last viewing, over: by its viewer, the manager, or its window
    return render_template("requests/show.html", req=req, opinions=opinions, decision=decision, viewing=viewing,
                           ended_at=None if ended is None else _iso(int((ended["closed_at"] or ended["closes_at"]) * 1e6)),
                           recording_ids=json.loads(req["recording_ids"]), iso=_iso, reiwa=reiwa,
                           scope_ids=json.loads(decision["scope_recording_ids"]) if decision else [],
                           in_window=valid_window(decision),
                           can_give_opinion=_can_give_opinion(req))


def describe(req) -> dict:
    """A request as the API shows it to someone who may see it (what its page shows)."""
    opinions, decision, viewing = _record(req["id"])
    out = {
        "id": req["id"], "number": req["number"], "status": req["status"], "purpose": req["purpose"],
        "reason": req["reason"], "requester": req["requester"], "requester_section": req["requester_section"],
        "responsible_sections": responsible(req), "responsible_declared": bool(req["responsible_declared"]),
        "recording_ids": json.loads(req["recording_ids"]),
        "start": _iso(req["range_start_wall_us"]), "end": _iso(req["range_end_wall_us"]),
        "created_at": req["created_at"], "closed_at": req["closed_at"],
        "scan_sha256": req["scan_sha256"], "opinion_needed_from_me": _can_give_opinion(req),
        "opinions": [{"by": o["display_name"], "opinion": o["opinion"], "note": o["note"], "at": o["at"]}
                     for o in opinions],
        "decision": None, "viewing": None,
    }
    if decision is not None:
        out["decision"] = {
            "decision": decision["decision"], "by": decision["display_name"], "note": decision["note"],
            "at": decision["at"], "scope_recording_ids": json.loads(decision["scope_recording_ids"]),
            "scope_start": _iso(decision["scope_start_wall_us"]), "scope_end": _iso(decision["scope_end_wall_us"]),
            "valid_until": decision["valid_until"]}
    if viewing is not None and (g.user.is_manager or req["requester_id"] == g.user.id):
        out["viewing"] = {"id": viewing["id"], "closes_at": viewing["closes_at"]}
    return out


def _opinions_needed(req) -> set[str]:
    """Responsible sections other than the requester's that have not given their opinion."""
    given = {r["section"] for r in get_db().execute(
        "SELECT s.name AS section FROM opinions o JOIN users u ON u.id = o.by_id JOIN sections s ON s.id = u.section_id"
        " WHERE o.request_id = ?", (req["id"],))}
    return {s for s in responsible(req) if s != req["requester_section"]} - given


def _can_give_opinion(req) -> bool:
    return (req["status"] == "awaiting_opinion" and g.user.is_section_head and req["requester_id"] != g.user.id
            and g.user.section in _opinions_needed(req))


@bp.post("/<int:request_id>/opinion")
@permission(SECTION_HEAD)
def opinion(request_id: int):
    """The responsible section head's opinion on another section's request (Art. 8(3))."""
    req = load(request_id)
    if not may_see(req):
        not_theirs(req)
    if not _can_give_opinion(req):
        abort(403)
    back = url_for("requests.show", request_id=request_id)
    inputs = fields()
    value = inputs.get("opinion")
    if value not in ("agree", "disagree"):
        refuse("request.opinion_needed", back=back)
    auth.audit("request.opinion", subject=req["number"], purpose=req["purpose"],
               detail={"opinion": value, "section": g.user.section})
    db = get_db()
    with transaction(db):
        db.execute("INSERT INTO opinions (request_id, by_id, opinion, note, at) VALUES (?, ?, ?, ?, ?)",
                   (request_id, g.user.id, value, (inputs.get("note") or "")[:2000], auth.now_iso()))
    if not _opinions_needed(req):
        db.execute("UPDATE requests SET status = 'submitted' WHERE id = ? AND status = 'awaiting_opinion'",
                   (request_id,))
    return done(back, **describe(load(request_id)))


@bp.post("/<int:request_id>/decide")
@permission(MANAGER)
def decide(request_id: int):
    """Approve (naming the exact scope and a validity window) or reject, with a note."""
    req = load(request_id)
    back = url_for("requests.show", request_id=request_id)
    if req["status"] != "submitted":
        refuse("request.not_decidable", 409, back=back)
    if req["requester_id"] == g.user.id:
        refuse("request.own", 403, back=back)  # a request is decided by someone other than its requester
    inputs = fields()
    decision = inputs.get("decision")
    note = (inputs.get("note") or "")[:2000]
    requested = json.loads(req["recording_ids"])
    if decision == "approved" and req["responsible_declared"] and not flag(inputs, "confirm_responsible", False):
        refuse("request.confirm_responsible", back=back)
    # Art. 8(1): the request is made in writing. The manager states that they checked the
    # signed form, as the attached scan or on paper (the scan can follow); the log says which.
    written = ("scan" if req["scan_sha256"] else "paper") if flag(inputs, "confirm_written", False) else None
    if decision == "approved" and written is None:
        refuse("request.written_needed", back=back)
    if decision == "approved":
        scope = [r for r in inputs.getlist("scope_recording") if r in requested]
        start = _wall_us(inputs.get("scope_start") or "") or req["range_start_wall_us"]
        end = _wall_us(inputs.get("scope_end") or "") or req["range_end_wall_us"]
        start, end = max(start, req["range_start_wall_us"]), min(end, req["range_end_wall_us"])
        try:
            hours = float(inputs.get("valid_hours") or "24")
        except ValueError:
            hours = -1
        if hours != hours:  # NaN
            hours = -1
        if not scope or end <= start or not 0 < hours <= 24 * 14:
            refuse("request.bad_scope", back=back)
        valid_from, valid_until = time.time(), time.time() + hours * 3600
    elif decision == "rejected":
        scope, start, end, valid_from, valid_until = [], None, None, None, None
    else:
        refuse("request.decision_needed", back=back)
    auth.audit(f"request.{'approve' if decision == 'approved' else 'reject'}", subject=req["number"],
               purpose=req["purpose"], detail={"scope": scope, "start": _iso(start), "end": _iso(end),
                                               "valid_until": valid_until, "written_request": written})
    db = get_db()
    with transaction(db):
        if db.execute("SELECT status FROM requests WHERE id = ?", (request_id,)).fetchone()[0] != "submitted":
            refuse("request.not_decidable", 409, back=back)  # decided meanwhile, in another window
        db.execute("INSERT INTO decisions (request_id, by_id, decision, note, scope_recording_ids, scope_start_wall_us,"
                   " scope_end_wall_us, valid_from, valid_until, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (request_id, g.user.id, decision, note, json.dumps(scope), start, end, valid_from, valid_until,
                    auth.now_iso()))
        db.execute("UPDATE requests SET status = ? WHERE id = ?", (decision, request_id))
    if decision == "rejected":
        release_holds(req["hold_ids"])
    return done(back, **describe(load(request_id)))


@bp.post("/<int:request_id>/close")
@permission(MANAGER)
def close(request_id: int):
    """Close a request: its viewing ends and its holds are released."""
    req = load(request_id)
    if req["status"] not in OPEN:
        refuse("request.not_open", 409, back=url_for("requests.show", request_id=request_id))
    from webui import viewing

    auth.audit("request.close", subject=req["number"], purpose=req["purpose"])
    get_db().execute("UPDATE requests SET status = 'closed', closed_at = ? WHERE id = ?", (auth.now_iso(), request_id))
    viewing.close_for_request(request_id, "request closed")
    release_holds(req["hold_ids"])
    return done(url_for("requests.show", request_id=request_id), **describe(load(request_id)))


def release_holds(hold_ids: str) -> None:
    """Release a record's holds (a JSON list); one released meanwhile is not an error."""
    from firmware.control import ControlError
    from webui import control

    for hold in json.loads(hold_ids):
        try:
            control().request("release", hold=hold, by=g.user.username)
        except ControlError as exc:
            if "already released" not in str(exc):
                raise


@bp.post("/<int:request_id>/scan")
@permission(MANAGER, SECTION_HEAD)
def attach_scan(request_id: int):
    """Attach the signed, sealed paper form, scanned (PDF, PNG or JPEG; multipart field "scan")."""
    req = load(request_id)
    if not (g.user.is_manager or req["requester_id"] == g.user.id):
        not_theirs(req)
    back = url_for("requests.show", request_id=request_id)
    if req["status"] not in OPEN:
        refuse("request.not_open", 409, back=back)  # a closed record's paperwork stays as it was
    name, digest = store_scan(req["number"], back, "request.scan")
    get_db().execute("UPDATE requests SET scan_name = ?, scan_sha256 = ?, scan_at = ? WHERE id = ?",
                     (name, digest, auth.now_iso(), request_id))
    return done(back, **describe(load(request_id)))


def _scans() -> Path:
    return Path(current_app.config["KIROKU_DATA"]) / "web" / "scans"


def store_scan(number: str, back: str, action: str) -> tuple[str, str]:
    """Keep the uploaded scan of a written request ("scan"): checked to be a PDF, PNG or
    JPEG of at most MAX_SCAN, logged with its SHA-256, then written. Returns its file name
    and digest."""
    from firmware.fsutil import atomic_write, makedirs_durable

    upload = request.files.get("scan")
    data = upload.read(MAX_SCAN + 1) if upload else b""
    kind = next((ext for magic, ext in SCAN_TYPES.items() if data.startswith(magic)), None)
    if not data or len(data) > MAX_SCAN or kind is None:
        refuse("request.bad_scan", back=back)
    digest = hashlib.sha256(data).hexdigest()
    makedirs_durable(_scans())
    name = f"{number}-{digest[:12]}{kind}"
    auth.audit(action, subject=number, detail={"sha256": digest, "bytes": len(data)})
    atomic_write(_scans() / name, data)
    return name, digest


def send_scan(number: str, name: str | None, action: str):
    if not name:
        abort(404)
    auth.audit(action, subject=number)
    return send_file(_scans() / name, as_attachment=True, download_name=name)


@bp.get("/<int:request_id>/scan")
@permission(MANAGER, SECTION_HEAD)
def scan(request_id: int):
    """The attached scan of the signed form."""
    req = load(request_id)
    if not may_see(req):
        not_theirs(req)
    return send_scan(req["number"], req["scan_name"], "request.scan_download")


@bp.get("/<int:request_id>/form.pdf")
@permission(MANAGER, SECTION_HEAD)
def form_pdf(request_id: int):
    """The request as a printable form (PDF, Japanese) with signature and seal fields."""
    req = load(request_id)
    if not may_see(req):
        not_theirs(req)
    from webui.forms import request_form_pdf

    pdf = request_form_pdf(req, json.loads(req["recording_ids"]), _iso, reiwa)
    auth.audit("request.form_print", subject=req["number"])
    import io

    return send_file(io.BytesIO(pdf), mimetype="application/pdf", download_name=f"viewing-request-{req['number']}.pdf")


def open_requests_for(user) -> list:
    return get_db().execute("SELECT * FROM requests WHERE requester_id = ? AND status = 'approved'",
                            (user.id,)).fetchall()


def valid_window(decision) -> bool:
    return decision is not None and decision["decision"] == "approved" and \
        decision["valid_from"] <= time.time() < decision["valid_until"]

