"""Guesses are counted where they are made (issue 23, items 3 and 4): a manager's passphrase
cannot be tried without end, a name cannot be told from its answer or its cost, and a
guesser slows themselves down — not the person whose name they guess."""

from __future__ import annotations

import re

import pytest

from tests import test_requests
from tests.test_requests import approve, file_request, rec_start, recording_of
from tests.test_webui import audit_entries
from tests.webui_helpers import PASSWORDS, Api, login, post, staff
from webui import create_app

server, app, office = test_requests.server, test_requests.app, test_requests.office


class Clock:
    """The time the guards read, moved by the test (a delay is observed here, not waited for)."""

    def __init__(self, now: float = 1_900_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the manager's passphrase (item 3) --------------------------------------------------------

@pytest.fixture
def approved(office, vault):
    """A request by 市民課's head, approved by the manager: the manager's passphrase opens it."""
    rec = recording_of(vault)
    viewer = office.test_client()
    login(viewer, "suzuki")
    request_id = file_request(viewer, rec["id"])
    manager = office.test_client()
    login(manager, "yamada")
    approve(manager, request_id, rec_start(vault, rec), rec_start(vault, rec) + 3_000_000, rec["id"])
    return request_id


def test_wrong_passphrases_lock_the_key_for_growing_times_even_across_a_restart(office, vault, approved,
                                                                                   monkeypatch):
    import domain.keys

    clock = Clock()
    monkeypatch.setattr(domain.keys, "clock", clock, raising=False)
    manager = Api(office.test_client())
    manager.login("yamada")
    unlock = f"/api/v1/requests/{approved}/unlock"
    answers = [manager.post(unlock, {"password": f"guess number {i}"}).get_json()["code"] for i in range(39)]
    assert answers[0] == "viewing.wrong_password"
    assert "key.locked" in answers, "39 wrong passphrases and the key never locked"
    tries = answers.index("key.locked") + 1  # the wrong one that locked it is counted too
    assert tries <= 5, f"{tries} wrong passphrases before the key locked"
    right = manager.post(unlock, {"password": PASSWORDS["yamada"]})
    assert right.status_code == 403 and right.get_json()["code"] == "key.locked", "the right one, while locked"
    until = right.get_json()["detail"]
    entries = [e for e in audit_entries(vault) if e["action"] in ("key.unlock_failed", "key.locked", "key.unlock")]
    assert [e["action"] for e in entries].count("key.unlock_failed") == tries, "refused tries are not guesses"
    assert [e["action"] for e in entries].count("key.locked") == 1 and entries[tries]["subject"] == "yamada"

    # The web UI restarts: the key is still locked, and the page the passphrase is typed on says until when.
    restarted = create_app(dict(office.config))
    page = restarted.test_client()
    login(page, "yamada")
    html = page.get(f"/requests/{approved}").get_data(as_text=True)
    assert "ロック" in html and until[11:16] in html, "the page does not say the key is locked until when"
    page.set_cookie("lang", "en")
    html = page.get(f"/requests/{approved}").get_data(as_text=True)
    assert "locked until" in html and until[11:16] in html
    again = post(page, f"/requests/{approved}/unlock", {"password": PASSWORDS["yamada"]},
                 token_from=f"/requests/{approved}")
    assert again.status_code == 302 and "id=\"watch\"" not in page.get(f"/requests/{approved}").get_data(as_text=True)

    # Once the lock has passed, one more wrong one locks it again, for longer.
    first = domain.keys.locked_until(restarted_db(office), "yamada") - clock.now
    clock.now += first + 1
    assert Api(restarted.test_client()).login("yamada").status_code == 200
    later = Api(restarted.test_client())
    later.login("yamada")
    assert later.post(unlock, {"password": "one more guess"}).get_json()["code"] == "key.locked"
    second = domain.keys.locked_until(restarted_db(office), "yamada") - clock.now
    assert second > first, "the lock does not grow"
    clock.now += second + 1
    opened = later.post(unlock, {"password": PASSWORDS["yamada"]})
    assert opened.status_code == 201, opened.get_json()
    assert later.post(unlock, {"password": "wrong after all"}).get_json()["code"] == "viewing.wrong_password", \
        "the count starts again after the right passphrase"


def restarted_db(app):
    from domain.db import Database
    from webui.db import connect

    return Database.sqlite(connect(app.config["KIROKU_DATA"]))


# -- log-in (item 4) ---------------------------------------------------------------------------

def verifications(monkeypatch) -> list[str]:
    """Every Argon2 verification the log-in makes, by the hash it was checked against."""
    import domain.accounts

    seen, real = [], domain.accounts.verify
    monkeypatch.setattr(domain.accounts, "verify", lambda hashed, pw: seen.append(hashed) or real(hashed, pw))
    return seen


def test_a_locked_name_an_unknown_one_and_a_wrong_password_cost_the_same_and_answer_alike(server, app, vault,
                                                                                          monkeypatch):
    staff(app.test_client(), app)
    for i in range(12):  # someone guesses sato's password from elsewhere
        post(app.test_client(), "/login", {"username": "sato", "password": f"guess number {i}"},
             environ_base={"REMOTE_ADDR": f"10.0.1.{i}"})
    seen = verifications(monkeypatch)
    answers = {}
    for n, name in enumerate(("sato", "nobody", "suzuki")):
        r = post(app.test_client(), "/login", {"username": name, "password": "not the password"},
                 environ_base={"REMOTE_ADDR": f"10.0.2.{n}"})
        answers[name] = (r.status_code, re.search(r'class="flash [^"]*" role="status">([^<]+)<', r.get_data(as_text=True)).group(1))
    assert len(seen) == 3, "a name was answered without the password's work"
    assert answers["sato"] == answers["nobody"] == answers["suzuki"] == (401, "ユーザー名またはパスワードが違います。")


def test_guesses_slow_the_guessers_address_not_the_manager(server, app, vault, monkeypatch):
    staff(app.test_client(), app)
    clock = Clock()
    from webui.services import state

    monkeypatch.setattr(state(app).guard, "clock", clock, raising=False)
    guesser = app.test_client()
    attacker = {"REMOTE_ADDR": "10.0.0.66"}
    answers = [post(guesser, "/login", {"username": "yamada", "password": f"guess number {i}"},
                    environ_base=attacker).status_code for i in range(10)]
    assert answers == [401] * 10
    right = post(guesser, "/login", {"username": "yamada", "password": PASSWORDS["yamada"]}, environ_base=attacker)
    assert right.status_code == 401 and "しばらく" in right.get_data(as_text=True), "the guesser is not slowed"
    # The manager, at their own desk, logs in.
    manager = post(app.test_client(), "/login", {"username": "yamada", "password": PASSWORDS["yamada"]},
                   environ_base={"REMOTE_ADDR": "10.0.0.8"})
    assert manager.status_code == 302, "ten guesses kept the manager out"
    # Another browser at the guesser's address (a shared office address) is not the guesser.
    colleague = post(app.test_client(), "/login", {"username": "sato", "password": PASSWORDS["sato"]},
                     environ_base=attacker)
    assert colleague.status_code == 302, "one browser's guesses kept its whole address out"
    held = [e for e in audit_entries(vault) if e["action"] == "login.locked"]
    assert held and held[0]["detail"]["by"] == "session" and "until" in held[0]["detail"]
    # The wait grows with each guess made after it.
    guard = state(app).guard
    waits = []
    for i in range(3):
        clock.now = max(guard.until(k) for k in guard.keys_for("10.0.0.66", guesser_session(guesser))) + 1
        post(guesser, "/login", {"username": "yamada", "password": f"late guess {i}"}, environ_base=attacker)
        waits.append(max(guard.until(k) for k in guard.keys_for("10.0.0.66", guesser_session(guesser))) - clock.now)
    assert waits[0] < waits[1] < waits[2]
    clock.now += 10 ** 6  # a day later, the right password from there works again
    assert post(guesser, "/login", {"username": "yamada", "password": PASSWORDS["yamada"]},
                environ_base=attacker).status_code == 302


def guesser_session(client) -> str:
    with client.session_transaction() as s:
        return s.get("guesser", "")


def test_many_browsers_at_one_address_are_slowed_as_one_in_the_end(server, app, vault, monkeypatch):
    from domain import accounts

    staff(app.test_client(), app)
    attacker = {"REMOTE_ADDR": "10.0.0.66"}
    for i in range(accounts.ADDRESS_FREE + 1):  # a fresh browser (no cookie) for every guess
        post(app.test_client(), "/login", {"username": "yamada", "password": f"guess {i}"}, environ_base=attacker)
    right = post(app.test_client(), "/login", {"username": "yamada", "password": PASSWORDS["yamada"]},
                 environ_base=attacker)
    assert right.status_code == 401, "cookies thrown away escape the address's count"
    held = [e for e in audit_entries(vault) if e["action"] == "login.locked"]
    assert [e["detail"]["by"] for e in held] == ["address"]


def test_a_locked_key_is_not_tried_when_a_manager_adds_a_manager_either(server, app, vault):
    import time

    from webui.db import connect

    client = app.test_client()
    staff(client, app)
    login(client, "yamada")
    conn = connect(app.config["KIROKU_DATA"])
    conn.execute("INSERT INTO key_guard (name, failures, locked_until) VALUES ('yamada', 5, ?)", (time.time() + 600,))
    conn.commit()
    assert 'id="key-locked"' in client.get("/admin/people").get_data(as_text=True)
    deputy = {"username": "deputy", "display_name": "副 管理", "section_id": "", "roles": ["manager"],
              "password": "the deputy's long password", "your_password": PASSWORDS["yamada"]}
    refused = post(client, "/admin/people", deputy, token_from="/admin/people")
    assert refused.status_code == 403 and "鍵をロックしました" in refused.get_data(as_text=True)
    assert 'data-username="deputy"' not in client.get("/admin/people").get_data(as_text=True), \
        "a manager was added with a locked key"
    conn.execute("UPDATE key_guard SET locked_until = ?", (time.time() - 1,))
    conn.commit()
    conn.close()
    assert post(client, "/admin/people", deputy, token_from="/admin/people").status_code == 302
    assert 'data-username="deputy"' in client.get("/admin/people").get_data(as_text=True)

    # Locked again, it is another manager who lifts it — never the manager whose key it is.
    conn = connect(app.config["KIROKU_DATA"])
    conn.execute("UPDATE key_guard SET locked_until = ?", (time.time() + 600,))
    conn.commit()
    conn.close()
    assert not re.search(r'/admin/people/\d+/unlock', client.get("/admin/people").get_data(as_text=True))
    other = app.test_client()
    assert post(other, "/login", {"username": "deputy", "password": "the deputy's long password"}).status_code == 302
    lift = re.search(r'action="(/admin/people/\d+/unlock)"', other.get("/admin/people").get_data(as_text=True)).group(1)
    own = post(client, lift, token_from="/admin/people", follow_redirects=True).get_data(as_text=True)
    assert "自分の鍵のロックは解除できません" in own and 'id="key-locked"' in own
    assert post(other, lift, token_from="/admin/people").status_code == 302
    assert 'id="key-locked"' not in client.get("/admin/people").get_data(as_text=True)
    assert audit_entries(vault)[-1]["action"] == "user.unlock" and audit_entries(vault)[-1]["subject"] == "yamada"
