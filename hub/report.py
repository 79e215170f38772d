"""The annual operations report (Art. 14) for the whole city, made at the hub from what the
devices reported: their recordings' metadata and their audit logs as published (the
witness's mirror), per device — named by its place — and in total, with each device's last
witnessed checkpoint. Counts only, as on a device; the figures and their rendering (PDF,
CSV, HTML) are ``firmware.documents.report``'s, so the two reports read alike.

What a device's web UI decided on its own (its requests, provisions and disclosures) is in
its audit log, with the purpose, ground, kind and outcome each entry carries: that is what
is counted here.
"""

from __future__ import annotations

import json
from datetime import datetime

from firmware import deadlines
from firmware.documents import report as documents

MONTHS = documents.MONTHS


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1e6)


def _in(lo: int, hi: int, at: str) -> bool:
    try:
        return lo <= _us(at) < hi
    except (TypeError, ValueError):
        return False


def device_figures(db, device: dict, fy: int) -> documents.Figures:
    """One device's year, from the hub's mirror of what it published."""
    f = documents.Figures(device["place"])
    lo, hi = documents.fiscal_bounds(fy)
    for r in db.all("SELECT * FROM recordings WHERE device = ? AND started_wall_us >= ? AND started_wall_us < ?",
                    (device["id"], lo, hi)):
        if r["record_class"] == "call" and not r["segments"]:
            continue  # a call that rang unanswered, with no sound, recorded nothing
        f.recordings[r["record_class"]] += 1
        f.hours[r["record_class"]] += ((r["ended_wall_us"] or r["started_wall_us"]) - r["started_wall_us"]) / 3.6e9
        f.monthly_recordings[documents._month_of_us(r["started_wall_us"])] += 1
        f.incidents += sum(1 for m in json.loads(r["marks"] or "[]") if _in(lo, hi, m.get("at", "")))
        if r["record_class"] == "call" and r["ended_wall_us"] is not None:
            documents.count_not_heard(f, [(r["external_heard"], r["city_heard"])])
    requests: dict[str, dict] = {}
    disclosures: dict[str, dict] = {}
    for e in db.all("SELECT action, at, purpose, subject, detail FROM device_log WHERE device = ? ORDER BY seq",
                    (device["id"],)):
        if not _in(lo, hi, e["at"]):
            continue
        action, detail = e["action"], json.loads(e["detail"])
        if action == "request.file":
            requests[e["subject"]] = {"purpose": e["purpose"], "outcome": "pending", "at": e["at"]}
        elif action in ("request.approve", "request.reject") and e["subject"] in requests:
            requests[e["subject"]]["outcome"] = "approved" if action == "request.approve" else "rejected"
        elif action == "key.unlock":
            f.viewings += 1
        elif action == "call.not_recorded":
            f.calls_not_recorded += 1
        elif action == "provision.create":
            if detail.get("ground") in f.provisions:
                f.provisions[detail["ground"]] += 1
            f.monthly_provisions[documents._month_of_iso(e["at"])] += 1
        elif action == "export.create" and e["purpose"] == "provision":
            f.provision_exports += 1
        elif action == "provision.return_done" and detail.get("kind") in ("return", "erasure"):
            f.returns[detail["kind"]] += 1
        elif action == "disclosure.create":
            disclosures[e["subject"]] = {"kind": detail.get("kind"), "outcome": "pending",
                                         "deadline": detail.get("deadline"), "late": False}
        elif action == "disclosure.decide" and e["subject"] in disclosures:
            disclosures[e["subject"]].update(outcome=detail.get("decision"), late=detail.get("in_time") is False)
        elif action == "disclosure.extend" and e["subject"] in disclosures:
            disclosures[e["subject"]]["deadline"] = detail.get("deadline")
        elif action == "disclosure.close" and e["subject"] in disclosures and detail.get("withdrawn"):
            disclosures[e["subject"]]["outcome"] = "withdrawn"
        elif action == "retention.overwrite":
            f.overwritten_segments += int(detail.get("segments", 0))
            f.overwritten_gb += int(detail.get("bytes", 0)) / 1e9
            f.day_keys_destroyed += len(detail.get("keys_destroyed") or [])
        elif action == "login.failed":
            f.failed_logins += 1
        elif action in ("login.locked", "key.locked"):  # a guesser held back, a manager's key locked
            f.lockouts += 1
        elif action in ("fault", "fault.raised"):
            f.faults += 1
    for r in requests.values():
        if r["purpose"] in f.requests:
            f.requests[r["purpose"]][r["outcome"]] += 1
            f.monthly_requests[documents._month_of_iso(r["at"])] += 1
    today = deadlines.today()
    for d in disclosures.values():
        if d["kind"] in f.disclosures and d["outcome"] in f.disclosures[d["kind"]]:
            f.disclosures[d["kind"]][d["outcome"]] += 1
        due = deadlines.parse_date(d["deadline"] or "")
        if d["late"] or (d["outcome"] == "pending" and due is not None and today > due):
            f.disclosures_late += 1
    f.checkpoint = db.scalar("SELECT note FROM checkpoints WHERE device = ? AND consistent = 1 ORDER BY size DESC,"
                             " id DESC LIMIT 1", (device["id"],)) or ""
    return f


def build(db, fy: int) -> documents.Report:
    """The city's report for fiscal year ``fy``: every device the hub knows (removed ones
    included, for the part of the year they served), by place."""
    devices = db.all("SELECT id, place FROM devices ORDER BY place, id")
    figures = [device_figures(db, d, fy) for d in devices]
    total = documents.Figures("合計")
    for f in figures:
        total.add(f)
    total.checkpoint = ""
    return documents.Report(fy, figures, total, datetime.now().astimezone().isoformat(timespec="seconds"))

