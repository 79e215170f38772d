"""Updates from the admin page: the manager uploads a release, the device installs it.

The pages only: what a release is, how the upload reaches the device (``<data>/update``) and
how each outcome is logged is ``webui.releases``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from flask import Blueprint, abort, current_app, g, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from domain.times import now_iso
from firmware.control import ControlError
from firmware.fsutil import atomic_write, fsync_dir, makedirs_durable
from webui.actions import done, refuse
from webui.parsing import Form, Upload, takes
from webui.permissions import MANAGER, allowed, permission
from webui.releases import (ACTIVE, busy, locked, log_outcomes, max_release, os_version, release_of,
                            read_marker, running_version, spooled, update_folder, updates)
from webui.services import audit, recorder_status

bp = Blueprint("updates", __name__, url_prefix="/admin/update")

@bp.get("/")
@permission(MANAGER)
def index():
    items = updates()
    log_outcomes(items)
    status = recorder_status()
    in_progress = any(item["state"] in ACTIVE for item in items)
    return render_template("admin/update.html", running=running_version(), os_update=os_version(), items=items[:10],
                           in_progress=in_progress, busy=busy(status),
                           continuous=(status or {}).get("mode") == "continuous",
                           max_mb=max_release() // 2**20, max_bytes=max_release(),
                           simulated=current_app.config["KIROKU_SIMULATED"])


@bp.errorhandler(RequestEntityTooLarge)
def too_big(exc):
    # The body is refused before any view runs (the CSRF check reads the form). A manager is
    # sent back to the page to read why (the server reads the rest of the body first: a 413
    # would close the connection before the browser can read the answer); anyone else may
    # not upload at all, and gets the 413 that closes it.
    from flask import flash, redirect

    if not allowed(frozenset({MANAGER}), g.user):
        return exc
    flash("update.too_big", "error")
    return redirect(url_for("updates.index"))


def _chunks(stream: BinaryIO, digest):
    """``stream`` from its start, a megabyte at a time, each added to ``digest``."""
    stream.seek(0)
    while chunk := stream.read(2**20):
        digest.update(chunk)
        yield chunk


def _unlink_all(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).unlink(missing_ok=True)


UPLOAD = Form(Upload("release", "multipart file: a release made by image-build/release, at most 256 MB", limit=256 * 2**20))


@bp.post("/")
@permission(MANAGER)
@takes(UPLOAD)
@spooled
def upload():
    """Install a release (multipart file "release", made by image-build/release)."""
    back = url_for("updates.index")
    release = request.files.get("release")
    stream = release.stream if release else io.BytesIO()
    size = stream.seek(0, os.SEEK_END)
    if not size:
        refuse("update.no_file", back=back)
    if size > max_release():
        refuse("update.too_big", 413, back=back)
    found = release_of(stream)
    if found is None:
        refuse("update.not_a_release", back=back)
    kind, version = found
    state = busy(recorder_status())
    if state:
        refuse("update.recording", 409, back=back, detail=state)
    folder = update_folder()
    try:
        makedirs_durable(folder)
    except OSError as exc:
        refuse("update.cannot_store", 507, back=back, detail=str(exc))
    with locked(folder):
        # Only this, under the lock, makes a request; the device only takes them away.
        if any(item["state"] in ACTIVE for item in updates()) or (folder / "request").exists() \
                or (folder / ".request.taken").exists():
            refuse("update.in_progress", 409, back=back)
        update_id = secrets.token_hex(16)
        tar, record, pending = f"{update_id}.tar", f"{update_id}.json", f".{update_id}.request"
        digest = hashlib.sha256()
        try:
            atomic_write(folder / tar, _chunks(stream, digest), mode=0o640)
            item = {"id": update_id, "kind": kind, "version": version, "sha256": digest.hexdigest(),
                    "bytes": size, "by": g.user.username, "at": now_iso(),
                    "from": running_version() if kind == "firmware" else os_version()}
            atomic_write(folder / record, json.dumps(item).encode(), mode=0o640)
            atomic_write(folder / pending, f"{update_id}\n".encode(), mode=0o640)
        except OSError as exc:
            _unlink_all(folder, tar, record, pending)
            refuse("update.cannot_store", 507, back=back, detail=str(exc))
        try:
            audit("update.request", subject=version,
                       detail={k: item[k] for k in ("id", "kind", "sha256", "bytes", "from")})
        except ControlError:
            _unlink_all(folder, tar, record, pending)
            raise
        os.rename(folder / pending, folder / "request")  # the device starts on it now
        fsync_dir(folder)
    return done(back, code=202, notice="update.requested", id=update_id, version=version, state="waiting")


@bp.post("/<update_id>/cancel")
@permission(MANAGER)
def cancel(update_id: str):
    """Withdraw a request the device has not begun on."""
    back = url_for("updates.index")
    folder = update_folder()
    item = next((item for item in updates() if item["id"] == update_id), None)
    if item is None:
        abort(404)
    withdrawn = folder / ".request.withdrawn"
    with locked(folder):
        try:
            os.rename(folder / "request", withdrawn)  # the device claims it by a rename too: one wins
        except FileNotFoundError:
            refuse("update.already_started", 409, back=back)
        if read_marker(withdrawn) != update_id:
            os.rename(withdrawn, folder / "request")
            refuse("update.already_started", 409, back=back)
        try:
            audit("update.cancel", subject=item["version"], detail={"id": update_id})
        except ControlError:
            os.rename(withdrawn, folder / "request")
            raise
        _unlink_all(folder, f"{update_id}.tar", withdrawn.name)
        stored = {k: v for k, v in item.items() if k not in ("state", "output")}
        atomic_write(folder / f"{update_id}.json", json.dumps({**stored, "cancelled_by": g.user.username}).encode())
    return done(back, notice="update.cancelled", id=update_id, state="cancelled")


