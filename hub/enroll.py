"""Devices joining the city (docs/hub.md, "Enrollment"): the manager makes a one-time code for
one device; the device presents it with its id, kind, place and verifier key; the hub makes
its broker account and answers with what the device needs to publish.

Only the code's SHA-256 is kept. A code is good for 24 hours, once, for the device it was made
for; wrong codes are counted per address like wrong passwords (``domain.accounts``), so they
cannot be guessed. Removing a device deletes its broker account, which disconnects it at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time

from domain import accounts
from domain.errors import NotFound, refuse
from domain.times import now_iso
from firmware.vault.errors import AuditError
from firmware.vault.signed_note import parse_vkey
from hub import pushes

DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # a device's id, as its settings allow (device.id)
KINDS = ("counter", "calls")
VALID_SECONDS = 24 * 3600
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed at a console


def _digest(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").strip().upper().encode()).hexdigest()


def _taken(db, device: str) -> bool:
    """An id in use: a device enrolled whose account has connected, or one removed (its log
    stays, as evidence, under its id). One enrolled that never connected may enroll again."""
    row = db.one("SELECT removed_at, last_seen FROM devices WHERE id = ?", (device,))
    return row is not None and (row["removed_at"] is not None or row["last_seen"] is not None)


def make_code(ctx, device: str, kind: str, place: str) -> str:
    """A one-time code for ``device`` (shown once; only its hash is kept)."""
    place = place.strip()
    if not DEVICE_ID.fullmatch(device):
        refuse("hub.bad_device_id")
    if kind not in KINDS:
        refuse("hub.bad_kind")
    if not place or len(place) > 80:
        refuse("hub.place_needed")
    if _taken(ctx.db, device):
        refuse("hub.device_exists", 409)
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


MAX_WRONG = 5  # wrong codes against a device id's pending code before it is blocked


def _request(body) -> tuple[str, str, str, str, str]:
    """The enroll request's fields, checked (400 ``enroll.bad_request`` otherwise)."""
    if not isinstance(body, dict) or body.get("v") != 1:
        raise EnrollRefused("enroll.bad_request", 400, 'send a JSON object with "v": 1 (docs/hub.md)')
    fields = {k: body.get(k) for k in ("code", "device", "kind", "vkey", "place")}
    if not all(isinstance(fields[k], str) for k in ("code", "device", "kind", "vkey")) or \
            not isinstance(fields["place"] or "", str):
        raise EnrollRefused("enroll.bad_request", 400, "code, device, kind and vkey are strings (place too)")
    code, device, kind, vkey = (fields[k].strip() for k in ("code", "device", "kind", "vkey"))
    if not DEVICE_ID.fullmatch(device) or kind not in KINDS:
        raise EnrollRefused("enroll.bad_request", 400, "device is a device id (a-z, 0-9, -); kind is counter or calls")
    try:
        name, _, _ = parse_vkey(vkey)
    except AuditError as exc:
        raise EnrollRefused("enroll.bad_request", 400, f"vkey: {exc}") from None
    if name != f"kiroku/{device}":
        raise EnrollRefused("enroll.bad_request", 400, f"the verifier key is {name!r}'s, not kiroku/{device}'s")
    return code, device, kind, vkey, (fields["place"] or "").strip()


def enroll(ctx, site, body, address: str) -> dict:
    """A device presents its code (``body``: the request of docs/hub.md): its broker account is
    made and what it needs returned. Refusals, in the contract's order: 400, 403, 409."""
    db, guard = ctx.db, ctx.guard
    code, device, kind, vkey, _place = _request(body)
    refused = EnrollRefused("enroll.code_refused", 403, "the hub refused this code: it is unknown, used, expired or "
                                                        "not for this device — ask the manager for a new one")
    key = f"enroll:{address}"
    if guard.failures(key) >= accounts.ADDRESS_LIMIT:
        raise refused
    row = db.one("SELECT * FROM enrollments WHERE code_sha256 = ?", (_digest(code),))
    if row is None or row["device"] != device or row["kind"] != kind:
        guard.fail(key)
        db.execute("UPDATE enrollments SET failures = failures + 1 WHERE device = ? AND used_at IS NULL"
                   " AND expires_at > ?", (device, time.time()))
        ctx.log("device.enroll_refused", subject=device, detail={"reason": "wrong code", "address": address},
                actor="anonymous")
        raise refused
    if row["used_at"] or row["expires_at"] < time.time() or row["failures"] >= MAX_WRONG:
        reason = "used" if row["used_at"] else "expired" if row["expires_at"] < time.time() else "blocked"
        ctx.log("device.enroll_refused", subject=device, detail={"reason": reason, "address": address},
                actor="anonymous")
        raise refused
    if _taken(db, device):
        raise EnrollRefused("enroll.device_taken", 409, f"a device {device!r} is enrolled and has connected: "
                                                        "remove it at the hub first, or give the new one another id")
    again = db.one("SELECT broker_user FROM devices WHERE id = ?", (device,)) is not None
    ctx.log("device.enroll", subject=device, detail={"kind": kind, "place": row["place"], "vkey": vkey,
                                                     "software": str(body.get("software", ""))[:40],
                                                     "address": address, "again": again}, actor=f"device:{device}")
    admin = site.admin()
    # An account of this id the register does not hold as in use is a leftover — one it never
    # used (enrolled again), or one made by a hub that stopped before it committed the
    # enrollment: it goes, and a new one is made.
    admin.remove_device(device)
    username, password = admin.add_device(device)
    try:
        with db.transaction():
            db.execute("UPDATE enrollments SET used_at = ? WHERE id = ?", (now_iso(), row["id"]))
            if again:
                db.execute("UPDATE devices SET kind = ?, place = ?, vkey = ?, broker_user = ?, enrolled_at = ?,"
                           " enrolled_by = ? WHERE id = ?", (kind, row["place"], vkey, username, now_iso(),
                                                            row["created_by"], device))
            else:
                db.execute("INSERT INTO devices (id, kind, place, vkey, broker_user, enrolled_at, enrolled_by)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?)", (device, kind, row["place"], vkey, username, now_iso(),
                                                            row["created_by"]))
            pushes.stage_everything(db, device)
            managers = db.one("SELECT rev, payload FROM pushes WHERE device = ? AND topic = ?",
                              (device, pushes.MANAGERS))
    except Exception:
        admin.remove_device(device)  # no account without its device
        raise
    site.pushed()
    host, port = site.broker_public()
    return {"v": 1, "device": device, "place": row["place"],
            "broker": {"host": host, "port": port, "username": username, "password": password,
                       "client_id": username, "ca_pem": site.ca_pem()},
            "managers": {"v": 1, "rev": managers["rev"], **json.loads(managers["payload"])}}


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
