"""The city end to end, on real processes: the hub (``kiroku hub``) on the real PostgreSQL and
Mosquitto, and devices as ``kiroku run`` — recorder, web UI and uplink — enrolled with one-time
codes the manager made at the hub, as ``kiroku city`` does it. What each test looks at is what
a person sees: the hub's dashboard and API as the manager, a device's web UI at the counter,
and the city's report; timings are the issue's own limits, measured from the event."""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path

import pytest

from firmware.vault.audit import verify_note
from kiroku.engines import engine_root
from kiroku.engines.mosquitto import Mosquitto
from tests.city_helpers import (Browserless, SmallCity, hub_database, postgres_of, text_of, wait_until,
                                within)
from tests.helpers import alive, descendants
from tests.uplink_helpers import rewrite_log

# whole cities (a PostgreSQL, a broker, a hub, devices) one at a time: side by side on a 2-core
# machine they would measure the machine, not the seconds a manager waits for an alert
pytestmark = [pytest.mark.hub, pytest.mark.slow, pytest.mark.xdist_group("city")]

SIGN_FAILED = "「録画中」表示灯の故障：録画できません"  # the dashboard's words for a sign alert
NOT_ANSWERING = "応答がありません"
LOG_REWRITTEN = "監査ログが前回のチェックポイントと一致しません（改ざんの疑い）"


@pytest.fixture
def own_broker():
    """A broker of the test's own, for the tests that stop it (the session's serves the others)."""
    root = engine_root(prefix="kiroku-test-broker-")
    broker = Mosquitto(root / "mqtt").start()
    yield broker
    broker.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def city(short_tmp, postgres, hub_dsn, mosquitto):
    with SmallCity(short_tmp / "city", postgres_of(postgres, hub_dsn), mosquitto) as c:
        yield c


@pytest.fixture
def city_of_its_own_broker(short_tmp, postgres, hub_dsn, own_broker):
    with SmallCity(short_tmp / "city", postgres_of(postgres, hub_dsn), own_broker) as c:
        yield c


def online_at_hub(manager, device, seconds: float = 30) -> dict:
    return within(seconds, lambda: manager.device(device.id).get("online") and manager.device(device.id),
                  f"{device.place} online at the hub")


def witnessed(manager, device) -> bool:
    """The hub holds the device's whole log, every checkpoint following the last."""
    cp = manager.device(device.id).get("checkpoint") or {}
    return cp.get("size") == device.log_size() and cp.get("consistent") is True


# -- the dashboard follows the counter --------------------------------------------------------------

def test_the_dashboard_follows_a_start_a_mark_and_a_sign_fault_within_5_seconds(city):
    counter = city.add("counter-1", "市民課窓口 1番")
    manager = city.manager()
    online_at_hub(manager, counter)
    c = counter.control

    def both_within_5_s(what, api, html):
        """Seen in the API and on the dashboard's page, 5 s at most after the counter did it."""
        deadline = time.monotonic() + 5
        wait_until(lambda: api(manager.device(counter.id)), deadline=deadline, what=f"{what} in /api/v1/devices")
        return wait_until(lambda: html(*manager.dashboard()), deadline=deadline, what=f"{what} on the dashboard")

    c.request("start", by="sato")
    both_within_5_s("the recording", lambda d: d["state"] == "recording",
                    lambda page, rows: rows[counter.id]["state"] == "recording"
                    and "市民課窓口 1番" in rows[counter.id]["text"] and "録画中" in rows[counter.id]["text"])

    c.request("mark", by="sato", note="大声で威圧された", section="市民課")
    both_within_5_s("the incident mark", lambda d: (d["recording"] or {}).get("marks") == 1,
                    lambda page, rows: "トラブル等のマーク：1" in rows[counter.id]["text"])
    c.request("stop", by="sato")
    within(10, lambda: manager.device(counter.id)["state"] == "idle", "idle again at the hub")

    c.request("sim", action="lamp_fail")  # the sign's lamp burns out: the next start cannot light it
    c.request("start", by="sato")
    page = both_within_5_s("the sign's fault", lambda d: any(f["device"] == "sign" for f in d["faults"]),
                           lambda page, rows: SIGN_FAILED in text_of(page, "alerts") and page)
    alerts = text_of(page, "alerts")
    assert "市民課窓口 1番" in alerts and counter.id not in alerts, "the alert names the place, not the id"
    assert manager.device(counter.id)["state"] == "fault"
    assert "表示灯" in manager.dashboard()[1][counter.id]["text"]

    # and the hub's copy of the counter's log has all three, as the counter wrote them
    within(10, lambda: {e["action"] for e in manager.api("GET", f"/audit/devices/{counter.id}")["entries"]}
           >= {"recording.start", "incident.mark", "fault"}, "the log at the hub")


# -- a device gone -----------------------------------------------------------------------------------

def test_a_device_killed_with_sigkill_is_shown_offline_within_30_seconds_and_back_when_it_returns(city):
    counter = city.add("counter-1", "税務課窓口 1番")
    manager = city.manager()
    online_at_hub(manager, counter)

    counter.kill()  # every one of its processes, at once: a power cut
    deadline = time.monotonic() + 30
    wait_until(lambda: manager.device(counter.id)["online"] is False, deadline=deadline,
               what="offline in /api/v1/devices within 30 s")
    page, rows = wait_until(lambda: (lambda p, r: r[counter.id]["online"] == "no" and (p, r))(*manager.dashboard()),
                            deadline=deadline, what="offline on the dashboard within 30 s")
    assert "未接続" in rows[counter.id]["text"]
    alerts = text_of(page, "alerts")
    assert "税務課窓口 1番" in alerts and NOT_ANSWERING in alerts

    counter.start()  # power back: the recorder recovers, the uplink reconnects
    online_at_hub(manager, counter, 60)
    within(10, lambda: NOT_ANSWERING not in text_of(manager.dashboard()[0], "alerts"), "the alert cleared")
    assert counter.status()["state"] == "idle"


# -- the broker away for a minute --------------------------------------------------------------------

def test_a_broker_stopped_for_a_minute_while_a_device_records_loses_nothing_and_counts_nothing_twice(
        city_of_its_own_broker, hub_dsn):
    city = city_of_its_own_broker
    counter = city.add("counter-1", "福祉課窓口 1番")
    manager = city.manager()
    online_at_hub(manager, counter)
    within(20, lambda: witnessed(manager, counter), "the log at the hub before the outage")
    before = counter.log_size()

    city.broker.stop()
    stopped = time.monotonic()
    c = counter.control
    first = counter.record("sato", mark="一回目", section="市民課", segments=2)
    c.request("start", by="suzuki")  # and a recording going on across the rest of the minute
    within(15, lambda: c.status()["state"] == "recording", "recording again")
    c.request("mark", by="suzuki", note="二回目", section="税務課")
    wait_until(lambda: time.monotonic() - stopped >= 60, deadline=stopped + 61, what="a minute", every=1)
    second = c.status()["recording"]
    assert second["segments"] >= 10, "the device recorded on through the whole minute"
    c.request("stop", by="suzuki")
    within(15, lambda: c.status()["state"] == "idle", "idle")
    size = counter.log_size()
    assert size > before + 6
    assert manager.device(counter.id)["checkpoint"]["size"] == before, "nothing reached the hub meanwhile"

    city.broker.start()  # the same broker, its sessions and retained messages kept on disk
    within(60, lambda: witnessed(manager, counter), "every entry at the hub once the broker is back")

    # Once each, and as the device wrote them: the hub's copy is the device's log, entry by entry.
    device_log = counter.audit_log()
    at_hub = manager.api("GET", f"/audit/devices/{counter.id}")
    assert [(e["seq"], e["action"], e["actor"], e["subject"], e["detail"]) for e in reversed(at_hub["entries"])] == \
        [(e["seq"], e["action"], e["actor"], e["subject"], e["detail"]) for e in device_log]
    assert all(c["consistent"] for c in at_hub["checkpoints"]), "the witness followed every checkpoint"
    assert not [a for a in manager.api("GET", "/alerts") if a["device"] == counter.id and a["kind"] == "log"]
    # In order: an entry never arrived before one written earlier.
    with hub_database(hub_dsn) as db:
        arrivals = [r["received_at"] for r in db.execute(
            "SELECT received_at FROM device_log WHERE device = %s ORDER BY seq", (counter.id,))]
    assert arrivals == sorted(arrivals) and len(arrivals) == size
    # Counted once: the city's report has the two recordings and two marks made during the outage.
    report = manager.api("GET", "/report")
    (figures,) = [f for f in report["devices"] if f["device"] == "福祉課窓口 1番"]
    assert figures["recordings"]["footage"] == 2 and figures["incidents"] == 2
    assert {first, second["id"]} == {e["subject"] for e in device_log if e["action"] == "recording.start"}


# -- people live at the hub ----------------------------------------------------------------------------

def test_a_designation_made_at_the_hub_reaches_the_device_and_outlives_the_hub_and_the_broker(
        city_of_its_own_broker):
    city = city_of_its_own_broker
    counter = city.add("counter-1", "市民課窓口 2番")
    manager = city.manager()
    online_at_hub(manager, counter)
    password = "tanaka's city password 7"
    tanaka = manager.api("POST", "/people", {"username": "tanaka", "display_name": "田中 一郎", "roles": [],
                                             "password": password})
    manager.api("POST", f"/people/{tanaka['id']}/operator", {"device": counter.id, "designate": True})
    register = {p["username"]: p for p in manager.api("GET", "/people")}
    assert register["tanaka"]["devices"] == [counter.id], "the register says so at the hub"

    def designated_on_the_device():
        return [(e["actor"], e["subject"], e["detail"].get("device")) for e in counter.audit_log()
                if e["action"] == "operator.designate"]

    within(30, lambda: ("hub", "tanaka", counter.id) in designated_on_the_device(),
           "the designation in the device's own log")

    city.stop_hub()
    city.broker.stop()  # the city's servers and its network gone: the counter carries on

    at_counter = Browserless(counter.url)
    status, where = at_counter.submit("/login", {"username": "tanaka", "password": password})
    assert (status, where) == (302, "/console"), "the operator signs on with their city password"
    status, where = at_counter.submit("/console/duty", {"on": "yes"}, page="/console")
    assert status == 302
    assert "田中 一郎" in text_of(at_counter.page("/console"), "on-duty"), "on duty at the counter"
    log = [(e["actor"], e["action"], e["subject"]) for e in counter.audit_log()]
    assert ("tanaka", "duty.sign_on", counter.id) in log
    assert log.index(("hub", "operator.designate", "tanaka")) < log.index(("tanaka", "duty.sign_on", counter.id))

    # Nobody else: a person the hub did not designate for this counter cannot sign on here.
    other = Browserless(counter.url)
    status, _ = other.submit("/login", {"username": city.city.manager, "password": city.city.manager_password()})
    assert status == 401


def test_a_new_counter_joins_the_city_from_its_first_run_page_all_or_nothing(city):
    """At a real counter nobody has a shell: whoever installs it types the set-up code shown on
    the device and the enrollment code the manager made at the hub into the first-run page."""
    counter = city.plan("counter-1", "市民課窓口 5番")
    city.city.prepare_device(counter.d, keys=False)  # out of the box: settings, no keys, nobody
    # As at a real counter, no keys until the page makes them: `kiroku run` on simulated hardware
    # would set a fresh folder up for a demo, unless a recovery key file is already beside it.
    (counter.data.parent / f"{counter.id}-recovery-key.txt").write_text("not this device's\n")
    counter.start()
    manager = city.manager()
    at_counter = Browserless(counter.url)
    assert "市の統合管理に参加する" in at_counter.page("/setup/")
    from webui import setup_code

    typed = {"code": setup_code.shown(setup_code.pending(counter.data)), "hub": city.url}

    status, page = at_counter.submit("/setup/join", {**typed, "enrollment_code": "WRONG-CODE-1234"}, page="/setup/")
    assert status == 400 and "統合管理が参加を受け付けませんでした" in page, page[:3000]
    assert not (counter.data / "keys" / "device.key").exists(), "nothing was kept: no keys made for nothing"
    assert not (counter.data / "uplink" / "hub.json").exists()

    code = manager.api("POST", "/enrollments", {"device": counter.id, "kind": "counter",
                                                "place": counter.place})["enrollment_code"]
    status, page = at_counter.submit("/setup/join", {**typed, "enrollment_code": code}, page="/setup/")
    assert status == 200, page[:3000]
    assert "AGE-SECRET-KEY-1" in page and city.url in page, "the recovery key, once, and the hub it joined"
    online_at_hub(manager, counter)
    actions = [(e["action"], e["actor"]) for e in counter.audit_log()]
    assert ("device.setup", "anonymous") in actions and ("hub.enroll", "kiroku enroll") in actions

    # Joined: the page no longer makes a manager; it says where people are designated.
    again = Browserless(counter.url)
    page = again.page("/setup/")
    assert "統合管理に参加済み" in page and city.url in page
    status, _ = again.submit("/setup/", {"code": typed["code"], "username": "intruder", "display_name": "x",
                                         "section": "x", "password": "a long password 123",
                                         "confirm": "a long password 123"})
    assert status == 409, "no manager of its own on a city's device"
    assert "intruder" not in [e["subject"] for e in counter.audit_log()]


# -- the witness ---------------------------------------------------------------------------------------

def test_a_log_rewritten_on_a_device_with_its_own_key_is_flagged_at_the_hub_within_a_minute(city):
    counter = city.add("counter-1", "保険年金課窓口 1番")
    manager = city.manager()
    online_at_hub(manager, counter)
    counter.record("sato", mark="職員への暴言", section="保険年金課")
    within(20, lambda: witnessed(manager, counter), "the log witnessed")
    (mark,) = [e for e in counter.audit_log() if e["action"] == "incident.mark"]

    # Someone with a shell and the device's key makes the mark never have been sato's: every
    # checkpoint from there on is hashed and signed again, so the log verifies on the device itself.
    rewrite_log(counter.data, mark["seq"], actor="nobody")
    rewritten = time.monotonic()
    assert counter.latest_checkpoint() != manager.api("GET", f"/audit/devices/{counter.id}")["checkpoints"][0]["note"]
    verify_note(counter.latest_checkpoint(), counter.vkey())  # signed by the device's own key

    deadline = rewritten + 60
    wait_until(lambda: any(a["device"] == counter.id and a["kind"] == "log" for a in manager.api("GET", "/alerts")),
               deadline=deadline, what="the witness's alert within a minute", every=0.5)
    alerts = text_of(manager.dashboard()[0], "alerts")
    assert "保険年金課窓口 1番" in alerts and LOG_REWRITTEN in alerts
    assert manager.device(counter.id)["checkpoint"]["consistent"] is False
    # The hub keeps what was published first: the mark is still sato's there.
    at_hub = {e["seq"]: e for e in manager.api("GET", f"/audit/devices/{counter.id}")["entries"]}
    assert at_hub[mark["seq"]]["actor"] == "sato"


# -- the annual report ----------------------------------------------------------------------------------

def test_the_city_report_counts_the_recordings_of_three_devices_by_place_with_their_witnessed_checkpoints(city):
    from domain.times import fiscal_year
    from firmware.documents import report as device_report

    places = {"counter-1": "市民課窓口 1番", "counter-2": "税務課窓口 1番", "counter-3": "福祉課窓口 1番"}
    devices = {name: city.add(name, place) for name, place in places.items()}
    made = {"counter-1": 1, "counter-2": 2, "counter-3": 3}
    for name, count in made.items():
        for n in range(count):
            devices[name].record("sato", mark="大声" if n == 0 else None)
    manager = city.manager()
    for d in devices.values():
        within(30, lambda d=d: witnessed(manager, d), f"{d.place}'s log witnessed")

    fy = fiscal_year()
    report = manager.api("GET", f"/report?year={fy}")
    by_place = {f["device"]: f for f in report["devices"]}
    assert set(by_place) == set(places.values()), "each device named by its place"
    for name, d in devices.items():
        figures = by_place[d.place]
        assert figures["recordings"]["footage"] == made[name] and figures["incidents"] == 1
        own = device_report.device_figures(d.data, fy, d.id)  # the device's own report, from its own index
        assert (own.recordings["footage"], own.incidents) == (made[name], 1), "the device counts the same"
        assert figures["checkpoint"] == d.latest_checkpoint(), "its latest checkpoint, witnessed"
        assert verify_note(figures["checkpoint"], d.vkey()).size == d.log_size()
    assert report["total"]["recordings"]["footage"] == 6 and report["total"]["incidents"] == 3

    # What the manager publishes: the page, and the same figures as CSV and PDF.
    page = manager.page(f"/hub/report/?year={fy}")
    for d in devices.values():
        assert d.place in page and d.latest_checkpoint().split("\n")[2] in page
    status, headers, data = manager.request("GET", f"/hub/report/{fy}.csv")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    header, counts = table[0], next(r for r in table if r[2] == "画像等 件数")
    assert [counts[header.index(p)] for p in places.values()] + [counts[header.index("合計")]] == ["1", "2", "3", "6"]
    status, headers, data = manager.request("GET", f"/hub/report/{fy}.pdf")
    assert status == 200 and data.startswith(b"%PDF") and headers["Content-Type"] == "application/pdf"
    logged = manager.api("GET", "/audit?action=report.download")["entries"]
    assert {e["detail"]["format"] for e in logged} == {"csv", "pdf"}, "each download in the hub's log"


# -- make city ----------------------------------------------------------------------------------------

class KirokuCity:
    """``kiroku city`` as a person runs it, in a process of its own; ``stop()`` is Ctrl-C."""

    def __init__(self, tmp_path, folder, port: int, *args: str):
        import subprocess
        import sys

        self.out_path = tmp_path / f"city-{port}-{time.monotonic_ns()}.out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "kiroku", "city", "--data", str(folder), "--port",
                                      str(port), *args], stdout=self.out, stderr=subprocess.STDOUT)
        self.processes: list[int] = []

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def ready(self, folder) -> dict:
        """city.json, once this run has written it."""
        import json

        manifest = folder / "city.json"
        mtime = manifest.stat().st_mtime if manifest.exists() else None
        within(120, lambda: (manifest.exists() and manifest.stat().st_mtime != mtime) or self.proc.poll() is not None,
               "city.json written")
        assert self.proc.poll() is None, self.output()
        return json.loads(manifest.read_text())

    def stop(self) -> int:
        import signal

        self.processes = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(90)
        self.out.close()
        return code


def test_kiroku_city_brings_up_counters_and_a_call_recorder_enrolled_stops_them_all_and_comes_back(
        tmp_path, short_tmp):
    """``kiroku city --counters 1 --calls`` as a person runs it (its own PostgreSQL and broker):
    both devices at the hub by place, a call on the simulated trunk in the city's report as a
    call, Ctrl-C stopping every process it started — and the same city again at the next start,
    its devices back online with what they had."""
    from kiroku.engines import free_port
    from tests.city_helpers import HubSession

    folder, port = short_tmp / "city", free_port()

    def manager_of(city: dict) -> HubSession:
        manager = HubSession(city["hub"]["url"])
        manager.log_in(city["hub"]["manager"], Path(city["hub"]["manager_password_file"]).read_text().strip())
        within(60, lambda: len(manager.devices()) == 2 and all(d["online"] for d in manager.devices().values()),
               "both devices online at the hub")
        return manager

    def calls_in_report(manager) -> int:
        figures = {f["device"]: f for f in manager.api("GET", "/report")["devices"]}
        return figures.get("代表電話（交換機）", {}).get("recordings", {}).get("call", 0)

    first = KirokuCity(tmp_path, folder, port, "--counters", "1", "--calls")
    try:
        city = first.ready(folder)
        assert [(d["id"], d["kind"], d["place"]) for d in city["devices"]] == [
            ("counter-1", "counter", "市民課窓口 1番"), ("pbx-1", "calls", "代表電話（交換機）")]
        manager = manager_of(city)
        pbx = within(15, lambda: manager.device("pbx-1")["state"] == "listening" and manager.device("pbx-1"),
                     "the call recorder listening")
        assert (pbx["kind"], pbx["sign"]) == ("calls", None), "a call recorder has no sign"
        page = manager.page("/hub/")
        assert "代表電話（交換機）" in page and "通話録音装置" in page and "待受中" in page
        within(90, lambda: calls_in_report(manager) >= 1, "a call on the simulated trunk in the city's report")
        assert len(descendants(first.proc.pid)) >= 10, "PostgreSQL, Mosquitto, the hub, each device's processes"
        calls = calls_in_report(manager)
    finally:
        code = first.stop()
    assert code == 0, first.output()
    assert not [p for p in first.processes if alive(p)], "Ctrl-C stopped everything kiroku city started"

    again = KirokuCity(tmp_path, folder, port, "--counters", "1", "--calls")
    try:
        manager = manager_of(again.ready(folder))
        assert calls_in_report(manager) >= calls, "what was recorded before is still there"
    finally:
        code = again.stop()
    assert code == 0, again.output()


def test_the_lines_a_call_recorder_records_are_set_at_the_hub_logged_at_both_ends_and_applied(city, hub_dsn):
    """Art. 3: the manager decides which telephones are recorded — at the hub, for the call
    recorder, which writes them into its settings, logs them and applies them to its next call."""
    pbx = city.add("pbx-1", "代表電話（交換機）", kind="calls")
    manager = city.manager()
    online_at_hub(manager, pbx)
    status, _, body = manager.request("POST", f"/api/v1/devices/{pbx.id}/lines",
                                      body={"recorded_lines": "", "excluded_lines": "not a number"})
    assert status == 400, body
    manager.api("POST", f"/devices/{pbx.id}/lines", {"recorded_lines": "", "excluded_lines": "0586-28-0999"})

    def applied():
        return [e["detail"] for e in pbx.audit_log() if e["action"] == "calls.lines" and e["actor"] == "hub"]

    entry, = within(30, applied, "the lines in the call recorder's own log")
    assert entry["excluded_lines"] == "0586-28-0999" and entry["rev"] == 1
    assert 'excluded_lines = "0586-28-0999"' in (pbx.data / "kiroku.toml").read_text()
    assert pbx.status()["kind"] == "call"
    with hub_database(hub_dsn) as db:
        logged = db.execute("SELECT actor, detail FROM audit WHERE action = 'device.lines'").fetchall()
    assert [r["actor"] for r in logged] == [city.city.manager]
    counter = city.add("counter-1", "市民課窓口 1番")
    online_at_hub(manager, counter)
    status, _, _ = manager.request("POST", f"/api/v1/devices/{counter.id}/lines",
                                   body={"recorded_lines": "", "excluded_lines": ""})
    assert status == 400, "a counter has no telephones"
