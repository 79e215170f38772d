"""A call recorder's admin page: the manager finds a call by its number however it is typed;
nobody else sees the numbers; every search by number is in the audit log."""

from __future__ import annotations

import pytest

from firmware.calls import synth
from firmware.calls.recorder import CallRecorder
from firmware.control import ControlServer, socket_path
from tests.calls_helpers import calls as calls_by_id, capture_of, replay, write_pcap
from tests.conftest import small_config
from tests.webui_helpers import login, logout, staff
from webui import create_app


class _Quiet:
    """A capture with nothing on it: the device's calls were recorded before the page opened."""

    def frames(self):
        return iter(())

    def close(self):
        pass


@pytest.fixture
def config():
    return small_config(calls={"segment_seconds": 2.0})


@pytest.fixture
def app(tmp_path, data_dir, vault, config):
    """A call recorder's device with its staff, then three calls off the trunk."""
    recorder = CallRecorder(vault, config, trunk="192.0.2.1", source=_Quiet())
    server = ControlServer(socket_path(data_dir), recorder).start()
    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                      "KIROKU_SCRYPT_WORK_FACTOR": 10})
    staff(app.test_client(), app)
    ext, city = synth.trunk_pair(0)
    scripts = [synth.Script("in@x", "inbound", ext, city, talk=2.0),
               synth.Script("out@x", "outbound", *synth.trunk_pair(7), start=1_800_000_100.0, talk=2.0),
               synth.Script("busy@x", "inbound", *synth.trunk_pair(3), start=1_800_000_200.0, outcome="busy",
                            anonymous=True)]
    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", capture_of(scripts)))
    app.recorder = recorder  # for the tests that give it a fault
    yield app
    server.close()


def _searches(vault) -> list[dict]:
    return [e["detail"] for e in reversed(vault.audit_log.entries(vault.db)) if e["action"] == "calls.search"]


def test_the_manager_finds_a_call_by_its_number_typed_any_way(app, vault):
    client = app.test_client()
    login(client, "yamada")
    page = client.get("/admin/calls/").get_data(as_text=True)
    assert page.count("<tr>") == 4  # the header and three calls
    assert "非通知" in page and "話中" in page
    for typed in ("0422-12-3456", "０４２２１２３４５６", "+81 422 123 456"):
        page = client.get("/admin/calls/", query_string={"number": typed}).get_data(as_text=True)
        assert page.count("<tr>") == 2, typed
        assert "0422123456" in page and "着信" in page and "応答" in page
    searches = _searches(vault)
    assert [s["number"] for s in searches] == ["", "422123456", "422123456", "422123456"]
    assert [s["found"] for s in searches] == [3, 1, 1, 1]


def test_the_api_filters_by_direction_and_date(app):
    client = app.test_client()
    login(client, "yamada")
    outbound = client.get("/api/v1/calls", query_string={"direction": "outbound"}).get_json()
    assert [r["call_id"] for r in outbound] == ["out@x"]
    assert outbound[0]["external_e164"] == "+81422123463" and outbound[0]["talk_s"] == pytest.approx(2.0, abs=0.05)
    assert client.get("/api/v1/calls", query_string={"from": "2030-01-01"}).get_json() == []
    refused = client.get("/api/v1/calls", query_string={"from": "yesterday"})
    assert refused.status_code == 400


def test_only_managers_see_the_numbers(app):
    client = app.test_client()
    for who in ("sato", "suzuki"):
        login(client, who)
        assert client.get("/admin/calls/").status_code == 403
        assert client.get("/api/v1/calls").status_code == 403
        logout(client)
    assert client.get("/api/v1/calls").status_code == 401


def test_the_dashboard_of_a_call_recorder_shows_its_state(app):
    client = app.test_client()
    login(client, "yamada")
    page = client.get("/admin/").get_data(as_text=True)
    assert "待受中" in page and "192.0.2.1:5060" in page  # listening on the trunk, not a sign at a counter
    # Its faults and warnings in words: a silent trunk may mean calls are not being recorded.
    app.recorder._fault("trunk_silent", "no SIP seen on the trunk 192.0.2.1:5060 for 3600 s in office hours")
    app.recorder.writer.errors.append("call in@x: could not be stored (disk full)")
    page = client.get("/admin/").get_data(as_text=True)
    assert "外線のSIPが届いていません" in page and "fault.call" not in page and "fault.device" not in page
    assert "could not be stored (disk full)" in page, "the writer's error is shown"


def test_a_call_is_listened_to_through_a_written_request_exactly_within_its_scope(app, vault):
    import re
    from datetime import datetime

    from tests.calls_helpers import RATE, peak_hz
    from tests.webui_helpers import PASSWORDS, post

    def local(us):
        return datetime.fromtimestamp(us / 1e6).strftime("%Y-%m-%dT%H:%M:%S")

    call = calls_by_id(vault)["in@x"]
    viewer, manager = app.test_client(), app.test_client()
    login(viewer, "suzuki")
    assert "通話記録" in viewer.get("/requests/new").get_data(as_text=True)  # calls are offered like footage
    r = post(viewer, "/requests/new", {"recording": [call["recording_id"]], "purpose": "trouble",
                                       "reason": "電話での不当要求の確認", "responsible_section": "市民課"},
             token_from="/requests/new")
    request_id = int(r.headers["Location"].rsplit("/", 1)[1])
    held = vault.db.execute("SELECT count(*) FROM holds WHERE recording_id = ? AND reason = 'request'"
                            " AND released_at IS NULL", (call["recording_id"],)).fetchone()[0]
    assert held == 1
    login(manager, "yamada")
    start = call["answered_wall_us"] + 500_000  # one second of a two-second call
    post(manager, f"/requests/{request_id}/decide",
         {"decision": "approved", "scope_recording": [call["recording_id"]], "scope_start": local(start),
          "scope_end": local(start + 1_000_000), "valid_hours": "2", "confirm_responsible": "yes",
          "confirm_written": "yes"},
         token_from=f"/requests/{request_id}")
    post(manager, f"/requests/{request_id}/unlock", {"password": PASSWORDS["yamada"]},
         token_from=f"/requests/{request_id}")
    viewing_url = re.search(r'id="watch" href="(/viewings/[^"]+)"',
                            viewer.get(f"/requests/{request_id}").get_data(as_text=True)).group(1)
    manifest = viewer.get(viewing_url + "/manifest.json").get_json()
    assert manifest["codecs"] == "mp4a.40.2"
    parts = [viewer.get(f"{viewing_url}/part/{p['n']}.mp4") for p in manifest["parts"]]
    assert all(p.status_code == 200 for p in parts)
    from firmware.calls.render import decode_stereo

    pcm = decode_stereo([p.data for p in parts])
    assert abs(pcm.shape[1] / RATE - 1.0) < 0.15  # the approved second, not the whole call
    assert abs(peak_hz(pcm[0]) - 440) < 10 and abs(peak_hz(pcm[1]) - 1000) < 10
    assert "view.play" in [e["action"] for e in vault.audit_log.entries(vault.db)]


def test_a_call_is_provided_to_a_third_party_as_a_verified_package(app, vault, tmp_path):
    from kiroku.cli import main
    from tests.helpers import wait_for
    from tests.webui_helpers import PASSWORDS, Api

    call = calls_by_id(vault)["out@x"]
    manager = Api(app.test_client())
    manager.login("yamada")
    created = manager.post("/api/v1/provisions", {"ground": "crime", "recipient": "北警察署", "reference": "北署第1号",
                                                  "recording": call["recording_id"]})
    assert created.status_code == 201, created.get_json()
    pid = created.get_json()["id"]
    blurred = manager.post(f"/api/v1/provisions/{pid}/export", {"password": PASSWORDS["yamada"], "blur_faces": True})
    assert blurred.status_code == 400 and blurred.get_json()["code"] == "export.sound_only"
    started = manager.post(f"/api/v1/provisions/{pid}/export", {"password": PASSWORDS["yamada"], "blur_faces": False})
    assert started.status_code == 202, started.get_json()
    job = started.get_json()["job_id"]
    url = f"/api/v1/provisions/{pid}/export/{job}"
    status = wait_for(lambda: (s := manager.get(url).get_json())["state"] != "running" and s, timeout=60,
                      what="the export", interval=0.2, progress=lambda: manager.get(url).get_json()["done"])
    assert status["state"] == "done", status
    package = tmp_path / "call.zip"
    package.write_bytes(manager.get(f"/api/v1/provisions/{pid}/export/{job}/package").data)
    assert main(["verify", str(package)]) == 0


def test_the_status_operators_see_holds_no_numbers(app):
    import json

    client = app.test_client()
    login(client, "sato")  # an operator
    status = client.get("/api/v1/status")
    assert status.status_code == 200
    text = json.dumps(status.get_json(), ensure_ascii=False)
    assert isinstance(status.get_json()["active_calls"], int)
    for number in ("0422", "422123", "0586", "+81", "@x"):
        assert number not in text, f"{number!r} reached an operator"


def test_the_storage_page_projects_what_this_device_records(app, vault, data_dir):
    """A call recorder's card is sized for a year of calls at the call bitrate, and warns about
    that; it has no footage to project. A counter shows calls only once it holds some."""
    client = app.test_client()
    login(client, "yamada")
    (data_dir / "kiroku.toml").write_text('[device]\nkind = "calls"\n')
    page = client.get("/admin/storage/").get_data(as_text=True)
    assert 'aria-label="call"' in page and 'aria-label="footage"' not in page
    api = client.get("/api/v1/storage").get_json()
    call = api["classes"]["call"]
    assert set(api["classes"]) == {"call"} and call["min_days"] == 365 and call["segments"] > 0
    (data_dir / "kiroku.toml").write_text('[device]\nkind = "counter"\n')
    page = client.get("/admin/storage/").get_data(as_text=True)
    assert 'aria-label="footage"' in page and 'aria-label="call"' in page, "the calls it holds are still shown"


def test_a_counter_without_calls_is_not_warned_about_calls(data_dir, vault, config):
    """The default device (a counter) that holds no calls: no call projection, no call warning."""
    server = ControlServer(socket_path(data_dir), CallRecorder(vault, config, trunk="192.0.2.1", source=_Quiet()))
    server.start()
    try:
        app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                          "KIROKU_SCRYPT_WORK_FACTOR": 10})
        client = app.test_client()
        staff(client, app)
        login(client, "yamada")
        page = client.get("/admin/storage/").get_data(as_text=True)
    finally:
        server.close()
    assert 'aria-label="footage"' in page and 'aria-label="call"' not in page


def test_a_section_head_finds_a_call_for_a_request_by_its_number_typed_any_way_but_is_not_shown_numbers(app, vault):
    calls = calls_by_id(vault)
    wanted, other = calls["in@x"]["recording_id"], calls["out@x"]["recording_id"]
    client = app.test_client()
    login(client, "suzuki")  # a section head: files requests, may not list the numbers (Art. 13)

    def offered(number: str, page: str = "/requests/new", form: str = "request-form") -> str:
        html = client.get(page, query_string={"number": number}).get_data(as_text=True)
        return html.split(f'id="{form}"', 1)[1]

    everything = offered("")
    assert wanted in everything and other in everything
    assert "着信" in everything and "発信" in everything, "a call says which way it went"
    assert "0422" not in everything and "3456" not in everything.replace(wanted, ""), "no number shown"
    for typed in ("0422-12-3456", "０４２２－１２－３４５６", "+81 422 12 3456", "(0422) 12-3456"):
        found = offered(typed)
        assert wanted in found and other not in found, typed
    assert wanted not in offered("3456") and other not in offered("0422"), \
        "a part of a number finds nothing for a section head: digit by digit it would reveal every number"
    assert wanted not in offered("ｎｏ digits") and other not in offered("no digits"), "nothing to look for"
    picker = [d for d in _searches(vault) if d.get("where") == "picker"]
    assert [d["number"] for d in picker] == ["422123456"] * 4, "each search is logged"
    assert all(d["found"] == 1 for d in picker)
    logout(client)

    login(client, "yamada")  # the manager sees whom a call was with, on the provision form too
    found = offered("0422123456", "/provisions/new", "provision-form")
    assert wanted in found and "0422123456" in found and other not in found


def test_the_manager_keeps_the_lines_recorded_on_the_settings_page_logged_and_in_the_notice(app, vault, data_dir):
    from tests.webui_helpers import post

    (data_dir / "kiroku.toml").write_text('[device]\nkind = "calls"\n')
    client = app.test_client()
    login(client, "yamada")
    page = client.get("/admin/settings/").get_data(as_text=True)
    assert 'name="calls.excluded_lines"' in page and 'name="calls.recorded_lines"' in page
    r = post(client, "/admin/settings/", {"calls.excluded_lines": "0586-28-9999"}, token_from="/admin/settings/")
    assert r.status_code in (200, 302), r.get_data(as_text=True)[:300]
    changed = [e for e in vault.audit_log.entries(vault.db) if e["action"] == "settings.change"]
    assert changed and changed[0]["detail"]["calls.excluded_lines"] == "0586-28-9999"
    assert app.recorder.tracker.lines.excluded == {"586289999"}, "the recorder applied it at once"
    assert "録音しません：0586-28-9999" in client.get("/admin/settings/notice").get_data(as_text=True)
