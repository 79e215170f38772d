"""The device's uplink to the city hub (docs/hub.md), against a real Mosquitto broker with TLS and
dynamic security, a simulated recorder with its control socket, and a subscriber standing in for
the hub: what happens at the counter reaches the hub within seconds; a dead uplink is shown
offline by its last will; a broker outage loses nothing and counts nothing twice; an account
publishes only under its own topics; a rewritten log is caught by the witness; and operators the
hub designates sign on at the counter while the hub and the broker are gone."""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import sqlite3
import ssl
import stat
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from domain.accounts import hash_password
from firmware.control import ControlClient, ControlError, ControlServer, socket_path
from firmware.uplink import BadMessage
from firmware.uplink import enroll as enroll_module
from firmware.uplink.files import Position, UplinkFolder
from firmware.uplink.messages import parse_operators
from firmware.uplink.outbox import AuditReader, SubtreeHashes
from firmware.vault import age, merkle
from firmware.vault.audit import verify_note
from firmware.vault.keys import KeyStore
from kiroku.engines import engine_root
from kiroku.engines import pki
from kiroku.engines.mosquitto import Mosquitto
from tests.helpers import record_segments, wait_for
from tests.uplink_helpers import (Dynsec, Hub, UplinkProcess, acknowledged, client, enroll_by_hand, log_size,
                                  rewrite_log, witness)
from tests.webui_helpers import csrf, first_run, post

DEVICE = "counter-1"  # the device tests.conftest.set_up makes
PLACE = "市民課窓口 1番"

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="Debian's mosquitto is not installed (tools/system-packages test installs it)")


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def broker():
    root = engine_root()
    b = Mosquitto(root / "broker").start()
    yield b
    b.kill()
    print("mosquitto.log:\n" + (root / "broker" / "mosquitto.log").read_text())  # shown when a test fails
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dynsec(broker):
    d = Dynsec(broker)
    yield d
    d.close()


@pytest.fixture
def hub(broker, dynsec):
    h = Hub(broker, dynsec.hub())
    yield h
    h.close()


@pytest.fixture
def settings(data_dir):
    (data_dir / "kiroku.toml").write_text(f'[device]\nid = "{DEVICE}"\nlocation = "{PLACE}"\n')


@pytest.fixture
def server(recorder, data_dir):
    srv = ControlServer(socket_path(data_dir), recorder).start()
    yield srv
    srv.close()


@pytest.fixture
def control(server, data_dir) -> ControlClient:
    return ControlClient(socket_path(data_dir))


@pytest.fixture
def uplinks(data_dir):
    started: list[UplinkProcess] = []

    def start(*extra: str) -> UplinkProcess:
        started.append(UplinkProcess(data_dir, *extra))
        return started[-1]

    yield start
    for up in started:
        up.close()


def online(hub: Hub) -> bool | None:
    return (hub.latest(DEVICE, "online") or {}).get("online")


def actions(hub: Hub) -> list[str]:
    return [e["action"] for _, e in sorted(hub.entries(DEVICE).items())]


def vkey(data_dir) -> str:
    return (data_dir / "keys" / "device.vkey").read_text().strip()


def incident(control: ControlClient, by: str = "sato", note: str = "", section: str = "市民課") -> None:
    """A clerk records, marks an incident, and stops."""
    control.request("start", by=by)
    wait_for(lambda: control.status()["state"] == "recording", what="recording")
    control.request("mark", by=by, note=note, section=section)
    control.request("stop", by=by)
    wait_for(lambda: control.status()["state"] == "idle", what="idle")


def all_sent(hub: Hub, data_dir) -> bool:
    size = log_size(data_dir)
    return acknowledged(data_dir) == size and set(hub.entries(DEVICE)) == set(range(size))


# -- what happens at the counter reaches the hub ------------------------------------------------

@needs_mosquitto
def test_a_start_a_mark_and_a_sign_fault_reach_the_hub_within_5_seconds(settings, control, dynsec, broker, hub,
                                                                        data_dir, uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    uplinks()
    hub.wait(lambda: online(hub) is True, 20, "the device online")
    status = hub.wait(lambda: hub.latest(DEVICE, "status"), 10, "a status")
    assert status["v"] == 1 and status["kind"] == "counter" and status["place"] == PLACE
    assert status["state"] == "idle" and status["recorder"]["answering"] and status["faults"] == []
    assert status["storage"]["capacity_bytes"] > 0 and status["storage"]["min_days"] == {"footage": 90}
    assert status["clock"]["synchronised"] in (True, False) and status["checkpoint"]["size"] >= 1

    def within_5_s(what: str, predicate):
        hub.wait(predicate, max(0.0, deadline - time.monotonic()), what)

    deadline = time.monotonic() + 5
    control.request("start", by="sato")
    within_5_s("the recording in the status", lambda: (hub.latest(DEVICE, "status") or {}).get("state") == "recording")
    within_5_s("recording.start in the log", lambda: "recording.start" in actions(hub))

    deadline = time.monotonic() + 5
    control.request("mark", by="sato", note="大声で威圧された", section="市民課")
    within_5_s("the mark in the log", lambda: "incident.mark" in actions(hub))
    batch = next(b for b in hub.of(DEVICE, "log") if any(e["action"] == "incident.mark" for e in b["entries"]))
    (recording,) = batch["recordings"]
    assert recording["section"] == "市民課" and recording["record_class"] == "footage"
    assert [(m["by"], m["note"], m["section"]) for m in recording["marks"]] == [("sato", "大声で威圧された", "市民課")]
    control.request("stop", by="sato")
    hub.wait(lambda: (hub.latest(DEVICE, "status") or {}).get("state") == "idle", 10, "idle again")

    control.request("sim", action="lamp_fail")
    deadline = time.monotonic() + 5
    control.request("start", by="sato")
    within_5_s("the sign's fault in the status", lambda: any(
        f["device"] == "sign" for f in (hub.latest(DEVICE, "status") or {}).get("faults", [])))
    within_5_s("the fault in the log", lambda: "fault" in actions(hub))
    assert hub.latest(DEVICE, "status")["state"] == "fault"
    assert all(ok for *_, ok in witness(hub.of(DEVICE, "log"), vkey(data_dir))), "every checkpoint follows the last"


@needs_mosquitto
def test_an_uplink_killed_is_shown_offline_at_once_and_its_successor_goes_on_from_its_state(
        settings, control, dynsec, broker, hub, data_dir, uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    first = uplinks()
    hub.wait(lambda: online(hub) is True, 20, "the device online")
    wait_for(lambda: all_sent(hub, data_dir), timeout=10, what="the log sent")
    incident(control)
    wait_for(lambda: all_sent(hub, data_dir), timeout=10, what="the incident sent")
    first.kill()
    killed = time.monotonic()
    hub.wait(lambda: online(hub) is False, 10, "the last will")
    assert time.monotonic() - killed < 5, "the broker saw the connection drop and said so"
    before = log_size(data_dir)
    assert acknowledged(data_dir) == before
    # Killed between the broker's acknowledgement and writing it down: state.json is a batch behind.
    ends = sorted({verify_note(b["checkpoint"], vkey(data_dir)).size for b in hub.of(DEVICE, "log")})
    behind = ends[-2]
    with AuditReader(data_dir) as reader:
        UplinkFolder(data_dir).save_position(Position(behind, reader.checkpoint(behind)))

    incident(control)  # the device goes on while its uplink is dead
    assert log_size(data_dir) >= before + 3

    uplinks()
    hub.wait(lambda: online(hub) is True, 20, "the device online again")
    wait_for(lambda: all_sent(hub, data_dir), timeout=10, what="the entries written meanwhile")
    arrived = [e["seq"] for b in hub.of(DEVICE, "log") for e in b["entries"]]
    assert arrived.count(behind) == 2 and sorted(hub.entries(DEVICE)) == list(range(log_size(data_dir))), \
        "sent again from where state.json said; the hub keeps each entry once"
    assert all(ok for *_, ok in witness(hub.of(DEVICE, "log"), vkey(data_dir)))


@needs_mosquitto
@pytest.mark.slow
def test_a_broker_outage_loses_nothing_and_counts_nothing_twice(settings, control, dynsec, broker, hub, data_dir,
                                                                uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    up = uplinks()
    hub.wait(lambda: online(hub) is True, 20, "the device online")
    wait_for(lambda: all_sent(hub, data_dir), timeout=10, what="the log sent")
    sent_before = log_size(data_dir)

    broker.stop()  # for 15 s (the minute, shortened): the device records and marks meanwhile
    stopped = time.monotonic()
    control.request("start", by="sato")
    wait_for(lambda: control.status()["state"] == "recording", what="recording")
    control.request("mark", by="sato", note="一回目", section="市民課")
    wait_for(lambda: control.status()["recording"]["segments"] >= 2, timeout=15, what="two segments")
    control.request("stop", by="sato")
    wait_for(lambda: control.status()["state"] == "idle", what="idle")
    control.request("start", by="suzuki")
    control.request("mark", by="suzuki", note="二回目", section="税務課")
    time.sleep(max(0.0, 15 - (time.monotonic() - stopped)))
    control.request("stop", by="suzuki")
    wait_for(lambda: control.status()["state"] == "idle", what="idle")
    size = log_size(data_dir)
    assert size > sent_before + 6 and acknowledged(data_dir) == sent_before, "nothing acknowledged while away"
    assert "broker" in up.output() and "recording goes on" in up.output()

    broker.start()
    wait_for(lambda: all_sent(hub, data_dir), timeout=60, what="every entry at the hub")
    entries = hub.entries(DEVICE)
    assert sorted(entries) == list(range(size)), "none missing, each once in the hub's view"
    first_arrivals = []
    for batch in hub.of(DEVICE, "log"):
        first_arrivals += [e["seq"] for e in batch["entries"] if e["seq"] not in first_arrivals]
    assert first_arrivals == sorted(first_arrivals), "in order"
    assert [e["detail"].get("section") for e in entries.values() if e["action"] == "incident.mark"] == ["市民課", "税務課"]
    assert all(ok for *_, ok in witness(hub.of(DEVICE, "log"), vkey(data_dir)))
    hub.wait(lambda: (hub.latest(DEVICE, "status") or {}).get("state") == "idle", 10, "the status after the outage")


@needs_mosquitto
def test_an_uplink_started_before_its_broker_and_without_a_recorder_waits_and_says_so(
        settings, recovery, dynsec, broker, hub, data_dir, uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    broker.stop()
    up = uplinks()
    wait_for(lambda: "cannot reach the broker" in up.output(), timeout=15, what="the uplink saying why")
    assert up.proc.poll() is None
    broker.start()
    hub.wait(lambda: online(hub) is True, 30, "the device online once the broker is back")
    status = hub.wait(lambda: hub.latest(DEVICE, "status"), 10, "a status")
    assert status["state"] == "not_answering" and not status["recorder"]["answering"]
    assert status["faults"][0]["device"] == "recorder" and "not running" in status["faults"][0]["message"]
    hub.wait(lambda: "device.init" in actions(hub), 10, "the log, read from the index")
    lines = [line for line in up.output().splitlines() if "cannot reach the broker" in line]
    assert len(lines) == 1, "said once, not at every retry"
    assert up.stop() == 0
    hub.wait(lambda: online(hub) is False, 10, "offline after a clean stop")


# -- the account's limits ------------------------------------------------------------------------

@needs_mosquitto
def test_a_device_publishes_only_under_its_own_topics_and_a_refusal_does_not_advance_the_outbox(
        settings, control, dynsec, broker, hub, data_dir, uplinks):
    account = dynsec.device(DEVICE, topics=("online", "status"))  # not yet its log
    enroll_by_hand(data_dir, broker, DEVICE, account, place=PLACE)
    up = uplinks("--retry-refused", "1")
    hub.wait(lambda: online(hub) is True, 20, "the device online")
    wait_for(lambda: up.output().count("refused audit entries") >= 1, timeout=15, what="the refusal said")
    retries_seen = time.monotonic()
    wait_for(lambda: time.monotonic() - retries_seen > 2.5, what="a few retries")
    assert acknowledged(data_dir) == 0, "a refused batch is not acknowledged"
    assert hub.of(DEVICE, "log") == []
    assert hub.latest(DEVICE, "status")["state"] == "idle", "what it may publish still arrives"
    assert up.output().count("refused audit entries") == 1, "said once"

    # The same account, by hand: another device's topics and the hub's are refused.
    raw, acks = client(broker, *account, "intruder"), {}
    raw.on_publish = lambda _c, _u, mid, rc, _p: acks.__setitem__(mid, rc)
    raw.connect("127.0.0.1", broker.port)
    raw.loop_start()
    try:
        wait_for(raw.is_connected, what="connected")
        mids = [raw.publish(t, b"{}", qos=1).mid for t in ("kiroku/v1/d/counter-2/log",
                                                          f"kiroku/v1/h/{DEVICE}/operators")]
        wait_for(lambda: all(m in acks for m in mids), what="the broker's answers")
        assert [acks[m].value for m in mids] == [135, 135], "not authorised"
    finally:
        raw.loop_stop()
        raw.disconnect()

    dynsec.allow(DEVICE, "log")  # the hub fixes the account: nothing was lost
    wait_for(lambda: all_sent(hub, data_dir), timeout=15, what="the log sent after all")
    assert all(ok for *_, ok in witness(hub.of(DEVICE, "log"), vkey(data_dir)))


# -- the witness ------------------------------------------------------------------------------------

@needs_mosquitto
def test_a_log_rewritten_with_the_device_key_sends_a_proof_the_hub_cannot_verify(
        settings, control, vault, dynsec, broker, hub, data_dir, uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    incident(control)
    up = uplinks()
    wait_for(lambda: log_size(data_dir) >= 4 and all_sent(hub, data_dir), timeout=20, what="the log sent")
    held = hub.of(DEVICE, "log")[-1]["checkpoint"]
    size = verify_note(held, vkey(data_dir)).size

    mark = next(seq for seq, e in hub.entries(DEVICE).items() if e["action"] == "incident.mark")
    rewrite_log(data_dir, mark, actor="nobody")  # the mark was never made by sato
    assert vault.audit_log.verify(vault.db)["entries"] == size, "on its own, the rewritten log verifies"

    control.request("audit", by="yamada", action="audit.view", subject="after")
    batch = hub.wait(lambda: next((b for b in hub.of(DEVICE, "log")
                                   if verify_note(b["checkpoint"], vkey(data_dir)).size == size + 1), None),
                     10, "the next batch")
    new = verify_note(batch["checkpoint"], vkey(data_dir))  # signed by the device key: only the proof tells
    old = verify_note(held, vkey(data_dir))
    proof = [base64.b64decode(h) for h in batch["proof"]["hashes"]]
    assert batch["proof"]["old_size"] == size
    assert not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    assert witness(hub.of(DEVICE, "log"), vkey(data_dir))[-1] == (size, size + 1, False)
    wait_for(lambda: "no longer extends the checkpoint the hub holds" in up.output(), what="the uplink saying so")


@needs_mosquitto
def test_a_log_cut_short_with_nothing_new_written_is_caught_by_the_checkpoint_sent_again(
        settings, control, dynsec, broker, hub, data_dir, uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    incident(control)
    up = uplinks("--checkpoint-every", "1")  # 30 s on a device
    wait_for(lambda: all_sent(hub, data_dir), timeout=20, what="the log sent")
    size = log_size(data_dir)
    hub.wait(lambda: any(not b["entries"] for b in hub.of(DEVICE, "log")), 10, "the checkpoint sent again")
    assert all(ok for *_, ok in witness(hub.of(DEVICE, "log"), vkey(data_dir))), "the same checkpoint: nothing to flag"

    with closing(sqlite3.connect(data_dir / "kiroku.db", isolation_level=None)) as conn:  # the mark's entries go
        tree = merkle.CompactRange()
        for (leaf,) in conn.execute("SELECT leaf_hash FROM audit WHERE seq < ? ORDER BY seq", (size - 2,)):
            tree.append(leaf)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM audit WHERE seq >= ?", (size - 2,))
        conn.execute("UPDATE audit_state SET size = ?, stack = ?", (tree.size, tree.to_bytes()))
        conn.execute("COMMIT")
    hub.wait(lambda: witness(hub.of(DEVICE, "log"), vkey(data_dir))[-1] == (size, size - 2, False), 10,
             "the shorter log flagged")
    wait_for(lambda: "cut short on this device" in up.output(), what="the uplink saying so")


# -- what the hub sends ------------------------------------------------------------------------------

@needs_mosquitto
def test_operators_designated_at_the_hub_sign_on_at_the_counter_with_the_broker_and_hub_gone(
        settings, control, vault, dynsec, broker, hub, data_dir, uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    up = uplinks()
    hub.wait(lambda: online(hub) is True, 20, "the device online")
    password = "tanaka's city password"
    hub.publish(f"kiroku/v1/h/{DEVICE}/operators", {"v": 1, "rev": 1, "operators": [
        {"username": "tanaka", "display_name": "田中 一郎", "section": "市民課",
         "password_hash": hash_password(password)}]})
    cached = data_dir / "uplink" / "operators.json"
    wait_for(lambda: cached.exists() and "tanaka" in cached.read_text(), what="the list kept on the device")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o640, "the web UI reads it; nobody else"
    hub.close()
    assert up.stop() == 0
    broker.stop()

    from webui import create_app

    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                      "KIROKU_SCRYPT_WORK_FACTOR": 10, "KIROKU_DEVICE": DEVICE})
    counter = app.test_client()
    counter.get("/login")
    response = post(counter, "/login", {"username": "tanaka", "password": password})
    assert response.status_code == 302 and response.headers["Location"] == "/console"
    response = counter.post("/console/duty", data={"on": "yes", "csrf_token": csrf(counter, "/console")})
    assert response.status_code == 302
    assert "田中 一郎" in counter.get("/console").get_data(as_text=True)
    log = [(e["actor"], e["action"], e["subject"]) for e in reversed(vault.audit_log.entries(vault.db))]
    assert ("hub", "user.add", "tanaka") in log and ("hub", "operator.designate", "tanaka") in log
    assert log.index(("hub", "operator.designate", "tanaka")) < log.index(("tanaka", "duty.sign_on", DEVICE))


@needs_mosquitto
def test_the_managers_keys_from_the_hub_seal_new_day_keys_and_the_change_is_logged(
        settings, control, recorder, hardware, vault, dynsec, broker, hub, data_dir, uplinks):
    enroll_by_hand(data_dir, broker, DEVICE, dynsec.device(DEVICE), place=PLACE)
    uplinks()
    hub.wait(lambda: online(hub) is True, 20, "the device online")
    kato = age.X25519Identity.generate()
    hub.publish(f"kiroku/v1/h/{DEVICE}/managers",
                {"v": 1, "rev": 4, "managers": [{"name": "kato", "recipient": str(kato.recipient)}]})
    wait_for(lambda: [n for n, _ in KeyStore(data_dir).hub_recipients()] == ["kato"], what="the key at the recorder")
    (entry,) = [e for e in vault.audit_log.entries(vault.db) if e["action"] == "keys.recipients"]
    assert entry["actor"] == "hub" and entry["detail"]["added"] == ["kato"] and entry["detail"]["rev"] == 4
    hub.wait(lambda: "keys.recipients" in actions(hub), 10, "the change in the log the hub holds")

    record_segments(recorder, hardware.simulator)
    segment = vault.segments(vault.recordings()[0]["id"])[0]
    assert vault.open_segment_plaintext(segment, kato), "the city's manager opens a day key made since"
    # The same list again changes nothing and logs nothing.
    assert control.request("keys.recipients", by="hub", rev=4,
                           managers=[{"name": "kato", "recipient": str(kato.recipient)}])["changed"] is False
    assert [e["action"] for e in vault.audit_log.entries(vault.db)].count("keys.recipients") == 1
    refused = pytest.raises(ControlError, control.request, "keys.recipients", by="hub", rev=5,
                            managers=[{"name": "kato", "recipient": "age1notakey"}])
    assert "kato" in str(refused.value)


def test_the_hubs_list_is_brought_into_web_db_each_change_logged_and_managers_left_alone(server, vault, data_dir):
    from webui import create_app, hubsync

    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                      "KIROKU_SCRYPT_WORK_FACTOR": 10, "KIROKU_DEVICE": DEVICE, "KIROKU_HUB_SYNC_EVERY": 3600})
    first_run(app.test_client())  # yamada, a manager of this device
    folder = UplinkFolder(data_dir)
    operator = {"display_name": "田中 一郎", "section": "市民課", "password_hash": hash_password("a city password 1")}
    folder.cache("operators", parse_operators({"v": 1, "rev": 1, "operators": [
        {"username": "tanaka", **operator}, {"username": "yamada", **operator}]}))
    assert hubsync.sync(app) == 2  # tanaka added and designated; yamada, a manager here, left alone
    assert hubsync.sync(app) is None, "the same list is not applied twice"

    def can_sign_on(username: str, password: str) -> bool:
        c = app.test_client()
        c.get("/login")
        return post(c, "/login", {"username": username, "password": password}).headers.get("Location") == "/console"

    assert can_sign_on("tanaka", "a city password 1")
    assert not can_sign_on("yamada", "a city password 1"), "a manager's account is not the hub's to change"
    folder.cache("operators", parse_operators({"v": 1, "rev": 2, "operators": []}))
    assert hubsync.sync(app) == 1
    assert not can_sign_on("tanaka", "a city password 1"), "no longer designated: disabled"
    log = [(e["actor"], e["action"], e["subject"]) for e in reversed(vault.audit_log.entries(vault.db))]
    assert [a for a in log if a[0] == "hub"] == [("hub", "section.add", "市民課"), ("hub", "user.add", "tanaka"),
                                                 ("hub", "operator.designate", "tanaka"),
                                                 ("hub", "operator.revoke", "tanaka"), ("hub", "user.disable", "tanaka")]
    with pytest.raises(Exception, match="Argon2id"):
        parse_operators({"v": 1, "rev": 3, "operators": [{"username": "x", "display_name": "x",
                                                          "password_hash": "plain text"}]})


def test_the_hubs_actions_on_this_devices_recordings_go_into_its_log_once_each_in_order(server, vault, data_dir):
    from firmware.uplink.messages import parse_notices
    from webui import create_app, hubsync

    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                      "KIROKU_SCRYPT_WORK_FACTOR": 10, "KIROKU_DEVICE": DEVICE, "KIROKU_HUB_SYNC_EVERY": 3600})
    folder = UplinkFolder(data_dir)
    filed = {"seq": 7, "at": "2026-12-07T10:00:00.000+09:00", "actor": "suzuki", "action": "request.file",
             "subject": "2026-0001", "purpose": "trouble", "detail": {"recordings": [f"{DEVICE}/20261207-0930"]}}
    played = {**filed, "seq": 9, "action": "view.play", "detail": {"at": "2026-12-07T09:30:00+09:00"}}
    folder.cache("notices", parse_notices({"v": 1, "rev": 1, "notices": [filed]}))
    assert hubsync.record_notices(app) == 1
    # The hub sends its list again, longer (the first not yet witnessed back): only what is new is written.
    folder.cache("notices", parse_notices({"v": 1, "rev": 2, "notices": [filed, played]}))
    assert hubsync.record_notices(app) == 1
    assert hubsync.record_notices(app) is None
    noted = [e for e in reversed(vault.audit_log.entries(vault.db)) if e["action"] == "hub.action"]
    assert [(e["actor"], e["subject"], e["purpose"], e["detail"]["action"], e["detail"]["actor"],
             e["detail"]["hub_seq"]) for e in noted] == [
        ("hub", "2026-0001", "trouble", "request.file", "suzuki", 7), ("hub", "2026-0001", "trouble", "view.play",
                                                                       "suzuki", 9)]
    assert noted[0]["detail"]["detail"] == filed["detail"], "the hub's entry, as the hub logged it"
    for bad in ({**filed, "seq": 6}, {**filed, "action": "rm -rf /"}, {**filed, "detail": {"x": "y" * 7000}}):
        with pytest.raises(BadMessage):  # out of order, not an action, too long: the list is refused whole
            parse_notices({"v": 1, "rev": 3, "notices": [filed, bad]})


# -- enrollment --------------------------------------------------------------------------------------

class FakeHub(http.server.ThreadingHTTPServer):
    """``POST /api/v1/enroll`` as docs/hub.md defines it, over HTTPS with the city's CA."""

    def __init__(self, folder: Path, answer: dict):
        self.requests: list[dict] = []
        self.answer = answer
        super().__init__(("127.0.0.1", 0), _EnrollHandler)
        ca = pki.make_ca(folder / "ca")
        cert, key = pki.server_certificate(*ca, folder, ["127.0.0.1"], stem="hub")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.ca = ca[0]
        self.url = f"https://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _EnrollHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "content_type": self.headers["Content-Type"], "body": body})
        if body.get("code") == "K7Q2-9XWM-4TPA":
            status, answer = 201, self.server.answer
        elif body.get("device") == "taken":
            status, answer = 409, {"error": "a device counter-1 is enrolled", "code": "enroll.device_taken"}
        else:
            status, answer = 403, {"error": "wrong, used or expired code", "code": "enroll.code_refused"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_hub(tmp_path):
    kato = age.X25519Identity.generate()
    folder = tmp_path / "hub"
    folder.mkdir()
    broker_ca = pki.make_ca(folder / "broker-ca")[0].read_text()
    answer = {"v": 1, "device": DEVICE, "place": PLACE,
              "broker": {"host": "hub.city.example", "port": 8883, "username": "device-counter-1",
                         "password": "s3cret-broker-password", "client_id": "device-counter-1", "ca_pem": broker_ca},
              "managers": {"v": 1, "rev": 1, "managers": [{"name": "kato", "recipient": str(kato.recipient)}]}}
    hub = FakeHub(folder, answer)
    yield hub
    hub.shutdown()
    hub.server_close()


def test_enrollment_keeps_what_the_hub_answered_privately_and_logs_it(settings, control, vault, data_dir, fake_hub,
                                                                      capsys):
    code = enroll_module.main(["--data", str(data_dir), "--hub", fake_hub.url, "--code", "K7Q2-9XWM-4TPA",
                               "--ca", str(fake_hub.ca)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert len(out.out.strip().splitlines()) == 1 and "joined" in out.out and "s3cret" not in out.out
    (request,) = fake_hub.requests
    assert request["path"] == "/api/v1/enroll" and request["content_type"] == "application/json"
    assert request["body"] == {"v": 1, "code": "K7Q2-9XWM-4TPA", "device": DEVICE, "kind": "counter", "place": PLACE,
                               "vkey": vkey(data_dir), "software": request["body"]["software"]}
    folder = data_dir / "uplink"
    for name in ("hub.json", "ca.pem"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    enrollment = UplinkFolder(data_dir).enrollment()
    assert (enrollment.host, enrollment.port, enrollment.username) == ("hub.city.example", 8883, "device-counter-1")
    assert "s3cret" not in repr(enrollment)
    assert acknowledged(data_dir) == 0
    log = {e["action"]: e for e in vault.audit_log.entries(vault.db)}
    assert log["hub.enroll"]["subject"] == fake_hub.url and log["hub.enroll"]["detail"]["account"] == "device-counter-1"
    assert "s3cret" not in json.dumps(log["hub.enroll"])
    assert log["keys.recipients"]["detail"]["added"] == ["kato"]

    again = enroll_module.main(["--data", str(data_dir), "--hub", fake_hub.url, "--code", "K7Q2-9XWM-4TPA",
                                "--ca", str(fake_hub.ca)])
    assert again == 2 and "already enrolled" in capsys.readouterr().err
    assert len(fake_hub.requests) == 1


def test_enrollment_refusals_say_what_to_do_and_keep_nothing(settings, recovery, data_dir, fake_hub, tmp_path,
                                                             capsys, recorder):
    def enroll(*args: str) -> tuple[int, str]:
        code = enroll_module.main(["--data", str(data_dir), *args])
        return code, capsys.readouterr().err

    code, err = enroll("--hub", fake_hub.url, "--code", "K7Q2-9XWM-4TPA", "--ca", str(fake_hub.ca))
    assert code == 2 and "recorder is not running" in err and fake_hub.requests == [], "nothing unlogged"
    srv = ControlServer(socket_path(data_dir), recorder).start()
    try:
        code, err = enroll("--hub", fake_hub.url, "--code", "WRONG-CODE", "--ca", str(fake_hub.ca))
        assert code == 1 and "ask the manager for a new one" in err
        code, err = enroll("--hub", fake_hub.url, "--code", "K7Q2-9XWM-4TPA")
        assert code == 1 and "does not verify" in err and "--ca" in err
        code, err = enroll("--hub", "http://192.0.2.10", "--code", "K7Q2-9XWM-4TPA")
        assert code == 2 and "plain HTTP only" in err
    finally:
        srv.close()
    assert not (data_dir / "uplink" / "hub.json").exists()
    assert len(fake_hub.requests) == 1  # only the wrong code reached the hub (the other failed before or in TLS)


# -- the process and its parts ------------------------------------------------------------------------

def test_a_device_not_enrolled_has_nothing_to_do(data_dir, capsys):
    from firmware.uplink import main

    assert main(["--data", str(data_dir)]) == 0
    assert "not enrolled" in capsys.readouterr().out


def test_proofs_from_remembered_subtrees_are_rfc_6962s():
    leaves = [merkle.leaf_hash(str(i).encode()) for i in range(1500)]
    tree = SubtreeHashes(lambda a, b: leaves[a:b])
    for old, new in [(1, 2), (255, 256), (256, 257), (300, 1024), (1000, 1500), (1499, 1500), (7, 1500)]:
        assert tree.root(0, new) == merkle.root(leaves[:new])
        proof = tree.consistency(old, new)
        assert proof == merkle.consistency_proof(old, leaves[:new])
        assert merkle.verify_consistency(old, new, merkle.root(leaves[:old]), merkle.root(leaves[:new]), proof)
