"""Devices joining the city (docs/hub.md, "Enrollment"): the manager makes a one-time code for
one device; the device presents it with its id, kind, place and verifier key; the hub makes
its broker account and answers with what the device needs to publish.

Only the code's SHA-256 is kept. A code is good for 24 hours, once, for the device it was made
for; wrong codes are counted per address like wrong passwords (``domain.accounts``), so they
cannot be guessed. Removing a device deletes its broker account, which disconnects it at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from domain import accounts
from domain.errors import NotFound, refuse
from domain.times import now_iso
from firmware.vault.audit import AuditError, parse_vkey
from hub import pushes

DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # a device's id, as its settings allow (device.id)
KINDS = ("counter", "calls")
VALID_SECONDS = 24 * 3600
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed at a console


def _digest(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").strip().upper().encode()).hexdigest()


def make_code(ctx, device: str, kind: str, place: str) -> str:
    """A one-time code for ``device`` (shown once; only its hash is kept)."""
    place = place.strip()
    if not DEVICE_ID.fullmatch(device):
        refuse("hub.bad_device_id")
    if kind not in KINDS:
        refuse("hub.bad_kind")
    if not place or len(place) > 80:
        refuse("hub.place_needed")
    if ctx.db.one("SELECT 1 FROM devices WHERE id = ?", (device,)):
        refuse("hub.device_exists", 409)  # a removed device's id is not reused: its log stays, as evidence
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    code = "-".join(raw[i:i + 4] for i in range(0, 12, 4))
    ctx.log("device.enrollment_code", subject=device, detail={"kind": kind, "place": place})
    ctx.db.execute("INSERT INTO enrollments (code_sha256, device, kind, place, created_by, created_at, expires_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", (_digest(code), device, kind, place, ctx.actor.id, now_iso(),
                                                     time.time() + VALID_SECONDS))
    return code


class EnrollRefused(Exception):
    """Why a device's enrollment was refused: ``code`` (for the device) and the HTTP status."""

    def __init__(self, code: str, status: int, message: str):
        super().__init__(message)
        self.code, self.status = code, status


def enroll(ctx, site, body: dict, address: str) -> dict:
    """A device presents its code: its broker account is made and what it needs returned.
    ``body``: ``{"code", "device", "kind", "place", "vkey"}``."""
    db, guard = ctx.db, ctx.guard
    key = f"enroll:{address}"
    if guard.failures(key) >= accounts.ADDRESS_LIMIT:
        raise EnrollRefused("enroll.locked", 403, "too many wrong codes from this address: wait 30 minutes")
    try:
        code, device, kind, vkey = (str(body[k]) for k in ("code", "device", "kind", "vkey"))
    except (KeyError, TypeError):
        raise EnrollRefused("enroll.bad_request", 400, "send code, device, kind, place and vkey") from None
    if not DEVICE_ID.fullmatch(device) or kind not in KINDS:
        raise EnrollRefused("enroll.bad_request", 400, "device must be a device id (a-z, 0-9, -) and kind counter or calls")
    try:
        name, _, _ = parse_vkey(vkey)
    except AuditError as exc:
        raise EnrollRefused("enroll.bad_request", 400, f"vkey: {exc}") from None
    row = db.one("SELECT * FROM enrollments WHERE code_sha256 = ?", (_digest(code),))
    if row is None or row["device"] != device or row["kind"] != kind:
        failures = guard.fail(key)
        ctx.log("device.enroll_refused", subject=device, detail={"reason": "wrong code", "address": address,
                                                                 "failures": failures}, actor="anonymous")
        raise EnrollRefused("enroll.wrong_code", 403, "this code is not one the hub made for this device and kind")
    if row["used_at"] or row["expires_at"] < time.time():
        ctx.log("device.enroll_refused", subject=device, detail={"reason": "used" if row["used_at"] else "expired",
                                                                 "address": address}, actor="anonymous")
        raise EnrollRefused("enroll.code_spent", 403, "this code was used or has expired: ask the manager for a new one")
    if db.one("SELECT 1 FROM devices WHERE id = ?", (device,)):
        raise EnrollRefused("enroll.device_exists", 409, f"a device {device!r} is enrolled already")
    if name != f"kiroku/{device}":
        raise EnrollRefused("enroll.bad_request", 400, f"the verifier key is {name!r}'s, not kiroku/{device}'s")
    ctx.log("device.enroll", subject=device, detail={"kind": kind, "place": row["place"], "vkey": vkey,
                                                     "address": address}, actor=f"device:{device}")
    username, password = site.admin().add_device(device)
    try:
        with db.transaction():
            db.execute("UPDATE enrollments SET used_at = ? WHERE id = ?", (now_iso(), row["id"]))
            db.execute("INSERT INTO devices (id, kind, place, vkey, broker_user, enrolled_at, enrolled_by)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (device, kind, row["place"], vkey, username, now_iso(),
                                                        row["created_by"]))
            pushes.stage_everything(db, device)
    except Exception:
        site.admin().remove_device(device)  # no account without its device
        raise
    site.pushed()
    return {"v": 1, "device": device, "place": row["place"],
            "broker": {"host": site.broker_public()[0], "port": site.broker_public()[1], "username": username,
                       "password": password, "client_id": username, "ca_pem": site.ca_pem()},
            "managers": pushes.managers_payload(db)["managers"], "hub": {"vkey": ctx.audit.vkey}}


def remove(ctx, site, device: str) -> None:
    """Remove a device: its broker account is deleted (it is disconnected at once); its
    log, checkpoints and recordings' metadata stay, as evidence."""
    if not ctx.db.one("SELECT 1 FROM devices WHERE id = ? AND removed_at IS NULL", (device,)):
        raise NotFound(f"device {device}")
    ctx.log("device.remove", subject=device)
    site.admin().remove_device(device)
    ctx.db.execute("UPDATE devices SET removed_at = ?, removed_by = ?, online = 0 WHERE id = ?",
                   (now_iso(), ctx.actor.id, device))
    ctx.db.execute("UPDATE operators SET revoked_at = ? WHERE device = ? AND revoked_at IS NULL", (now_iso(), device))
