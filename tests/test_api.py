"""The JSON API does what the pages do — the same views, the same checks, the same audit
entries — so a script can run the whole of Art. 5–11 without a browser."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest

from kiroku.cli import main
from tests import test_requests
from tests.helpers import wait_for
from tests.webui_helpers import PASSWORDS, Api, first_run

server, app, office = test_requests.server, test_requests.app, test_requests.office


def audit(vault, subject: str) -> list[str]:
    return [r[0] for r in vault.db.execute("SELECT action FROM audit WHERE subject = ? ORDER BY seq", (subject,))]


# -- the routes themselves ---------------------------------------------------------------------

PAGE_ONLY = {
    "auth.login", "auth.logout",  # the API has /api/v1/session
    "setup.index", "setup.confirm", "setup.join",  # first run: the recovery key is shown once, on a page
    "set_language",
}


def test_every_action_of_a_page_is_also_an_api_operation(app):
    api_views = {app.view_functions[r.endpoint] for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1/")}
    missing = [r.rule for r in app.url_map.iter_rules()
               if "POST" in r.methods and not r.rule.startswith("/api/") and r.endpoint not in PAGE_ONLY
               and app.view_functions[r.endpoint] not in api_views]
    assert missing == [], f"page actions the API cannot do: {missing}"


def test_the_openapi_document_lists_every_api_route_with_who_may_call_it(app):
    client = app.test_client()
    spec = client.get("/api/v1/openapi.json").get_json()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            op = spec["paths"][path][method.lower()]
            assert "Allowed for:" in op["description"], path
            assert op["summary"] and "." not in op["summary"].split()[0], f"{method} {path} has no summary"
    decide = spec["paths"]["/api/v1/requests/{request_id}/decision"]["post"]
    assert "valid_hours" in decide["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert decide["description"].endswith("Allowed for: managers.")


# -- people, sections, settings, duty ----------------------------------------------------------

def test_a_manager_sets_the_device_up_through_the_api(server, app, vault):
    first_run(app.test_client())
    anonymous = Api(app.test_client())
    assert anonymous.get("/api/v1/people").status_code == 401
    wrong = anonymous.login("yamada", "not the passphrase")
    assert wrong.status_code == 401 and wrong.get_json()["code"] == "login.failed"

    manager = Api(app.test_client())
    assert manager.login("yamada").status_code == 200
    assert manager.get("/api/v1/me").get_json()["roles"] == ["manager"]
    created = manager.post("/api/v1/sections", {"name": "市民課"})
    assert created.status_code == 201
    assert manager.post("/api/v1/sections", {"name": "市民課"}).get_json()["code"] == "section.exists"
    section = created.get_json()["id"]

    refused = manager.post("/api/v1/people", {"username": "sato", "display_name": "佐藤 花子", "section_id": section,
                                              "roles": ["operator"], "password": "short"})
    assert refused.status_code == 400 and refused.get_json()["code"].startswith("password.")
    sato = manager.post("/api/v1/people", {"username": "sato", "display_name": "佐藤 花子", "section_id": section,
                                           "roles": ["operator"], "password": PASSWORDS["sato"]})
    assert sato.status_code == 201 and sato.get_json()["operator"] is True
    uid = sato.get_json()["id"]
    for unclear in ({}, {"designate": "true"}, {"designate": 1}):
        refused = manager.post(f"/api/v1/people/{uid}/operator", unclear)
        assert refused.status_code == 400 and refused.get_json()["code"] == "api.flag_needed", unclear
    assert manager.get("/api/v1/people").get_json()[0]["operator"] is True, "an unclear answer revoked nothing"
    revoked = manager.post(f"/api/v1/people/{uid}/operator", {"designate": False}).get_json()
    assert revoked["operator"] is False
    assert manager.post(f"/api/v1/people/{uid}/operator", {"designate": True}).get_json()["operator"] is True
    assert [p["username"] for p in manager.get("/api/v1/people").get_json()] == ["sato", "yamada"]

    # a malformed body is refused with a message, and changes nothing
    bad = manager.post("/api/v1/sections", data="name=x", content_type="application/json")
    assert bad.status_code == 400 and bad.get_json()["code"] == "api.json_object"
    assert manager.post("/api/v1/sections", {"name": {"nested": 1}}).get_json()["code"] == "api.bad_value"

    # settings: only what is sent changes; what the rule forbids is refused with its reason
    before = manager.get("/api/v1/settings").get_json()["settings"]
    saved = manager.post("/api/v1/settings", {"notice.delay": 0.7})
    assert saved.status_code == 200
    after = manager.get("/api/v1/settings").get_json()["settings"]
    assert after == {**before, "notice.delay": 0.7}
    too_short = manager.post("/api/v1/settings", {"retention.footage_min_days": 30})
    assert too_short.status_code == 400 and too_short.get_json()["code"] == "settings.invalid"
    assert too_short.get_json()["detail"]

    # the operator signs on at the counter
    operator = Api(app.test_client())
    operator.login("sato")
    on = operator.post("/api/v1/duty", {"on": True})
    assert [d["name"] for d in on.get_json()["on_duty"]] == ["佐藤 花子"]
    assert operator.get("/api/v1/people").status_code == 403
    assert operator.delete("/api/v1/session").status_code == 200
    assert operator.get("/api/v1/duty").status_code == 401

    actions = [e["action"] for e in vault.audit_log.entries(vault.db)]
    for wanted in ("section.add", "user.add", "operator.revoke", "operator.designate", "settings.change",
                   "duty.sign_on", "logout"):
        assert wanted in actions, f"{wanted} is not in the audit log"


# -- Art. 7–8 through the API -------------------------------------------------------------------

@pytest.mark.slow
def test_a_viewing_request_from_filing_to_playback_through_the_api(office, vault):
    rec = vault.recordings()[0]
    head, other, manager = (Api(office.test_client()) for _ in range(3))
    head.login("suzuki")
    other.login("takahashi")
    manager.login("yamada")

    filed = head.post("/api/v1/requests", {"recording": [rec["id"]], "purpose": "trouble", "reason": "事実確認"})
    assert filed.status_code == 201, filed.get_json()
    req = filed.get_json()
    assert req["status"] == "submitted" and req["responsible_sections"] == ["市民課"]
    assert any(h["reference"] == req["number"] for h in vault.holds())
    assert other.get(f"/api/v1/requests/{req['id']}").status_code == 404, "another section learnt of it"
    assert head.post(f"/api/v1/requests/{req['id']}/decision", {"decision": "approved"}).status_code == 403

    start = vault.segments(rec["id"])[0].start_wall_us
    scope = {"decision": "approved", "scope_recording": [rec["id"]], "valid_hours": 1, "note": "範囲を限定",
             "scope_start": test_requests.local(start + 2_000_000), "scope_end": test_requests.local(start + 5_000_000)}
    assert manager.post(f"/api/v1/requests/{req['id']}/decision", {"decision": "maybe"}).status_code == 400
    unwritten = manager.post(f"/api/v1/requests/{req['id']}/decision", scope)
    assert unwritten.status_code == 400 and unwritten.get_json()["code"] == "request.written_needed"
    scope["confirm_written"] = True  # the manager holds the signed paper
    decided = manager.post(f"/api/v1/requests/{req['id']}/decision", scope).get_json()
    assert decided["status"] == "approved" and decided["decision"]["scope_recording_ids"] == [rec["id"]]
    again = manager.post(f"/api/v1/requests/{req['id']}/decision", scope)
    assert again.status_code == 409 and again.get_json()["code"] == "request.not_decidable"

    wrong = manager.post(f"/api/v1/requests/{req['id']}/unlock", {"password": "not mine"})
    assert wrong.status_code == 403 and wrong.get_json()["code"] == "viewing.wrong_password"
    opened = manager.post(f"/api/v1/requests/{req['id']}/unlock", {"password": PASSWORDS["yamada"]})
    assert opened.status_code == 201
    viewing_id = opened.get_json()["id"]
    assert head.get(f"/api/v1/requests/{req['id']}").get_json()["viewing"]["id"] == viewing_id

    timeline = head.get(f"/api/v1/viewings/{viewing_id}").get_json()
    assert abs(timeline["duration"] - 3.0) < 0.3
    part = head.get(f"/api/v1/viewings/{viewing_id}/part/0.mp4")
    assert part.status_code in (200, 204)
    assert other.get(f"/api/v1/viewings/{viewing_id}").status_code == 404, "another section head got in"
    assert manager.get(f"/api/v1/viewings/{viewing_id}").status_code == 403

    closed = manager.post(f"/api/v1/requests/{req['id']}/close").get_json()
    assert closed["status"] == "closed" and closed["viewing"] is None
    assert head.get(f"/api/v1/viewings/{viewing_id}").status_code == 404
    assert not any(h["reference"] == req["number"] for h in vault.holds())
    logged = audit(vault, req["number"])
    assert [a for a in logged if a != "access.refused"][:4] == [
        "request.file", "request.approve", "key.unlock_failed", "key.unlock"]
    assert "access.refused" in logged, "another section's head asking for it is on the record, as on the page"
    assert "request.close" in audit(vault, req["number"])


# -- Art. 9–11 through the API -------------------------------------------------------------------

@pytest.mark.slow
def test_an_urgent_provision_exported_and_closed_through_the_api(office, vault, tmp_path):
    rec = vault.recordings()[0]
    manager = Api(office.test_client())
    manager.login("yamada")
    created = manager.post("/api/v1/provisions", {"ground": "urgent", "recipient": "北警察署", "recording": rec["id"]})
    assert created.status_code == 201, created.get_json()
    p = created.get_json()
    assert p["paperwork_pending"] and p["status"] == "open"
    attention = manager.get("/api/v1/dashboard").get_json()["provisions_needing_attention"]
    assert [a["number"] for a in attention] == [p["number"]]

    scan = b"%PDF-1.4\n% the signed written request\n"
    attached = manager.post(f"/api/v1/provisions/{p['id']}/scan",
                            data={"scan": (io.BytesIO(scan), "request.pdf")}, content_type="multipart/form-data")
    assert attached.status_code == 200 and attached.get_json()["scan_sha256"]
    assert manager.get(f"/api/v1/provisions/{p['id']}/scan").data == scan
    not_yet = manager.post(f"/api/v1/provisions/{p['id']}/close")
    assert not_yet.status_code == 409 and not_yet.get_json()["code"] == "provision.paperwork_pending"

    undecided = manager.post(f"/api/v1/provisions/{p['id']}/export", {"password": PASSWORDS["yamada"]})
    assert undecided.status_code == 400 and undecided.get_json()["code"] == "api.flag_needed", \
        "an export must say whether bystanders' faces are blurred"
    job = manager.post(f"/api/v1/provisions/{p['id']}/export", {"password": PASSWORDS["yamada"], "blur_faces": False})
    assert job.status_code == 202
    status_url = f"/api/v1/provisions/{p['id']}/export/{job.get_json()['job_id']}"
    status = wait_for(lambda: (s := manager.get(status_url).get_json())["state"] != "running" and s,
                      timeout=60, what="the export", interval=0.2,
                      progress=lambda: manager.get(status_url).get_json()["done"])
    assert status["state"] == "done", status
    package = manager.get(status_url + "/package")
    (tmp_path / "p.zip").write_bytes(package.data)
    assert main(["verify", str(tmp_path / "p.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "p.zip") as z:
        name = next(n for n in z.namelist() if n.endswith("manifest.json"))
        assert json.loads(z.read(name))["provision"]["ground"] == "urgent"

    done = manager.post(f"/api/v1/provisions/{p['id']}/paperwork", {"reference": "北署刑第456号"}).get_json()
    assert not done["paperwork_pending"]
    closed = manager.post(f"/api/v1/provisions/{p['id']}/close").get_json()
    assert closed["status"] == "closed" and closed["exports"]
    assert not any(h["reference"] == p["number"] for h in vault.holds())
    assert audit(vault, p["number"]) == ["provision.create", "provision.scan", "provision.scan_download",
                                         "export.create", "export.download", "provision.paperwork", "provision.close"]


def test_over_https_a_script_writes_without_a_referer_but_never_with_a_form_token(server, app):
    """Flask-WTF asks HTTPS form posts for a Referer; the API's header token makes it unneeded.
    The token in a form field — what a page on another site could post — is not accepted."""
    first_run(app.test_client())
    client = app.test_client()
    https = {"base_url": "https://localhost"}
    token = client.get("/api/v1/session", **https).get_json()["csrf_token"]
    login = client.post("/api/v1/session", json={"username": "yamada", "password": PASSWORDS["yamada"]},
                        headers={"X-CSRFToken": token}, **https)
    assert login.status_code == 200, login.get_json()
    token = login.get_json()["csrf_token"]
    added = client.post("/api/v1/sections", json={"name": "市民課"}, headers={"X-CSRFToken": token}, **https)
    assert added.status_code == 201
    as_form = client.post("/api/v1/sections", data={"name": "税務課", "csrf_token": token}, **https)
    assert as_form.status_code == 400 and as_form.get_json()["code"] == "csrf.invalid"
    page = client.post("/admin/sections", data={"name": "税務課", "csrf_token": token}, **https)
    assert page.status_code == 400, "an HTTPS form post without a Referer must still be refused"
