"""The device's software updates as records: what was asked for, what became of it, and the
upload's way onto the data partition. The pages are ``webui.updates``.

A release is the firmware (kiroku-VERSION.release.tar) or an OS update (kiroku-os-VERSION.os.tar,
Debian packages), both made and signed by image-build/release; the device tells them apart by
the signed manifest's first line, and this page by the same line, to show which it is.

The web UI runs unprivileged and installs nothing itself. It checks that the upload is shaped
like a release (image-build/release's tar: a manifest naming its version, and a signature),
refuses while a recording is under way, logs the request in the audit log, and leaves the
release and a request in ``<data>/update``:

    ID.tar          the release, as uploaded
    ID.json         who asked, when, for which kind, version and SHA-256 (this page's own record)
    request         ID: made last, by a rename, only while neither it nor .request.taken is there
    .request.taken  the request, once the device has claimed it (a rename)
    ID.outcome      written by the device, as root (JSON): state "running", then "installed"
                    or "not-installed"; the boot it ran in; what kiroku-update said
    ID.logged       the outcome is in the audit log

On the device, kiroku-update-request.path sees the request and starts a root oneshot
(image-build/overlay/usr/lib/kiroku/update-request) that runs kiroku-update on it: the
signature is checked against the image's release key before anything is unpacked, a
downgrade is refused, the new version is installed beside the running one and goes back if
its recorder does not get ready. The update restarts this process too: a thread here logs
each outcome in the audit log, once, as soon as it is written, whether or not anyone looks.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from flask import current_app, g, request, url_for
from flask_wtf.csrf import validate_csrf
from werkzeug.exceptions import RequestEntityTooLarge
from wtforms.validators import ValidationError

from firmware import clock
from firmware.fsutil import makedirs_durable
from webui.actions import Request as SiteRequest
from webui.actions import refuse
from webui.permissions import MANAGER, allowed
from webui.services import audit, recorder_status, state

log = logging.getLogger(__name__)

# An OS update with the kernels in it: only a manager's upload may be this large (every other
# form stays under the app's MAX_CONTENT_LENGTH), and it is spooled to the data partition.
MAX_RELEASE = 256 * 2**20  # the app's KIROKU_MAX_UPDATE, unless it says otherwise
MAX_FORM = 64 * 1024  # the rest of the form: the CSRF token, the multipart headers
_SPOOL = "kiroku.update.spool"  # in the request's environ: where its file goes
MAX_MANIFEST = 64 * 1024
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~-]{0,40}")
_ID = re.compile(r"[0-9a-f]{32}")
FINAL = ("installed", "not-installed")
LOGGED = (*FINAL, "interrupted")  # what the audit log gets, once each
ACTIVE = ("waiting", "running")
NOT_GOOD = ("not-installed", "interrupted", "unknown")  # an outcome the dashboard flags
# A restart cuts an on-demand recording from its notice on, and a call; a continuous recording
# is always under way (the update cuts it once). kiroku-update waits on the same rule.
BUSY_STATES = ("notice", "recording", "stopping")


def update_folder(app=None) -> Path:
    return Path((app or current_app).config["KIROKU_DATA"]) / "update"


def running_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kiroku")
    except PackageNotFoundError:
        from firmware import __version__

        return __version__


KINDS = {"kiroku-release 1": "firmware", "kiroku-os 1": "os"}  # a manifest's first line: what it updates


def _manifest_version(lines: list[str]) -> str | None:
    """The version a release's manifest names (its "version" line), if it is one."""
    version = next((line[len("version "):] for line in lines if line.startswith("version ")), "")
    return version if _VERSION.fullmatch(version) else None


def os_version(app=None) -> str | None:
    """The OS update the device last installed (kiroku-update keeps its manifest), or None."""
    path = Path((app or current_app).config["KIROKU_OS_UPDATE"])
    try:
        return _manifest_version(path.read_text(errors="replace").splitlines())
    except OSError:
        return None


def release_of(stream: BinaryIO) -> tuple[str, str] | None:
    """What the release in ``stream`` (a file) updates ("firmware" or "os") and the version its
    manifest names, or None if it is not shaped like a release. Only the manifest is read;
    what it says is checked on the device, as root, against the image's release key."""
    stream.seek(0)
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            names = tar.getnames()
            manifest = tar.getmember("manifest")
            if "manifest.sig" not in names or not manifest.isfile() or manifest.size > MAX_MANIFEST:
                return None
            text = tar.extractfile(manifest).read().decode("utf-8")
    except (tarfile.TarError, KeyError, UnicodeDecodeError, EOFError):
        return None
    finally:
        stream.seek(0)
    lines = text.splitlines()
    if not lines or lines[0] not in KINDS:
        return None
    version = _manifest_version(lines)
    return (KINDS[lines[0]], version) if version else None


def read_marker(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except (FileNotFoundError, IsADirectoryError):
        return ""


def updates(folder: Path | None = None) -> list[dict]:
    """The requests this device has had, newest first, each with what became of it: waiting
    (the device has not begun), running, installed, not-installed, cancelled, interrupted (the
    device restarted during it: see the running version), or unknown."""
    folder = folder or update_folder()
    if not folder.is_dir():
        return []
    waiting = {read_marker(folder / "request"), read_marker(folder / ".request.taken")}
    boot = clock.boot_id()
    found = []
    for path in folder.glob("*.json"):
        try:
            item = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(item, dict) or not _ID.fullmatch(str(item.get("id", ""))):
            continue
        item.setdefault("kind", "firmware")  # asked for before OS updates existed
        try:
            outcome = json.loads((folder / f"{item['id']}.outcome").read_text(errors="replace"))
        except (OSError, ValueError):
            outcome = None
        item["output"] = ""
        if isinstance(outcome, dict) and outcome.get("state") in ("running", *FINAL):
            item["state"], item["output"] = outcome["state"], str(outcome.get("output", ""))
            if item["state"] == "running" and outcome.get("boot") != boot:
                item["state"] = "interrupted"
            if outcome.get("sha256"):
                item["installed_sha256"] = outcome["sha256"]
        elif item["id"] in waiting:
            item["state"] = "waiting"
        else:
            item["state"] = "cancelled" if item.get("cancelled_by") else "unknown"
        found.append(item)
    return sorted(found, key=lambda item: item.get("at", ""), reverse=True)


def summary() -> dict:
    """What the dashboard says of the software: the version that runs, the last update, and
    any database a newer release has changed."""
    items = updates()
    last = {key: items[0].get(key) for key in ("id", "kind", "version", "from", "state", "at", "by")} if items else None
    if last is not None:
        last["warning"] = last["state"] in NOT_GOOD
    return {"running": running_version(), "os_update": os_version(), "last_update": last,
            "newer_databases": newer_databases()}


def newer_databases() -> list[dict]:
    """Databases whose schema is newer than this release knows: a release migrated them and
    was then rolled back (or installed with --allow-downgrade). This one runs on them as they
    are — migrations only add — but a manager should know, and install the newer release again."""
    from firmware import sqlite
    from firmware.vault.vault import DB_NAME
    from firmware.vault.vault import MIGRATIONS as vault_migrations
    from webui.db import MIGRATIONS, NAME, get_db, vault_db

    found = [(NAME, sqlite.schema(get_db(), MIGRATIONS))]
    vault = vault_db()
    if vault is not None:
        found.append((DB_NAME, sqlite.schema(vault, vault_migrations)))
    return [{"database": name, "version": s.after, "known": s.known} for name, s in found if s.newer]


def log_outcomes(items: list[dict], folder: Path | None = None) -> None:
    """Log each finished update in the audit log, in the requester's name, once: the marker is
    made first (exclusively), and taken back if the recorder could not log it."""
    folder = folder or update_folder()
    for item in items:
        if item["state"] not in LOGGED:
            continue
        marker = folder / f"{item['id']}.logged"
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        except FileExistsError:
            continue
        except OSError as exc:
            log.warning("update %s: cannot mark its outcome as logged (%s); trying again later", item["id"], exc)
            continue
        action = "update." + item["state"].replace("-", "_")
        try:
            audit(action, subject=item["version"], actor=item["by"],
                       detail={"id": item["id"], "sha256": item.get("installed_sha256", item["sha256"]),
                               "running": running_version()})
        except Exception as exc:  # the recorder still starting, or gone mid-answer: the next round logs it
            marker.unlink(missing_ok=True)
            log.warning("update %s: its outcome could not be logged yet (%s)", item["id"], exc)
            return


def start_logger(app) -> threading.Thread:
    """Log outcomes as they come, without waiting for someone to open the page — and the
    migrations of web.db, which wait for the recorder after an update restarted both."""
    every = float(app.config.get("KIROKU_UPDATE_LOG_EVERY", 10.0))

    def loop():
        while not state(app).stop.wait(every):
            if not Path(app.config["KIROKU_DATA"]).is_dir():
                return  # the data folder is gone (a test's): nothing will be written here again
            try:
                with app.app_context():
                    log_outcomes(updates(update_folder(app)), update_folder(app))
                    from webui.db import get_db, hand_over_migrations, vault_db

                    hand_over_migrations(get_db(), state(app).control, vault_db())
            except Exception:  # the next round tries again
                log.exception("logging update outcomes failed")

    thread = threading.Thread(target=loop, name="update-outcomes", daemon=True)
    thread.start()
    return thread



@contextmanager
def locked(folder: Path):
    """One upload or withdrawal at a time (the server has several threads, a manager two tabs)."""
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def busy(status: dict | None) -> str | None:
    """What a restart of the recorder (its ``status``) would cut now, or None."""
    if status is None:
        return None  # nothing records: an update brings the recorder back
    if status.get("active_calls"):
        return "call"
    if status.get("mode") != "continuous" and status.get("state") in BUSY_STATES:
        return status["state"]
    return None


class Request(SiteRequest):
    """The app's requests: as Flask's, but a manager's release upload goes to the data
    partition as it arrives (``spool_uploads``)."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if self.environ.get(_SPOOL):
            # anonymous (unlinked, or O_TMPFILE): whatever becomes of the request, it leaves nothing
            return tempfile.TemporaryFile(dir=self.environ[_SPOOL])
        return super()._get_file_stream(total_content_length, content_type, filename, content_length)


def max_release(app=None) -> int:
    return int((app or current_app).config.get("KIROKU_MAX_UPDATE", MAX_RELEASE))


def spooled(view):
    """Mark the view a release is uploaded to (the page's form and the API alike): its body may
    be larger than the app's MAX_CONTENT_LENGTH, and goes to the data partition as it arrives."""
    view.kiroku_spooled = True
    return view


def _is_upload(app, endpoint: str | None) -> bool:
    return getattr(app.view_functions.get(endpoint), "kiroku_spooled", False)


def upload_paths(app) -> set[str]:
    """The URLs a release is uploaded to: the only bodies allowed past the app's MAX_CONTENT_LENGTH."""
    return {rule.rule for rule in app.url_map.iter_rules() if _is_upload(app, rule.endpoint)}


def spool_uploads():
    """Before anything reads the form (the CSRF check does): a manager's release posted to
    ``upload`` may be up to max_release(), and is written to the data partition as it
    arrives, never held in memory or in /tmp (both memory under the read-only root) — if the
    partition has room for it twice (this copy and ID.tar, then ID.tar and root's) beside
    what the recorder always keeps free. Anyone else's body over the app's limit is refused
    unread with the 413 that closes the connection."""
    if request.method != "POST" or not _is_upload(current_app, request.endpoint):
        return None
    manager = allowed(frozenset({MANAGER}), g.user)
    if manager and request.path.startswith("/api/"):
        try:  # the API checks its header after this: a forged request is not stored first
            validate_csrf(request.headers.get("X-CSRFToken", ""))
        except ValidationError:
            manager = False
    if not manager:
        if (request.content_length or 0) > current_app.config["MAX_CONTENT_LENGTH"]:
            raise RequestEntityTooLarge()
        return None
    back = url_for("updates.index")
    folder = update_folder()
    try:
        makedirs_durable(folder)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        refuse("update.cannot_store", 507, back=back, detail=str(exc))
    request.max_content_length = max_release() + MAX_FORM
    reserve = int(current_app.config.get("KIROKU_RESERVE_MB", 256)) * 2**20
    # a body sent in chunks says no length: it may be as long as allowed
    size = min(request.content_length or request.max_content_length, request.max_content_length)
    if free - 2 * size < reserve:
        refuse("update.cannot_store", 507, back=back,
               detail=f"the data partition has {free // 2**20} MB free; this file needs {2 * size // 2**20} MB "
                      f"there beside the {reserve // 2**20} MB kept free for recording: free some space "
                      "(the storage page) or install it at the console")
    request.environ[_SPOOL] = str(folder)
    try:
        request.form  # noqa: B018 — read here, where a full card can be said as such
    except OSError as exc:
        refuse("update.cannot_store", 507, back=back, detail=str(exc))
    return None


def describe() -> dict:
    """The running version and the requests, for GET /api/v1/update."""
    items = updates()
    log_outcomes(items)
    return {"running": running_version(), "os_update": os_version(), "busy": busy(recorder_status()),
            "updates": items[:10]}
