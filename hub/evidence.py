"""The recordings of the whole city as the hub's workflows see them (``domain.context``'s
``Holds`` and ``Catalogue``): their metadata as the devices published it, the holds the hub
places on them, and their footage read — still sealed — from the evidence locker, never from
a device. A device that is off, stolen or burnt does not stop a case.

A recording is named ``DEVICE/ID`` here (ids are unique only on their device), and a day key
``DEVICE/DAY`` (each device has its own).
"""

from __future__ import annotations

import contextlib
import json
import time

from domain import requests
from domain.errors import Conflict
from firmware.export.errors import ExportError, ExportRefused
from firmware.store import SegmentInfo
from firmware.vault.index import iso
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

    def __init__(self, db, bucket=None, signer=None):
        self.db, self.bucket = db, bucket  # bucket: a hub.locker.Bucket, or None (no locker)
        self.signer = signer  # the hub's audit log (hub.audit.HubAudit): it signs and proves exports

    def for_request(self, *, ids=None, since_us=None, until_us=None, number: str = "") -> list:
        narrowed = requests.catalogue_filter(ids=ids, since_us=since_us, until_us=until_us, number=number, calls="r",
                                             name="(r.device || '/' || r.id)")  # a recording's name is DEVICE/ID here
        if narrowed is None:
            return []
        where, params = narrowed
        where.append("(r.record_class = 'footage' OR r.segments > 0)")  # a call that never had audio: nothing to see
        return [requests.with_parties(row) for row in self.db.all(
            "SELECT r.device || '/' || r.id AS id, r.device, d.place, r.record_class, r.started_at, r.ended_at,"
            " r.started_wall_us, r.ended_wall_us, r.section, r.marks, r.direction, r.withheld, r.external_e164,"
            " r.external_raw, r.city_e164, r.city_raw FROM recordings r JOIN devices d ON d.id = r.device"
            f" WHERE {' AND '.join(where)} ORDER BY r.started_wall_us DESC"
            f"{'' if ids is not None else ' LIMIT 500'}", params)]

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
        """What an export reads, over the locker (:class:`LockerVault`)."""
        if self.bucket is None:
            raise Conflict("hub.no_locker")
        return contextlib.nullcontext(LockerVault(self.db, self, self.signer))

    def sealed_day_key(self, record_class: str, day: str) -> bytes:
        """A day key (``DEVICE/DAY``) as its device sealed it, from the locker."""
        device, plain_day = split(day)
        key = locker.object_key(device, locker.day_key_path(record_class, plain_day))
        return self.read_sealed(key)


class LockerVault:
    """What ``firmware.export`` reads of a vault — a recording, its segments, their sealed bytes,
    the day keys, the key that signs the package and the log that proves it — made of what the
    hub witnessed (each segment as its device's log committed it) and what the locker keeps.

    The package is signed by the hub and its export is an entry of the hub's log (not the
    device's, whose key never leaves it): ``kiroku verify`` checks it exactly as a device's, and
    its manifest names the device whose footage it is and each sealed segment's SHA-256 as that
    device's log committed it."""

    def __init__(self, db, catalogue: HubCatalogue, signer):
        self.db, self._catalogue, self._signer = db, catalogue, signer
        self.keys = _HubSigning(signer, catalogue)
        self.audit_log = self
        self._keys_of: dict[str, str] = {}  # a segment's path on its device → its key in the bucket

    def recording(self, name: str) -> dict | None:
        device, rec = split(name)
        row = self.db.one("SELECT device, id, started_at, section FROM recordings WHERE device = ? AND id = ?",
                          (device, rec))
        if row is None:
            return None
        start = self.db.one("SELECT detail FROM device_log WHERE device = ? AND action = 'recording.start'"
                            " AND subject = ?", (device, rec))
        mode = json.loads(start["detail"]).get("mode", "") if start else ""
        return {"id": rec, "device": device, "started_at": row["started_at"], "mode": mode, "section": row["section"]}

    def segments(self, name: str, *, with_erased: bool = False) -> list[SegmentInfo]:
        device, rec = split(name)
        found = []
        for row in self.db.all(
                "SELECT l.detail FROM device_log l WHERE l.device = ? AND l.action = 'segment.sealed'"
                " AND (l.detail::jsonb ->> 'recording') = ? ORDER BY l.seq", (device, rec)):
            d = json.loads(row["detail"])
            if "frames" not in d:
                raise ExportRefused(f"{name} was recorded by a version of kiroku whose log does not say what an"
                                    " export needs of its segments: export it at the device (`kiroku export`)")
            self._keys_of[d["path"]] = locker.object_key(device, d["path"])
            found.append(SegmentInfo(
                recording_id=rec, seq=d["seq"], start_us=d["start_us"], end_us=d["end_us"],
                start_wall_us=d["start_wall_us"], end_wall_us=d["end_wall_us"],
                started_at=iso(d["start_wall_us"]), ended_at=iso(d["end_wall_us"]),
                clock_synchronised=bool(d["synced"]), video_frames=d["frames"], audio_samples=d["samples"],
                has_audio=bool(d["audio"]), record_class=d.get("class", "footage"), key_day=f"{device}/{d['day']}",
                path=d["path"], boot_id=d.get("boot", ""), bytes=d.get("size", 0), sha256=d.get("sha256", "")))
        return sorted(found, key=lambda s: s.seq)

    def read_sealed(self, path: str) -> bytes:
        key = self._keys_of.get(path, path)
        try:
            return self._catalogue.read_sealed(key)
        except FileNotFoundError:
            device = key.split("/", 1)[0]
            online = self.db.scalar("SELECT online FROM devices WHERE id = ?", (device,))
            raise ExportError(f"{key} is not in the evidence locker yet"
                              f" ({'its device is sending it' if online else 'its device is off line'})") from None

    def inclusion(self, db, seq: int) -> dict:
        """The proof that the export's entry is in the hub's log (``audit_log.inclusion``)."""
        return self._signer.inclusion(db, seq)


class _HubSigning:
    """The keys an export uses at the hub: the hub's signing key, and the day keys from the locker."""

    def __init__(self, signer, catalogue: HubCatalogue):
        self._signer, self._catalogue = signer, catalogue
        self.signer_name = signer.origin

    def public_key(self):
        return self._signer.key.public_key()

    def signing_key(self):
        return self._signer.key

    def open_day_key(self, record_class: str, day: str, opener):
        return open_day_key(self._catalogue, record_class, day, opener)


def open_day_key(catalogue: HubCatalogue, record_class: str, day: str, opener):
    """A device's day key (``DEVICE/DAY``), sealed as the device sealed it, from the evidence
    locker, opened with a manager's identity (or the recovery key)."""
    from firmware.vault import age

    sealed = catalogue.sealed_day_key(record_class, day)
    try:
        return age.X25519Identity.parse(age.decrypt(sealed, [opener]).decode())
    except age.NoIdentityMatched:
        # Sealed before its device joined the city, or before this manager was one of the city's
        # (keys.day_recipient: what follows such a change gets a key of its own).
        raise Conflict("hub.sealed_before_city", detail=day) from None
