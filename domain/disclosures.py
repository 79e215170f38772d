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
  handed over is a signed export package (``domain.exports``, the provisions' path) with
  bystanders masked: automatic face blurring, manual blur regions (when the requester's
  own face must stay visible — the detector blurs every face) and muted time ranges for
  other people's voices (the whole sound is muted there: voices are not separated).
- The requester's name is kept out of the audit log, which is append-only: the log says
  what was done and under which number; the register says for whom.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

from domain import exports
from domain import requests as requests_
from domain.errors import NotFound, refuse
from domain.times import fiscal_year, local, now_iso
from firmware import deadlines
from firmware import export as ex
from firmware.deadlines import deadline, original_deadline, parse_date
from firmware.regulation import DisclosureDecision, DisclosureKind, IdentityCheck, Purpose

PURPOSE = Purpose.DISCLOSURE.value  # in the audit log: Art. 12, not one of Art. 7's purposes
REGISTER = "disclosures"
KINDS = tuple(k.value for k in DisclosureKind)  # 本人開示, 情報公開
# kind: (days to decide, at most this many days more by a recorded extension)
DEADLINES = {
    "personal": (30, 30),  # APPI Art. 83(1), 83(2)
    "public": (15, 30),  # information-disclosure ordinance (typical; the city's may differ)
}
DUE_SOON_DAYS = 7  # on the dashboard this many days before the deadline
IDENTITY_CHECKS = tuple(c.value for c in IdentityCheck)  # APPI Art. 77(2)
DECISIONS = tuple(d.value for d in DisclosureDecision)  # APPI Art. 82, 79, 81
DISCLOSING = (DisclosureDecision.FULL.value, DisclosureDecision.PARTIAL.value)  # something is handed over
KIND_BASIS = {  # what the package's manifest and cover sheet say the handover rests on
    "personal": "第12条 本人開示（個人情報の保護に関する法律第76条・第82条）",
    "public": "第12条 情報公開（情報公開条例による行政文書の開示）",
}


def today() -> date:
    """The local date (the tests move it)."""
    return deadlines.today()


# -- reading the register -----------------------------------------------------------------------

def records(db, where: str = "TRUE", params: tuple = (), order: str = "d.id") -> list:
    """Disclosure records with the names of who received and decided them: the one query the
    pages and the API read."""
    return db.all(f"SELECT d.*, r.display_name AS receiver, x.display_name AS decider FROM disclosures d"
                  f" JOIN users r ON r.id = d.received_by LEFT JOIN users x ON x.id = d.decided_by"
                  f" WHERE {where} ORDER BY {order}", params)


def load(ctx, disclosure_id: int):
    rows = records(ctx.db, "d.id = ?", (disclosure_id,))
    if not rows:
        raise NotFound(f"disclosure {disclosure_id}")
    return rows[0]


def register(db) -> list:
    """The whole register, open records first, newest first."""
    return records(db, order="d.status = 'closed', d.id DESC")


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


def needing_attention(db) -> list:
    """Open undecided requests whose deadline is near or past, most urgent first."""
    due = [d for d in records(db, "d.status = 'open' AND d.decision IS NULL AND d.withdrawn = 0")
           if days_remaining(d) <= DUE_SOON_DAYS]
    return sorted(due, key=deadline)


def exports_of(db, disclosure_id: int) -> list:
    return db.all("SELECT e.*, u.display_name FROM disclosure_exports e JOIN users u ON u.id = e.by_id"
                  " WHERE disclosure_id = ? ORDER BY e.id", (disclosure_id,))


def closable(db, d, withdrawn: bool = False) -> str | None:
    if d["status"] != "open":
        return "disclosure.already_closed"
    if d["decision"] is None and not withdrawn:
        return "disclosure.undecided"
    if d["decision"] in DISCLOSING and not exports_of(db, d["id"]):
        return "disclosure.handover_pending"
    return None


def extendable(d) -> str | None:
    if not pending(d):
        return "disclosure.not_pending"
    if d["extension_days"]:
        return "disclosure.already_extended"
    if today() > original_deadline(d):
        return "disclosure.extension_late"
    return None


def describe(ctx, d, job_status) -> dict:
    """A disclosure record as the API shows it (what its page shows)."""
    return {
        "id": d["id"], "number": d["number"], "status": d["status"], "kind": d["kind"],
        "requester": d["requester"], "contact": d["contact"], "identity_check": d["identity_check"],
        "identity_note": d["identity_note"], "recording_id": d["recording_id"],
        "start": local(d["start_wall_us"]), "end": local(d["end_wall_us"]), "received_on": d["received_on"],
        "received_by": d["receiver"], "deadline": deadline(d).isoformat(), "deadline_days": d["deadline_days"],
        "extension_days": d["extension_days"], "extension_reason": d["extension_reason"],
        "extension_notified_on": d["extension_notified_on"], "days_remaining": days_remaining(d),
        "overdue": overdue(d), "decision": d["decision"], "decided_on": d["decided_on"],
        "decision_note": d["decision_note"], "decided_by": d["decider"], "decided_in_time": in_time(d),
        "withdrawn": bool(d["withdrawn"]), "note": d["note"], "created_at": d["created_at"],
        "closed_at": d["closed_at"], "closable": closable(ctx.db, d) is None,
        "exports": [exports.as_json(e) for e in exports_of(ctx.db, d["id"])],
        "jobs": [job_status(j) for j in ctx.jobs.of(REGISTER, d["id"])],
    }


# -- acting on it -------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewDisclosure:
    kind: str
    requester: str
    contact: str
    identity_check: str
    identity_note: str
    received_on: str  # YYYY-MM-DD; "" for today
    recording_id: str
    start: str = ""
    end: str = ""
    note: str = ""


def create(ctx, new: NewDisclosure) -> int:
    """Record a disclosure request; its scope is held at once, and its deadline runs from the
    day received. Returns its id."""
    known = {r["id"]: r for r in ctx.recordings.for_request(ids=[new.recording_id])} if new.recording_id else {}
    identity_check, identity_note = new.identity_check, new.identity_note
    if new.kind not in KINDS:
        refuse("disclosure.kind_needed")
    if not new.requester or len(new.requester) > 200 or len(new.contact) > 300:
        refuse("disclosure.requester_needed")
    if new.kind == "personal":
        if identity_check not in IDENTITY_CHECKS:
            refuse("disclosure.identity_needed")
        if identity_check == "other" and not identity_note:
            refuse("disclosure.identity_note_needed")
    else:
        identity_check = identity_note = ""  # 情報公開: anyone may ask
    received = parse_date(new.received_on) if new.received_on else today()
    if received is None or received > today() or received < today() - timedelta(days=366):
        refuse("disclosure.bad_received")
    if new.recording_id not in known:
        refuse("request.recordings_needed")
    start, end = requests_.scope_range(new.start, new.end, [known[new.recording_id]])
    days = DEADLINES[new.kind][0]
    db = ctx.db
    fy = fiscal_year()
    number = requests_.next_number(db, "disclosures", fy, "D", 3)
    # Held before the record exists: no open request is ever without its hold.
    holds = ctx.holds.hold(reason="disclosure", recording_ids=[new.recording_id], reference=number,
                           by=ctx.actor.username)
    try:
        with db.transaction():
            disclosure_id = db.insert(
                "INSERT INTO disclosures (number, fiscal_year, kind, requester, contact, identity_check, identity_note,"
                " recording_id, start_wall_us, end_wall_us, received_on, deadline_days, received_by, note, created_at,"
                " hold_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, fy, new.kind, new.requester, new.contact, identity_check or None, identity_note[:500],
                 new.recording_id, start, end, received.isoformat(), days, ctx.actor.id, new.note[:2000], now_iso(),
                 json.dumps(holds)))
            # Logged once written, before the commit: nothing in the log that is not in the register.
            # The requester's name stays out of the append-only log: personal data, kept in the register.
            ctx.log("disclosure.create", subject=number, purpose=PURPOSE,
                    detail={"kind": new.kind, "identity_check": identity_check or None,
                            "recording": new.recording_id, "start": local(start), "end": local(end),
                            "received_on": received.isoformat(),
                            "deadline": (received + timedelta(days=days)).isoformat()})
            return disclosure_id
    except Exception:
        requests_.release_holds(ctx, json.dumps(holds))
        raise


def extend(ctx, d, days_text: str, reason: str, notified_on: str) -> None:
    """Extend the deadline once, before it passes (APPI Art. 83(2)): days, the reason, and the
    date the requester was told in writing."""
    problem = extendable(d)
    if problem:
        refuse(problem, 409)
    try:
        days = int(days_text or "")
    except ValueError:
        days = 0
    reason = reason[:2000]
    notified = parse_date(notified_on)
    if not 1 <= days <= DEADLINES[d["kind"]][1]:
        refuse("disclosure.bad_extension")
    if not reason:
        refuse("disclosure.extension_reason_needed")
    if notified is None or notified > today() or notified < date.fromisoformat(d["received_on"]):
        refuse("disclosure.notice_date_needed")
    new_deadline = original_deadline(d) + timedelta(days=days)
    with ctx.db.transaction():  # logged once written, before the commit
        ctx.db.execute("UPDATE disclosures SET extension_days = ?, extension_reason = ?, extension_notified_on = ?,"
                       " extended_at = ? WHERE id = ?", (days, reason, notified.isoformat(), now_iso(), d["id"]))
        ctx.log("disclosure.extend", subject=d["number"], purpose=PURPOSE,
                detail={"days": days, "reason": reason[:500], "notified_on": notified.isoformat(),
                        "deadline": new_deadline.isoformat()})


def decide(ctx, d, decision: str | None, decided_on: str, note: str) -> None:
    """Record the decision, its date (default today) and, for any but full disclosure, the reason."""
    if not pending(d):
        refuse("disclosure.not_pending", 409)
    note = note[:2000]
    decided = parse_date(decided_on) if decided_on else today()
    if decision not in DECISIONS:
        refuse("disclosure.decision_needed")
    if decision != "full" and not note:
        refuse("disclosure.reason_needed")
    if decided is None or decided > today() or decided < date.fromisoformat(d["received_on"]):
        refuse("disclosure.bad_decided_on")
    db = ctx.db
    with db.transaction():
        if db.scalar("SELECT decision FROM disclosures WHERE id = ?", (d["id"],)) is not None:
            refuse("disclosure.not_pending", 409)  # decided meanwhile, in another window
        db.execute("UPDATE disclosures SET decision = ?, decided_on = ?, decision_note = ?, decided_by = ?"
                   " WHERE id = ?", (decision, decided.isoformat(), note, ctx.actor.id, d["id"]))
        # logged once written, before the commit: a decision refused as made meanwhile is not in the log
        ctx.log("disclosure.decide", subject=d["number"], purpose=PURPOSE,
                detail={"decision": decision, "decided_on": decided.isoformat(),
                        "deadline": deadline(d).isoformat(), "in_time": decided <= deadline(d)})


def close(ctx, d, withdrawn: bool) -> None:
    """Close the record: after the decision (and, when something is disclosed, its handover
    export), or withdrawn by the requester before it. Its holds are released and its packages
    deleted."""
    withdrawn = withdrawn and d["decision"] is None
    problem = closable(ctx.db, d, withdrawn)
    if problem:
        refuse(problem, 409)
    with ctx.db.transaction():
        ctx.db.execute("UPDATE disclosures SET status = 'closed', withdrawn = ?, closed_at = ? WHERE id = ?",
                       (int(withdrawn), now_iso(), d["id"]))
        ctx.log("disclosure.close", subject=d["number"], purpose=PURPOSE,
                detail={"decision": d["decision"], "withdrawn": withdrawn})
    requests_.release_holds(ctx, d["hold_ids"])
    ctx.jobs.discard_all(REGISTER, d["id"])


def start_export(ctx, d, asked: exports.Request) -> exports.Job:
    """Export what is disclosed as a signed package, others masked, in the background; only
    after a full or partial disclosure."""
    if d["status"] != "open":
        refuse("disclosure.already_closed", 409)
    if d["decision"] not in DISCLOSING:
        refuse("disclosure.nothing_to_hand_over", 409)

    def masked(r) -> None:
        if d["decision"] == "partial" and not (r.faces or r.blur or r.mute):
            refuse("disclosure.masking_needed")

    opts = exports.options(ctx, asked, subject=d["number"], purpose=PURPOSE, regions=True, check=masked,
                           recording_id=d["recording_id"])
    # Not a provision under Art. 9: the package names its own basis, a disclosure decision (Art. 12).
    provision = ex.Provision(ground="disclosure", recipient=f"{d['requester']}（開示請求者）", approver=d["decider"] or "",
                             exporter=ctx.actor.display_name or ctx.actor.username,
                             reference=f"{d['number']} 開示決定 {d['decided_on']}", request_date=d["received_on"],
                             number=d["number"], note=KIND_BASIS[d["kind"]])
    return ctx.jobs.start(ctx, register=REGISTER, record_id=d["id"], number=d["number"], purpose=PURPOSE,
                          provision=provision, recording_id=d["recording_id"], start_us=d["start_wall_us"],
                          end_us=d["end_wall_us"], opts=opts,
                          log_detail=lambda detail: {**detail, "recipient": "", "disclosure": d["kind"]})
