"""Notices: the hub's actions on a device's recordings, written into that device's own log too.

A request filed at the hub for a counter's footage, the responsible section's opinion on it, the
approval, the unlock, each play, a provision's export cut from the locker: each is an entry of
the hub's log. The issue's rule — and an auditor's — is that the device whose footage it
concerns says so too, so that its own log tells everything that was done with its recordings.

- **Which device**: an entry concerns a device when its detail names one of the device's
  recordings (``DEVICE/ID``), or when its subject is a record (a request, a provision, a
  disclosure) that names one. :func:`collect` reads the hub's log once, in order, from where it
  stopped (``notice_state``), and notes each (device, entry) in ``notices``.
- **Sent until written**: :func:`lists` gives each device, on its retained ``notices`` topic,
  the entries not yet in its log as the hub witnessed it (its ``hub.action`` entries carry the
  hub's number, ``hub_seq``), up to :data:`BATCH` at a time, in order. The device writes each
  once (``webui.hubsync.record_notices``): what its log already holds is never written again.
"""

from __future__ import annotations

import hashlib
import json
import re

TOPIC = "notices"
BATCH = 200  # firmware.uplink.messages.MAX_NOTICES
MAX_DETAIL = 6000  # bytes of JSON; firmware.uplink.messages.MAX_NOTICE_DETAIL
READ = 1000  # entries of the hub's log read per round
_RECORDING = re.compile(r"([a-z0-9][a-z0-9-]{0,62})/[^/\s]+")
_RECORDS = (("requests", "recording_ids"), ("provisions", "recording_id"), ("disclosures", "recording_id"))


def _devices_named(value, devices: set[str], found: set[str]) -> None:
    if isinstance(value, str):
        m = _RECORDING.fullmatch(value)
        if m and m.group(1) in devices:
            found.add(m.group(1))
    elif isinstance(value, dict):
        for v in value.values():
            _devices_named(v, devices, found)
    elif isinstance(value, list):
        for v in value:
            _devices_named(v, devices, found)


def concerned(db, subject: str, detail: dict, devices: set[str]) -> set[str]:
    """The devices whose recordings an entry concerns."""
    found: set[str] = set()
    _devices_named(detail, devices, found)
    if subject:
        for table, column in _RECORDS:
            row = db.one(f"SELECT {column} AS named FROM {table} WHERE number = ?", (subject,))
            if row is not None:
                named = row["named"]
                _devices_named(json.loads(named) if named.startswith("[") else named, devices, found)
    return found


def collect(db) -> int:
    """Note the devices each new entry of the hub's log concerns. Returns how many entries were read."""
    devices = {r["id"] for r in db.all("SELECT id FROM devices WHERE removed_at IS NULL")}
    with db.conn.transaction():
        start = db.scalar("SELECT next_seq FROM notice_state WHERE id = 1 FOR UPDATE")
        rows = db.all("SELECT seq, subject, detail FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?", (start, READ))
        for row in rows:
            for device in concerned(db, row["subject"], json.loads(row["detail"]), devices):
                db.execute("INSERT INTO notices (device, seq) VALUES (?, ?) ON CONFLICT DO NOTHING",
                           (device, row["seq"]))
        if rows:
            db.execute("UPDATE notice_state SET next_seq = ? WHERE id = 1", (rows[-1]["seq"] + 1,))
    return len(rows)


def _detail(text: str) -> dict:
    if len(text.encode()) <= MAX_DETAIL:
        return json.loads(text)
    return {"too_long": True, "hub_detail_sha256": hashlib.sha256(text.encode()).hexdigest()}


def lists(db) -> dict[str, dict]:
    """Each device's list (``{device: {"notices": […]}}``, for ``hub.pushes.stage_many``): the
    entries about it its log does not hold yet."""
    bodies: dict[str, list] = {r["id"]: [] for r in db.all("SELECT id FROM devices WHERE removed_at IS NULL")}
    for row in db.all(
            "SELECT n.device, a.seq, a.at, a.actor, a.action, a.subject, a.purpose, a.detail FROM notices n"
            " JOIN audit a ON a.seq = n.seq"
            " WHERE n.seq > coalesce((SELECT max(((l.detail::jsonb) ->> 'hub_seq')::bigint) FROM device_log l"
            "                         WHERE l.device = n.device AND l.action = 'hub.action'), -1)"
            " ORDER BY n.device, n.seq"):
        listed = bodies.get(row["device"])
        if listed is None or len(listed) >= BATCH:
            continue
        listed.append({"seq": row["seq"], "at": row["at"], "actor": row["actor"], "action": row["action"],
                       "subject": row["subject"], "purpose": row["purpose"], "detail": _detail(row["detail"])})
    return {device: {"notices": listed} for device, listed in bodies.items()}
