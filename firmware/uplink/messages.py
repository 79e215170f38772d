"""The topics and the payloads the hub sends to a device (docs/hub.md, "Topics"), checked.

Everything from the network is checked here before anything is kept or acted on: a
payload of another schema version, an unknown shape, a name that could not be a name here,
a password hash that is not Argon2id or a key that is not an age recipient is refused whole
(:class:`~firmware.uplink.BadMessage`), never half applied. The web UI checks the cached
operators again with the same function before it writes them to web.db.
"""

from __future__ import annotations

import json
import re

from firmware.uplink import BadMessage

VERSION = 1
PREFIX = "kiroku/v1"
MAX_PAYLOAD = 1 << 20  # a list of a few hundred operators with their hashes is well under this
MAX_OPERATORS = 1000
MAX_MANAGERS = 64  # the control socket's limit too

USERNAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # domain.people.USERNAME: the device's accounts
MANAGER = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
ARGON2ID = re.compile(r"\$argon2id\$v=19\$m=\d{1,8},t=\d{1,4},p=\d{1,3}\$[A-Za-z0-9+/]{8,128}\$[A-Za-z0-9+/]{16,256}")
MAX_DISPLAY_NAME = 80  # domain.people's limits
MAX_SECTION_NAME = 40


def device_topic(device: str, what: str) -> str:
    """Where a device publishes: ``online``, ``status``, ``log``."""
    return f"{PREFIX}/d/{device}/{what}"


def hub_topic(device: str, what: str) -> str:
    """Where the hub publishes for one device: ``operators``, ``managers``."""
    return f"{PREFIX}/h/{device}/{what}"


def _object(payload: bytes | str | dict, what: str) -> dict:
    if isinstance(payload, (bytes, str)):
        if len(payload) > MAX_PAYLOAD:
            raise BadMessage(f"{what}: longer than {MAX_PAYLOAD} bytes")
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadMessage(f"{what}: not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise BadMessage(f"{what}: not a JSON object")
    if payload.get("v") != VERSION:
        raise BadMessage(f"{what}: schema version {payload.get('v')!r}, this device knows {VERSION}")
    rev = payload.get("rev")
    if not isinstance(rev, int) or isinstance(rev, bool) or rev < 0:
        raise BadMessage(f'{what}: "rev" must be a whole number')
    return payload


def parse_lines(payload: bytes | str | dict) -> dict:
    """``{"v": 1, "rev", "recorded_lines", "excluded_lines"}``: the telephones a call recorder
    records (Art. 3), as the hub's manager set them; checked as the device's own settings are.
    Returned as ``{"v", "rev", "lines": {"recorded_lines", "excluded_lines"}}`` (the shape the
    uplink caches, which this reads back the same)."""
    from firmware.config import Config, ConfigError

    message = _object(payload, "lines")
    given = message["lines"] if isinstance(message.get("lines"), dict) else message  # as cached, or as sent
    lines = {k: given.get(k, "") for k in ("recorded_lines", "excluded_lines")}
    if not all(isinstance(v, str) for v in lines.values()):
        raise BadMessage("lines: recorded_lines and excluded_lines are text")
    try:
        Config().replace(calls=lines)
    except ConfigError as exc:
        raise BadMessage(f"lines: {exc}") from None
    return {"v": VERSION, "rev": message["rev"], "lines": lines}


def parse_operators(payload: bytes | str | dict) -> dict:
    """``{"v": 1, "rev", "operators": [{"username", "display_name", "section", "password_hash"}]}``,
    checked; returns it in that shape and nothing else."""
    message = _object(payload, "operators")
    items = message.get("operators")
    if not isinstance(items, list) or len(items) > MAX_OPERATORS:
        raise BadMessage(f'operators: "operators" must be a list of at most {MAX_OPERATORS}')
    operators, seen = [], set()
    for item in items:
        if not isinstance(item, dict):
            raise BadMessage("operators: each operator is an object")
        username, display = item.get("username"), item.get("display_name")
        section, hashed = item.get("section", ""), item.get("password_hash")
        if not isinstance(username, str) or not USERNAME.fullmatch(username) or username in seen:
            raise BadMessage(f"operators: {username!r} is not a user name here (a-z, 0-9, _ and -; once each)")
        if not isinstance(display, str) or not 0 < len(display.strip()) <= MAX_DISPLAY_NAME:
            raise BadMessage(f"operators: {username}: a display name of 1–{MAX_DISPLAY_NAME} characters")
        if not isinstance(section, str) or len(section) > MAX_SECTION_NAME or any(ord(c) < 32 for c in section):
            raise BadMessage(f"operators: {username}: a section name of at most {MAX_SECTION_NAME} characters")
        # Only Argon2id, the device's own: a hub that sent a weaker hash (or a password) is refused.
        if not isinstance(hashed, str) or not ARGON2ID.fullmatch(hashed):
            raise BadMessage(f"operators: {username}: the password hash is not an Argon2id hash")
        seen.add(username)
        operators.append({"username": username, "display_name": display.strip(), "section": section.strip(),
                          "password_hash": hashed})
    return {"v": VERSION, "rev": message["rev"], "operators": operators}


def parse_managers(payload: bytes | str | dict) -> dict:
    """``{"v": 1, "rev", "managers": [{"name", "recipient"}]}``, checked (each recipient an age
    X25519 public key); returns it in that shape and nothing else."""
    from firmware.vault import age

    message = _object(payload, "managers")
    items = message.get("managers")
    if not isinstance(items, list) or len(items) > MAX_MANAGERS:
        raise BadMessage(f'managers: "managers" must be a list of at most {MAX_MANAGERS}')
    managers = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        recipient = item.get("recipient") if isinstance(item, dict) else None
        if not isinstance(name, str) or not MANAGER.fullmatch(name):
            raise BadMessage(f"managers: {name!r} is not a manager's name (a-z, 0-9, _ . -)")
        try:
            age.X25519Recipient.parse(recipient if isinstance(recipient, str) else "")
        except ValueError as exc:
            raise BadMessage(f"managers: {name}: {exc}") from None
        managers.append({"name": name, "recipient": recipient.strip()})
    return {"v": VERSION, "rev": message["rev"], "managers": managers}


MAX_UPLOADS = 500
SHA256 = re.compile(r"[0-9a-f]{64}")


def locker_path_ok(path: str) -> bool:
    """A file the hub may ask a device to copy to the evidence locker: a sealed segment
    (segments/CLASS/DAY/RECORDING/NNNNN.age) or a sealed day key (keys/day/CLASS/DAY.age), inside
    the data folder — nothing else of it, whatever a message says."""
    from pathlib import PurePosixPath

    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or str(p) != path or p.suffix != ".age" or "\\" in path:
        return False
    return (p.parts[0] == "segments" and len(p.parts) == 5) or (p.parts[:2] == ("keys", "day") and len(p.parts) == 4)


def parse_locker(payload: bytes | str | dict) -> dict:
    """``{"v": 1, "rev", "uploads": [{"path", "kind", "sha256", "size", "url", "expires"}]}``,
    checked: what the hub wants copied, still sealed, to the evidence locker, each with the
    presigned URL that may put that one object (docs/hub.md, "The evidence locker")."""
    message = _object(payload, "locker")
    items = message.get("uploads")
    if not isinstance(items, list) or len(items) > MAX_UPLOADS:
        raise BadMessage(f'locker: "uploads" must be a list of at most {MAX_UPLOADS}')
    uploads = []
    for item in items:
        if not isinstance(item, dict):
            raise BadMessage("locker: an upload is not an object")
        path, kind, sha, size = item.get("path"), item.get("kind"), item.get("sha256", ""), item.get("size", 0)
        url, expires = item.get("url"), item.get("expires")
        if not isinstance(path, str) or not locker_path_ok(path):
            raise BadMessage(f"locker: {path!r} is not a sealed segment or day key of this device")
        if kind not in ("segment", "day_key") or (kind == "segment") != (path.split("/")[0] == "segments"):
            raise BadMessage(f"locker: {path}: kind {kind!r} does not fit the path")
        if kind == "segment" and not (isinstance(sha, str) and SHA256.fullmatch(sha)):
            raise BadMessage(f"locker: {path}: no SHA-256 to check the file by")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadMessage(f"locker: {path}: size must be a whole number")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > 4096:
            raise BadMessage(f"locker: {path}: the upload address is not an http(s) URL")
        if not isinstance(expires, (int, float)) or isinstance(expires, bool):
            raise BadMessage(f"locker: {path}: no expiry")
        uploads.append({"path": path, "kind": kind, "sha256": sha or "", "size": size, "url": url,
                        "expires": float(expires)})
    return {"v": VERSION, "rev": message["rev"], "uploads": uploads}


MAX_NOTICES = 200  # hub.notices.BATCH: the rest follow once these are in the device's log
MAX_NOTICE_DETAIL = 6000  # bytes of JSON (the control socket takes 8 KiB with what the device adds): never footage
_NAME = re.compile(r"[a-z][a-z0-9_.]{0,63}")


def parse_notices(payload: bytes | str | dict) -> dict:
    """``{"v": 1, "rev", "notices": [{"seq", "at", "actor", "action", "subject", "purpose", "detail"}]}``,
    checked: the hub's audit entries about this device's recordings (a request, an opinion, a
    viewing, an export made at the hub), which the device writes into its own log once each, in
    ``seq`` order (docs/hub.md, "The paperwork at the hub")."""
    message = _object(payload, "notices")
    items = message.get("notices")
    if not isinstance(items, list) or len(items) > MAX_NOTICES:
        raise BadMessage(f'notices: "notices" must be a list of at most {MAX_NOTICES}')
    notices, last = [], -1
    for item in items:
        if not isinstance(item, dict):
            raise BadMessage("notices: a notice is not an object")
        seq = item.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= last:
            raise BadMessage("notices: each notice has a sequence number, in increasing order")
        last = seq
        texts = {k: item.get(k, "") for k in ("at", "actor", "action", "subject", "purpose")}
        if not all(isinstance(v, str) and len(v) <= 200 and not any(ord(c) < 32 for c in v) for v in texts.values()):
            raise BadMessage(f"notices: {seq}: its at, actor, action, subject and purpose are short lines of text")
        if not _NAME.fullmatch(texts["action"]):
            raise BadMessage(f"notices: {seq}: {texts['action']!r} is not an action's name")
        detail = item.get("detail", {})
        if not isinstance(detail, dict) or len(json.dumps(detail, ensure_ascii=False).encode()) > MAX_NOTICE_DETAIL:
            raise BadMessage(f"notices: {seq}: the detail must be an object of at most {MAX_NOTICE_DETAIL} bytes")
        notices.append({"seq": seq, **texts, "detail": detail})
    return {"v": VERSION, "rev": message["rev"], "notices": notices}
