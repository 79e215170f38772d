"""What the hub tells devices, on retained topics (docs/hub.md): who is designated to operate
each (Art. 5(2)), and the managers' public keys its day keys are sealed to.

A change is staged in the database first (``pushes``: the payload and a revision), then
published by the :class:`Pusher`, which marks it pushed only once the broker acknowledged
it — so a designation made while the broker is down reaches the device when it is back, and
a device that was away finds the latest on its retained topic when it reconnects.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from domain import people
from hub import broker, notices
from hub.db import connect

log = logging.getLogger(__name__)
OPERATORS, MANAGERS = "operators", "managers"


def _operator(row) -> dict:
    return {"username": row["username"], "display_name": row["display_name"], "section": row["section"] or "",
            "password_hash": row["password_hash"]}


def operators_payload(db, device: str) -> dict:
    return {"operators": [_operator(r) for r in people.operators_of(db, device)]}


def managers_payload(db) -> dict:
    return {"managers": [{"name": r["username"], "recipient": r["recipient"]} for r in db.all(
        "SELECT u.username, k.recipient FROM manager_keys k JOIN users u ON u.username = k.username"
        " WHERE u.is_manager = 1 AND u.disabled_at IS NULL ORDER BY u.username")]}


def _text(body: dict) -> str:
    return json.dumps(body, ensure_ascii=False, sort_keys=True)


def stage(db, device: str, topic: str, body: dict) -> int:
    """Stage ``body`` for ``device``'s retained ``topic``; returns its revision."""
    row = db.one("SELECT rev, payload FROM pushes WHERE device = ? AND topic = ?", (device, topic))
    return _stage_text(db, device, topic, _text(body), row)


def stage_many(db, topic: str, bodies: dict[str, dict]) -> int:
    """Stage each device's body for ``topic`` (``{device: body}``), reading what is staged once;
    returns how many changed."""
    staged = {row["device"]: row for row in db.all("SELECT device, rev, payload FROM pushes WHERE topic = ?", (topic,))}
    changed = 0
    for device, body in bodies.items():
        row = staged.get(device)
        changed += _stage_text(db, device, topic, _text(body), row) != (row["rev"] if row else None)
    return changed


def _stage_text(db, device: str, topic: str, text: str, row) -> int:
    """Stage ``text`` over what ``row`` (``rev``, ``payload``; None: nothing yet) holds, where it differs."""
    if row is not None and row["payload"] == text:
        return row["rev"]
    rev = (row["rev"] if row else 0) + 1
    db.execute("INSERT INTO pushes (device, topic, rev, payload, pushed_at) VALUES (?, ?, ?, ?, NULL)"
               " ON CONFLICT (device, topic) DO UPDATE SET rev = excluded.rev, payload = excluded.payload,"
               " pushed_at = NULL", (device, topic, rev, text))
    return rev


def stage_operators(db, device: str) -> int:
    return stage(db, device, OPERATORS, operators_payload(db, device))


def stage_managers(db) -> None:
    body = managers_payload(db)
    for row in db.all("SELECT id FROM devices WHERE removed_at IS NULL"):
        stage(db, row["id"], MANAGERS, body)


def stage_everything(db, device: str) -> None:
    """A device just enrolled: all it must know."""
    stage_operators(db, device)
    stage(db, device, MANAGERS, managers_payload(db))


def restage_all(db) -> None:
    """What every device should know, staged where it differs from what was pushed: catches any
    change — a designation, a new password, a disabled account, a new manager — however made.
    Read in three queries whatever the number of devices (it runs every few seconds); written
    only where something changed."""
    managers = _text(managers_payload(db))
    operators: dict[str, list] = {row["id"]: [] for row in db.all("SELECT id FROM devices WHERE removed_at IS NULL")}
    for row in db.all(  # people.operators_of, for every device at once, in its order
            "SELECT o.device, u.username, u.display_name, s.name AS section, u.password_hash FROM operators o"
            " JOIN users u ON u.id = o.user_id LEFT JOIN sections s ON s.id = u.section_id"
            " WHERE o.revoked_at IS NULL AND u.disabled_at IS NULL ORDER BY o.device, u.username"):
        if row["device"] in operators:
            operators[row["device"]].append(_operator(row))
    staged = {(row["device"], row["topic"]): row for row in db.all("SELECT device, topic, rev, payload FROM pushes")}
    for device, designated in operators.items():
        _stage_text(db, device, OPERATORS, _text({"operators": designated}), staged.get((device, OPERATORS)))
        _stage_text(db, device, MANAGERS, managers, staged.get((device, MANAGERS)))


class Pusher:
    """Publishes staged pushes, retained, with the hub's account; marks each once acknowledged."""

    def __init__(self, dsn: str, host: str, port: int, password: str, ca: str, *, client_id: str = "kiroku-hub-push",
                 every: float = 1.0, restage_every: float = 10.0):
        self.dsn, self.every, self.restage_every = dsn, every, restage_every
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.c = broker.client(client_id, broker.HUB_ACCOUNT, password, ca)
        self.c.connect_async(host, port, keepalive=30)
        self._thread = threading.Thread(target=self._loop, name="hub-pusher", daemon=True)

    def start(self) -> "Pusher":
        self.c.loop_start()
        self._thread.start()
        return self

    def wake(self) -> None:
        """Something was staged: publish it now rather than at the next round."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self.c.loop_stop()
        self.c.disconnect()

    def _loop(self) -> None:
        db = None
        restaged = 0.0
        while not self._stop.is_set():
            woken = self._wake.wait(self.every)
            self._wake.clear()
            try:
                db = db or connect(self.dsn)
                if woken or time.monotonic() - restaged > self.restage_every:
                    restage_all(db)
                    notices.collect(db)  # the hub's actions on each device's recordings, for its own log
                    stage_many(db, notices.TOPIC, notices.lists(db))
                    restaged = time.monotonic()
                if self.c.is_connected():
                    self.push_pending(db)
            except Exception:  # the database or the broker is away: the next round tries again
                log.exception("hub: pushing to devices failed; retrying")
                if db is not None:
                    db.close()
                db = None
        if db is not None:
            db.close()

    def push_pending(self, db) -> int:
        sent = 0
        for row in db.all("SELECT device, topic, rev, payload FROM pushes WHERE pushed_at IS NULL ORDER BY device"):
            body = {"v": 1, "rev": row["rev"], **json.loads(row["payload"])}
            info = self.c.publish(broker.hub_topic(row["device"], row["topic"]), json.dumps(body, ensure_ascii=False),
                                  qos=1, retain=True)
            info.wait_for_publish(10)
            if not info.is_published():
                return sent
            db.execute("UPDATE pushes SET pushed_at = ? WHERE device = ? AND topic = ? AND rev = ?",
                       (time.time(), row["device"], row["topic"], row["rev"]))
            sent += 1
        return sent
