"""The city's side of the uplink's tests: accounts made in the broker's dynamic-security plugin
as the hub makes them, a subscriber standing in for the hub's consumer (it keeps what devices
publish and checks each log batch as the hub's witness will), and the uplink as a process."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.uplink.files import Enrollment, UplinkFolder
from firmware.vault import merkle
from firmware.vault.audit import canonical, checkpoint_text, entry_dict, verify_note
from firmware.vault.keys import KeyStore

CONTROL = "$CONTROL/dynamic-security/v1"


def client(broker, username: str, password: str, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(username, password)
    c.tls_set(ca_certs=str(broker.ca))
    return c


class Dynsec:
    """The broker's administrator, as the hub's enrollment uses it."""

    def __init__(self, broker):
        self.broker = broker
        self._answers: list[dict] = []
        self._cond = threading.Condition()
        self._client = client(broker, *broker.admin, f"admin-{secrets.token_hex(4)}")
        self._client.on_message = self._answer
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        self._client.subscribe(f"{CONTROL}/response", qos=1)
        assert subscribed.wait(10), "the administrator could not subscribe"

    def _answer(self, _c, _u, message) -> None:
        with self._cond:
            self._answers.append(json.loads(message.payload))
            self._cond.notify_all()

    def command(self, *commands: dict) -> list[dict]:
        with self._cond:
            before = len(self._answers)
        self._client.publish(CONTROL, json.dumps({"commands": list(commands)}), qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: len(self._answers) > before, 10), "dynamic security did not answer"
            responses = self._answers[before]["responses"]
        failed = [r for r in responses if r.get("error")]
        assert not failed, failed
        return responses

    def device(self, device: str, *, topics: tuple[str, ...] = ("#",)) -> tuple[str, str]:
        """A device's account: publish under its own topics (``topics`` below kiroku/v1/d/{id}/),
        read its own commands. Returns (username, password)."""
        username, password = f"device-{device}", secrets.token_urlsafe(18)
        role = f"device-{device}"
        acls = [{"command": "addRoleACL", "rolename": role, "acltype": "publishClientSend",
                 "topic": f"kiroku/v1/d/{device}/{t}", "allow": True} for t in topics]
        self.command({"command": "createRole", "rolename": role}, *acls,
                     {"command": "addRoleACL", "rolename": role, "acltype": "subscribePattern",
                      "topic": f"kiroku/v1/h/{device}/#", "allow": True},
                     {"command": "createClient", "username": username, "password": password,
                      "roles": [{"rolename": role}]})
        return username, password

    def allow(self, device: str, topic: str) -> None:
        self.command({"command": "addRoleACL", "rolename": f"device-{device}", "acltype": "publishClientSend",
                      "topic": f"kiroku/v1/d/{device}/{topic}", "allow": True})

    def hub(self) -> tuple[str, str]:
        username, password = "hub", secrets.token_urlsafe(18)
        self.command({"command": "createRole", "rolename": "hub"},
                     {"command": "addRoleACL", "rolename": "hub", "acltype": "subscribePattern",
                      "topic": "kiroku/v1/d/#", "allow": True},
                     {"command": "addRoleACL", "rolename": "hub", "acltype": "publishClientSend",
                      "topic": "kiroku/v1/h/#", "allow": True},
                     {"command": "createClient", "username": username, "password": password,
                      "roles": [{"rolename": "hub"}]})
        return username, password

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def enroll_by_hand(data_dir: Path, broker, device: str, account: tuple[str, str], *, place: str = "") -> Enrollment:
    """What ``kiroku enroll`` leaves behind, written directly."""
    enrollment = Enrollment(hub="https://hub.invalid", device=device, kind="counter", place=place, host="127.0.0.1",
                            port=broker.port, username=account[0], password=account[1], client_id=account[0],
                            enrolled_at="2026-12-01T09:00:00+09:00")
    UplinkFolder(data_dir).save_enrollment(enrollment, broker.ca.read_text())
    return enrollment


class Hub:
    """A subscriber with the hub's account and a persistent session: everything devices publish,
    in arrival order; and the hub's own publications (retained)."""

    def __init__(self, broker, account: tuple[str, str], client_id: str = "hub-consumer"):
        self._cond = threading.Condition()
        self.messages: list[tuple[str, dict | None, bool]] = []
        self._acks: dict[int, object] = {}
        c = client(broker, *account, client_id)
        c.reconnect_delay_set(1, 2)  # back at once when the broker is
        c.on_connect = self._connected
        c.on_message = self._message
        c.on_publish = self._published
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", broker.port, keepalive=15, clean_start=False, properties=properties)
        c.loop_start()
        self.client = c
        self.wait(lambda: self._subscribed, what="the hub's subscription")

    _subscribed = False

    def _connected(self, c, _u, _flags, reason_code, _p) -> None:
        if not reason_code.is_failure:
            c.subscribe("kiroku/v1/d/+/#", qos=1)
            with self._cond:
                self._subscribed = True
                self._cond.notify_all()

    def _message(self, _c, _u, message) -> None:
        try:
            payload = json.loads(message.payload) if message.payload else None
        except ValueError:
            payload = None
        with self._cond:
            self.messages.append((message.topic, payload, bool(message.retain)))
            self._cond.notify_all()

    def _published(self, _c, _u, mid, reason_code, _p) -> None:
        with self._cond:
            self._acks[mid] = reason_code
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = 10.0, what: str = "condition"):
        with self._cond:
            found = self._cond.wait_for(predicate, timeout)
        assert found, f"the hub did not see {what} within {timeout:g} s"
        return found

    def publish(self, topic: str, payload: dict, *, retain: bool = True) -> None:
        info = self.client.publish(topic, json.dumps(payload, ensure_ascii=False), qos=1, retain=retain)
        self.wait(lambda: info.mid in self._acks, what=f"the broker's acknowledgement for {topic}")
        assert not self._acks[info.mid].is_failure, self._acks[info.mid]

    def of(self, device: str, what: str) -> list[dict]:
        with self._cond:
            return [p for t, p, _ in self.messages if t == f"kiroku/v1/d/{device}/{what}" and p is not None]

    def latest(self, device: str, what: str) -> dict | None:
        found = self.of(device, what)
        return found[-1] if found else None

    def entries(self, device: str) -> dict[int, dict]:
        """The log as the hub keeps it: each sequence number once; a second copy that differs is a
        rewritten log, and fails here."""
        kept: dict[int, dict] = {}
        for batch in self.of(device, "log"):
            for entry in batch["entries"]:
                if entry["seq"] in kept:
                    assert kept[entry["seq"]] == entry, f"entry {entry['seq']} arrived twice, different"
                kept.setdefault(entry["seq"], entry)
        return kept

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def witness(batches: list[dict], vkey: str) -> list[tuple[int, int, bool]]:
    """The hub's witness over a device's log batches, in arrival order (docs/hub.md, "The witness"):
    each checkpoint's signature; a checkpoint of a size already held must be the same; a new one
    must follow by its proof from the checkpoint of size ``old_size``, which the hub holds (its
    latest, or an earlier one when an uplink restarted before it recorded an acknowledgement);
    its entries must hash into its root; and a device that says it had more acknowledged than its
    log now holds has a log cut short. Returns (old size, new size, consistent) per checkpoint
    that was not already held."""
    held: dict[int, bytes] = {}  # size -> root, the good checkpoints
    leaves: dict[int, bytes] = {}
    verdicts = []
    for batch in batches:
        cp = verify_note(batch["checkpoint"], vkey)
        old = batch["proof"]["old_size"]
        for entry in batch["entries"]:
            leaves.setdefault(entry["seq"], merkle.leaf_hash(canonical(entry)))
        if cp.size in held and old <= cp.size:
            if held[cp.size] == cp.root:
                continue
            ok = False
        elif old > cp.size:
            ok = False  # cut short
        elif old == 0:
            ok = True  # a device enrolled anew, or whose state was lost: its entries and root decide
        else:
            proof = [base64.b64decode(h) for h in batch["proof"]["hashes"]]
            ok = old in held and merkle.verify_consistency(old, cp.size, held[old], cp.root, proof)
        if ok and all(i in leaves for i in range(cp.size)):
            ok = merkle.root([leaves[i] for i in range(cp.size)]) == cp.root
        verdicts.append((old, cp.size, ok))
        if ok:
            held[cp.size] = cp.root
    return verdicts


class UplinkProcess:
    """``python -m firmware.uplink --data DIR`` with its output in a file."""

    def __init__(self, data_dir: Path, *extra: str):
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir.parent / f"uplink-{secrets.token_hex(3)}.log"
        self._out = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "firmware.uplink", "--data", str(data_dir), *extra],
                                     stdout=self._out, stderr=subprocess.STDOUT, env=dict(os.environ))

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the uplink did not stop on SIGTERM:\n{self.output()}") from None
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def acknowledged(data_dir: Path) -> int:
    """How far the outbox got, as ``state.json`` says."""
    return UplinkFolder(data_dir).position().acknowledged


def log_size(data_dir: Path) -> int:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{Path(data_dir) / 'kiroku.db'}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT size FROM audit_state").fetchone()[0]


def rewrite_log(data_dir: Path, seq: int, **changes) -> None:
    """What an attacker with a shell and the device key can do: edit an entry, then hash and sign
    every checkpoint after it again, so that the log verifies on its own."""
    keys = KeyStore(data_dir)
    key, origin = keys.signing_key(), keys.signer_name
    with closing(sqlite3.connect(data_dir / "kiroku.db", isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        tree = merkle.CompactRange()
        for row in conn.execute("SELECT seq, at, actor, action, purpose, subject, detail FROM audit"
                                " ORDER BY seq").fetchall():
            entry = entry_dict(row)
            if entry["seq"] == seq:
                entry.update(changes)
            leaf = merkle.leaf_hash(canonical(entry))
            tree.append(leaf)
            root = tree.root()
            conn.execute("UPDATE audit SET actor = ?, action = ?, subject = ?, leaf_hash = ?, root = ?, signature = ?"
                         " WHERE seq = ?", (entry["actor"], entry["action"], entry["subject"], leaf, root,
                                            key.sign(checkpoint_text(origin, tree.size, root).encode()), entry["seq"]))
        conn.execute("UPDATE audit_state SET size = ?, stack = ?", (tree.size, tree.to_bytes()))
        conn.execute("COMMIT")
