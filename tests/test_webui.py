"""The web UI through Flask's test client, with a real recorder behind its control socket."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask

from firmware.control import ControlServer, socket_path
from firmware.recorder import Recorder, State
from tests.helpers import record_segments, wait_for
from tests.webui_helpers import PASSWORDS, csrf, first_run, login, logout, post, setup_code, staff
from webui import create_app
from webui.permissions import PUBLIC, SIMULATED, enforce, undeclared


@pytest.fixture
def server(recorder, data_dir):
    srv = ControlServer(socket_path(data_dir), recorder).start()
    yield srv
    srv.close()


def make_app(data_dir, **extra):
    # KIROKU_RESERVE_MB: an upload needs room only for itself, whatever the test machine's disk
    return create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                       "KIROKU_SCRYPT_WORK_FACTOR": 10, "KIROKU_RESERVE_MB": 0, **extra})


@pytest.fixture
def app(data_dir):
    return make_app(data_dir)


@pytest.fixture
def client(app):
    return app.test_client()


def audit_actions(vault) -> list[str]:
    return [e["action"] for e in audit_entries(vault)]


def audit_entries(vault) -> list[dict]:
    """The device's audit log, oldest first."""
    return list(reversed(vault.audit_log.entries(vault.db)))


# -- deny by default --------------------------------------------------------------------------

def test_every_route_declares_who_may_use_it(app):
    assert undeclared(app) == []


def test_a_route_without_a_permission_stops_the_app_from_starting():
    app = Flask(__name__)
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret")
    with pytest.raises(RuntimeError, match="views without a permission: forgotten"):
        enforce(app)


def _urls(app):
    """Every route with its permission, filled with plausible arguments."""
    values = {"request_id": 1, "viewing_id": "abc", "user_id": 1, "n": 0, "action": "start", "code": "en",
              "provision_id": 1, "job_id": "abc", "name": "sign-a4.pdf", "disclosure_id": 1, "year": 2026, "kind": "pdf",
              "update_id": "0" * 32}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        levels = app.view_functions[rule.endpoint].kiroku_permission
        url = rule.rule
        for name in rule.arguments:
            url = url.replace(f"<{name}>", str(values[name])).replace(f"<int:{name}>", str(values[name]))
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url, levels


ROLE_USERS = {"manager": "yamada", "operator": "sato", "section_head": "suzuki"}


def test_every_non_public_route_refuses_anonymous_and_wrong_roles(server, app, client):
    staff(client, app)
    checked = 0
    for role, username in [(None, None), *ROLE_USERS.items()]:
        c = app.test_client()
        if username:
            login(c, username)
        token = csrf(c, "/account" if username else "/login")
        for _endpoint, method, url, levels in _urls(app):
            if PUBLIC in levels:
                continue
            allowed = role is not None and (role in levels or "login" in levels or
                                            (SIMULATED in levels and role in ("manager", "operator")))
            if allowed:
                continue
            response = c.open(url, method=method, data={"csrf_token": token}, headers={"X-CSRFToken": token})
            if role is None:
                if url.startswith("/api/"):
                    assert response.status_code == 401, f"{method} {url} let an anonymous caller in"
                else:
                    assert response.status_code == 302 and "/login" in response.headers["Location"], \
                        f"{method} {url} let an anonymous caller in ({response.status_code})"
            else:
                assert response.status_code == 403, f"{method} {url} let a {role} in ({response.status_code})"
            checked += 1
    assert checked > 60


def test_posts_without_the_csrf_token_are_refused(server, app, client):
    staff(client, app)
    login(client, "sato")
    assert client.post("/api/v1/simulator/press").status_code == 400
    assert client.post("/api/v1/simulator/press", headers={"X-CSRFToken": "forged"}).status_code == 400
    assert client.post("/console/duty", data={"on": "yes"}).status_code == 400
    token = csrf(client, "/console")
    assert client.post("/api/v1/simulator/press", headers={"X-CSRFToken": token}).status_code == 200


# -- first run --------------------------------------------------------------------------------

def test_before_set_up_every_page_leads_to_the_first_run_page(server, client):
    assert client.get("/").headers["Location"] == "/setup/"
    assert client.get("/admin/people").headers["Location"] == "/setup/"
    assert client.get("/login").headers["Location"] == "/setup/"
    assert client.get("/api/v1/status").status_code == 503


def test_the_first_run_page_refuses_weak_input_and_then_disappears(server, client):
    from domain.people import USERNAME

    code = setup_code(client)
    page = client.get("/setup/").get_data(as_text=True)
    # The browser checks a user name by the server's own rule, and says what that rule is.
    assert re.search(r'name="username"[^>]*pattern="([^"]+)"', page).group(1).replace("\\-", "-") == \
        USERNAME.pattern.replace("\\-", "-")
    assert "英小文字か数字で始め" in page
    bad = post(client, "/setup/", {"code": code, "username": "Yamada!", "display_name": "x", "section": "s",
                                   "password": "short", "confirm": "short"}, token_from="/setup/")
    assert bad.status_code == 400
    short = post(client, "/setup/", {"code": code, "username": "yamada", "display_name": "x", "section": "s",
                                     "password": "short", "confirm": "short"}, token_from="/setup/")
    assert short.status_code == 400 and "12" in short.get_data(as_text=True)
    first_run(client)
    assert client.get("/setup/").status_code == 404
    logout(client)
    assert client.get("/setup/").status_code == 404


def test_only_someone_shown_the_set_up_code_registers_the_first_manager(server, client, vault, data_dir,
                                                                          monkeypatch, capsys):
    """Anyone on the counter's network reaches the first-run page; only a person at the device
    sees the code it asks for (the console's greeting, `kiroku setup-code`)."""
    import domain.accounts
    from kiroku.cli import main

    monkeypatch.setattr(domain.accounts.time, "sleep", lambda s: None)
    page = client.get("/setup/").get_data(as_text=True)
    assert 'name="code"' in page and "設定用コード" in page
    assert main(["setup-code", "--data", str(data_dir)]) == 0
    shown = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}", shown), shown
    assert shown == setup_code(client), "the console and the web UI agree on one code"
    form = {"username": "intruder", "display_name": "x", "section": "s",
            "password": PASSWORDS["yamada"], "confirm": PASSWORDS["yamada"]}
    for guess in ("", "00000-00000", shown[:-1] + ("0" if shown[-1] != "0" else "1")):
        wrong = post(client, "/setup/", {**form, "code": guess}, token_from="/setup/")
        assert wrong.status_code == 403 and "設定用コードが違います" in wrong.get_data(as_text=True)
        assert client.get("/").headers["Location"] == "/setup/", "no one was registered"
    refused = [e for e in audit_entries(vault) if e["action"] == "setup.refused"]
    assert len(refused) == 3 and refused[-1]["detail"]["reason"] == "wrong set-up code"
    # typed as people type it: lower case, without the hyphen
    typed = shown.replace("-", "").lower()
    assert post(client, "/setup/", {**form, "username": "yamada", "code": typed},
                token_from="/setup/").status_code == 302
    assert not (data_dir / "web" / "setup-code").exists(), "nothing is left to guess"
    assert main(["setup-code", "--data", str(data_dir)]) == 1
    assert "has a manager already" in capsys.readouterr().err


def test_wrong_set_up_codes_from_one_address_are_refused_for_a_while(server, client, vault, monkeypatch):
    import domain.accounts

    waits = []
    monkeypatch.setattr(domain.accounts.time, "sleep", waits.append)
    form = {"username": "yamada", "display_name": "x", "section": "s",
            "password": PASSWORDS["yamada"], "confirm": PASSWORDS["yamada"]}
    for _ in range(domain.accounts.ADDRESS_LIMIT):
        assert post(client, "/setup/", {**form, "code": "00000-00000"}, token_from="/setup/").status_code == 403
    assert waits[:5] == [1, 2, 4, 8, 8], "answers slow down as wrong codes go on"
    right = post(client, "/setup/", {**form, "code": setup_code(client)}, token_from="/setup/")
    assert right.status_code == 403 and "最長30分間" in right.get_data(as_text=True), "even the right code, for now"
    assert client.get("/").headers["Location"] == "/setup/"
    entries = audit_entries(vault)
    assert [e["action"] for e in entries].count("setup.refused") == domain.accounts.ADDRESS_LIMIT
    assert entries[-1]["action"] == "setup.locked", "the lock is logged once; what it refuses then is not"
    # full-width, as typed with a Japanese input method on, from another computer: taken
    typed = setup_code(client).translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}).replace("－", "ー")
    other = post(client, "/setup/", {**form, "code": typed}, token_from="/setup/",
                 environ_base={"REMOTE_ADDR": "10.0.0.8"})
    assert other.status_code == 302, other.get_data(as_text=True)


@pytest.fixture
def fresh(tmp_path, hardware, config):
    """A device that `kiroku init` has not touched: the first-run page makes its keys."""
    from firmware.vault import Vault

    data = tmp_path / "fresh"
    vault = Vault.open(data, config)
    rec = Recorder(hardware, config, vault).start()
    srv = ControlServer(socket_path(data), rec).start()
    yield data, vault, rec
    srv.close()
    rec.close()
    vault.close()


def test_passwords_are_stored_as_argon2id_with_the_stated_cost(server, client, data_dir):
    """RFC 9106's low-memory profile on every argon2-cffi: the image's (Debian's 21.1) has other
    defaults than the one the tests install."""
    from webui import db

    first_run(client)
    conn = db.connect(data_dir)
    (stored,) = conn.execute("SELECT password_hash FROM users WHERE username = 'yamada'").fetchone()
    conn.close()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), stored.split("$")[:4]


def test_first_run_shows_the_recovery_key_once_and_it_opens_the_footage(fresh, hardware):
    from firmware.vault import age

    data, vault, rec = fresh
    app = make_app(data)
    client = app.test_client()
    assert first_run(client).headers["Location"] == "/setup/recovery"
    page = client.get("/setup/recovery").get_data(as_text=True)
    key = re.search(r"(AGE-SECRET-KEY-1[0-9A-Z]+)", page).group(1)
    assert "<svg" in page, "a QR code to print"
    confirm = post(client, "/setup/confirm", {"stored": "yes"}, token_from="/setup/recovery")
    assert confirm.headers["Location"] == "/admin/"
    assert client.get("/setup/recovery").status_code == 404, "shown once"
    assert not any(key.encode() in p.read_bytes() for p in data.rglob("*") if p.is_file()), \
        "the recovery key is kept on the device"
    record_segments(rec, hardware.simulator)
    info = vault.segments(vault.recordings()[0]["id"])[0]
    assert vault.open_segment_plaintext(info, age.X25519Identity.parse(key))[4:8] == b"ftyp"
    assert "device.setup" in audit_actions(vault) and "recovery.handed_over" in audit_actions(vault)


def test_without_the_recorder_nothing_is_set_up(client):
    response = post(client, "/setup/", {"code": setup_code(client), "username": "yamada", "display_name": "x", "section": "s",
                                        "password": PASSWORDS["yamada"], "confirm": PASSWORDS["yamada"]},
                    token_from="/setup/")
    assert response.status_code == 503
    assert client.get("/").headers["Location"] == "/setup/", "no user was created"


# -- log-in -----------------------------------------------------------------------------------

def test_repeated_failures_hold_back_the_browser_not_the_account(server, app, client, vault):
    import domain.accounts

    staff(client, app)
    for _ in range(domain.accounts.SESSION_FREE):
        r = post(client, "/login", {"username": "sato", "password": "wrong password!"})
        assert r.status_code == 401 and "ユーザー名またはパスワードが違います" in r.get_data(as_text=True)
    r = post(client, "/login", {"username": "sato", "password": "wrong password!"})
    assert "しばらく止めています" in r.get_data(as_text=True)
    r = post(client, "/login", {"username": "sato", "password": PASSWORDS["sato"]})
    assert r.status_code == 401, "the guessing browser is held back, even with the right password"
    actions = audit_actions(vault)
    assert actions.count("login.failed") == domain.accounts.SESSION_FREE + 1 and "login.locked" in actions
    assert "access.refused" in actions, "what is refused meanwhile is noted"
    login(app.test_client(), "sato")  # the account is not locked: sato, in another browser, logs in


def test_a_manager_logs_in_while_the_recorder_is_down_and_the_log_catches_up_when_it_is_back(
        server, recorder, data_dir, app, client, vault):
    import json

    staff(client, app)
    server.close()  # the recorder is down
    assert not socket_path(data_dir).exists()
    wrong = post(client, "/login", {"username": "yamada", "password": "not the password!"})
    assert wrong.status_code == 401, "a wrong password is answered as one, not as a fault"
    assert login(client, "yamada").headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200, "the manager sees the dashboard, and on it why the recorder is down"
    assert client.get("/api/v1/status").status_code == 503
    # Nothing else is done unlogged: adding a person is still refused.
    assert post(client, "/admin/sections", {"name": "福祉課"}, token_from="/admin/people").status_code == 503
    logout(client)
    journal = data_dir / "web" / "audit-journal.jsonl"
    assert [json.loads(line)["action"] for line in journal.read_text().splitlines()] == \
        ["login.failed", "login", "logout"], "each kept, durably, before it was answered"
    before = [e["action"] for e in audit_entries(vault)]

    back = ControlServer(socket_path(data_dir), recorder).start()
    try:
        login(client, "sato")  # the next entry: the journal goes into the log first, in order
    finally:
        back.close()
    entries = audit_entries(vault)[len(before):]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("login.failed", "anonymous"), ("login", "yamada"), ("logout", "yamada"), ("login", "sato")]
    for entry in entries[:3]:
        assert entry["detail"]["journaled_at"] < entries[3]["at"] and entry["detail"]["journaled_because"]
    assert not journal.exists(), "folded once: not again"
    vault.audit_log.verify(vault.db)  # raises at the first entry that does not hold


def test_unknown_names_fail_like_wrong_passwords(server, app, client):
    staff(client, app)
    r = post(client, "/login", {"username": "nobody", "password": "whatever whatever"})
    assert r.status_code == 401 and "ユーザー名またはパスワードが違います" in r.get_data(as_text=True)


def test_an_idle_session_expires(server, app, client):
    from webui.db import connect

    staff(client, app)
    login(client, "sato")
    assert client.get("/console").status_code == 200
    conn = connect(app.config["KIROKU_DATA"])
    conn.execute("UPDATE sessions SET last_seen = last_seen - 3600")
    conn.close()
    assert client.get("/console").headers["Location"].startswith("/login")


# -- people and the console -------------------------------------------------------------------

def test_only_designated_operators_operate_the_device(server, app, client, hardware):
    staff(client, app)
    login(client, "suzuki")  # a section head, not an operator
    token = csrf(client, "/account")
    assert client.post("/api/v1/simulator/press", headers={"X-CSRFToken": token}).status_code == 403
    assert client.post("/api/v1/recorder/start", headers={"X-CSRFToken": token}).status_code == 403
    logout(client)
    login(client, "sato")
    token = csrf(client, "/console")
    assert client.post("/api/v1/simulator/press", headers={"X-CSRFToken": token}).status_code == 200
    assert hardware.simulator.button_pin.state is False, "the button's pin is pulled low, like the real one"
    client.post("/api/v1/simulator/release", headers={"X-CSRFToken": token})
    wait_for(lambda: server.recorder.state in (State.NOTICE, State.RECORDING), what="the notice")


def test_an_operator_marks_an_incident_with_the_responsible_section(server, app, client, vault):
    staff(client, app)
    login(client, "sato")
    token = csrf(client, "/console")
    assert client.post("/api/v1/recorder/start", headers={"X-CSRFToken": token}).status_code == 200
    wait_for(lambda: server.recorder.state == State.RECORDING, what="recording")
    r = client.post("/api/v1/recorder/mark", headers={"X-CSRFToken": token}, json={"section": "市民課", "note": "大声"})
    assert r.status_code == 200
    client.post("/api/v1/recorder/stop", headers={"X-CSRFToken": token})
    wait_for(lambda: server.recorder.state == State.IDLE, what="idle")
    recs = client.get("/api/v1/recordings").get_json()
    assert recs[0]["section"] == "市民課" and recs[0]["marks"] == 1
    assert r.get_json()["marked"] == recs[0]["id"], "the answer names the recording the mark went to"
    # Marked when idle, the mark goes to the last recording, and the answer says which.
    again = client.post("/api/v1/recorder/mark", headers={"X-CSRFToken": token}, json={"section": "市民課"})
    assert again.get_json()["marked"] == recs[0]["id"]
    assert vault.db.execute("SELECT started_by FROM recordings").fetchone()[0] == "sato"
    page = client.get("/console").get_data(as_text=True)
    assert recs[0]["id"] in page and "<video" not in page, "operators see details, never footage"


def test_the_console_is_japanese_first_and_switches_to_english(server, app, client):
    staff(client, app)
    login(client, "sato")
    page = client.get("/console").get_data(as_text=True)
    assert '<html lang="ja">' in page and "記録ボタン" in page and "録画中" in page
    client.get("/lang/en?next=/console")
    page = client.get("/console").get_data(as_text=True)
    assert '<html lang="en">' in page and "Record button" in page


def test_a_refused_or_missing_page_says_so_in_the_pages_language_with_the_way_back(server, app, client,
                                                                                    monkeypatch):
    staff(client, app)
    login(client, "sato")  # an operator
    forbidden = client.get("/admin/")
    assert forbidden.status_code == 403
    refusal = [e for e in audit_entries(server.recorder.store) if e["action"] == "access.refused"][-1]
    assert refusal["actor"] == "sato" and refusal["detail"]["path"] == "/admin/", "the attempt is in the audit log"
    # A script trying again and again writes one entry a minute, the rest counted into the next.
    for _ in range(3):
        assert client.get("/admin/").status_code == 403
    refusals = lambda: [e for e in audit_entries(server.recorder.store)  # noqa: E731
                        if e["action"] == "access.refused" and e["detail"]["what"] == "admin.dashboard"]
    assert len(refusals()) == 1
    from webui import services

    monkeypatch.setattr(services, "REFUSAL_EVERY", 0.0)  # the minute is over
    client.get("/admin/")
    assert len(refusals()) == 2 and refusals()[-1]["detail"]["more_since_last_entry"] == 3
    page = forbidden.get_data(as_text=True)
    assert "この操作の権限がありません。" in page and 'id="home"' in page and "Forbidden" not in page
    missing = client.get("/requests/no-such-page")
    assert missing.status_code == 404 and "ページが見つかりません。" in missing.get_data(as_text=True)
    client.get("/lang/en?next=/console")
    assert "There is no such page." in client.get("/nowhere").get_data(as_text=True)
    assert client.get("/api/v1/nowhere").get_json()["code"] == "http.404", "the API still answers in JSON"


def test_the_audit_page_names_actions_in_words_shows_details_and_pages_back(server, app, client, vault):
    from webui.audit_view import query_entries
    from webui import i18n

    staff(client, app)
    login(client, "yamada")
    page = client.get("/admin/audit/").get_data(as_text=True)
    assert "職員の追加" in page and 'data-action="user.add"' in page, "an action in words, its code beside it"
    assert "<details>" in page and "&#34;roles&#34;" in page, "an entry's detail (the roles given) is shown"
    # Every action the code writes has words, in both languages: read from the source.
    from pathlib import Path

    patterns = [r'\.?audit\(\s*(?:"[a-z_-]+",\s*)?"([a-z_]+(?:\.[a-z_]+)*)"', r'action="([a-z_]+\.[a-z_.]+)"',
                r'ctx\.log\(\s*f?"([a-z_]+(?:\.[a-z_]+)*)"',
                r'scans\.(?:store|send|opened)\([^)]*"([a-z_]+\.[a-z_]+)"\)']
    root = Path(__file__).resolve().parent.parent
    written = {a for folder in ("firmware", "webui", "domain") for f in (root / folder).rglob("*.py")
               for pattern in patterns for a in re.findall(pattern, f.read_text())}
    written |= {e["action"] for e in audit_entries(vault)}
    assert len(written) > 60 and "recording.start" in written and "fault.raised" in written
    assert not [a for a in written if "action." + a not in i18n.MESSAGES], "an action without words"
    # Filtered by action and by date; and page by page, back to the first entry.
    only = client.get("/admin/audit/?action=user.add").get_data(as_text=True)
    assert only.count('data-action="user.add"') == len([e for e in audit_entries(vault) if e["action"] == "user.add"])
    assert 'data-action="login"' not in only
    today = audit_entries(vault)[-1]["at"][:10]
    assert "該当する記録はありません" in client.get("/admin/audit/?until=2000-01-01").get_data(as_text=True)
    assert 'data-action="user.add"' in client.get(f"/admin/audit/?since={today}&until={today}").get_data(as_text=True)
    total, seen, before = len(audit_entries(vault)), [], None
    with app.test_request_context():
        while True:
            got = query_entries({"limit": "5", **({"before": str(before)} if before is not None else {})})
            seen += [e["seq"] for e in got["entries"]]
            if got["older"] is None:
                break
            before = got["older"]
    assert sorted(seen) == list(range(len(seen))) and len(seen) >= total, "every entry, once, newest first"
    assert 'id="older"' in client.get("/admin/audit/?limit=3").get_data(as_text=True)
    last_page = client.get("/admin/audit/?limit=1&before=1").get_data(as_text=True)  # entry 0 alone
    assert 'data-action="device.init"' in last_page and 'id="older"' not in last_page, "no link to an empty page"
    assert client.get("/admin/audit/?before=99999999999999999999999").status_code == 200
    assert client.get("/api/v1/audit?before=-1&since=yesterday").status_code == 200


def test_faults_and_warnings_are_told_in_the_pages_language(server, app, client):
    recorder = server.recorder
    recorder._fault("sign", "sign: the lamp did not light — check the lamp and its wiring", blocking=True)
    recorder.capacity_warnings = [{"record_class": "footage", "projected_days": 13, "min_days": 90}]
    staff(client, app)
    login(client, "yamada")
    page = client.get("/admin/").get_data(as_text=True)
    assert "「録画中」表示灯の異常：録画できません" in page
    assert "このカードには13日分の画像等しか入らず、最低保存期間（90日）" in page
    client.get("/lang/en?next=/admin/")
    page = client.get("/admin/").get_data(as_text=True)
    assert "sign fault: recording is not possible" in page and "the card holds about 13 days of Footage" in page


@pytest.mark.parametrize("target", ["/%09/evil.example", "/%0a/evil.example", "/\\evil.example", "//evil.example",
                                    "https://evil.example/", "/%5cevil.example"])
def test_the_language_switch_never_leads_off_site(client, target):
    response = client.get(f"/lang/en?next={target}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_other_host_names_are_refused_against_dns_rebinding(client):
    assert client.get("/setup/", headers={"Host": "attacker.example:8080"}).status_code == 400
    assert client.get("/setup/", headers={"Host": "192.168.1.20.attacker.example"}).status_code == 400
    assert client.get("/setup/", headers={"Host": "[fe80::1%attacker.example]"}).status_code == 400
    assert client.get("/setup/", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    # the address the console shows (DHCP's, in no list of names): typed, it is the device's own
    for typed in ("192.168.1.20", "192.168.1.20:443", "[fd00::20]", "[fd00::20]:443"):
        assert client.get("/setup/", headers={"Host": typed}).status_code == 200, typed


def test_the_virtual_counter_is_off_unless_asked_for(server, data_dir):
    app = create_app({"KIROKU_DATA": str(data_dir), "TESTING": True, "KIROKU_SCRYPT_WORK_FACTOR": 10})
    assert app.config["KIROKU_SIMULATED"] is False
    client = app.test_client()
    first_run(client)
    token = csrf(client, "/account")
    assert client.post("/api/v1/simulator/press", headers={"X-CSRFToken": token}).status_code == 404


def test_pages_forbid_framing_and_inline_script(client):
    response = client.get("/setup/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "<script>" not in response.get_data(as_text=True)


def test_the_api_is_described_by_openapi(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/recorder/{action}" in spec["paths"]


def test_every_word_exists_in_both_languages():
    from firmware.hardware import LightPattern, Simulator
    from webui.i18n import MESSAGES

    needed = {f"sim.{a}" for a in Simulator.ACTIONS if a not in ("press", "release")}
    needed |= {f"state.{s.value}" for s in State} | {f"light.{p.value}" for p in LightPattern}
    needed |= {f"purpose.{p}" for p in ("trouble", "maintenance", "business", "provision")}
    needed |= {f"status.{s}" for s in ("awaiting_opinion", "submitted", "approved", "rejected", "closed", "withdrawn")}
    assert not needed - set(MESSAGES)
    assert all(ja and en for ja, en in MESSAGES.values())
    from pathlib import Path

    templates = Path(__file__).resolve().parent.parent / "webui" / "templates"
    used = {m for p in templates.rglob("*.html") for m in re.findall(r"t\('([a-z_.]+)'\)", p.read_text())}
    assert not {u for u in used if not u.endswith(".")} - set(MESSAGES), "a template uses a word with no translation"
    root = Path(__file__).resolve().parent.parent
    pattern = (r'(?:refuse|again|flash|Refused|LoginRefused)\(\s*"([a-z_]+\.[a-z_.]+)"|notice="([a-z_]+\.[a-z_.]+)"'
               r'|refuse="([a-z_]+\.[a-z_.]+)"')
    said = {key for folder in ("webui", "domain") for p in (root / folder).glob("*.py")
            for found in re.findall(pattern, p.read_text()) for key in found if key}
    assert len(said) > 40 and not said - set(MESSAGES), f"refusals with no translation: {said - set(MESSAGES)}"


def test_audit_entries_keep_the_callers_uid(server, app, client, vault):
    staff(client, app)
    entry = next(e for e in vault.audit_log.entries(vault.db) if e["action"] == "user.add")
    assert "uid" in entry["detail"] and entry["actor"] == "yamada"



def test_an_auditor_reads_the_audit_log_and_nothing_else(server, app, client):
    from tests.webui_helpers import add_person

    staff(client, app)
    login(client, "yamada")
    add_person(client, app, "kimura", "木村 監査", "市民課", ["auditor"])
    auditor = app.test_client()
    login(auditor, "kimura")
    assert auditor.get("/").headers["Location"].endswith("/admin/audit/"), "an auditor starts at the audit log"
    page = auditor.get("/admin/audit/")
    assert page.status_code == 200 and "user.add" in page.get_data(as_text=True)
    for path in ("/admin/", "/admin/people", "/requests/", "/provisions/", "/console", "/admin/settings/"):
        assert auditor.get(path).status_code == 403, f"an auditor was shown {path}"


def test_an_enrolled_device_sends_its_manager_to_the_hub_for_people(server, app, client, data_dir):
    from tests.webui_helpers import Api

    first_run(client)
    uplink = data_dir / "uplink"
    uplink.mkdir()
    (uplink / "hub.url").write_text("https://hub.city.example\n")
    (uplink / "hub.json").write_text("{}")  # enrolled: what makes it so is the file's presence
    page = client.get("/admin/people").get_data(as_text=True)
    assert 'id="people-at-hub"' in page and "https://hub.city.example/hub/people/" in page
    assert 'id="add-person"' not in page and 'id="add-section"' not in page, "nothing here to make at the device"
    api = Api(app.test_client())
    api.login("yamada")
    refused = api.post("/api/v1/people", {"username": "sato", "display_name": "佐藤", "roles": ["operator"],
                                          "password": PASSWORDS["sato"]})
    assert refused.status_code == 409 and refused.get_json()["code"] == "people.at_hub"
    assert api.post("/api/v1/sections", {"name": "市民課"}).get_json()["code"] == "people.at_hub"


def test_settings_are_validated_written_logged_and_applied(server, app, client, vault, data_dir):
    import tomllib

    first_run(client)
    form = {f"{s}.{k}": "" for s, k, _ in __import__("webui.queries", fromlist=["FIELDS"]).FIELDS}
    page = client.get("/admin/settings/").get_data(as_text=True)
    for name in list(form):
        m = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', page)
        if m or name == "device.mode":
            form[name] = m.group(1) if m else "on_demand"
        else:
            del form[name]  # a field the page does not show here (a call recorder's lines on a counter)
    too_short = dict(form, **{"retention.footage_min_days": "30"})
    r = post(client, "/admin/settings/", too_short, token_from="/admin/settings/")
    assert r.status_code == 400 and not (data_dir / "kiroku.toml").exists(), "the rule's minimum cannot be lowered"
    r = post(client, "/admin/settings/", dict(form, **{"notice.delay": "1.5", "retention.footage_min_days": "120"}),
             token_from="/admin/settings/")
    assert r.status_code == 302
    written = tomllib.loads((data_dir / "kiroku.toml").read_text())
    assert written["notice"]["delay"] == 1.5 and written["retention"]["footage_min_days"] == 120
    assert server.recorder.config.notice.delay == 1.5, "the recorder applied it at once"
    assert server.recorder.store.retention.footage_min_days == 120
    entry = next(e for e in vault.audit_log.entries(vault.db) if e["action"] == "settings.change")
    assert entry["detail"]["notice.delay"] == 1.5


def test_the_device_serves_https_with_its_own_certificate_and_takes_the_citys(tmp_path):
    import socket as socketlib
    import ssl
    import subprocess
    import sys

    from kiroku import cli
    from webui import tls

    data = tmp_path / "data"
    (data).mkdir()
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "kiroku", "web", "--real", "--data", str(data), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "fingerprint (SHA-256)" in line
        printed = line.strip().rsplit(" ", 1)[1]
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        der = wait_for(lambda: _peer_cert(context, port), timeout=10, what="the HTTPS port")
        import hashlib

        seen = hashlib.sha256(der).hexdigest().upper()
        assert printed.replace(":", "") == seen, "the fingerprint on the console is the certificate served"
    finally:
        proc.terminate()
        proc.wait(10)
    # The city's own certificate replaces it.
    other = tmp_path / "city"
    tls.ensure_certificate(other, "x")
    cert, key = tls.paths(other)
    assert cli.main(["tls", "--data", str(data), "install", "--cert", str(cert), "--key", str(key)]) == 0
    assert tls.fingerprint(tls.paths(data)[0]) == tls.fingerprint(cert)
    mismatched = tmp_path / "mismatch"
    tls.ensure_certificate(mismatched, "y")
    assert cli.main(["tls", "--data", str(data), "install", "--cert", str(cert),
                     "--key", str(tls.paths(mismatched)[1])]) == 2


def test_first_boot_makes_one_certificate_for_the_web_ui_and_the_console_banner(tmp_path, monkeypatch):
    """At first boot the web UI and the banner (kiroku tls show) ask for the certificate at once."""
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from webui import tls

    made, make = [], tls._make_certificate

    def slow_make(*args):  # a Pi 4 takes a while; let every caller reach the check first
        made.append(1)
        time.sleep(0.2)
        make(*args)

    monkeypatch.setattr(tls, "_make_certificate", slow_make)
    start = threading.Barrier(8)
    fingerprints = []

    def ask():
        start.wait()
        fingerprints.append(tls.fingerprint(tls.ensure_certificate(tmp_path, "counter-1")))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(set(fingerprints)) == 1
    cert_path, key_path = tls.paths(tmp_path)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        cert.public_key().public_bytes(serialization.Encoding.DER, spki), "the key belongs to the certificate"


def _peer_cert(context, port):
    import socket as socketlib

    try:
        with socketlib.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw) as tls_sock:
                return tls_sock.getpeercert(binary_form=True)
    except OSError:
        return None


def test_parallel_guesses_are_all_counted_and_hold_the_address_back(server, app, client):
    import threading

    staff(client, app)
    results = []

    def guess():
        c = app.test_client()
        for _ in range(3):
            results.append(post(c, "/login", {"username": "sato", "password": "wrong password!"}).status_code)

    import domain.accounts

    original = domain.accounts.slow_down
    domain.accounts.slow_down = lambda failures: None  # the count is under test here, not the delay
    try:
        threads = [threading.Thread(target=guess) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        domain.accounts.slow_down = original
    assert len(results) == 24
    r = post(client, "/login", {"username": "sato", "password": PASSWORDS["sato"]})
    assert r.status_code == 401 and "しばらく止めています" in r.get_data(as_text=True), \
        "24 guesses from one address did not hold it back"


def test_an_unknown_name_is_held_back_exactly_like_a_real_one(server, app, client, monkeypatch):
    import domain.accounts

    staff(client, app)
    monkeypatch.setattr(domain.accounts, "slow_down", lambda failures: None)
    answers = [post(client, "/login", {"username": "ghost", "password": "x" * 12}).get_data(as_text=True)
               for _ in range(10)]
    assert "しばらく止めています" in answers[-1] and "しばらく止めています" not in answers[0]


def test_changing_the_password_ends_every_other_session(server, app, client):
    staff(client, app)
    other = app.test_client()
    login(other, "sato")
    login(client, "sato")
    r = post(client, "/account", {"old": PASSWORDS["sato"], "new": "a brand new passphrase", "confirm":
                                  "a brand new passphrase"}, token_from="/account")
    assert r.status_code == 302
    assert other.get("/console").headers["Location"].startswith("/login"), "the other session survived"
    assert client.get("/console").status_code == 200, "the changer keeps working, in a new session"


def test_a_person_needs_a_role_and_a_refused_form_keeps_its_choices(server, app, client):
    first_run(client)
    post(client, "/admin/sections", {"name": "市民課"}, token_from="/admin/people")
    section = re.search(r'<option value="(\d+)"\s*>市民課', client.get("/admin/people").get_data(as_text=True)).group(1)
    none = post(client, "/admin/people", {"username": "abe", "display_name": "安倍", "section_id": section,
                                          "password": "long enough password"}, token_from="/admin/people")
    assert none.status_code == 400 and "権限を一つ以上選んでください" in none.get_data(as_text=True)
    short = post(client, "/admin/people", {"username": "abe", "display_name": "安倍", "section_id": section,
                                           "roles": ["section_head"], "password": "short"}, token_from="/admin/people")
    page = short.get_data(as_text=True)
    assert short.status_code == 400
    assert re.search(rf'<option value="{section}" selected>', page), "the section chosen is still chosen"
    assert re.search(r'value="section_head" checked', page) and not re.search(r'value="operator" checked', page)


@pytest.mark.parametrize("path, data, json_body", [
    ("/admin/people", {"username": "abe", "display_name": "安倍", "section_id": "abc", "roles": ["operator"],
                       "password": "long enough password"}, None),
    ("/admin/people", {"username": "taro.y", "display_name": "太郎", "section_id": "", "roles": ["manager"],
                       "password": "long enough password", "your_password": PASSWORDS["yamada"]}, None),
])
def test_bad_input_is_an_answer_not_a_crash(server, app, client, path, data, json_body):
    first_run(client)
    r = post(client, path, data, token_from="/admin/people")
    assert r.status_code == 400
    assert client.get("/admin/audit/?limit=abc").status_code == 200
    assert client.get("/api/v1/audit?limit=-5").status_code == 200


def test_a_mark_request_that_is_not_an_object_is_refused(server, app, client):
    staff(client, app)
    login(client, "sato")
    token = csrf(client, "/console")
    assert client.post("/api/v1/recorder/mark", headers={"X-CSRFToken": token}, json=[1]).status_code == 400


def test_the_browser_finds_the_icon_instead_of_a_404(server, app, client):
    first_run(client)
    page = client.get("/login").get_data(as_text=True)
    assert 'rel="icon" href="/static/favicon.svg"' in page
    r = client.get("/favicon.ico")
    assert r.status_code == 301 and r.headers["Location"].endswith("/static/favicon.svg")
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml" and b"<svg" in icon.data
