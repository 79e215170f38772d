"""The operators the city hub designated for this device, brought into web.db (docs/hub.md).

The uplink keeps the hub's list (``kiroku/v1/h/{id}/operators``) in
``DATA/uplink/operators.json``; the web UI, web.db's only writer, makes web.db say the same:

- a listed person without an account here gets one, marked as the hub's (``users.from_hub``),
  with the hub's Argon2id hash, so that they sign on at the counter with their city password
  even while the hub or the network is down;
- an account from the hub follows the hub's name, section and password, and is enabled again
  if it had been disabled; a local account of the same name is taken over by the hub — unless
  it is a manager's, whose password also wraps their footage key: that one is left alone, and
  the log of this process says so;
- every listed person is designated for this device by the hub (``operators.from_hub``); a
  designation from the hub whose person is no longer listed is revoked here too, and an
  account from the hub left with no role on this device is disabled (its sessions end);
- each change is in the device's audit log, by ``hub``, before it is made: while the recorder
  does not answer nothing changes, and the next round tries again.

:func:`sync` runs on a background thread of the web UI every few seconds and before every
log-in; a list already applied (same bytes) costs one read of the file and one query.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from domain.times import now_iso
from firmware.control import ControlError
from firmware.regulation import Purpose
from firmware.uplink import BadMessage
from firmware.uplink.messages import parse_operators

log = logging.getLogger(__name__)

EVERY = 5.0  # seconds between rounds on the background thread
ACTOR = "hub"
_lock = threading.Lock()  # one round at a time: the background thread and a log-in may meet
_said: dict[str, str] = {}


def cache_path(data_dir: Path) -> Path:
    return Path(data_dir) / "uplink" / "operators.json"


def _say(key: str, message: str) -> None:
    if _said.get(key) != message:
        log.warning("%s", message)
        _said[key] = message


def sync(app) -> int | None:
    """Apply the hub's list if it changed since it was last applied. Returns how many changes
    were made, or None when there was nothing to do (not enrolled, nothing new, or the
    recorder not answering: then the next round tries again)."""
    from webui.db import database
    from webui.services import state

    data_dir = Path(app.config["KIROKU_DATA"])
    try:
        raw = cache_path(data_dir).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _say("read", f"cannot read the hub's operators ({exc}): the designations stay as they are")
        return None
    digest = hashlib.sha256(raw).hexdigest()
    with _lock:
        db = database(data_dir)
        try:
            if db.scalar("SELECT digest FROM hub_sync WHERE id = 1") == digest:
                return None
            try:
                message = parse_operators(raw)
            except BadMessage as exc:
                _say("bad", f"the hub's operators in {cache_path(data_dir)} are not usable ({exc}): the designations"
                            " stay as they are")
                return None
            st = state(app)
            try:
                changes = _apply(db, st.audit, st.device, message)
            except ControlError as exc:
                _say("recorder", f"the hub's operators (revision {message['rev']}) wait for the recorder, which"
                                 f" logs every change: {exc}")
                return None
            db.execute("INSERT INTO hub_sync (id, rev, digest, synced_at) VALUES (1, ?, ?, ?) ON CONFLICT (id)"
                       " DO UPDATE SET rev = excluded.rev, digest = excluded.digest, synced_at = excluded.synced_at",
                       (message["rev"], digest, now_iso()))
            _said.clear()
            if changes:
                log.info("the hub's operators, revision %d: %d change(s) on this device", message["rev"], changes)
            return changes
        finally:
            db.close()


def _section(db, audit, name: str, rev: int) -> int | None:
    if not name:
        return None
    found = db.scalar("SELECT id FROM sections WHERE name = ?", (name,))
    if found is not None:
        return found
    audit.record(ACTOR, "section.add", subject=name, detail={"via": "hub", "rev": rev})
    return db.insert("INSERT INTO sections (name, created_at) VALUES (?, ?)", (name, now_iso()))


def _apply(db, audit, device: str, message: dict) -> int:
    """Make web.db say what the hub's list says; each change logged first. Returns the count."""
    rev, changes = message["rev"], 0
    listed = {op["username"]: op for op in message["operators"]}
    for username, op in listed.items():
        user = db.one("SELECT id, display_name, password_hash, section_id, is_manager, disabled_at, from_hub"
                      " FROM users WHERE username = ?", (username,))
        if user is not None and not user["from_hub"] and user["is_manager"]:
            _say(f"manager:{username}", f"the hub designates {username!r} for this device, but {username!r} is a"
                                        " manager's account here (its password wraps a footage key): left as it is")
            continue
        section_id = _section(db, audit, op["section"], rev)
        if user is None:
            audit.record(ACTOR, "user.add", subject=username, detail={"roles": ["operator"], "via": "hub", "rev": rev})
            with db.transaction():
                user_id = db.insert(
                    "INSERT INTO users (username, display_name, password_hash, section_id, created_at, from_hub)"
                    " VALUES (?, ?, ?, ?, ?, 1)", (username, op["display_name"], op["password_hash"], section_id,
                                                   now_iso()))
            changes += 1
        else:
            user_id = user["id"]
            changed = [field for field, old, new in (
                ("display_name", user["display_name"], op["display_name"]),
                ("section", user["section_id"], section_id),
                ("password", user["password_hash"], op["password_hash"]),
                ("enabled", user["disabled_at"] is None, True),
                ("from_hub", bool(user["from_hub"]), True)) if old != new]
            if changed:
                # The hash itself never goes into the log: only that it changed.
                audit.record(ACTOR, "user.update", subject=username, detail={"changed": changed, "via": "hub",
                                                                             "rev": rev})
                db.execute("UPDATE users SET display_name = ?, section_id = ?, password_hash = ?, disabled_at = NULL,"
                           " from_hub = 1 WHERE id = ?", (op["display_name"], section_id, op["password_hash"], user_id))
                changes += 1
        designation = db.one("SELECT revoked_at, from_hub FROM operators WHERE user_id = ? AND device = ?",
                             (user_id, device))
        if designation is None or designation["revoked_at"] is not None or not designation["from_hub"]:
            if designation is None or designation["revoked_at"] is not None:
                audit.record(ACTOR, "operator.designate", subject=username, detail={"device": device, "via": "hub",
                                                                                    "rev": rev})
                changes += 1
            db.execute("INSERT INTO operators (user_id, device, designated_by, designated_at, from_hub)"
                       " VALUES (?, ?, NULL, ?, 1) ON CONFLICT (user_id, device) DO UPDATE SET revoked_at = NULL,"
                       " designated_by = NULL, designated_at = excluded.designated_at, from_hub = 1",
                       (user_id, device, now_iso()))
    for row in db.all("SELECT o.user_id, u.username, u.from_hub, u.is_manager, u.is_section_head FROM operators o"
                      " JOIN users u ON u.id = o.user_id WHERE o.device = ? AND o.from_hub = 1"
                      " AND o.revoked_at IS NULL", (device,)):
        if row["username"] in listed:
            continue
        audit.record(ACTOR, "operator.revoke", subject=row["username"], detail={"device": device, "via": "hub",
                                                                               "rev": rev})
        db.execute("UPDATE operators SET revoked_at = ? WHERE user_id = ? AND device = ? AND revoked_at IS NULL",
                   (now_iso(), row["user_id"], device))
        changes += 1
        still = db.one("SELECT 1 FROM operators WHERE user_id = ? AND revoked_at IS NULL", (row["user_id"],))
        if row["from_hub"] and not row["is_manager"] and not row["is_section_head"] and still is None:
            audit.record(ACTOR, "user.disable", subject=row["username"], detail={"via": "hub", "rev": rev,
                                                                                "reason": "no longer designated"})
            db.execute("UPDATE users SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL",
                       (now_iso(), row["user_id"]))
    return changes


NOTICE = "hub.action"  # the device's entry for an action taken at the hub on its recordings
_PURPOSES = {str(p) for p in Purpose}  # what the recorder takes as an entry's purpose


def notices_path(data_dir: Path) -> Path:
    return Path(data_dir) / "uplink" / "notices.json"


def record_notices(app) -> int | None:
    """The hub's actions on this device's recordings (a request filed, an opinion, a viewing, an
    export made at the hub), each written into this device's own log once, in the hub's order:
    ``hub.action`` by ``hub``, with the hub's entry (its number, time, actor, action, subject and
    detail). What the log already holds is found there, so nothing is written twice — even after
    a crash between writing and noting. Returns how many were written, or None when there was
    nothing to do (not enrolled, nothing new, the recorder not answering: the next round tries)."""
    from firmware.uplink.messages import parse_notices
    from webui.db import open_index
    from webui.services import RecorderAudit, state

    data_dir = Path(app.config["KIROKU_DATA"])
    try:
        message = parse_notices(notices_path(data_dir).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, BadMessage) as exc:
        _say("notices", f"the hub's notices in {notices_path(data_dir)} are not usable ({exc}): waiting for new ones")
        return None
    index = open_index(data_dir)
    if index is None:
        return None
    try:
        done = index.execute("SELECT max(CAST(json_extract(detail, '$.hub_seq') AS INTEGER)) FROM audit"
                             " WHERE action = ?", (NOTICE,)).fetchone()[0]
    finally:
        index.close()
    waiting = [n for n in message["notices"] if done is None or n["seq"] > done]
    if not waiting:
        return None
    audit = RecorderAudit(state(app).control)  # no journal: written now, or at the next round
    written = 0
    with _lock:
        for notice in waiting:
            purpose = notice["purpose"] if notice["purpose"] in _PURPOSES else ""
            try:
                audit.record(ACTOR, NOTICE, subject=notice["subject"], purpose=purpose, detail={
                    "hub_seq": notice["seq"], "action": notice["action"], "actor": notice["actor"],
                    "at": notice["at"], "purpose": notice["purpose"], "detail": notice["detail"]})
            except ControlError as exc:
                _say("notices-recorder", f"the hub's notices wait for the recorder, which logs them: {exc}")
                break
            written += 1
    if written:
        _said.pop("notices-recorder", None)
        log.info("%d action(s) taken at the hub on this device's recordings, now in its log", written)
    return written


LINES = "calls.lines"  # the entry of the lines the hub set (Art. 3), with the hub's revision


def apply_lines(app) -> int | None:
    """The telephones this call recorder records (Art. 3), as the city's manager set them at
    the hub: written into the device's settings (``kiroku.toml``), applied by the recorder to
    its next call, and logged (``calls.lines`` by ``hub``, with the hub's revision). Each
    revision once: the log says which was applied last, so a crash between writing and logging
    writes the same again, and the device's own settings page may change them afterwards.
    Returns the revision applied, or None."""
    from firmware.config import load
    from firmware.fsutil import atomic_write
    from firmware.paths import config_file
    from firmware.uplink.messages import parse_lines
    from webui.db import open_index
    from webui.services import RecorderAudit, state
    from webui.settings import dumps

    data_dir = Path(app.config["KIROKU_DATA"])
    path = data_dir / "uplink" / "lines.json"
    try:
        message = parse_lines(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, BadMessage) as exc:
        _say("lines", f"the hub's lines in {path} are not usable ({exc}): the device's settings stand")
        return None
    index = open_index(data_dir)
    if index is None:
        return None
    try:
        done = index.execute("SELECT max(CAST(json_extract(detail, '$.rev') AS INTEGER)) FROM audit"
                             " WHERE action = ?", (LINES,)).fetchone()[0]
    finally:
        index.close()
    if done is not None and message["rev"] <= done:
        return None
    with _lock:
        target = config_file(data_dir, None)
        new = load(target).replace(calls=message["lines"])
        atomic_write(data_dir / "kiroku.toml", dumps(new).encode())
        st = state(app)
        try:
            st.control.request("reload", by=ACTOR)
            RecorderAudit(st.control).record(ACTOR, LINES, detail={**message["lines"], "rev": message["rev"]})
        except ControlError as exc:
            _say("lines-recorder", f"the hub's lines (revision {message['rev']}) wait for the recorder: {exc}")
            return None
    log.info("the hub's lines, revision %d: recorded %r, excluded %r", message["rev"],
             message["lines"]["recorded_lines"], message["lines"]["excluded_lines"])
    return message["rev"]


def start(app) -> threading.Thread:
    """The web UI's background round: the hub's list applied within :data:`EVERY` seconds of
    the uplink receiving it."""
    from webui.services import state

    every = float(app.config.get("KIROKU_HUB_SYNC_EVERY", EVERY))

    def loop():
        while not state(app).stop.wait(every):
            if not Path(app.config["KIROKU_DATA"]).is_dir():
                return  # the data folder is gone (a test's): nothing will be written here again
            try:
                sync(app)
            except Exception:  # the next round tries again
                log.exception("applying the hub's operators failed")
            try:
                record_notices(app)
            except Exception:
                log.exception("writing the hub's notices into the device's log failed")
            try:
                apply_lines(app)
            except Exception:
                log.exception("applying the hub's lines failed")

    thread = threading.Thread(target=loop, name="hub-operators", daemon=True)
    thread.start()
    return thread
