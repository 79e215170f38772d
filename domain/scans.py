"""Scans of the written, signed and sealed paper forms (Art. 8(1), 9–12): kept beside the
register (``Context.files``), each named by its record's number and its SHA-256, which the
audit log holds before the file is written."""

from __future__ import annotations

import hashlib
from pathlib import Path

from domain.errors import NotFound, refuse
from firmware.fsutil import atomic_write, makedirs_durable

MAX_SCAN = 10 * 2**20
TYPES = {b"%PDF": ".pdf", b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg"}


def store(ctx, number: str, data: bytes, action: str) -> tuple[str, str]:
    """Keep an uploaded scan: checked to be a PDF, PNG or JPEG of at most MAX_SCAN, logged
    (``action``) with its SHA-256, then written. Returns its file name and digest."""
    kind = next((ext for magic, ext in TYPES.items() if data.startswith(magic)), None)
    if not data or len(data) > MAX_SCAN or kind is None:
        refuse("request.bad_scan")
    digest = hashlib.sha256(data).hexdigest()
    makedirs_durable(ctx.files)
    name = f"{number}-{digest[:12]}{kind}"
    ctx.log(action, subject=number, detail={"sha256": digest, "bytes": len(data)})
    atomic_write(ctx.files / name, data)
    return name, digest


def opened(ctx, number: str, name: str | None, action: str) -> Path:
    """The stored scan's path, its reading logged (``action``); NotFound when none is attached."""
    if not name:
        raise NotFound(f"scan of {number}")
    ctx.log(action, subject=number)
    return ctx.files / name
