"""Input that does not fit is refused with the field it was in and what to send instead —
never answered with a server error, and never leaving a trace of an action that did not
happen: ids no record can have, text that is not Unicode, JSON nested without end, and
time ranges that end before they start or miss the footage they name."""

from __future__ import annotations

import json
import re

import pytest

from tests import test_hub_web, test_requests
from tests.test_api import audit
from tests.webui_helpers import Api, first_run

server, app, office = test_requests.server, test_requests.app, test_requests.office
hub = test_hub_web.hub

HUGE = (str(2**63), str(2**64 + 5), "9" * 5000)


def audit_count(vault) -> int:
    return vault.db.execute("SELECT count(*) FROM audit").fetchone()[0]


def manager(app) -> Api:
    first_run(app.test_client())
    api = Api(app.test_client())
    assert api.login("yamada").status_code == 200
    return api


def test_an_id_no_record_can_have_is_refused_on_every_route(server, app, vault):
    api = manager(app)
    routes = [(rule.rule, method) for rule in app.url_map.iter_rules() if "<int:" in rule.rule
              for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    assert len(routes) >= 16
    answers = {}
    for rule, method in routes:
        for huge in HUGE:
            url = re.sub(r"<int:[a-z_]+>", huge, rule)
            url = re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "x", url)
            try:
                status = (api.get(url) if method == "GET" else api.post(url, {})).status_code
            except Exception as exc:  # the app's error, raised in tests
                status = f"{type(exc).__name__}: {exc}"[:80]
            answers[f"{method} {url[:60]}"] = status
    # 404 as for any id that names nothing (405 where the router finds the path's other method
    # first); 403 where a manager may not even ask (a section head's opinion)
    assert {k: v for k, v in answers.items() if v not in (403, 404, 405)} == {}
    assert list(answers.values()).count(404) > len(answers) // 2


@pytest.mark.hub
def test_an_id_no_record_can_have_is_refused_at_the_hub_too(hub):
    api = Api(hub.test_client())
    assert api.login("yamada").status_code == 200
    answers = {}
    for rule in hub.url_map.iter_rules():
        if "<int:" not in rule.rule:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for huge in HUGE:
                url = re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "x", re.sub(r"<int:[a-z_]+>", huge, rule.rule))
                try:
                    status = (api.get(url) if method == "GET" else api.post(url, {})).status_code
                except Exception as exc:  # the app's error, raised in tests
                    status = f"{type(exc).__name__}: {exc}"[:80]
                answers[f"{method} {url[:60]}"] = status
    assert len(answers) >= 3 * len(HUGE)
    assert {k: v for k, v in answers.items() if v not in (403, 404, 405)} == {}


def _sent(api: Api, path: str, raw: str):
    """A JSON body exactly as written (``json.dumps`` would escape a lone surrogate anyway; a
    script in another language sends whatever it likes)."""
    return api.client.post(path, data=raw, content_type="application/json", headers={"X-CSRFToken": api.token})


def test_text_that_is_not_unicode_is_refused_naming_its_field_and_nothing_is_made_or_logged(server, app, vault):
    api = manager(app)
    before = audit_count(vault)
    section = _sent(api, "/api/v1/sections", '{"name": "市民課\\ud800"}')
    assert section.status_code == 400
    body = section.get_json()
    assert body["code"] == "api.bad_text" and body["detail"].startswith("name:") and "UTF-8" in body["error"]
    person = _sent(api, "/api/v1/people", '{"username": "sato", "display_name": "\\udfff佐藤", "roles": ["operator"],'
                                          ' "password": "correct horse battery staple"}')
    assert person.status_code == 400 and person.get_json()["detail"].startswith("display_name:")
    assert audit_count(vault) == before
    names = [s["name"] for s in api.get("/api/v1/sections").get_json()]
    assert not any("\ud800" in n for n in names) and "sato" not in json.dumps(api.get("/api/v1/people").get_json())


def test_json_nested_a_hundred_thousand_deep_is_refused(server, app, vault):
    api = manager(app)
    deep = _sent(api, "/api/v1/sections", "[" * 100_000 + "]" * 100_000)
    assert deep.status_code == 400 and deep.get_json()["code"] == "api.json_too_deep"
    nested = _sent(api, "/api/v1/sections", '{"name": ' + "[" * 40 + "]" * 40 + "}")
    assert nested.status_code == 400 and nested.get_json()["code"] == "api.json_too_deep"
    # in a page's own answer too: the log-in reads its body the same way
    login = _sent(Api(app.test_client()), "/api/v1/session", '{"username": "x\\ud800", "password": "p"}')
    assert login.status_code == 400 and login.get_json()["code"] == "api.bad_text"


def test_a_number_that_is_not_one_is_refused_naming_its_field(server, app, vault):
    api = manager(app)
    before = audit_count(vault)
    for section_id in ("9" * 30, "²", "-1", 1e300):
        refused = api.post("/api/v1/people", {"username": "sato", "display_name": "佐藤 花子", "section_id": section_id,
                                              "roles": ["operator"], "password": "correct horse battery staple"})
        assert refused.status_code == 400, section_id
        assert refused.get_json()["code"] == "user.unknown_section"
        assert refused.get_json()["detail"].startswith("section_id")
    assert audit_count(vault) == before


@pytest.mark.slow
def test_a_request_that_cannot_be_stored_leaves_nothing_in_the_log(office, vault, monkeypatch):
    """Were a value to get past the API's checks and fail to be stored, the request is not
    logged as filed, and its number is not taken."""
    from webui import actions

    # as if the API did not check its text (before it did, it did not)
    monkeypatch.setattr(actions, "_check_json", lambda body: None, raising=False)
    rec = test_requests.recording_of(vault)
    viewer = Api(office.test_client())
    viewer.login("suzuki")
    raw = json.dumps({"purpose": "trouble", "recording": [rec["id"]]})[:-1] + ', "reason": "確認\\ud800"}'
    with pytest.raises(UnicodeEncodeError):
        _sent(viewer, "/api/v1/requests", raw)
    assert [r[0] for r in vault.db.execute("SELECT action FROM audit WHERE action = 'request.file'")] == []
    filed = viewer.post("/api/v1/requests", {"purpose": "trouble", "recording": [rec["id"]], "reason": "確認のため"})
    assert filed.status_code == 201
    assert audit(vault, filed.get_json()["number"]).count("request.file") == 1


# -- time ranges ------------------------------------------------------------------------------

def span(vault, rec) -> tuple[int, int]:
    segments = vault.segments(rec["id"])
    return segments[0].start_wall_us, segments[-1].end_wall_us


def _range_refusals(api: Api, path: str, body: dict, rec, vault) -> dict:
    begin, finish = span(vault, rec)
    first, last = test_requests.local(begin + 1_000_000), test_requests.local(finish - 1_000_000)
    before = test_requests.local(begin - 60_000_000)
    long_before = test_requests.local(begin - 120_000_000)
    answers = {}
    for name, start, end in (("end before start", last, first), ("end at start", first, first),
                             ("before the footage", long_before, before), ("not a time", "yesterday", last)):
        response = api.post(path, {**body, "start": start, "end": end})
        answers[name] = (response.status_code, response.get_json().get("code"))
    return answers


@pytest.mark.slow
def test_a_time_range_that_ends_before_it_starts_or_misses_the_footage_is_refused(office, vault):
    rec = test_requests.recording_of(vault)
    holds = vault.db.execute("SELECT count(*) FROM holds").fetchone()[0]
    expected = {"end before start": (400, "range.end_before_start"), "end at start": (400, "range.end_before_start"),
                "before the footage": (400, "range.outside"), "not a time": (400, "range.bad_time")}
    head = Api(office.test_client())
    head.login("suzuki")
    assert _range_refusals(head, "/api/v1/requests", {"purpose": "trouble", "recording": [rec["id"]],
                                                      "reason": "確認のため"}, rec, vault) == expected
    boss = Api(office.test_client())
    boss.login("yamada")
    assert _range_refusals(boss, "/api/v1/provisions", {"ground": "urgent", "recipient": "警察署",
                                                        "recording": rec["id"]}, rec, vault) == expected
    assert _range_refusals(boss, "/api/v1/disclosures", {"kind": "public", "requester": "山田 花子",
                                                         "recording": rec["id"]}, rec, vault) == expected
    assert vault.db.execute("SELECT count(*) FROM holds").fetchone()[0] == holds  # nothing held for them
    for kind in ("requests", "provisions", "disclosures"):
        assert boss.get(f"/api/v1/{kind}").get_json() == []


@pytest.mark.slow
def test_an_approval_whose_scope_ends_before_it_starts_is_refused(office, vault):
    rec = test_requests.recording_of(vault)
    head = Api(office.test_client())
    head.login("suzuki")
    filed = head.post("/api/v1/requests", {"purpose": "trouble", "recording": [rec["id"]], "reason": "確認のため"})
    request_id = filed.get_json()["id"]
    boss = Api(office.test_client())
    boss.login("yamada")
    begin, finish = span(vault, rec)
    first, last = test_requests.local(begin + 1_000_000), test_requests.local(finish - 1_000_000)
    decision = {"decision": "approved", "scope_recording": [rec["id"]], "valid_hours": 2, "confirm_written": True}
    for start, end, code in ((last, first, "range.end_before_start"), ("朝", last, "range.bad_time")):
        refused = boss.post(f"/api/v1/requests/{request_id}/decision", {**decision, "scope_start": start,
                                                                        "scope_end": end})
        assert (refused.status_code, refused.get_json()["code"]) == (400, code)
    assert boss.get(f"/api/v1/requests/{request_id}").get_json()["status"] == "submitted"
    assert [a for a in audit(vault, filed.get_json()["number"]) if a.startswith("request.approve")] == []



def test_a_call_search_whose_last_day_is_before_its_first_is_refused(server, app, vault):
    api = manager(app)
    refused = api.get("/api/v1/calls?from=2026-12-07&to=2026-12-01")
    assert refused.status_code == 400 and refused.get_json()["code"] == "range.end_before_start"
    assert "2026-12-01" in refused.get_json()["detail"]
    assert api.get("/api/v1/calls?from=2026-12-01&to=2026-12-01").status_code == 200  # one day is a range


@pytest.mark.slow
def test_a_decision_refused_as_made_meanwhile_leaves_nothing_in_the_log(office, vault, monkeypatch):
    """Two managers decide the same request in two windows: the second is refused (409), and
    the log holds the first decision only."""
    from domain import requests as workflow

    rec = test_requests.recording_of(vault)
    head = Api(office.test_client())
    head.login("suzuki")
    filed = head.post("/api/v1/requests", {"purpose": "trouble", "recording": [rec["id"]], "reason": "確認のため"})
    request_id, number = filed.get_json()["id"], filed.get_json()["number"]
    boss = Api(office.test_client())
    boss.login("yamada")
    assert boss.post(f"/api/v1/requests/{request_id}/decision", {"decision": "rejected"}).status_code == 200
    load = workflow._load
    # the second window still shows the request as awaiting its decision
    monkeypatch.setattr(workflow, "_load", lambda db, rid: {**dict(load(db, rid)), "status": "submitted"})
    late = boss.post(f"/api/v1/requests/{request_id}/decision",
                     {"decision": "approved", "scope_recording": [rec["id"]], "valid_hours": 2, "confirm_written": True})
    assert (late.status_code, late.get_json()["code"]) == (409, "request.not_decidable")
    assert [a for a in audit(vault, number) if a in ("request.approve", "request.reject")] == ["request.reject"]


# -- a change that cannot be written is not logged ------------------------------------------------

def _refuse_writes(app, table: str, event: str) -> None:
    """As a full or failing disk would: web.db refuses this write (a trigger, on the real file)."""
    import sqlite3
    from pathlib import Path

    conn = sqlite3.connect(Path(app.config["KIROKU_DATA"]) / "web" / "web.db")
    with conn:
        conn.execute(f"CREATE TRIGGER refuse_{table}_{event.lower()} BEFORE {event} ON {table}"
                     " BEGIN SELECT RAISE(ABORT, 'disk I/O error (injected)'); END")
    conn.close()


def count(vault, action: str) -> int:
    return vault.db.execute("SELECT count(*) FROM audit WHERE action = ?", (action,)).fetchone()[0]


def _attempt(post, path, body) -> int:
    """The status a person would get: the test client lets the server's own error through."""
    import sqlite3

    try:
        return post(path, body).status_code
    except sqlite3.Error:
        return 500


@pytest.mark.parametrize("what", ["disable a person", "designate an operator", "sign on at the counter"])
def test_a_change_that_cannot_be_written_leaves_nothing_in_the_log(server, app, vault, what):
    from tests.webui_helpers import staff

    client = app.test_client()
    staff(client, app)
    api = Api(app.test_client())
    assert api.login("yamada").status_code == 200
    listed = api.get("/api/v1/people").get_json()
    before = {a: count(vault, a) for a in ("user.disable", "operator.designate", "duty.sign_on")}
    people = {p["username"]: p for p in (listed["people"] if isinstance(listed, dict) else listed)}
    if what == "disable a person":
        _refuse_writes(app, "users", "UPDATE")
        answer, action = _attempt(api.post, f"/api/v1/people/{people['suzuki']['id']}/disable", {}), "user.disable"
    elif what == "designate an operator":
        api.post(f"/api/v1/people/{people['sato']['id']}/operator", {"designate": False})
        _refuse_writes(app, "operators", "INSERT")
        _refuse_writes(app, "operators", "UPDATE")
        answer, action = _attempt(api.post, f"/api/v1/people/{people['sato']['id']}/operator",
                                  {"designate": True}), "operator.designate"
    else:
        operator = Api(app.test_client())
        assert operator.login("sato").status_code == 200
        _refuse_writes(app, "duty", "INSERT")
        answer, action = _attempt(operator.post, "/api/v1/duty", {"on": True}), "duty.sign_on"
    assert answer >= 500, "the write failed"
    assert count(vault, action) == before[action], f"{what}: logged though nothing changed"
