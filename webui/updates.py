"""Firmware updates from the admin page: the manager uploads a release, the device installs it.

The web UI runs unprivileged and installs nothing itself. It checks that the upload is shaped
like a release (image-build/release's tar: a manifest naming its version, and a signature),
refuses while a recording is under way, logs the request in the audit log, and leaves the
release and a request in ``<data>/update``:

    <data>/update/<id>.tar     the release, as uploaded
    <data>/update/<id>.json    who asked, when, for which version and SHA-256 (this page's own)
    <data>/update/request      <id>: written last, by one rename

On the device, kiroku-update-request.path sees the request and starts a root oneshot
(image-build/overlay/usr/lib/kiroku/update-request) that runs kiroku-update on it: the
signature is checked against the image's release key before anything is unpacked, a
downgrade is refused, the new version is installed beside the running one and goes back if
its recorder does not get ready. The outcome is ``<status>/<id>`` (``/run/kiroku-update``):
its first line ``running``, ``installed`` or ``not-installed``, then kiroku-update's words.
The update restarts this process too; the page shows the outcome when it is back, and logs
it in the audit log, once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import tarfile
from pathlib import Path

from flask import Blueprint, abort, current_app, g, render_template, request, url_for

from firmware.control import ControlError
from firmware.fsutil import atomic_write, makedirs_durable
from webui import auth
from webui.actions import done, refuse
from webui.permissions import MANAGER, permission

bp = Blueprint("updates", __name__, url_prefix="/admin/update")

MAX_RELEASE = 12 * 2**20 - 64 * 1024  # under the app's MAX_CONTENT_LENGTH, with room for the form
MAX_MANIFEST = 64 * 1024
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~-]{0,40}")
_ID = re.compile(r"[0-9a-f]{32}")
FINAL = ("installed", "not-installed")
# The recorder restarts with the update: not while it records or is about to.
BUSY_STATES = ("notice", "recording", "stopping")


def _dir() -> Path:
    return Path(current_app.config["KIROKU_DATA"]) / "update"


def _status_dir() -> Path:
    return Path(current_app.config.get("KIROKU_UPDATE_STATUS", "/run/kiroku-update"))


def running_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kiroku")
    except PackageNotFoundError:
        from firmware import __version__

        return __version__


def release_version(data: bytes) -> str | None:
    """The version a release names in its manifest, or None if ``data`` is not shaped like a
    release. Only the manifest is read; what it says is checked on the device, as root, against
    the image's release key."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            names = tar.getnames()
            manifest = tar.getmember("manifest")
            if "manifest.sig" not in names or not manifest.isfile() or manifest.size > MAX_MANIFEST:
                return None
            text = tar.extractfile(manifest).read().decode("utf-8")
    except (tarfile.TarError, KeyError, UnicodeDecodeError, EOFError):
        return None
    lines = text.splitlines()
    if not lines or lines[0] != "kiroku-release 1":
        return None
    version = next((line[len("version "):] for line in lines if line.startswith("version ")), "")
    return version if _VERSION.fullmatch(version) else None


def _outcome(update_id: str) -> tuple[str, str] | None:
    """(state, kiroku-update's words) from the root helper, or None before it has begun."""
    try:
        text = (_status_dir() / update_id).read_text(errors="replace")
    except FileNotFoundError:
        return None
    state, _, words = text.partition("\n")
    return state.strip(), words.strip()


def updates() -> list[dict]:
    """The requests this device has had, newest first, each with what became of it:
    waiting (the device has not begun), running, installed, not-installed, or unknown (the
    device restarted before it said: see the version that runs)."""
    folder = _dir()
    pending = folder / "request"
    waiting = pending.read_text().strip() if pending.exists() else ""
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            item = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(item, dict) or not _ID.fullmatch(str(item.get("id", ""))):
            continue
        outcome = _outcome(item["id"])
        if outcome:
            item["state"], item["output"] = outcome
        elif item["id"] == waiting:
            item["state"], item["output"] = "waiting", ""
        else:
            item["state"], item["output"] = ("cancelled" if item.get("cancelled_by") else "unknown"), ""
        found.append(item)
    return sorted(found, key=lambda item: item.get("at", ""), reverse=True)


def log_outcomes(items: list[dict]) -> None:
    """Log each finished update in the audit log, once (a marker file beside its request)."""
    for item in items:
        if item["state"] not in FINAL:
            continue
        marker = _dir() / f"{item['id']}.logged"
        if marker.exists():
            continue
        action = "update.installed" if item["state"] == "installed" else "update.not_installed"
        try:
            auth.audit(action, subject=item["version"], actor=item["by"],
                       detail={"id": item["id"], "sha256": item["sha256"], "running": running_version()})
        except ControlError:
            return  # the recorder is still starting: logged at the next look
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            os.close(fd)
        except FileExistsError:
            pass


def _busy() -> str | None:
    from webui.admin import recorder_status

    status = recorder_status()
    if status is None:
        return None  # nothing records: an update brings the recorder back
    return status.get("state") if status.get("state") in BUSY_STATES else None


@bp.get("/")
@permission(MANAGER)
def index():
    items = updates()
    log_outcomes(items)
    in_progress = any(item["state"] in ("waiting", "running") for item in items)
    return render_template("admin/update.html", running=running_version(), items=items[:10],
                           in_progress=in_progress, busy=_busy(), max_mb=MAX_RELEASE // 2**20,
                           simulated=current_app.config["KIROKU_SIMULATED"])


@bp.post("/")
@permission(MANAGER)
def upload():
    """Install a release (multipart file "release", made by image-build/release)."""
    back = url_for("updates.index")
    if any(item["state"] in ("waiting", "running") for item in updates()):
        refuse("update.in_progress", 409, back=back)
    upload = request.files.get("release")
    data = upload.read(MAX_RELEASE + 1) if upload else b""
    if not data:
        refuse("update.no_file", back=back)
    if len(data) > MAX_RELEASE:
        refuse("update.too_big", 413, back=back)
    version = release_version(data)
    if version is None:
        refuse("update.not_a_release", back=back)
    state = _busy()
    if state:
        refuse("update.recording", 409, back=back, detail=state)
    update_id = secrets.token_hex(16)
    item = {"id": update_id, "version": version, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "by": g.user.username, "at": auth.now_iso(),
            "from": running_version()}
    folder = _dir()
    try:
        makedirs_durable(folder)
        auth.audit("update.request", subject=version,
                   detail={k: item[k] for k in ("id", "sha256", "bytes", "from")})
        atomic_write(folder / f"{update_id}.tar", data, mode=0o640)
        atomic_write(folder / f"{update_id}.json", json.dumps(item).encode(), mode=0o640)
        atomic_write(folder / "request", f"{update_id}\n".encode(), mode=0o640)
    except OSError as exc:
        for name in (f"{update_id}.tar", f"{update_id}.json"):
            (folder / name).unlink(missing_ok=True)
        refuse("update.cannot_store", 507, back=back, detail=str(exc))
    return done(back, code=202, notice="update.requested", id=update_id, version=version, state="waiting")


@bp.post("/<update_id>/cancel")
@permission(MANAGER)
def cancel(update_id: str):
    """Withdraw a request the device has not begun on."""
    back = url_for("updates.index")
    folder = _dir()
    item = next((item for item in updates() if item["id"] == update_id), None)
    if item is None:
        abort(404)
    if item["state"] != "waiting":
        refuse("update.already_started", 409, back=back)
    auth.audit("update.cancel", subject=item["version"], detail={"id": update_id})
    (folder / "request").unlink(missing_ok=True)  # if the device took it first, its outcome shows
    (folder / f"{update_id}.tar").unlink(missing_ok=True)
    stored = {k: v for k, v in item.items() if k not in ("state", "output")}
    atomic_write(folder / f"{update_id}.json", json.dumps({**stored, "cancelled_by": g.user.username}).encode())
    return done(back, notice="update.cancelled", id=update_id, state="cancelled")


def describe() -> dict:
    """The running version and the requests, for GET /api/v1/update."""
    items = updates()
    log_outcomes(items)
    return {"running": running_version(), "updates": items[:10]}
