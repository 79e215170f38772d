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

import psycopg

from hub import broker, witness
from firmware.regulation import Direction, Hearing
from hub.db import connect

DIRECTIONS = tuple(d.value for d in Direction)
HEARINGS = tuple(h.value for h in Hearing)
log = logging.getLogger(__name__)

SESSION_EXPIRY = 7 * 86400
QUIET_AFTER = 30.0  # seconds without a word from an online device: it has gone quiet
BATCH = 200  # messages written in one transaction at most
# Messages the broker may send before the hub acknowledges any (MQTT 5's Receive Maximum). The hub
# acknowledges only after a commit; with Mosquitto's default of 20 every batch held 20 at most and
# the broker waited, idle, for each commit before sending more.
RECEIVE_MAXIMUM = 4 * BATCH


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
        properties = broker.connect_properties(SESSION_EXPIRY)
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self.c.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=properties)
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
            writer = Writer(db, {_device_of(m.topic) for m in batch}, now)
            for message in batch:
                try:
                    at = writer.handle(message.topic, message.payload)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning("hub consumer: %s: refused (%s)", message.topic, exc)
                    continue
                if at:
                    lags.append(now - at)
            writer.flush()
        for message in batch:
            self.c.ack(message.mid, message.qos)
        self.handled += len(batch)
        if lags:
            self.lag = max(lags) + (time.time() - now)


def _device_of(topic: str) -> str:
    parts = topic.split("/")
    return parts[3] if len(parts) == 5 else ""


RAISE = ("INSERT INTO alerts (device, kind, detail, raised_at) VALUES (?, ?, ?, ?)"
         " ON CONFLICT (device, kind) WHERE cleared_at IS NULL DO UPDATE SET detail = excluded.detail")
CLEAR = "UPDATE alerts SET cleared_at = ? WHERE device = ? AND kind = ? AND cleared_at IS NULL"


class Writer:
    """What one batch of messages writes, in their order, in the batch's transaction.

    Reading a message decides everything it writes before anything is written, and what a
    status or an ``online`` message writes — the device's row, its alerts — cannot fail once
    read, so those statements are queued and sent together in one pipeline: one round trip for
    the batch instead of several per message. The devices' keys and their open alerts are read
    once per batch, so an alert that is not open is not cleared again at every status. A log
    batch reads what the hub holds and may be refused halfway (the witness, or the database
    refusing a value), so it is written in a savepoint of its own."""

    def __init__(self, db, devices: set[str], now: float):
        self.db, self.now = db, now
        names = sorted(devices)
        self.vkeys = {r["id"]: r["vkey"] for r in db.all(
            "SELECT id, vkey FROM devices WHERE removed_at IS NULL AND id = ANY(?)", (names,))}
        self.open = {(r["device"], r["kind"]) for r in db.all(
            "SELECT device, kind FROM alerts WHERE cleared_at IS NULL AND device = ANY(?)", (names,))}
        self.queued: list[tuple[str, tuple]] = []

    def queue(self, sql: str, params: tuple) -> None:
        self.queued.append((sql, params))

    def flush(self) -> None:
        if not self.queued:
            return
        with self.db.conn.pipeline():
            for sql, params in self.queued:
                self.db.execute(sql, params)
        self.queued.clear()

    def alert(self, device: str, kind: str, raised: bool, detail: str) -> None:
        """Raise (once) or clear an alert of ``kind`` for ``device``."""
        if raised:  # words a device sent: PostgreSQL's text holds no NUL, and a refused write would undo the batch
            self.queue(RAISE, (device, kind, detail.replace("\x00", "")[:500], self.now))
            self.open.add((device, kind))
        elif (device, kind) in self.open:
            self.queue(CLEAR, (self.now, device, kind))
            self.open.discard((device, kind))

    def handle(self, topic: str, payload: bytes) -> float | None:
        """One message. Returns the time its device stamped on a status (for the lag), else None."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[:3] != ["kiroku", "v1", "d"]:
            raise ValueError("not a device topic")
        device, kind = parts[3], parts[4]
        vkey = self.vkeys.get(device)
        if vkey is None:
            raise ValueError(f"no enrolled device {device!r}")
        body = json.loads(payload)
        if not isinstance(body, dict) or body.get("v") != 1:
            raise ValueError(f"schema version {body.get('v') if isinstance(body, dict) else None!r} is not 1")
        now = self.now
        if kind == "online":
            online = bool(body["online"])
            self.queue("UPDATE devices SET last_seen = ?, online = ?, online_at = ? WHERE id = ?",
                       (now, int(online), now, device))
            self.alert(device, "offline", not online, "" if online else "the broker lost its connection")
            return None
        if kind == "status":
            alerts, at = read_status(body)
            self.queue("UPDATE devices SET status = ?, status_at = ?, online = 1, last_seen = ? WHERE id = ?",
                       (json.dumps(body, ensure_ascii=False), now, now, device))
            self.alert(device, "offline", False, "")
            for name, raised, detail in alerts:
                self.alert(device, name, raised, detail)
            return at
        if kind == "log":
            self.flush()  # in order: what came before it first
            mark, opened = len(self.queued), set(self.open)
            try:
                with self.db.conn.transaction():  # a savepoint: a refused batch leaves nothing behind
                    self.queue("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device))
                    log_batch(self, device, vkey, body)
                    self.flush()
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                del self.queued[mark:]
                self.open = opened
                raise ValueError(f"the database refused it: {exc.diag.message_primary}") from None
            except BaseException:
                del self.queued[mark:]
                self.open = opened
                raise
            return None
        raise ValueError(f"unknown kind {kind!r}")


def alert(db, device: str, kind: str, raised: bool, detail: str, now: float) -> None:
    """Raise (once) or clear an alert of ``kind`` for ``device``, at once (outside a batch)."""
    if raised:
        db.execute(RAISE, (device, kind, detail[:500], now))
    else:
        db.execute(CLEAR, (now, device, kind))


def read_status(body: dict) -> tuple[list[tuple[str, bool, str]], float | None]:
    """What a status raises or clears — (kind, raised, detail) for sign, fault, storage and clock
    — and the time its device stamped on it. A status whose parts are not what docs/hub.md says
    is refused here, before anything of it is written."""
    faults = body.get("faults") or []
    if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
        raise ValueError("faults is not a list of objects")
    sign = [f for f in faults if f.get("device") == "sign"]
    other = [f for f in faults if f.get("device") != "sign"]
    storage = body.get("storage") or {}
    clock = body.get("clock") or {}
    if not isinstance(storage, dict) or not isinstance(clock, dict):
        raise ValueError("storage and clock are objects")
    projected, minimum = storage.get("projected_days") or {}, storage.get("min_days") or {}
    short = {c: {"days": d, "min": minimum.get(c, 0)} for c, d in projected.items()
             if d is not None and d < minimum.get(c, 0)}
    alerts = [("sign", bool(sign), "; ".join(str(f.get("message", "")) for f in sign)),
              ("fault", bool(other), "; ".join(f"{f.get('device')}: {f.get('message', '')}" for f in other)),
              ("storage", bool(short), json.dumps(short)),
              ("clock", clock.get("synchronised") is False, "")]
    try:
        from datetime import datetime

        return alerts, datetime.fromisoformat(body["at"]).timestamp()
    except (KeyError, ValueError, TypeError):
        return alerts, None


def log_batch(w: Writer, device: str, vkey: str, body: dict) -> None:
    """A batch of the device's audit log: witnessed, then mirrored; its recordings upserted."""
    db, now = w.db, w.now
    entries = body.get("entries") or []
    row = db.one("SELECT size, root, frontier FROM witness WHERE device = ?", (device,))
    state = None if row is None else witness.State(row["size"], bytes(row["root"]), bytes(row["frontier"]))
    verdict = witness.check(state, vkey, body["checkpoint"], body.get("proof"), entries)
    # An entry published before must be the same as stored: otherwise the log was rewritten.
    problem = verdict.problem
    stored = {}
    if verdict.leaves:
        stored = {r["seq"]: bytes(r["leaf_hash"]) for r in db.all(
            "SELECT seq, leaf_hash FROM device_log WHERE device = ? AND seq = ANY(?)", (device, list(verdict.leaves)))}
    for seq, leaf in verdict.leaves.items():
        if seq in stored and stored[seq] != leaf and not problem:
            problem = f"entry {seq} differs from the copy published before: the log was rewritten"
    if verdict.size:
        w.queue("INSERT INTO checkpoints (device, size, root, note, received_at, consistent, problem)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, size, root) DO NOTHING",
                (device, verdict.size, verdict.root, body["checkpoint"], now, int(not problem), problem))
    if problem:
        w.alert(device, "log", True, problem)
        log.warning("witness: %s: %s", device, problem)
        return  # nothing of a batch that does not follow is mirrored as if it did
    if verdict.state is not None and (state is None or verdict.state.size > state.size):
        w.queue("INSERT INTO witness (device, size, root, frontier, checked_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (device) DO UPDATE SET size = excluded.size, root = excluded.root,"
                " frontier = excluded.frontier, checked_at = excluded.checked_at",
                (device, verdict.state.size, verdict.state.root, verdict.state.frontier, now))
    for entry in entries:
        if entry["seq"] in stored:
            continue  # held already, and the same (compared above)
        w.queue("INSERT INTO device_log (device, seq, at, actor, action, purpose, subject, detail, leaf_hash,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING",
                (device, entry["seq"], entry["at"], entry["actor"], entry["action"], entry["purpose"],
                 entry["subject"], json.dumps(entry["detail"], ensure_ascii=False, sort_keys=True),
                 verdict.leaves[entry["seq"]], now))
    for r in body.get("recordings") or []:
        w.queue(
            "INSERT INTO recordings (device, id, record_class, started_wall_us, ended_wall_us, started_at, ended_at,"
            " end_reason, section, marks, segments, holds, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (device, id) DO UPDATE SET ended_wall_us = excluded.ended_wall_us,"
            " ended_at = excluded.ended_at, end_reason = excluded.end_reason, section = excluded.section,"
            " marks = excluded.marks, segments = excluded.segments, holds = excluded.holds,"
            " updated_at = excluded.updated_at",
            (device, r["id"], r["record_class"], r["started_wall_us"], r.get("ended_wall_us"), r["started_at"],
             r.get("ended_at"), r.get("end_reason"), r.get("section") or "",
             json.dumps(r.get("marks") or [], ensure_ascii=False), int(r.get("segments") or 0),
             int(r.get("holds") or 0), now))
        if r.get("direction") in DIRECTIONS:  # a call, once its recorder has written its row
            w.queue("UPDATE recordings SET direction = ?, withheld = ?, external_e164 = ?, external_raw = ?,"
                    " city_e164 = ?, city_raw = ?, external_heard = ?, city_heard = ? WHERE device = ? AND id = ?",
                    (r["direction"], int(bool(r.get("withheld"))),
                     *(str(r.get(k) or "")[:64] for k in ("external_e164", "external_raw", "city_e164", "city_raw")),
                     *(r.get(k) if r.get(k) in HEARINGS else None for k in ("external_heard", "city_heard")),
                     device, r["id"]))


def sweep_quiet(db) -> None:
    """Devices the broker still thinks connected that have said nothing for QUIET_AFTER seconds."""
    now = time.time()
    for row in db.all("SELECT id FROM devices WHERE online = 1 AND removed_at IS NULL AND last_seen < ?",
                      (now - QUIET_AFTER,)):
        with db.conn.transaction():
            db.execute("UPDATE devices SET online = 0, online_at = ? WHERE id = ?", (now, row["id"]))
            alert(db, row["id"], "offline", True, f"nothing heard for {QUIET_AFTER:.0f} s", now)
