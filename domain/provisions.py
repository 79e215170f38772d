"""The provision register (Art. 9–11): footage that leaves the city, why, to whom, and what
became of it. Managers only.

- A provision names its Art. 9 ground, the recipient, the written request (reference, date,
  scan) and the approved scope (one recording, a time range). Ground 5 (urgent, the mayor's
  judgement) may go before its paperwork (Art. 11(2)): the record says so and stays on the
  dashboard until the paperwork is in.
- The scope is on hold from the moment the record exists until it is closed.
- For the committee (ground 1), after its deliberation the manager records the request for
  return or erasure and its outcome (Art. 10(2)); such a record cannot be closed before that.
- Exports run in the background (``domain.exports``, shared with the disclosure register).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from domain import exports, scans
from domain import requests as requests_
from domain.errors import NotFound, refuse
from domain.times import fiscal_year, local, now_iso
from firmware import export as ex
from firmware.regulation import Ground, Purpose, ReturnKind

GROUNDS = tuple(g.value for g in Ground)  # Art. 9 (1)–(5)
PURPOSE = Purpose.PROVISION.value  # in the audit log: Art. 7(3)
REGISTER = "provisions"
RETURN_KINDS = tuple(k.value for k in ReturnKind)  # Art. 10(2)


def records(db, where: str = "TRUE", params: tuple = (), order: str = "p.id") -> list:
    """Provision records with their approver's name: the one query the pages and the API read."""
    return db.all(f"SELECT p.*, u.display_name AS approver FROM provisions p JOIN users u"
                  f" ON u.id = p.approved_by WHERE {where} ORDER BY {order}", params)


def load(ctx, provision_id: int):
    rows = records(ctx.db, "p.id = ?", (provision_id,))
    if not rows:
        raise NotFound(f"provision {provision_id}")
    return rows[0]


def needing_attention(db) -> list:
    """Open records the manager must still act on: paperwork pending (Art. 11(2)), or the
    committee's footage not yet returned or erased (Art. 10(2))."""
    return records(db, "p.status = 'open' AND (p.request_reference = ''"
                       " OR (p.ground = 'committee' AND p.return_done_at IS NULL))")


def register(db) -> list:
    """The whole register, open records first, newest first."""
    return records(db, order="p.status = 'closed', p.id DESC")


def age_days(created_at: str) -> int:
    return (datetime.now().astimezone() - datetime.fromisoformat(created_at)).days


@dataclass(frozen=True)
class NewProvision:
    ground: str
    recipient: str
    reference: str  # the written request's; "" only for an urgent provision (Art. 11(2))
    request_date: str
    recording_id: str
    start: str = ""  # ISO 8601; "" for the recording's own start
    end: str = ""
    note: str = ""


def create(ctx, new: NewProvision) -> int:
    """Record a provision; its scope is held before the record exists. Returns its id."""
    known = {r["id"]: r for r in ctx.recordings.for_request(ids=[new.recording_id])} if new.recording_id else {}
    if new.ground not in GROUNDS:
        refuse("provision.ground_needed")
    if not new.recipient or len(new.recipient) > 300:
        refuse("provision.recipient_needed")
    if not new.reference and new.ground != "urgent":
        refuse("provision.reference_needed")
    if new.recording_id not in known:
        refuse("request.recordings_needed")
    start, end = requests_.scope_range(new.start, new.end, [known[new.recording_id]])
    db = ctx.db
    fy = fiscal_year()
    number = requests_.next_number(db, "provisions", fy, "P", 3)
    # Held before the record exists: no open provision is ever without its hold.
    holds = ctx.holds.hold(reason="provision", recording_ids=[new.recording_id], reference=number,
                           by=ctx.actor.username)
    try:
        with db.transaction():
            provision_id = db.insert(
                "INSERT INTO provisions (number, fiscal_year, ground, recipient, request_reference, request_date,"
                " recording_id, start_wall_us, end_wall_us, approved_by, note, created_at, hold_ids)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, fy, new.ground, new.recipient, new.reference[:200], new.request_date[:40],
                 new.recording_id, start, end, ctx.actor.id, new.note[:2000], now_iso(), json.dumps(holds)))
            # logged once written, before the commit: nothing in the log that is not in the register
            ctx.log("provision.create", subject=number, purpose=PURPOSE,
                    detail={"ground": new.ground, "recipient": new.recipient[:200], "recording": new.recording_id,
                            "start": local(start), "end": local(end),
                            "paperwork": "received" if new.reference else "pending (Art. 11(2))"})
            return provision_id
    except Exception:
        requests_.release_holds(ctx, json.dumps(holds))
        raise


def paperwork(ctx, p, reference: str, date: str) -> None:
    """The written request arrived after an urgent provision (Art. 11(2)): its reference and date."""
    reference, date = reference[:200], date[:40]
    if p["status"] != "open":
        refuse("provision.already_closed", 409)
    if not reference:
        refuse("provision.reference_needed")
    with ctx.db.transaction():  # logged once written, before the commit
        ctx.db.execute("UPDATE provisions SET request_reference = ?, request_date = ? WHERE id = ?",
                       (reference, date, p["id"]))
        ctx.log("provision.paperwork", subject=p["number"], purpose=PURPOSE,
                detail={"reference": reference, "date": date})


def attach_scan(ctx, p, data: bytes) -> None:
    """Attach the scan of the written request."""
    if p["status"] != "open":
        refuse("provision.already_closed", 409)  # a closed record's paperwork stays as it was
    name, digest = scans.store(ctx, p["number"], data, "provision.scan")
    ctx.db.execute("UPDATE provisions SET scan_name = ?, scan_sha256 = ? WHERE id = ?", (name, digest, p["id"]))


def return_or_erasure(ctx, p, kind: str | None, outcome: str) -> None:
    """Art. 10(2): the request to the committee for return or erasure (``kind``), then its outcome."""
    if p["status"] != "open" or p["ground"] != "committee":
        refuse("provision.not_committee", 409)
    outcome = outcome[:1000]
    if p["return_requested_at"] is None:
        if kind not in RETURN_KINDS:
            refuse("provision.return_kind_needed")
        with ctx.db.transaction():
            ctx.db.execute("UPDATE provisions SET return_kind = ?, return_requested_at = ? WHERE id = ?",
                           (kind, now_iso(), p["id"]))
            ctx.log("provision.return_request", subject=p["number"], purpose=PURPOSE, detail={"kind": kind})
    else:
        if not outcome:
            refuse("provision.outcome_needed")
        with ctx.db.transaction():
            ctx.db.execute("UPDATE provisions SET return_outcome = ?, return_done_at = ? WHERE id = ?",
                           (outcome, now_iso(), p["id"]))
            ctx.log("provision.return_done", subject=p["number"], purpose=PURPOSE,
                    detail={"kind": p["return_kind"], "outcome": outcome})


def closable(p) -> str | None:
    """Why the record cannot be closed yet (a message key), or None."""
    if p["status"] != "open":
        return "provision.already_closed"
    if not p["request_reference"]:
        return "provision.paperwork_pending"
    if p["ground"] == "committee" and p["return_done_at"] is None:
        return "provision.return_pending"
    return None


def close(ctx, p) -> None:
    """Close the record: its holds are released and its packages deleted."""
    problem = closable(p)
    if problem:
        refuse(problem, 409)
    with ctx.db.transaction():
        ctx.db.execute("UPDATE provisions SET status = 'closed', closed_at = ? WHERE id = ?", (now_iso(), p["id"]))
        ctx.log("provision.close", subject=p["number"], purpose=PURPOSE)
    requests_.release_holds(ctx, p["hold_ids"])
    ctx.jobs.discard_all(REGISTER, p["id"])


def exports_of(db, provision_id: int) -> list:
    return db.all("SELECT e.*, u.display_name FROM provision_exports e JOIN users u ON u.id = e.by_id"
                  " WHERE provision_id = ? ORDER BY e.id", (provision_id,))


def describe(ctx, p, job_status) -> dict:
    """A provision record as the API shows it (what its page shows); ``job_status(job)``
    describes each running export."""
    return {
        "id": p["id"], "number": p["number"], "status": p["status"], "ground": p["ground"],
        "recipient": p["recipient"], "reference": p["request_reference"], "request_date": p["request_date"],
        "paperwork_pending": not p["request_reference"], "scan_sha256": p["scan_sha256"],
        "recording_id": p["recording_id"],
        "start": local(p["start_wall_us"]), "end": local(p["end_wall_us"]), "approver": p["approver"],
        "note": p["note"], "created_at": p["created_at"], "closed_at": p["closed_at"],
        "age_days": age_days(p["created_at"]), "return_kind": p["return_kind"],
        "return_requested_at": p["return_requested_at"], "return_outcome": p["return_outcome"],
        "return_done_at": p["return_done_at"], "closable": closable(p) is None,
        "exports": [exports.as_json(e) for e in exports_of(ctx.db, p["id"])],
        "jobs": [job_status(j) for j in ctx.jobs.of(REGISTER, p["id"])],
    }


def start_export(ctx, p, asked: exports.Request) -> exports.Job:
    """Export the provision's scope as a signed package, in the background."""
    if p["status"] != "open":
        refuse("provision.already_closed", 409)
    opts = exports.options(ctx, asked, subject=p["number"], purpose=PURPOSE, recording_id=p["recording_id"])
    provision = ex.Provision(ground=p["ground"], recipient=p["recipient"], approver=p["approver"],
                             exporter=ctx.actor.display_name or ctx.actor.username, reference=p["request_reference"],
                             request_date=p["request_date"], number=p["number"])
    return ctx.jobs.start(ctx, register=REGISTER, record_id=p["id"], number=p["number"], purpose=PURPOSE,
                          provision=provision, recording_id=p["recording_id"], start_us=p["start_wall_us"],
                          end_us=p["end_wall_us"], opts=opts)
