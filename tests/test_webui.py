"""The web UI's virtual counter and API, through Flask's test client and a real recorder."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from firmware.control import ControlServer, socket_path
from firmware.recorder import State
from tests.helpers import wait_for
from webui import create_app
from webui.permissions import enforce, undeclared


@pytest.fixture
def server(recorder, data_dir):
    srv = ControlServer(socket_path(data_dir), recorder).start()
    yield srv
    srv.close()


@pytest.fixture
def app(data_dir):
    return create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_token(client) -> str:
    page = client.get("/counter").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_every_route_declares_who_may_use_it(app):
    assert undeclared(app) == []


def test_a_route_without_a_permission_stops_the_app_from_starting():
    app = Flask(__name__)
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret")
    with pytest.raises(RuntimeError, match="views without a permission: forgotten"):
        enforce(app)


def test_the_counter_page_is_japanese_first_and_switches_to_english(client):
    page = client.get("/counter").get_data(as_text=True)
    assert '<html lang="ja">' in page and "記録ボタン" in page and "録画中" in page
    response = client.get("/lang/en?next=/counter")
    assert response.status_code == 302 and response.headers["Location"] == "/counter"
    page = client.get("/counter").get_data(as_text=True)
    assert '<html lang="en">' in page and "Record button" in page


def test_the_language_switch_only_redirects_within_the_site(client):
    assert client.get("/lang/en?next=//evil.example/").headers["Location"] == "/"
    assert client.get("/lang/en?next=https://evil.example/").headers["Location"] == "/"


def test_pressing_the_virtual_button_drives_the_gpio_pin(server, client, hardware):
    token = csrf_token(client)
    response = client.post("/api/v1/simulator/press", headers={"X-CSRFToken": token})
    assert response.status_code == 200
    assert hardware.simulator.button_pin.state is False, "the button's pin is pulled low, like the real one"
    client.post("/api/v1/simulator/release", headers={"X-CSRFToken": token})
    wait_for(lambda: server.recorder.state == State.NOTICE, what="the notice")
    status = client.get("/api/v1/status").get_json()
    assert status["sign"]["lit"] is True and status["state"] in ("notice", "recording")


def test_posts_without_the_csrf_token_are_refused(server, client, hardware):
    response = client.post("/api/v1/simulator/press")
    assert response.status_code == 400
    response = client.post("/api/v1/simulator/press", headers={"X-CSRFToken": "forged"})
    assert response.status_code == 400
    assert hardware.simulator.button_pin.state is True, "the pin was not touched"


def test_the_simulator_does_not_exist_on_real_hardware(data_dir):
    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": False, "TESTING": True})
    client = app.test_client()
    token = csrf_token(client)
    assert client.post("/api/v1/simulator/press", headers={"X-CSRFToken": token}).status_code == 404
    page = client.get("/counter").get_data(as_text=True)
    assert "record-button" not in page


def test_status_without_a_recorder_is_503_and_says_why(client):
    response = client.get("/api/v1/status")
    assert response.status_code == 503
    assert "the recorder is not running" in response.get_json()["error"]


def test_pages_forbid_framing_and_inline_script(client):
    response = client.get("/counter")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "<script>" not in response.get_data(as_text=True)


def test_the_api_is_described_by_openapi(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/api/v1/status", "/api/v1/simulator/{action}"}


def test_every_word_on_the_counter_exists_in_both_languages():
    from firmware.hardware import Simulator
    from firmware.recorder import State
    from firmware.hardware import LightPattern
    from webui.i18n import MESSAGES

    needed = {f"sim.{a}" for a in Simulator.ACTIONS if a not in ("press", "release")}
    needed |= {f"state.{s.value}" for s in State} | {f"light.{p.value}" for p in LightPattern}
    missing = needed - set(MESSAGES)
    assert not missing
    assert all(ja and en for ja, en in MESSAGES.values())


@pytest.mark.parametrize("target", ["/%09/evil.example", "/%0a/evil.example", "/\\evil.example", "//evil.example",
                                    "https://evil.example/", "/%5cevil.example"])
def test_the_language_switch_never_leads_off_site(client, target):
    response = client.get(f"/lang/en?next={target}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_other_host_names_are_refused_against_dns_rebinding(client):
    assert client.get("/counter", headers={"Host": "attacker.example:8080"}).status_code == 400
    assert client.get("/counter", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    assert client.get("/counter", headers={"Host": "localhost"}).status_code == 200


def test_the_virtual_counter_is_off_unless_asked_for(data_dir):
    app = create_app({"KIROKU_DATA": str(data_dir), "TESTING": True})
    assert app.config["KIROKU_SIMULATED"] is False
