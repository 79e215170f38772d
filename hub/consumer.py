"""What devices publish, into the hub's database: whether each is online, its status, its audit
log (checked by the witness) and its recordings' metadata — and the alerts they raise.

One connection to the broker with a persistent session (clean start off, a week's expiry), so
what devices publish while the hub is down waits for it at the broker. Messages are
acknowledged by hand, only once their batch is committed: a hub that dies mid-batch gets them
again, and the database's keys — a device's log entries by their sequence numbers — take each
once. One worker writes, in the order messages arrived (MQTT keeps each device's order).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

from hub import broker, witness
from hub.db import connect

log = logging.getLogger(__name__)

SESSION_EXPIRY = 7 * 86400
QUIET_AFTER = 30.0  # seconds without a word from an online device: it has gone quiet
BATCH = 200  # messages written in one transaction at most


class Consumer:
    """``Consumer(dsn, host, port, password, ca).start()`` … ``.close()``."""

    def __init__(self, dsn: str, host: str, port: int, password: str, ca: str, *, client_id: str = "kiroku-hub"):
        self.dsn, self.host, self.port = dsn, host, port
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.lag = 0.0  # seconds from a status's "at" to its commit, the last batch (the bench reads it)
        self.handled = 0
        self.c = broker.client(client_id, broker.HUB_ACCOUNT, password, ca, manual_ack=True)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, reason, p: self.connected.clear()
        self.c.on_message = lambda c, u, message: self._queue.put(message)
        self._worker = threading.Thread(target=self._work, name="hub-consumer", daemon=True)

    def start(self) -> "Consumer":
        self._worker.start()
        self.c.connect_async(self.host, self.port, keepalive=30, clean_start=False,
                             properties=broker.connect_properties(SESSION_EXPIRY))
        self.c.loop_start()
        return self

    def _on_connect(self, c, userdata, flags, reason, properties):
        if reason.is_failure:
            log.warning("hub consumer: the broker refused the hub's account: %s", reason)
            return
        c.subscribe(f"{broker.PREFIX}/d/+/#", qos=1)
        self.connected.set()

    def close(self) -> None:
        self._stop.set()
        self.c.loop_stop()
        self.c.disconnect()
        self._worker.join(5)

    # -- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        db = None
        last_sweep = 0.0
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=1)
            except queue.Empty:
                first = None
            batch = [first] if first is not None else []
            while first is not None and len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if db is None:
                    db = connect(self.dsn)
                if batch:
                    self._write(db, batch)
                if time.monotonic() - last_sweep > 5:
                    sweep_quiet(db)
                    last_sweep = time.monotonic()
            except Exception:  # the database is away: keep the batch and try again
                log.exception("hub consumer: writing %d message(s) failed; retrying", len(batch))
                for m in reversed(batch):
                    self._queue.queue.appendleft(m)
                if db is not None:
                    try:
                        db.close()
                    except Exception:
                        pass
                db = None
                self._stop.wait(2)
        if db is not None:
            db.close()

    def _write(self, db, batch) -> None:
        now = time.time()
        lags = []
        with db.conn.transaction():
            for message in batch:
                try:
                    with db.conn.transaction():  # a savepoint: one bad message does not undo the batch
                        at = handle(db, message.topic, message.payload, now)
                        if at:
                            lags.append(now - at)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("hub consumer: %s: refused (%s)", message.topic, exc)
        for message in batch:
            self.c.ack(message.mid, message.qos)
        self.handled += len(batch)
        if lags:
            self.lag = max(lags) + (time.time() - now)


def handle(db, topic: str, payload: bytes, now: float) -> float | None:
    """One message. Returns the time its device stamped on a status (for the lag), else None."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:3] != ["kiroku", "v1", "d"]:
        raise ValueError("not a device topic")
    device, kind = parts[3], parts[4]
    row = db.one("SELECT id, vkey FROM devices WHERE id = ? AND removed_at IS NULL", (device,))
    if row is None:
        raise ValueError(f"no enrolled device {device!r}")
    body = json.loads(payload)
    if not isinstance(body, dict) or body.get("v") != 1:
        raise ValueError(f"schema version {body.get('v') if isinstance(body, dict) else None!r} is not 1")
    db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device))
    if kind == "online":
        online = bool(body["online"])
        db.execute("UPDATE devices SET online = ?, online_at = ? WHERE id = ?", (int(online), now, device))
        alert(db, device, "offline", not online, "" if online else "the broker lost its connection", now)
        return None
    if kind == "status":
        return status(db, device, body, now)
    if kind == "log":
        batch(db, device, row["vkey"], body, now)
        return None
    raise ValueError(f"unknown kind {kind!r}")


def alert(db, device: str, kind: str, raised: bool, detail: str, now: float) -> None:
    """Raise (once) or clear an alert of ``kind`` for ``device``."""
    if raised:
        db.execute("INSERT INTO alerts (device, kind, detail, raised_at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (device, kind) WHERE cleared_at IS NULL DO UPDATE SET detail = excluded.detail",
                   (device, kind, detail[:500], now))
    else:
        db.execute("UPDATE alerts SET cleared_at = ? WHERE device = ? AND kind = ? AND cleared_at IS NULL",
                   (now, device, kind))


def status(db, device: str, body: dict, now: float) -> float | None:
    db.execute("UPDATE devices SET status = ?, status_at = ?, online = 1 WHERE id = ?",
               (json.dumps(body, ensure_ascii=False), now, device))
    alert(db, device, "offline", False, "", now)
    faults = body.get("faults") or []
    sign = [f for f in faults if f.get("device") == "sign"]
    other = [f for f in faults if f.get("device") != "sign"]
    alert(db, device, "sign", bool(sign), "; ".join(str(f.get("message", "")) for f in sign), now)
    alert(db, device, "fault", bool(other), "; ".join(f"{f.get('device')}: {f.get('message', '')}" for f in other),
          now)
    storage = body.get("storage") or {}
    least = storage.get("min_days") or {}
    short = {c: {"days": d, "min": least.get(c, 0)} for c, d in (storage.get("projected_days") or {}).items()
             if d is not None and d < least.get(c, 0)}
    alert(db, device, "storage", bool(short), json.dumps(short), now)
    clock = body.get("clock") or {}
    alert(db, device, "clock", clock.get("synchronised") is False, "", now)
    try:
        from datetime import datetime

        return datetime.fromisoformat(body["at"]).timestamp()
    except (KeyError, ValueError, TypeError):
        return None


def batch(db, device: str, vkey: str, body: dict, now: float) -> None:
    """A batch of the device's audit log: witnessed, then mirrored; its recordings upserted."""
    entries = body.get("entries") or []
    row = db.one("SELECT size, root, frontier FROM witness WHERE device = ?", (device,))
    state = None if row is None else witness.State(row["size"], bytes(row["root"]), bytes(row["frontier"]))
    verdict = witness.check(state, vkey, body["checkpoint"], body.get("proof"), entries)
    # An entry published before must be the same as stored: otherwise the log was rewritten.
    problem = verdict.problem
    for seq, leaf in verdict.leaves.items():
        stored = db.scalar("SELECT leaf_hash FROM device_log WHERE device = ? AND seq = ?", (device, seq))
        if stored is not None and bytes(stored) != leaf and not problem:
            problem = f"entry {seq} differs from the copy published before: the log was rewritten"
    if verdict.size:
        db.execute("INSERT INTO checkpoints (device, size, root, note, received_at, consistent, problem)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, size, root) DO NOTHING",
                   (device, verdict.size, verdict.root, body["checkpoint"], now, int(not problem), problem))
    if problem:
        alert(db, device, "log", True, problem, now)
        log.warning("witness: %s: %s", device, problem)
        return  # nothing of a batch that does not follow is mirrored as if it did
    if verdict.state is not None and (state is None or verdict.state.size > state.size):
        db.execute("INSERT INTO witness (device, size, root, frontier, checked_at) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (device) DO UPDATE SET size = excluded.size, root = excluded.root,"
                   " frontier = excluded.frontier, checked_at = excluded.checked_at",
                   (device, verdict.state.size, verdict.state.root, verdict.state.frontier, now))
    for entry in entries:
        db.execute("INSERT INTO device_log (device, seq, at, actor, action, purpose, subject, detail, leaf_hash,"
                   " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING",
                   (device, entry["seq"], entry["at"], entry["actor"], entry["action"], entry["purpose"],
                    entry["subject"], json.dumps(entry["detail"], ensure_ascii=False, sort_keys=True),
                    verdict.leaves[entry["seq"]], now))
    for r in body.get("recordings") or []:
        db.execute(
            "INSERT INTO recordings (device, id, record_class, started_wall_us, ended_wall_us, started_at, ended_at,"
            " end_reason, section, marks, segments, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (device, id) DO UPDATE SET ended_wall_us = excluded.ended_wall_us,"
            " ended_at = excluded.ended_at, end_reason = excluded.end_reason, section = excluded.section,"
            " marks = excluded.marks, segments = excluded.segments, updated_at = excluded.updated_at",
            (device, r["id"], r["record_class"], r["started_wall_us"], r.get("ended_wall_us"), r["started_at"],
             r.get("ended_at"), r.get("end_reason"), r.get("section") or "",
             json.dumps(r.get("marks") or [], ensure_ascii=False), int(r.get("segments") or 0), now))


def sweep_quiet(db) -> None:
    """Devices the broker still thinks connected that have said nothing for QUIET_AFTER seconds."""
    now = time.time()
    for row in db.all("SELECT id FROM devices WHERE online = 1 AND removed_at IS NULL AND last_seen < ?",
                      (now - QUIET_AFTER,)):
        with db.conn.transaction():
            db.execute("UPDATE devices SET online = 0, online_at = ? WHERE id = ?", (now, row["id"]))
            alert(db, row["id"], "offline", True, f"nothing heard for {QUIET_AFTER:.0f} s", now)
