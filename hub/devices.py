"""Every device at a glance, as the hub knows it: enrolled, online or not, what its last status
said, what its witness holds, and the alerts it has open — each named by its place, which is
how people find a counter (市民課窓口 2番), not by its id."""

from __future__ import annotations

import json
from datetime import datetime, timezone

ALERT_KINDS = ("offline", "sign", "fault", "storage", "clock", "log")
SEVERE = ("sign", "log", "offline", "fault")  # no recording, no evidence, or no word from it: act now


def _local(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).astimezone().isoformat(timespec="seconds")


def overview(db, *, include_removed: bool = False) -> list[dict]:
    """One entry per device, by place."""
    where = "" if include_removed else " WHERE d.removed_at IS NULL"
    rows = db.all(
        "SELECT d.*, w.size AS witnessed, (SELECT c.consistent FROM checkpoints c WHERE c.device = d.id"
        " ORDER BY c.id DESC LIMIT 1) AS last_consistent FROM devices d LEFT JOIN witness w ON w.device = d.id"
        + where + " ORDER BY d.place, d.id")
    alerts: dict[str, list] = {}
    for a in open_alerts(db):
        alerts.setdefault(a["device"], []).append(a)
    found = []
    for r in rows:
        status = json.loads(r["status"]) if r["status"] else {}
        sign = status.get("sign") or {}
        storage = status.get("storage") or {}
        found.append({
            "id": r["id"], "name": r["place"], "kind": r["kind"], "online": bool(r["online"]),
            "removed": r["removed_at"] is not None,
            "state": status.get("state"), "sign": status.get("sign"),  # null on a call recorder
            "sign_lit": bool(sign.get("lit")) if sign else None,
            "recording": status.get("recording"),
            "faults": status.get("faults") or [], "warnings": status.get("warnings") or [],
            "clock": status.get("clock") or {}, "storage": storage,
            "projected_days": storage.get("projected_days") or {}, "min_days": storage.get("min_days") or {},
            "software": status.get("software"), "last_seen": _local(r["last_seen"]),
            "status_at": _local(r["status_at"]),
            "checkpoint": {"size": r["witnessed"] or 0,
                           "consistent": None if r["last_consistent"] is None else bool(r["last_consistent"])},
            "alerts": alerts.get(r["id"], []),
        })
    return found


def as_api(device: dict) -> dict:
    """A device as ``GET /api/v1/devices`` shows it (DESIGN.md §8)."""
    return {k: device[k] for k in ("id", "name", "kind", "online", "state", "sign", "recording", "faults", "last_seen",
                                   "checkpoint", "alerts", "clock", "projected_days", "min_days")}


def _storage(detail: str) -> dict:
    """A storage alert's classes: {class: {"days", "min"}} (an older alert's {class: days} too)."""
    try:
        found = json.loads(detail or "{}")
    except ValueError:
        return {}
    return {c: v if isinstance(v, dict) else {"days": v, "min": None} for c, v in found.items()}


def open_alerts(db) -> list[dict]:
    """Open alerts with their device's place: the serious ones first (what stops a recording,
    a device gone, a log that does not follow), then the newest."""
    found = [{"id": a["id"], "device": a["device"], "place": a["place"], "kind": a["kind"], "detail": a["detail"],
              "raised_at": _local(a["raised_at"]), "severe": a["kind"] in SEVERE,
              "storage": _storage(a["detail"]) if a["kind"] == "storage" else {}}
             for a in db.all("SELECT a.*, d.place FROM alerts a JOIN devices d ON d.id = a.device"
                             " WHERE a.cleared_at IS NULL ORDER BY a.raised_at DESC, a.id DESC")]
    return sorted(found, key=lambda a: not a["severe"])  # stable: newest first within each


def checkpoints(db, device: str, limit: int = 50) -> list[dict]:
    return [{"size": r["size"], "root": bytes(r["root"]).hex(), "received_at": _local(r["received_at"]),
             "consistent": bool(r["consistent"]), "problem": r["problem"], "note": r["note"]}
            for r in db.all("SELECT * FROM checkpoints WHERE device = ? ORDER BY id DESC LIMIT ?", (device, limit))]


def acknowledge(ctx, alert_id: int) -> None:
    """The manager has seen an alert that does not clear by itself (a log that did not follow)."""
    from domain.errors import NotFound

    row = ctx.db.one("SELECT a.*, d.place FROM alerts a JOIN devices d ON d.id = a.device WHERE a.id = ?"
                     " AND a.cleared_at IS NULL", (alert_id,))
    if row is None:
        raise NotFound(f"alert {alert_id}")
    ctx.log("alert.acknowledge", subject=row["device"], detail={"kind": row["kind"], "detail": row["detail"][:300]})
    import time

    ctx.db.execute("UPDATE alerts SET cleared_at = ? WHERE id = ?", (time.time(), alert_id))


LINES = "lines"  # the pushes topic: a call recorder's lines recorded and excluded (Art. 3)


def lines_of(db, device: str) -> dict:
    """A call recorder's lines as the hub last set them: ``{recorded_lines, excluded_lines}``
    (empty: the hub has not set them; the device's own settings stand)."""
    row = db.one("SELECT payload FROM pushes WHERE device = ? AND topic = ?", (device, LINES))
    return json.loads(row["payload"]) if row else {"recorded_lines": "", "excluded_lines": ""}


def set_lines(ctx, device: str, recorded: str, excluded: str) -> int:
    """Art. 3: the manager decides which telephones a call recorder records. Checked as the
    device checks its settings, logged at the hub, and pushed (its retained ``lines`` topic):
    the device writes them into its settings, logs the change and applies it to the next call."""
    from domain.errors import NotFound, refuse
    from firmware.config import Config, ConfigError
    from hub import pushes

    found = ctx.db.one("SELECT kind FROM devices WHERE id = ? AND removed_at IS NULL", (device,))
    if found is None:
        raise NotFound(f"device {device}")
    if found["kind"] != "calls":
        refuse("hub.lines_not_a_call_recorder", detail=f"{device} is not a call recorder")
    try:
        Config().replace(calls={"recorded_lines": recorded, "excluded_lines": excluded})
    except ConfigError as exc:
        refuse("hub.lines_invalid", detail=str(exc))
    ctx.log("device.lines", subject=device, detail={"recorded_lines": recorded, "excluded_lines": excluded})
    return pushes.stage(ctx.db, device, LINES, {"recorded_lines": recorded, "excluded_lines": excluded})
