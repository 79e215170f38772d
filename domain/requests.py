"""Written viewing requests (Art. 7–8): file, give an opinion, decide, close.

- A section head files a request: recordings and a time range, the Art. 7 purpose, the
  reason. It gets a number (fiscal year and sequence) and a printable form with signature
  and seal fields; the signed scan can be attached ("in writing", Art. 8(1)).
- The head of *another* section may request too; then each responsible section's head is
  asked for an opinion first, which the manager sees (Art. 8(3)).
- The manager approves or rejects, with a note; an approval names the exact scope and a
  validity window, and rests on the written request (the manager states they checked the
  signed form, as its scan or on paper). Recordings under an open request are held, and
  released when it closes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from domain import scans
from domain.db import column
from domain.errors import Forbidden, NotFound, refuse
from domain.times import day_range, fiscal_year, local, now_iso, wall_us
from firmware.calls import index as calls_index
from firmware.calls import numbers
from firmware.regulation import REQUEST_PURPOSES, Decision, Opinion, RequestStatus

PURPOSES = tuple(p.value for p in REQUEST_PURPOSES)  # Art. 7 (1), (2), (4); (3) is a provision
OPEN = (RequestStatus.AWAITING_OPINION.value, RequestStatus.SUBMITTED.value, RequestStatus.APPROVED.value)
OPINIONS = tuple(o.value for o in Opinion)  # Art. 8(3)
DECISIONS = tuple(d.value for d in Decision)
MAX_REASON = 2000
WHOLE_NUMBER = 9  # digits of the shortest whole Japanese number without its 0 (03-1234-5678)
MAX_NOTE = 2000
MAX_VALID_HOURS = 24 * 14


def typed_time(text: str, field: str) -> int:
    """A time typed in a form (ISO 8601, local when it names no offset) as wall µs; refused,
    naming ``field``, when it is not one."""
    value = wall_us(text)
    if value is None:
        refuse("range.bad_time", detail=f"{field}: {text[:40]!r} is not a time — write it as 2026-12-07T10:30:00")
    return value


def within(start_text: str, end_text: str, first: int, last: int, *, fields: tuple[str, str] = ("start", "end"),
           ) -> tuple[int, int]:
    """The time range (wall µs) typed in a form, defaulting to and kept within ``first`` …
    ``last``. Refused — never turned into an empty range, which could never be approved and
    would hold the footage — when a time is not one, the end is not after the start, or
    nothing of it falls within ``first`` … ``last``."""
    start = typed_time(start_text, fields[0]) if start_text else first
    end = typed_time(end_text, fields[1]) if end_text else last
    if end <= start:
        refuse("range.end_before_start", detail=f"{fields[1]} {local(end)} is not after {fields[0]} {local(start)}")
    start, end = max(start, first), min(end, last)
    if end <= start:
        refuse("range.outside", detail=f"the footage runs from {local(first)} to {local(last)}")
    return start, end


def scope_range(start_text: str, end_text: str, recordings) -> tuple[int, int]:
    """The time range (wall µs) typed in a form, defaulting to and kept within the chosen
    recordings (one still running ends now); refused as :func:`within` says."""
    first = min(r["started_wall_us"] for r in recordings)
    last = max(r["ended_wall_us"] or int(time.time() * 1e6) for r in recordings)
    return within(start_text, end_text, first, last)


def has_marks(recording) -> bool:
    """Whether a catalogue row has an incident mark (a count on a device, a JSON list at the hub)."""
    marks = recording["marks"]
    return bool(marks) and marks != "[]"


def catalogue_filter(*, ids=None, since_us=None, until_us=None, number: str = "", calls: str = "c",
                     name: str = "r.id"):
    """What ``Catalogue.for_request``'s arguments narrow to, as SQL both catalogues run (the
    device's SQLite, the hub's PostgreSQL): a list of conditions on the recordings ``r`` (whose
    name a request uses is the expression ``name``) and their calls' numbers (table alias
    ``calls``), and their parameters. ``None`` when nothing can match (a number with no digit)."""
    where, params = [], []
    if ids is not None:
        where.append(f"{name} IN (" + ",".join("?" * len(ids)) + ")" if ids else "0 = 1")
        params += list(ids)
    if since_us is not None:
        where.append("r.started_wall_us >= ?")
        params.append(since_us)
    if until_us is not None:
        where.append("r.started_wall_us < ?")
        params.append(until_us)
    if number:
        key = numbers.search_key(number)
        if not key:
            return None
        where.append(calls_index.number_clause(calls))
        params += [f"%{key}%"] * len(calls_index.NUMBER_COLUMNS)
    return where, params


def with_parties(row) -> dict:
    """A catalogue row as a dict, as a picker shows it: a call's numbers as people read them (a
    call's row has ``direction``; footage has none), its ``duration`` (m:ss) and its marks'
    notes (``mark_notes``: the hub's rows carry its marks, a device's their notes joined)."""
    out = dict(zip(row.keys(), tuple(row))) if not isinstance(row, dict) else dict(row)
    if out.get("direction"):
        out.update(calls_index.parties(out))
    start, end = out.get("started_wall_us"), out.get("ended_wall_us")
    seconds = round((end - start) / 1e6) if start and end and end > start else None
    out["duration"] = "" if seconds is None else f"{seconds // 60}:{seconds % 60:02d}"
    marks = out.get("marks")
    if isinstance(marks, str) and marks.startswith("["):
        out["mark_notes"] = " / ".join(
            f"{m.get('note') or ''}{'（' + m['section'] + '）' if m.get('section') else ''}"
            for m in json.loads(marks) if m.get("note") or m.get("section"))
    return out


def pick(ctx, *, place: str = "", day: str = "", marked: bool = False, number: str = "") -> list:
    """The recordings a picker shows (``Catalogue.for_request`` rows), narrowed to a local day
    (YYYY-MM-DD), calls with a number typed any way, a device or place (a part of its name or
    id, at the hub) and those with an incident mark. An empty filter keeps everything.

    A call's numbers are personal information (Art. 13): only a manager sees them in the list; a
    section head sees a call's direction, and finds a call by typing the whole number they
    already know (a part, narrowed digit by digit, would reveal numbers). Every search by number is logged first, with the digits searched for and how many
    calls it found, as the call index's own search is (``calls.search``)."""
    place, day, number = place.strip(), day.strip(), number.strip()
    since, until = day_range(day) if day else (None, None)
    manager = ctx.actor is not None and ctx.actor.is_manager
    if number and not manager and len(numbers.search_key(number)) < WHOLE_NUMBER:
        return []  # a part of a number, digit by digit, would tell a section head every caller's

    def keep(r) -> bool:
        where = f"{column(r, 'device')} {column(r, 'place')}"
        return (not place or place in where) and (not marked or has_marks(r))

    found = [r for r in ctx.recordings.for_request(since_us=since, until_us=until, number=number) if keep(r)]
    if numbers.search_key(number):
        ctx.log("calls.search", detail={"number": numbers.search_key(number), "day": day, "found": len(found),
                                        "where": "picker"})
    if not manager:
        for r in found:
            r.pop("external_display", None)
            r.pop("city_display", None)
    return found


def _load(db, request_id: int):
    return db.one(
        "SELECT q.*, u.display_name AS requester, s.name AS requester_section FROM requests q"
        " JOIN users u ON u.id = q.requester_id JOIN sections s ON s.id = q.requester_section_id WHERE q.id = ?",
        (request_id,))


def load(ctx, request_id: int):
    """The request, or NotFound — and the attempt is noted as a refusal, as one that is not
    theirs would be, so that the answer's time says nothing."""
    row = _load(ctx.db, request_id)
    if row is None:
        ctx.refused("request", f"#{request_id}")
        raise NotFound(f"request {request_id}")
    return row


def responsible(req) -> list[str]:
    return json.loads(req["responsible_sections"])


def may_see(actor, req) -> bool:
    """The manager, the requester, and the responsible sections' heads (for their opinion)."""
    return actor.is_manager or req["requester_id"] == actor.id or (
        actor.is_section_head and actor.section in responsible(req))


def not_theirs(ctx, req):
    """NotFound for a request this person may not see (others do not learn that it exists),
    with the attempt noted."""
    ctx.refused("request", req["number"])
    raise NotFound(f"request {req['id']}")


def seen(ctx, request_id: int):
    """The request, if the acting person may see it (else as if it did not exist)."""
    req = load(ctx, request_id)
    if not may_see(ctx.actor, req):
        not_theirs(ctx, req)
    return req


def visible(ctx) -> list:
    """What the acting person may see: all (a manager), or their own and their section's."""
    rows = ctx.db.all("SELECT q.*, u.display_name AS requester FROM requests q JOIN users u ON u.id = q.requester_id"
                      " ORDER BY q.id DESC")
    actor = ctx.actor
    if actor.is_manager:
        return rows
    return [r for r in rows if r["requester_id"] == actor.id or (actor.section or "") in responsible(r)]


def pending_count(db) -> int:
    """Requests awaiting an opinion or a decision (the dashboard)."""
    return db.scalar("SELECT count(*) FROM requests WHERE status IN ('submitted', 'awaiting_opinion')")


def approved_for(db, user_id: int) -> list:
    return db.all("SELECT * FROM requests WHERE requester_id = ? AND status = 'approved'", (user_id,))


def next_number(db, table: str, fy: int, prefix: str, width: int) -> str:
    """The next number in a register for fiscal year ``fy``: 2026-0001, 2026-P001, 2026-D001."""
    count = db.scalar(f"SELECT count(*) FROM {table} WHERE fiscal_year = ?", (fy,))
    return f"{fy}-{prefix}{count + 1:0{width}d}"


@dataclass(frozen=True)
class NewRequest:
    """A viewing request as the section head fills it in."""

    purpose: str
    reason: str
    recording_ids: tuple[str, ...]
    start: str = ""  # ISO 8601, "" for the recordings' own start
    end: str = ""
    responsible_section: str = ""  # declared only when no recording is marked for a section


def file(ctx, new: NewRequest) -> int:
    """File a viewing request; the recordings are held before it exists. Returns its id."""
    db, actor = ctx.db, ctx.actor
    chosen = sorted(set(new.recording_ids))
    known = {r["id"]: r for r in ctx.recordings.for_request(ids=chosen)} if chosen else {}
    if new.purpose not in PURPOSES:
        refuse("request.purpose_needed")
    if not new.reason or len(new.reason) > MAX_REASON:
        refuse("request.reason_needed")
    if not chosen or not all(c in known for c in chosen):
        refuse("request.recordings_needed")
    start, end = scope_range(new.start, new.end, [known[c] for c in chosen])
    # The responsible sections are those the recordings were marked for (Art. 2(6)); only
    # when no mark tells does the requester declare one, and the manager must confirm it.
    marked = sorted({known[c]["section"] for c in chosen if known[c]["section"]})
    declared = not marked
    concerned = marked or [new.responsible_section]
    if declared and new.responsible_section not in [r["name"] for r in db.all("SELECT name FROM sections")]:
        refuse("request.responsible_needed")
    status = "awaiting_opinion" if any(s != actor.section for s in concerned) else "submitted"
    fy = fiscal_year()
    number = next_number(db, "requests", fy, "", 4)
    # Held before the request exists: no open request is ever without its holds.
    holds = ctx.holds.hold(reason="request", recording_ids=chosen, reference=number, by=actor.username)
    try:
        with db.transaction():
            request_id = db.insert(
                "INSERT INTO requests (number, fiscal_year, requester_id, requester_section_id, responsible_section,"
                " responsible_sections, responsible_declared, purpose, reason, recording_ids, range_start_wall_us,"
                " range_end_wall_us, status, created_at, hold_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, fy, actor.id, actor.section_id, "、".join(concerned), json.dumps(concerned), int(declared),
                 new.purpose, new.reason, json.dumps(chosen), start, end, status, now_iso(), json.dumps(holds)))
            # Logged once the request is written, and before it is committed: a request that
            # could not be stored is not in the log (nor is its number taken), and one the log
            # refused is not stored.
            ctx.log("request.file", subject=number, purpose=new.purpose,
                    detail={"recordings": chosen, "responsible_sections": concerned, "declared": declared,
                            "status": status})
            return request_id
    except Exception:
        release_holds(ctx, json.dumps(holds))
        raise


def record(ctx, request_id: int):
    """A request's opinions, its decision, and its open viewing (if any)."""
    db = ctx.db
    opinions = db.all("SELECT o.*, u.display_name FROM opinions o JOIN users u ON u.id = o.by_id"
                      " WHERE request_id = ? ORDER BY o.id", (request_id,))
    decision = db.one("SELECT d.*, u.display_name FROM decisions d JOIN users u ON u.id = d.by_id"
                      " WHERE request_id = ?", (request_id,))
    viewing = db.one("SELECT * FROM viewings WHERE request_id = ? AND closed_at IS NULL AND closes_at > ?"
                     " ORDER BY opened_at DESC LIMIT 1", (request_id, time.time()))
    return opinions, decision, viewing


def last_viewing_ended(ctx, request_id: int) -> str | None:
    """When the request's last viewing ended (by its viewer, the manager, or its window)."""
    ended = ctx.db.one("SELECT closed_at, closes_at FROM viewings WHERE request_id = ? ORDER BY opened_at DESC"
                       " LIMIT 1", (request_id,))
    return None if ended is None else local(int((ended["closed_at"] or ended["closes_at"]) * 1e6))


def decision_of(db, request_id: int):
    return db.one("SELECT * FROM decisions WHERE request_id = ?", (request_id,))


def describe(ctx, req) -> dict:
    """A request as the API shows it to someone who may see it (what its page shows)."""
    opinions, decision, viewing = record(ctx, req["id"])
    out = {
        "id": req["id"], "number": req["number"], "status": req["status"], "purpose": req["purpose"],
        "reason": req["reason"], "requester": req["requester"], "requester_section": req["requester_section"],
        "responsible_sections": responsible(req), "responsible_declared": bool(req["responsible_declared"]),
        "recording_ids": json.loads(req["recording_ids"]),
        "start": local(req["range_start_wall_us"]), "end": local(req["range_end_wall_us"]),
        "created_at": req["created_at"], "closed_at": req["closed_at"],
        "scan_sha256": req["scan_sha256"], "opinion_needed_from_me": can_give_opinion(ctx, req),
        "opinions": [{"by": o["display_name"], "opinion": o["opinion"], "note": o["note"], "at": o["at"]}
                     for o in opinions],
        "decision": None, "viewing": None,
    }
    if decision is not None:
        out["decision"] = {
            "decision": decision["decision"], "by": decision["display_name"], "note": decision["note"],
            "at": decision["at"], "scope_recording_ids": json.loads(decision["scope_recording_ids"]),
            "scope_start": local(decision["scope_start_wall_us"]), "scope_end": local(decision["scope_end_wall_us"]),
            "valid_until": decision["valid_until"]}
    if viewing is not None and (ctx.actor.is_manager or req["requester_id"] == ctx.actor.id):
        out["viewing"] = {"id": viewing["id"], "closes_at": viewing["closes_at"]}
    return out


def opinions_needed(ctx, req) -> set[str]:
    """Responsible sections other than the requester's that have not given their opinion."""
    given = {r["section"] for r in ctx.db.all(
        "SELECT s.name AS section FROM opinions o JOIN users u ON u.id = o.by_id JOIN sections s ON s.id = u.section_id"
        " WHERE o.request_id = ?", (req["id"],))}
    return {s for s in responsible(req) if s != req["requester_section"]} - given


def can_give_opinion(ctx, req) -> bool:
    actor = ctx.actor
    return (req["status"] == "awaiting_opinion" and actor.is_section_head and req["requester_id"] != actor.id
            and actor.section in opinions_needed(ctx, req))


def asked_for_opinion(ctx, req) -> None:
    """Forbidden unless the acting person's opinion is asked for on ``req``."""
    if not can_give_opinion(ctx, req):
        raise Forbidden("not asked for an opinion")


def give_opinion(ctx, req, opinion: str, note: str) -> None:
    """The responsible section head's opinion on another section's request (Art. 8(3));
    once every section asked has given one, the request goes to the manager."""
    asked_for_opinion(ctx, req)
    if opinion not in OPINIONS:
        refuse("request.opinion_needed")
    db = ctx.db
    with db.transaction():
        db.execute("INSERT INTO opinions (request_id, by_id, opinion, note, at) VALUES (?, ?, ?, ?, ?)",
                   (req["id"], ctx.actor.id, opinion, note[:MAX_NOTE], now_iso()))
        ctx.log("request.opinion", subject=req["number"], purpose=req["purpose"],
                detail={"opinion": opinion, "section": ctx.actor.section})
    if not opinions_needed(ctx, req):
        db.execute("UPDATE requests SET status = 'submitted' WHERE id = ? AND status = 'awaiting_opinion'",
                   (req["id"],))


@dataclass(frozen=True)
class Decision:
    """The manager's decision as typed."""

    decision: str  # approved | rejected
    note: str = ""
    scope_recording_ids: tuple[str, ...] = ()
    scope_start: str = ""
    scope_end: str = ""
    valid_hours: str = "24"
    confirm_responsible: bool = False
    confirm_written: bool = False


def _valid_hours(text: str) -> float:
    try:
        hours = float(text or "24")
    except ValueError:
        return -1
    return -1 if hours != hours else hours  # NaN


def decide(ctx, req, d: Decision) -> None:
    """Approve (naming the exact scope and a validity window) or reject, with a note."""
    if req["status"] != "submitted":
        refuse("request.not_decidable", 409)
    if req["requester_id"] == ctx.actor.id:
        refuse("request.own", 403)  # a request is decided by someone other than its requester
    requested = json.loads(req["recording_ids"])
    note = d.note[:MAX_NOTE]
    if d.decision == "approved" and req["responsible_declared"] and not d.confirm_responsible:
        refuse("request.confirm_responsible")
    # Art. 8(1): the request is made in writing. The manager states that they checked the
    # signed form, as the attached scan or on paper (the scan can follow); the log says which.
    written = ("scan" if req["scan_sha256"] else "paper") if d.confirm_written else None
    if d.decision == "approved" and written is None:
        refuse("request.written_needed")
    if d.decision == "approved":
        scope = [r for r in d.scope_recording_ids if r in requested]
        start, end = within(d.scope_start.strip(), d.scope_end.strip(), req["range_start_wall_us"],
                            req["range_end_wall_us"], fields=("scope_start", "scope_end"))
        hours = _valid_hours(d.valid_hours)
        if not scope or not 0 < hours <= MAX_VALID_HOURS:
            refuse("request.bad_scope")
        valid_from, valid_until = time.time(), time.time() + hours * 3600
    elif d.decision == "rejected":
        scope, start, end, valid_from, valid_until = [], None, None, None, None
    else:
        refuse("request.decision_needed")
    db = ctx.db
    with db.transaction():
        if db.scalar("SELECT status FROM requests WHERE id = ?", (req["id"],)) != "submitted":
            refuse("request.not_decidable", 409)  # decided meanwhile, in another window
        db.execute("INSERT INTO decisions (request_id, by_id, decision, note, scope_recording_ids, scope_start_wall_us,"
                   " scope_end_wall_us, valid_from, valid_until, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (req["id"], ctx.actor.id, d.decision, note, json.dumps(scope), start, end, valid_from, valid_until,
                    now_iso()))
        db.execute("UPDATE requests SET status = ? WHERE id = ?", (d.decision, req["id"]))
        # logged once written, before the commit: a decision refused as made meanwhile is not in the log
        ctx.log(f"request.{'approve' if d.decision == 'approved' else 'reject'}", subject=req["number"],
                purpose=req["purpose"], detail={"scope": scope, "start": local(start), "end": local(end),
                                                "valid_until": valid_until, "written_request": written})
    if d.decision == "rejected":
        release_holds(ctx, req["hold_ids"])


def close(ctx, req) -> None:
    """Close a request: its viewing ends and its holds are released."""
    if req["status"] not in OPEN:
        refuse("request.not_open", 409)
    with ctx.db.transaction():  # logged once written, before the commit (as every register's change)
        ctx.db.execute("UPDATE requests SET status = 'closed', closed_at = ? WHERE id = ?", (now_iso(), req["id"]))
        ctx.log("request.close", subject=req["number"], purpose=req["purpose"])
    if ctx.viewings is not None:
        ctx.viewings.close_for_request(ctx, req["id"], "request closed")
    release_holds(ctx, req["hold_ids"])


def release_holds(ctx, hold_ids: str) -> None:
    """Release a record's holds (a JSON list)."""
    ctx.holds.release(json.loads(hold_ids), by=ctx.actor_name)


def attach_scan(ctx, req, data: bytes) -> None:
    """Attach the signed, sealed paper form, scanned (PDF, PNG or JPEG)."""
    if not (ctx.actor.is_manager or req["requester_id"] == ctx.actor.id):
        not_theirs(ctx, req)
    if req["status"] not in OPEN:
        refuse("request.not_open", 409)  # a closed record's paperwork stays as it was
    name, digest = scans.store(ctx, req["number"], data, "request.scan")
    ctx.db.execute("UPDATE requests SET scan_name = ?, scan_sha256 = ?, scan_at = ? WHERE id = ?",
                   (name, digest, now_iso(), req["id"]))


def valid_window(decision) -> bool:
    return decision is not None and decision["decision"] == "approved" and \
        decision["valid_from"] <= time.time() < decision["valid_until"]
