"""The hub as its manager uses it, on the real engines: the first manager made at the server,
a device enrolled with a one-time code (its broker account works, and only under its own
topics), an operator designated for it reaching the device on its retained topic, the
dashboard following what the device publishes, and a removed device cut off at once."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_hub_core import wait_for
from tests.webui_helpers import PASSWORDS, csrf, post

pytestmark = pytest.mark.hub


def hub_config(folder: Path, mosquitto):
    from hub.config import BrokerSection, HubConfig, HubSection, WebSection

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broker-admin").write_text(mosquitto.admin[1])
    (folder / "broker-hub").write_text(secrets.token_urlsafe(16))
    return HubConfig(hub=HubSection(folder=str(folder / "hub")),
                     broker=BrokerSection(host="127.0.0.1", port=mosquitto.port, ca=str(mosquitto.ca),
                                          admin=mosquitto.admin[0], admin_password_file=str(folder / "broker-admin"),
                                          hub_password_file=str(folder / "broker-hub")),
                     web=replace(WebSection(), https=False))


@pytest.fixture
def hub(tmp_path, hub_dsn, mosquitto):
    from hub import service, setup
    from hub.web import create_app

    config = hub_config(tmp_path / "city", mosquitto)
    setup.add_manager(hub_dsn, config.folder, username="yamada", display_name="山田 太郎", section="資産経営課",
                      password=PASSWORDS["yamada"], work_factor=10)
    app = create_app(config, {"TESTING": True, "KIROKU_SCRYPT_WORK_FACTOR": 10}, dsn=hub_dsn)
    consumer, pusher = service.start(app, client_id=f"kiroku-hub-{secrets.token_hex(4)}")
    yield app
    service.stop(consumer, pusher)
    app.extensions["kiroku"].close()


def login(client, username: str = "yamada"):
    response = post(client, "/login", {"username": username, "password": PASSWORDS[username]})
    assert response.status_code == 302, response.get_data(as_text=True)


def enroll(client, device: str, place: str, vkey: str) -> dict:
    page = post(client, "/hub/enroll", {"device": device, "kind": "counter", "place": place}, token_from="/hub/enroll")
    assert page.status_code == 201, page.get_data(as_text=True)
    code = re.search(r'id="enrollment-code">([A-Z0-9-]+)<', page.get_data(as_text=True)).group(1)
    device_client = client.application.test_client()  # the device: no session, no cookie
    asked = {"v": 1, "code": code, "device": device, "kind": "counter", "place": place, "vkey": vkey,
             "software": "test"}
    wrong = device_client.post("/api/v1/enroll", json={**asked, "code": "AAAA-BBBB-CCCC"})
    assert wrong.status_code == 403 and wrong.get_json()["code"] == "enroll.code_refused"
    # the verifier key must name this device's own log
    other = device_client.post("/api/v1/enroll", json={**asked, "vkey": _vkey_for("counter-other")})
    assert other.status_code == 400 and other.get_json()["code"] == "enroll.bad_request"
    answer = device_client.post("/api/v1/enroll", json=asked)
    assert answer.status_code == 201, answer.get_json()
    again = device_client.post("/api/v1/enroll", json=asked)
    assert again.status_code == 403 and again.get_json()["code"] == "enroll.code_refused", "a code works once"
    return answer.get_json()


class DeviceClient:
    """The device's side of the broker, with what enrollment gave it."""

    def __init__(self, answer: dict, tmp: Path):
        from hub import broker

        ca = tmp / f"ca-{secrets.token_hex(3)}.pem"
        ca.write_text(answer["broker"]["ca_pem"])
        b = answer["broker"]
        self.device = answer["device"]
        self.messages: dict[str, dict] = {}
        self.events: list[str] = []
        self.changed = threading.Condition()
        self.c = broker.client(b["client_id"], b["username"], b["password"], str(ca))
        self.c.on_message = self._message
        self.c.on_connect = lambda c, u, f, reason, p: (self.events.append(f"connect:{reason}"),
                                                        c.subscribe(f"kiroku/v1/h/{self.device}/#", qos=1))
        self.c.on_disconnect = lambda c, u, f, reason, p: self.events.append(f"disconnect:{reason}")
        self.c.connect(b["host"], b["port"])
        self.c.loop_start()

    def _message(self, c, u, message):
        with self.changed:
            self.messages[message.topic.rsplit("/", 1)[1]] = json.loads(message.payload)
            self.changed.notify_all()

    def publish(self, topic: str, body: dict) -> int:
        info = self.c.publish(topic, json.dumps({"v": 1, **body}), qos=1)
        info.wait_for_publish(5)
        return info.rc

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_a_device_enrolled_designated_watched_and_removed(hub, tmp_path):
    manager = hub.test_client()
    login(manager)
    device = f"counter-{secrets.token_hex(3)}"
    vkey = _vkey_for(device)
    answer = enroll(manager, device, "市民課窓口 2番", vkey)
    assert answer["managers"]["managers"][0]["recipient"].startswith("age1"), "the managers' keys"
    dev = DeviceClient(answer, tmp_path)
    with dev.changed:
        assert dev.changed.wait_for(lambda: "managers" in dev.messages and "operators" in dev.messages, 10), \
            "the retained designations and keys reach the device"
    assert dev.messages["operators"]["operators"] == []

    # a person designated for it, at the hub: the device learns it (with what signing on needs)
    post(manager, "/hub/people/", {"username": "sato", "display_name": "佐藤 花子", "section_id": "",
                                   "password": PASSWORDS["sato"]},
         token_from="/hub/people/")
    people = manager.get("/api/v1/people").get_json()
    sato = next(p for p in people if p["username"] == "sato")
    response = post(manager, f"/hub/people/{sato['id']}/operator", {"device": device, "designate": "yes"},
                    token_from="/hub/people/")
    assert response.status_code == 302
    with dev.changed:
        assert dev.changed.wait_for(lambda: [o["username"] for o in dev.messages["operators"]["operators"]]
                                    == ["sato"], 10), "the designation reaches the device"
    assert dev.messages["operators"]["operators"][0]["password_hash"].startswith("$argon2id$")

    # what the device publishes is on the dashboard within seconds, by its place
    assert dev.publish(f"kiroku/v1/d/{device}/status", {
        "seq": 1, "at": "2026-12-07T10:00:00+09:00", "state": "recording", "sign": {"lit": True}, "faults": [],
        "clock": {"synchronised": True}, "storage": {"projected_days": {"footage": 200}, "min_days": {"footage": 90}},
    }) == 0
    wait_for(lambda: 'data-state="recording"' in manager.get("/hub/").get_data(as_text=True), what="the dashboard")
    listed = manager.get("/api/v1/devices").get_json()
    assert [(d["id"], d["name"], d["online"], d["state"]) for d in listed] == [(device, "市民課窓口 2番", True,
                                                                                "recording")]
    # its account may not publish as another device
    dev.publish("kiroku/v1/d/counter-zz/status", {"seq": 1, "state": "idle"})
    time.sleep(0.5)
    assert manager.get("/api/v1/devices").get_json()[0]["state"] == "recording"

    # removed: its credential stops working at once
    response = post(manager, f"/hub/devices/{device}/remove", {}, token_from=f"/hub/devices/{device}")
    assert response.status_code == 302
    wait_for(lambda: any(e.startswith("disconnect") for e in dev.events), what="the device disconnected")
    assert manager.get("/api/v1/devices").get_json() == []
    entries = manager.get("/api/v1/audit").get_json()
    assert entries["verification"]["ok"]
    assert {"device.enrollment_code", "device.enroll", "operator.designate", "device.remove"} <= \
        {e["action"] for e in entries["entries"]}
    dev.close()


def _vkey_for(device: str) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from firmware.vault.signed_note import make_vkey

    return make_vkey(f"kiroku/{device}", Ed25519PrivateKey.generate().public_key())


def test_the_hub_refuses_pages_to_the_wrong_people(hub):
    anonymous = hub.test_client()
    assert anonymous.get("/hub/").status_code == 302
    assert anonymous.get("/api/v1/devices").status_code == 401
    assert csrf(anonymous)


def test_an_account_left_at_the_broker_does_not_stop_its_device_enrolling(hub, tmp_path):
    """A hub that died between making a device's broker account and committing its enrollment (or
    restored its database from before it) leaves an account its register does not know: the
    device's next try with its code must still join the city, with an account that works."""
    manager = hub.test_client()
    login(manager)
    device = f"counter-{secrets.token_hex(3)}"
    hub.extensions["kiroku"].admin().add_device(device)  # the leftover
    answer = enroll(manager, device, "市民課窓口 5番", _vkey_for(device))
    dev = DeviceClient(answer, tmp_path)
    with dev.changed:
        assert dev.changed.wait_for(lambda: "operators" in dev.messages, 10), "the new account reads its topics"
    dev.close()


def test_guesses_at_the_hub_hold_back_the_guesser_not_the_manager_and_a_locked_key_is_shown(hub, hub_dsn):
    import psycopg

    from domain import accounts

    guesser = hub.test_client()
    answers = [post(guesser, "/login", {"username": "yamada", "password": f"guess number {i}"}).status_code
               for i in range(accounts.SESSION_FREE + 1)]
    assert answers == [401] * (accounts.SESSION_FREE + 1)
    held = post(guesser, "/login", {"username": "yamada", "password": PASSWORDS["yamada"]})
    assert held.status_code == 401 and "しばらく止めています" in held.get_data(as_text=True)
    manager = hub.test_client()
    login(manager)  # another browser: the account was not locked by the guesses
    # The manager's key, locked after wrong passphrases, is shown where the passphrase is typed.
    with psycopg.connect(hub_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO key_guard (name, failures, locked_until) VALUES ('yamada', 5, %s)",
                     (time.time() + 600,))
    page = manager.get("/hub/people/").get_data(as_text=True)
    assert 'id="key-locked"' in page and "までロックされています" in page
