"""The recordings of the whole city as the hub's workflows see them (``domain.context``'s
``Holds`` and ``Catalogue``): their metadata as the devices published it, the holds the hub
places on them, and their footage read — still sealed — from the evidence locker, never from
a device. A device that is off, stolen or burnt does not stop a case.

A recording is named ``DEVICE/ID`` here (ids are unique only on their device), and a day key
``DEVICE/DAY`` (each device has its own).
"""

from __future__ import annotations

import json
import time

from domain.errors import Conflict
from hub import locker


def split(name: str) -> tuple[str, str]:
    """``DEVICE/ID`` → (device, id); ("", "") for anything else."""
    device, _, rec = name.partition("/")
    return (device, rec) if device and rec and "/" not in rec else ("", "")


class HubHolds:
    """The hub's holds (``holds``): a recording under one is copied to the locker by its device
    and kept there while the hold lasts (``hub.locker``)."""

    def __init__(self, db, wake=lambda: None):
        self.db, self.wake = db, wake

    def hold(self, *, reason: str, recording_ids: list[str], reference: str, by: str) -> list[int]:
        ids = []
        with self.db.transaction():
            for name in recording_ids:
                device, rec = split(name)
                if not self.db.one("SELECT 1 FROM recordings WHERE device = ? AND id = ?", (device, rec)):
                    raise Conflict("hub.recording_unknown", detail=name)
                ids.append(self.db.insert(
                    "INSERT INTO holds (device, recording_id, reason, reference, placed_by, placed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (device, rec, reason, reference, by, time.time())))
        self.wake()  # the locker asks the devices for the footage at once
        return ids

    def release(self, hold_ids: list[int], *, by: str) -> None:
        for hold_id in hold_ids:
            self.db.execute("UPDATE holds SET released_at = ?, released_by = ? WHERE id = ? AND released_at IS NULL",
                            (time.time(), by, hold_id))


class HubCatalogue:
    """Every device's recordings (metadata), and their footage from the locker."""

    def __init__(self, db, bucket=None):
        self.db, self.bucket = db, bucket  # bucket: a hub.locker.Bucket, or None (no locker)

    def for_request(self) -> list:
        return self.db.all(
            "SELECT r.device || '/' || r.id AS id, r.device, d.place, r.record_class, r.started_at, r.ended_at,"
            " r.started_wall_us, r.ended_wall_us, r.section, r.marks FROM recordings r"
            " JOIN devices d ON d.id = r.device ORDER BY r.started_wall_us DESC LIMIT 500")

    def segments_in(self, recording_ids: list[str], start_wall_us: int, end_wall_us: int) -> list:
        """The segments of these recordings that overlap the range, as their devices' logs
        committed them, read from the locker. Refused (naming what is missing, and whether its
        device is on line to send it) while any of them is not kept there yet: a case is never
        shown with a piece quietly left out."""
        found, missing = [], {}
        for name in recording_ids:
            device, rec = split(name)
            for row in self.db.all(
                    "SELECT l.detail, k.key, k.state, d.place FROM device_log l JOIN devices d ON d.id = l.device"
                    " LEFT JOIN locker k ON k.device = l.device AND k.path = l.subject AND k.kind = 'segment'"
                    " WHERE l.device = ? AND l.action = 'segment.sealed' AND (l.detail::jsonb ->> 'recording') = ?",
                    (device, rec)):
                d = json.loads(row["detail"])
                if not (d["start_wall_us"] < end_wall_us and d["end_wall_us"] > start_wall_us):
                    continue
                if row["state"] != "kept":
                    missing[device] = missing.get(device, 0) + 1
                    continue
                found.append({"path": row["key"], "record_class": d.get("class", "footage"),
                              "key_day": f"{device}/{d['day']}", "start_wall_us": d["start_wall_us"],
                              "end_wall_us": d["end_wall_us"], "device": device, "place": row["place"]})
        if missing:
            online = {r["id"]: bool(r["online"]) for r in self.db.all(
                "SELECT id, online FROM devices WHERE id IN (" + ",".join("?" * len(missing)) + ")", list(missing))}
            raise Conflict("hub.not_in_locker", detail="; ".join(
                f"{device}: {n} segment(s) ({'being copied' if online.get(device) else 'its device is off line'})"
                for device, n in sorted(missing.items())))
        return sorted(found, key=lambda r: (r["start_wall_us"], r["device"]))

    def sound_only(self, recording_id: str) -> bool:
        device, rec = split(recording_id)
        return self.db.scalar("SELECT record_class FROM recordings WHERE device = ? AND id = ?", (device, rec)) == "call"

    def open_holds(self) -> int:
        return self.db.scalar("SELECT count(*) FROM holds WHERE released_at IS NULL")

    def read_sealed(self, path: str) -> bytes:
        """A kept copy's bytes, still sealed (``path`` is its key in the bucket)."""
        if self.bucket is None:
            raise Conflict("hub.no_locker")
        if not self.db.one("SELECT 1 FROM locker WHERE key = ? AND state = 'kept'", (path,)):
            raise FileNotFoundError(f"{path} is not kept in the evidence locker")
        return self.bucket.read(path)

    def opened_vault(self):
        raise Conflict("hub.holds_unavailable")  # exports at the hub: a later part of issue 25

    def sealed_day_key(self, record_class: str, day: str) -> bytes:
        """A day key (``DEVICE/DAY``) as its device sealed it, from the locker."""
        device, plain_day = split(day)
        key = locker.object_key(device, locker.day_key_path(record_class, plain_day))
        return self.read_sealed(key)
