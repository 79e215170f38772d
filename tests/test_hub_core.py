"""The hub's core on the real engines: its database, its own audit log, and the consumer that
takes what a device publishes — status, the audit log with its checkpoints — into PostgreSQL,
with the witness judging every checkpoint. The device here is a real vault (its log signed by
its own key) whose batches are published with the device's own broker account."""

from __future__ import annotations

import json
import secrets
import time

import pytest


pytestmark = pytest.mark.hub


def wait_for(check, *, timeout: float = 10.0, what: str = "it"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


@pytest.fixture
def hub_audit(hub_dsn, tmp_path):
    from hub.audit import HubAudit, signing_key
    from hub.db import Pool

    pool = Pool(hub_dsn, size=2)
    yield HubAudit(pool.database, signing_key(tmp_path))
    pool.close()


def test_the_hubs_own_log_is_a_signed_tree_that_names_an_altered_entry(hub_audit, hub_dsn):
    from firmware.vault.audit import AuditError, verify_note
    from hub.db import connect

    for n in range(5):
        assert hub_audit.record("yamada", "user.add", subject=f"person-{n}", detail={"roles": ["operator"]}) == n
    db = connect(hub_dsn)
    assert hub_audit.verify(db)["entries"] == 5
    assert verify_note(hub_audit.checkpoint(db), hub_audit.vkey).size == 5
    db.execute("UPDATE audit SET subject = 'someone else' WHERE seq = 2")
    with pytest.raises(AuditError, match="entry 2 was altered"):
        hub_audit.verify(db)
    db.close()


def test_people_acting_at_once_each_get_their_entry(hub_audit, hub_dsn):
    """Two managers (or a manager and a device enrolling) writing the hub's log at the same moment:
    neither is refused, and the log stays one tree."""
    import threading

    from hub.db import connect

    failures, threads = [], []

    def act(n: int) -> None:
        try:
            for k in range(5):
                hub_audit.record(f"manager-{n}", "user.add", subject=f"person-{n}-{k}")
        except Exception as exc:  # every failure is the test's to report
            failures.append(exc)

    for n in range(4):
        threads.append(threading.Thread(target=act, args=(n,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    db = connect(hub_dsn)
    assert hub_audit.verify(db)["entries"] == 20
    db.close()


# -- a device, enrolled by hand, publishing what its uplink would ------------------------------------

class Device:
    """A device's vault and broker account: publishes its status and its log's batches."""

    def __init__(self, vault, device_id: str, mosquitto, admin):
        from hub import broker

        self.vault, self.id = vault, device_id
        self.user, self.password = admin.add_device(device_id)
        self.c = broker.client(self.user, self.user, self.password, str(mosquitto.ca))
        self.c.connect("127.0.0.1", mosquitto.port)
        self.c.loop_start()
        self.sent = 0  # the log's size at the last batch published

    def publish(self, kind: str, body: dict, retain: bool = False) -> None:
        from hub import broker

        info = self.c.publish(broker.device_topic(self.id, kind), json.dumps({"v": 1, **body}), qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published()

    def batch(self, log=None) -> dict:
        """The log since the last batch, as the uplink publishes it."""
        log = log or self.vault.audit_log
        entries = sorted(log.entries(self.vault.db, limit=10**6), key=lambda e: e["seq"])
        new = [e for e in entries if e["seq"] >= self.sent]
        body = {"entries": new, "checkpoint": log.latest_checkpoint(self.vault.db), "recordings": []}
        if self.sent:
            proof = log.consistency(self.vault.db, self.sent)
            body["proof"] = {"old_size": self.sent, "hashes": proof["proof"]}
        self.sent = len(entries)
        return body

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def city(hub_dsn, mosquitto):
    """The hub's consumer on its database and the broker, and a way to enroll a device by hand."""
    from hub import broker
    from hub.consumer import Consumer
    from hub.db import connect

    admin = broker.Admin("127.0.0.1", mosquitto.port, *mosquitto.admin, str(mosquitto.ca))
    password = secrets.token_urlsafe(16)
    admin.ensure_hub_account(password)
    consumer = Consumer(hub_dsn, "127.0.0.1", mosquitto.port, password, str(mosquitto.ca),
                        client_id=f"kiroku-hub-{secrets.token_hex(4)}").start()
    assert consumer.connected.wait(10), "the hub's account was not accepted"
    db = connect(hub_dsn)
    db.execute("INSERT INTO users (username, display_name, password_hash, is_manager, created_at)"
               " VALUES ('yamada', '山田', 'x', 1, 'now')")
    devices = []

    def enroll(vault, device_id: str, place: str = "市民課窓口 1番") -> Device:
        vkey = (vault.data_dir / "keys" / "device.vkey").read_text().strip()
        db.execute("INSERT INTO devices (id, kind, place, vkey, broker_user, enrolled_at, enrolled_by)"
                   " VALUES (?, 'counter', ?, ?, ?, 'now', 1)", (device_id, place, vkey, f"kiroku-{device_id}"))
        device = Device(vault, device_id, mosquitto, admin)
        devices.append(device)
        return device

    yield type("City", (), {"db": db, "enroll": staticmethod(enroll), "consumer": consumer, "admin": admin})
    for d in devices:
        d.close()
    consumer.close()
    admin.close()
    db.close()


def test_status_and_the_log_reach_the_database_once_each_and_the_witness_follows(city, vault):
    device_id = f"counter-{secrets.token_hex(3)}"
    device = city.enroll(vault, device_id)
    device.publish("online", {"online": True}, retain=True)
    device.publish("status", {"seq": 1, "at": "2026-12-07T10:00:00+09:00", "state": "idle", "faults": [],
                              "clock": {"synchronised": True}})
    wait_for(lambda: city.db.scalar("SELECT online FROM devices WHERE id = ?", (device_id,)) == 1, what="online")
    for n in range(3):
        vault.audit("ctl", "recording.start", subject=f"rec-{n}")
    first = device.batch()
    device.publish("log", first)
    device.publish("log", first)  # a retry: the same batch again
    wait_for(lambda: city.db.scalar("SELECT size FROM witness WHERE device = ?", (device_id,)) == len(first["entries"]),
             what="the first batch witnessed")
    vault.audit("ctl", "incident.mark", subject="rec-2", detail={"note": "大声"})
    device.publish("log", device.batch())
    size = vault.audit_log.verify(vault.db)["entries"]
    wait_for(lambda: city.db.scalar("SELECT size FROM witness WHERE device = ?", (device_id,)) == size,
             what="the second batch witnessed")
    seqs = [r["seq"] for r in city.db.all("SELECT seq FROM device_log WHERE device = ? ORDER BY seq", (device_id,))]
    assert seqs == list(range(size)), "every entry once, none missing"
    assert city.db.scalar("SELECT count(*) FROM checkpoints WHERE device = ? AND consistent = 0", (device_id,)) == 0
    assert not city.db.all("SELECT * FROM alerts WHERE device = ? AND cleared_at IS NULL", (device_id,))


def test_a_sign_fault_and_a_filling_card_raise_alerts_that_clear(city, vault):
    device_id = f"counter-{secrets.token_hex(3)}"
    device = city.enroll(vault, device_id)
    device.publish("status", {"seq": 1, "at": "2026-12-07T10:00:00+09:00", "state": "fault",
                              "faults": [{"device": "sign", "message": "the lamp is dark", "blocking": True}],
                              "storage": {"projected_days": {"footage": 40}, "min_days": {"footage": 90}},
                              "clock": {"synchronised": False, "source": "none"}})
    open_kinds = lambda: {r["kind"] for r in city.db.all(  # noqa: E731
        "SELECT kind FROM alerts WHERE device = ? AND cleared_at IS NULL", (device_id,))}
    wait_for(lambda: open_kinds() == {"sign", "storage", "clock"}, what="the alerts")
    device.publish("status", {"seq": 2, "at": "2026-12-07T10:00:05+09:00", "state": "idle", "faults": [],
                              "storage": {"projected_days": {"footage": 120}, "min_days": {"footage": 90}},
                              "clock": {"synchronised": True}})
    wait_for(lambda: open_kinds() == set(), what="the alerts cleared")


def test_a_rewritten_log_is_flagged_and_not_mirrored(city, vault):
    from firmware.vault import merkle
    from firmware.vault.audit import canonical, checkpoint_text, entry_dict, sign_checkpoint

    device_id = f"counter-{secrets.token_hex(3)}"
    device = city.enroll(vault, device_id)
    for n in range(4):
        vault.audit("ctl", "recording.start", subject=f"rec-{n}")
    device.publish("log", device.batch())
    size = device.sent
    wait_for(lambda: city.db.scalar("SELECT size FROM witness WHERE device = ?", (device_id,)) == size,
             what="the first batch witnessed")
    # An attacker with a shell and the device's key: entry 1 changed, every later checkpoint re-signed.
    key = vault.keys.signing_key()
    origin = vault.audit_log.origin
    with vault.transaction() as conn:
        conn.execute("UPDATE audit SET subject = 'nothing-happened' WHERE seq = 1")
        tree = merkle.CompactRange()
        for row in conn.execute("SELECT seq, at, actor, action, purpose, subject, detail FROM audit ORDER BY seq"):
            leaf = merkle.leaf_hash(canonical(entry_dict(row)))
            tree.append(leaf)
            _, signature = sign_checkpoint(origin, tree.size, tree.root(), key)
            conn.execute("UPDATE audit SET leaf_hash = ?, root = ?, signature = ? WHERE seq = ?",
                         (leaf, tree.root(), signature, row[0]))
        conn.execute("UPDATE audit_state SET size = ?, stack = ? WHERE id = 1", (tree.size, tree.to_bytes()))
    assert checkpoint_text(origin, tree.size, tree.root())  # the forged log verifies on the device itself
    vault.audit_log.verify(vault.db)
    vault.audit("ctl", "recording.start", subject="rec-4")
    device.publish("log", device.batch())
    problem = wait_for(lambda: city.db.scalar("SELECT detail FROM alerts WHERE device = ? AND kind = 'log'"
                                              " AND cleared_at IS NULL", (device_id,)), what="the witness's alert")
    assert "rewritten" in problem
    assert city.db.scalar("SELECT size FROM witness WHERE device = ?", (device_id,)) == size, \
        "the last good checkpoint stays the witnessed one"
    assert city.db.scalar("SELECT count(*) FROM device_log WHERE device = ?", (device_id,)) == size


def test_a_message_the_hub_cannot_use_is_refused_and_what_follows_still_arrives(city, vault):
    device_id = f"counter-{secrets.token_hex(3)}"
    device = city.enroll(vault, device_id)
    device.publish("status", {"seq": 1, "at": "2026-12-07T10:00:00+09:00", "faults": "the lamp is dark"})
    vault.audit("ctl", "recording.start", subject="rec-0")
    bad = device.batch()
    # a value the database's own rules refuse, found only when the batch is written
    bad["recordings"] = [{"id": "rec-0", "record_class": "film", "started_wall_us": 1, "started_at": "2026-12-07"}]
    device.publish("log", bad)
    device.sent = 0
    device.publish("log", device.batch())  # the same entries again, as the uplink would send them
    device.publish("status", {"seq": 2, "at": "2026-12-07T10:00:05+09:00", "state": "idle", "faults": [],
                              "clock": {"synchronised": True}})
    size = device.sent
    wait_for(lambda: city.db.scalar("SELECT size FROM witness WHERE device = ?", (device_id,)) == size,
             what="the good batch witnessed")
    wait_for(lambda: '"seq": 2' in (city.db.scalar("SELECT status FROM devices WHERE id = ?", (device_id,)) or ""),
             what="the status after the refused ones")
    assert city.db.scalar("SELECT count(*) FROM device_log WHERE device = ?", (device_id,)) == size
    assert city.db.scalar("SELECT count(*) FROM recordings WHERE device = ?", (device_id,)) == 0
