"""Simulated devices for the hub figure: many light publishers in one process, each speaking
what a device's uplink speaks (docs/hub.md) — MQTT 5 over TLS with its own broker account, a
last will, a persistent session; its status every 5 s and on a change; its audit log in
batches, each with the checkpoint signed at its end and the consistency proof from the last
acknowledged one (one batch in flight, the position moved only by a PUBACK); the latest
checkpoint again after 30 s without a new entry — but no recorder behind it.

One thread drives every client (paho's ``loop_read``/``loop_write``/``loop_misc`` under a
selector), so that no TLS socket is ever touched by two threads and the generator costs little
next to the hub it loads.

``python -m kiroku.bench.hubload SPEC OUT``: SPEC (JSON) names the broker, the timings and the
devices (their accounts, signing keys and what their logs held before); OUT receives what was
published — per device the last status and the log's size and root — and the generator's own
CPU. It prints ``{"event": "publishing", "at": …}`` when every device is connected, and
``{"event": "done"}`` once everything it published is acknowledged.
"""

from __future__ import annotations

import base64
import heapq
import json
import random
import selectors
import ssl
import sys
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.uplink.outbox import MAX_ENTRIES, Batch, SubtreeHashes
from firmware.vault import merkle
from firmware.vault.audit import canonical, sign_checkpoint, signed_note

STATUS_EVERY = 5.0  # as the uplink
CHECKPOINT_EVERY = 30.0  # the latest checkpoint again after this long without a new entry
KEEPALIVE = 15
SESSION_EXPIRY = 7 * 86400
SOFTWARE = "bench"


def _at(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t).astimezone().isoformat(timespec="milliseconds")


class Device:
    """One simulated device: its client, its audit log (in memory) and its outbox position."""

    def __init__(self, spec: dict, broker: dict, context: ssl.SSLContext, rng: random.Random):
        self.id = spec["id"]
        self.place = spec.get("place", "")
        self.key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(spec["key"]))
        self.public = self.key.public_key()
        self.origin = f"kiroku/{self.id}"
        self.leaves = [bytes.fromhex(h) for h in spec.get("leaves", [])]
        self.roots = [merkle.root([])]
        tree = merkle.CompactRange()
        for leaf in self.leaves:
            tree.append(leaf)
            self.roots.append(tree.root())
        self.tree = tree
        self.subtrees = SubtreeHashes(lambda s, e: self.leaves[s:e])
        self.acknowledged = len(self.leaves)  # what the broker acknowledged: the hub holds it
        self.pending: list[dict] = []  # entries written, not yet acknowledged
        self.recordings: dict[str, dict] = {}
        self.inflight: tuple[int, int] | None = None  # (mid, end) of the batch in flight
        self.others: dict[int, str] = {}  # mid → topic of what is in flight besides the log
        self.last_log = 0.0
        self.status_seq = 0
        self.last_status_at = ""
        self.recording: dict | None = None
        self.connected = False
        self.refused: list[str] = []
        self.rng = rng

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=spec["client_id"], protocol=mqtt.MQTTv5)
        c.username_pw_set(spec["username"], spec["password"])
        c.tls_set_context(context)
        c.will_set(self.topic("online"), json.dumps({"v": 1, "online": False}), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        c.on_message = lambda *_: None  # the operators and managers the hub pushes: received, not used
        self.c = c
        self.broker = broker

    def topic(self, kind: str) -> str:
        return f"kiroku/v1/d/{self.id}/{kind}"

    def connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY
        self.c.connect(self.broker["host"], self.broker["port"], keepalive=KEEPALIVE, clean_start=False,
                       properties=props)

    def _on_connect(self, c, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.refused.append(f"connect: {reason}")
            return
        self.connected = True
        c.subscribe(f"kiroku/v1/h/{self.id}/#", qos=1)
        self.publish("online", {"v": 1, "online": True, "at": _at(), "software": SOFTWARE}, retain=True)

    def _on_publish(self, c, userdata, mid, reason, properties) -> None:
        if reason.is_failure:
            self.refused.append(f"{self.others.get(mid, 'log')}: {reason}")
        if self.inflight is not None and mid == self.inflight[0]:
            end = self.inflight[1]
            self.inflight = None
            if not reason.is_failure:
                del self.pending[:end - self.acknowledged]
                self.acknowledged = end
        self.others.pop(mid, None)

    def publish(self, kind: str, body: dict, *, retain: bool = False) -> int:
        info = self.c.publish(self.topic(kind), json.dumps(body, ensure_ascii=False), qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"{self.id}: paho refused a publication: {mqtt.error_string(info.rc)}")
        if kind != "log":
            self.others[info.mid] = kind
        return info.mid

    @property
    def busy(self) -> bool:
        return bool(self.others) or self.inflight is not None or bool(self.pending)

    # -- what the device does ----------------------------------------------------------------

    def status(self) -> None:
        self.status_seq += 1
        self.last_status_at = _at()
        rec = self.recording
        self.publish("status", {
            "v": 1, "seq": self.status_seq, "at": self.last_status_at, "device": self.id, "kind": "counter",
            "place": self.place, "software": SOFTWARE, "recorder": {"answering": True, "error": None},
            "state": "recording" if rec else "idle", "mode": "on_demand",
            "sign": {"lit": bool(rec), "commanded": bool(rec), "readback": bool(rec)},
            "recording": None if rec is None else {
                "id": rec["id"], "started_at": rec["started_at"], "duration_s": 6.8, "segments": rec["segments"],
                "marks": len(rec["marks"]), "started_by": rec["started_by"], "ended_at": None, "end_reason": None},
            "faults": [], "warnings": [], "clock": {"synchronised": True, "source": "kernel"},
            "storage": {"capacity_bytes": 118_000_000_000, "used_bytes": 41_000_000_000,
                        "free_bytes": 77_000_000_000, "projected_days": {"footage": 312.4},
                        "min_days": {"footage": 90}, "warning": False, "holds": 2, "last_overwrite": None},
            "checkpoint": {"size": len(self.leaves), "acknowledged": self.acknowledged}}, retain=True)

    def _write(self, actor: str, action: str, subject: str = "", detail: dict | None = None,
               purpose: str = "") -> None:
        entry = {"seq": len(self.leaves), "at": _at(), "actor": actor, "action": action, "purpose": purpose,
                 "subject": subject, "detail": detail or {}}
        leaf = merkle.leaf_hash(canonical(entry))
        self.leaves.append(leaf)
        self.tree.append(leaf)
        self.roots.append(self.tree.root())
        self.pending.append(entry)

    def session(self, entries: int) -> None:
        """A burst at the counter: an operator signs on, records with marks, stops — ``entries`` in all."""
        who = self.rng.choice(["sato", "suzuki", "takahashi", "tanaka"])
        now = time.time()
        rec_id = datetime.fromtimestamp(now).strftime("%Y%m%d-%H%M%S-") + f"{self.rng.randrange(1000):03d}"
        rec = {"id": rec_id, "record_class": "footage", "mode": "on_demand", "started_at": _at(now), "ended_at": None,
               "started_wall_us": int(now * 1e6), "ended_wall_us": None, "started_by": who, "end_reason": None,
               "section": "市民課", "clock_synchronised": True, "segments": 0, "segments_written": 0, "marks": []}
        self.recordings[rec_id] = rec
        self.recording = rec
        self._write(who, "user.login", subject=who, detail={"via": "console"})
        self._write(who, "recording.start", subject=rec_id, detail={"trigger": "button"})
        for n in range(max(0, entries - 4)):
            note = self.rng.choice(["大声", "暴言", "確認", ""])
            rec["marks"].append({"at": _at(), "by": who, "note": note, "section": "市民課"})
            self._write(who, "incident.mark", subject=rec_id, detail={"note": note, "n": n})
        rec.update(segments=self.rng.randrange(5, 200), ended_at=_at(), ended_wall_us=int(time.time() * 1e6),
                   end_reason="button")
        rec["segments_written"] = rec["segments"]
        self._write(who, "recording.stop", subject=rec_id, detail={"reason": "button"})
        self._write(who, "user.logout", subject=who)
        self.recording = None

    def outbox(self, now: float) -> None:
        """The next batch if none is in flight, else (after 30 s quiet) the latest checkpoint again."""
        if not self.connected or self.inflight is not None:
            return
        if self.pending:
            start = self.acknowledged
            end = min(len(self.leaves), start + MAX_ENTRIES)
            entries = self.pending[:end - start]
            subjects = {e["subject"] for e in entries}
            batch = Batch(start, end, entries, self._note(end),
                          self.subtrees.consistency(start, end) if start else [],
                          [self.recordings[s] for s in sorted(subjects) if s in self.recordings])
            self.inflight = (self.publish("log", batch.payload()), end)
            self.last_log = now
        elif self.acknowledged and now - self.last_log >= CHECKPOINT_EVERY:
            self.publish("log", {"v": 1, "entries": [], "checkpoint": self._note(self.acknowledged),
                                 "proof": {"old_size": self.acknowledged, "hashes": []}, "recordings": []})
            self.last_log = now

    def _note(self, size: int) -> str:
        _, signature = sign_checkpoint(self.origin, size, self.roots[size], self.key)
        return signed_note(self.origin, size, self.roots[size], signature, self.public)

    def result(self) -> dict:
        return {"id": self.id, "status_seq": self.status_seq, "status_at": self.last_status_at,
                "size": len(self.leaves), "acknowledged": self.acknowledged,
                "root": base64.b64encode(self.roots[len(self.leaves)]).decode(),
                "leaves": [h.hex() for h in self.leaves], "refused": self.refused}


class Load:
    """Every device's client on one selector; timers on a heap; all on the calling thread."""

    def __init__(self, spec: dict):
        self.spec = spec
        context = ssl.create_default_context(cafile=spec["broker"]["ca"])
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        rng = random.Random(spec.get("seed", 1))
        self.rng = rng
        self.devices = [Device(d, spec["broker"], context, random.Random(rng.random())) for d in spec["devices"]]
        self.sel = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, int, str]] = []
        self._n = 0
        self.late = 0.0  # the furthest a timer ran behind its time (a starved generator shows here)
        self.lost_connections = 0

    def _at(self, when: float, i: int, what: str) -> None:
        self._n += 1
        heapq.heappush(self.timers, (when, self._n, i, what))

    def _register(self, d: Device) -> None:
        self.sel.register(d.c.socket(), selectors.EVENT_READ, d)

    def _serve(self, d: Device, mask: int) -> None:
        sock = d.c.socket()
        if sock is None:
            return
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if mask & selectors.EVENT_READ:
            rc = d.c.loop_read()
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and d.c.socket() is not None and d.c.socket().pending():
                rc = d.c.loop_read()  # TLS bytes already decrypted: the selector does not see them
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and d.c.want_write():
            rc = d.c.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or d.c.socket() is None:
            self._lost(d, sock)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if d.c.want_write() else 0)
        if self.sel.get_key(sock).events != events:
            self.sel.modify(sock, events, d)

    def _lost(self, d: Device, sock) -> None:
        self.lost_connections += 1
        d.connected = False
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        self._at(time.monotonic() + 1.0, self.devices.index(d), "reconnect")

    def _flush(self, d: Device) -> None:
        """After publishing from the loop: what paho could not write at once waits for the socket."""
        sock = d.c.socket()
        if sock is not None and d.c.want_write():
            try:
                self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, d)
            except (KeyError, ValueError):
                pass

    def connect_all(self) -> float:
        started = time.monotonic()
        for d in self.devices:
            d.connect()
            self._register(d)
            d.c.loop_write()
        deadline = time.monotonic() + 120
        while not all(d.connected or d.refused for d in self.devices):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sum(not d.connected for d in self.devices)} devices did not connect in 120 s")
            self._poll(0.1)
        refused = [d for d in self.devices if d.refused]
        if refused:
            raise RuntimeError(f"the broker refused {len(refused)} device(s), e.g. {refused[0].id}: "
                               f"{refused[0].refused[0]}")
        return time.monotonic() - started

    def _poll(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            self._serve(key.data, mask)

    def run(self, seconds: float) -> None:
        """Publish for ``seconds``; then send what is left and wait for every acknowledgement."""
        burst_every = self.spec["burst_every"]
        now = time.monotonic()
        for i, d in enumerate(self.devices):
            d.last_log = now
            self._at(now + self.rng.uniform(0, STATUS_EVERY), i, "status")
            self._at(now + self.rng.expovariate(1 / burst_every), i, "burst")
            self._at(now + 1.0 + self.rng.uniform(0, 1.0), i, "outbox")
        self._at(now + 1.0, -1, "misc")
        end = now + seconds
        print(json.dumps({"event": "publishing", "at": time.time()}), flush=True)
        while True:
            now = time.monotonic()
            if now >= end and not any(d.busy for d in self.devices):
                break
            while self.timers and self.timers[0][0] <= now:
                when, _, i, what = heapq.heappop(self.timers)
                if now < end:
                    self.late = max(self.late, now - when)
                self._fire(i, what, now, publishing=now < end)
            wait = max(0.0, min(self.timers[0][0] - time.monotonic(), 0.5)) if self.timers else 0.5
            self._poll(wait)
            if now > end + 120:
                raise RuntimeError("what was published was not all acknowledged within 120 s")

    def _fire(self, i: int, what: str, now: float, *, publishing: bool) -> None:
        if what == "misc":  # keep-alives: paho's loop_misc for every client, once a second
            for d in self.devices:
                if d.c.socket() is not None:
                    d.c.loop_misc()
                    self._flush(d)
            self._at(now + 1.0, -1, "misc")
            return
        d = self.devices[i]
        if what == "reconnect":
            try:
                d.c.reconnect()
                self._register(d)
                d.c.loop_write()
            except OSError:
                self._at(now + 1.0, i, "reconnect")
            return
        if what == "outbox":
            d.outbox(now)
            self._at(now + 1.0, i, "outbox")  # the uplink looks once a second (and at once on a PUBACK)
        elif not publishing:
            return
        elif what == "status":
            if d.connected:
                d.status()
            self._at(now + STATUS_EVERY, i, "status")
        elif what == "burst":
            d.session(d.rng.randint(*self.spec["burst_entries"]))
            if d.connected:
                d.status()  # a change (recording started and stopped) is a status at once, as the uplink's
                d.outbox(now)
            self._at(now + d.rng.expovariate(1 / self.spec["burst_every"]), i, "burst")
        self._flush(d)

    def close(self) -> None:
        """Stop as the uplink does: ``online: false``, then a clean DISCONNECT."""
        for d in self.devices:
            if d.connected:
                d.publish("online", {"v": 1, "online": False, "at": _at()}, retain=True)
                self._flush(d)
        deadline = time.monotonic() + 30
        while any(d.others for d in self.devices) and time.monotonic() < deadline:
            self._poll(0.1)
        for d in self.devices:
            if d.c.socket() is not None:
                d.c.disconnect()
                d.c.loop_write()
        self.sel.close()


def main(argv: list[str] | None = None) -> int:
    import resource

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    load = Load(spec)
    connect_s = load.connect_all()
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    load.run(spec["seconds"])
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    load.close()
    out = {"connect_s": round(connect_s, 2), "wall_s": round(wall1 - wall0, 2),
           "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
           "max_late_s": round(load.late, 3), "lost_connections": load.lost_connections,
           "max_rss_mb": round(cpu1.ru_maxrss / 1024, 1), "devices": [d.result() for d in load.devices]}
    Path(argv[1]).write_text(json.dumps(out))
    print(json.dumps({"event": "done"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
