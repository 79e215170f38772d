"""The disclosure register (Art. 12): a 本人開示 or 情報公開 request holds its footage while
open, shows its statutory deadline and the days left (on the dashboard when near or past),
takes one extension, and hands over a signed package with the others masked."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from datetime import timedelta

import pytest

from kiroku.cli import main
from tests import test_api, test_requests
from tests.helpers import wait_for
from tests.webui_helpers import PASSWORDS, Api, login, post
from domain import disclosures

# The same office as the viewing-request tests: the staff, and one marked recording.
server, app, office = test_requests.server, test_requests.app, test_requests.office

pytestmark = pytest.mark.slow

REQUESTER = "窓口 花子"


def audit(vault, subject: str) -> list[str]:
    return [r[0] for r in vault.db.execute("SELECT action FROM audit WHERE subject = ? ORDER BY seq", (subject,))]


def held(vault, number: str) -> list[dict]:
    return [h for h in vault.holds() if h["reference"] == number]


_today = disclosures.today


def move_clock(monkeypatch, days: int) -> None:
    """The register's days pass: its today() is ``days`` later."""
    later = _today() + timedelta(days=days)
    monkeypatch.setattr(disclosures, "today", lambda: later)


def test_a_personal_request_holds_its_footage_and_hands_over_a_masked_signed_package(office, vault, tmp_path):
    client = office.test_client()
    login(client, "yamada")
    rec = vault.recordings()[0]
    response = post(client, "/disclosures/new", {"kind": "personal", "requester": REQUESTER, "contact": "0586-00-0000",
                                                 "identity_check": "licence", "recording": rec["id"]},
                    token_from="/disclosures/new")
    assert response.status_code == 302, response.get_data(as_text=True)
    did = int(response.headers["Location"].rsplit("/", 1)[1])
    page = client.get(f"/disclosures/{did}").get_data(as_text=True)
    number = re.search(r"開示請求 (\d{4}-D\d{3})", page).group(1)
    assert [h["reason"] for h in held(vault, number)] == ["disclosure"], "the footage is held from the start"
    assert "運転免許証" in page and "残り 30 日" in page
    register = client.get("/disclosures/").get_data(as_text=True)
    assert number in register and REQUESTER in register and "30 日" in register

    # nothing is handed over before a disclosing decision; a partial one must mask something
    api = Api(office.test_client())
    api.login("yamada")
    early = api.post(f"/api/v1/disclosures/{did}/export", {"password": PASSWORDS["yamada"], "blur_faces": True})
    assert early.status_code == 409 and early.get_json()["code"] == "disclosure.nothing_to_hand_over"
    post(client, f"/disclosures/{did}/decision", {"decision": "partial", "note": "第三者の映像を除く"},
         token_from=f"/disclosures/{did}")
    bare = api.post(f"/api/v1/disclosures/{did}/export", {"password": PASSWORDS["yamada"], "blur_faces": False})
    assert bare.status_code == 400 and bare.get_json()["code"] == "disclosure.masking_needed"
    not_yet = api.post(f"/api/v1/disclosures/{did}/close")
    assert not_yet.status_code == 409 and not_yet.get_json()["code"] == "disclosure.handover_pending"

    # the handover: faces blurred and another voice muted, through the provisions' export path
    post(client, f"/disclosures/{did}/export", {"password": PASSWORDS["yamada"], "blur_faces": "yes", "mute": "1-2.5",
                                                "blur": "0.7,0.1,0.3,0.5@0-3"}, token_from=f"/disclosures/{did}")
    page = client.get(f"/disclosures/{did}").get_data(as_text=True)
    job = re.search(r'data-job="([^"]+)"', page).group(1)
    url = f"/disclosures/{did}/export/{job}.json"
    status = wait_for(lambda: (s := client.get(url).get_json())["state"] != "running" and s, timeout=90,
                      what="the handover export", interval=0.2, progress=lambda: client.get(url).get_json()["done"])
    assert status["state"] == "done", status
    assert "顔の自動検出は見落とすことがあります" in client.get(f"/disclosures/{did}").get_data(as_text=True)
    package = client.get(status["package"])
    assert package.status_code == 200 and package.mimetype == "application/zip"
    path = tmp_path / "handover.zip"
    path.write_bytes(package.data)
    assert main(["verify", str(path)]) == 0
    with zipfile.ZipFile(path) as z:
        body = z.read(next(n for n in z.namelist() if n.endswith("manifest.json")))
    manifest = json.loads(body)
    assert manifest["redactions"]["faces"] and manifest["redactions"]["mute"] == [[1.0, 2.5]]
    assert len(manifest["redactions"]["blur"]) == 1
    assert manifest["provision"]["number"] == number and "第12条 本人開示" in manifest["provision"]["note"]
    assert manifest["provision"]["ground"] == "disclosure" and "第12条" in manifest["provision"]["basis_ja"]
    with zipfile.ZipFile(path) as z:  # the cover sheet names the Art. 12 basis, not an Art. 9 ground
        readme = z.read(next(n for n in z.namelist() if n.endswith("README.txt"))).decode()
    assert "第12条" in readme and "第9条" not in readme
    record = api.get(f"/api/v1/disclosures/{did}").get_json()
    assert record["exports"][0]["manifest_sha256"] == hashlib.sha256(body).hexdigest()

    closed = api.post(f"/api/v1/disclosures/{did}/close").get_json()
    assert closed["status"] == "closed" and closed["jobs"] == []
    assert not held(vault, number), "closing releases the hold"
    assert audit(vault, number) == ["disclosure.create", "disclosure.decide", "export.create", "export.download",
                                    "disclosure.close"]
    log = " ".join(r[0] for r in vault.db.execute("SELECT detail FROM audit WHERE subject = ?", (number,)))
    assert REQUESTER not in log, "the requester's name is kept out of the append-only log"


def test_deadlines_count_down_an_extension_moves_one_and_an_overdue_request_is_on_the_dashboard(
        office, vault, monkeypatch):
    rec = vault.recordings()[0]
    manager = Api(office.test_client())
    manager.login("yamada")
    received = disclosures.today()
    public = manager.post("/api/v1/disclosures", {"kind": "public", "requester": "市民オンブズ", "recording": rec["id"]})
    assert public.status_code == 201, public.get_json()
    public = public.get_json()
    assert public["identity_check"] is None and public["received_on"] == received.isoformat()
    assert public["deadline"] == (received + timedelta(days=15)).isoformat() and public["days_remaining"] == 15
    personal = manager.post("/api/v1/disclosures", {"kind": "personal", "requester": REQUESTER,
                                                    "identity_check": "other", "identity_note": "健康保険証と公共料金の領収書",
                                                    "recording": rec["id"]})
    personal = personal.get_json()
    assert personal["deadline"] == (received + timedelta(days=30)).isoformat() and personal["days_remaining"] == 30
    assert manager.get("/api/v1/dashboard").get_json()["disclosures_needing_attention"] == []

    # ten days on: the personal request is extended (once, with its reason and written notice)
    move_clock(monkeypatch, 10)
    assert manager.get(f"/api/v1/disclosures/{personal['id']}").get_json()["days_remaining"] == 20
    no_reason = manager.post(f"/api/v1/disclosures/{personal['id']}/extension", {"days": 30,
                                                                               "notified_on": received.isoformat()})
    assert no_reason.get_json()["code"] == "disclosure.extension_reason_needed"
    too_long = manager.post(f"/api/v1/disclosures/{personal['id']}/extension",
                            {"days": 31, "reason": "映像の確認に時間を要するため", "notified_on": received.isoformat()})
    assert too_long.get_json()["code"] == "disclosure.bad_extension"
    extended = manager.post(f"/api/v1/disclosures/{personal['id']}/extension",
                            {"days": 30, "reason": "映像の確認に時間を要するため",
                             "notified_on": (received + timedelta(days=10)).isoformat()}).get_json()
    assert extended["deadline"] == (received + timedelta(days=60)).isoformat() and extended["days_remaining"] == 50
    again = manager.post(f"/api/v1/disclosures/{personal['id']}/extension",
                         {"days": 5, "reason": "再延長", "notified_on": (received + timedelta(days=10)).isoformat()})
    assert again.status_code == 409 and again.get_json()["code"] == "disclosure.already_extended"

    # twenty days on: the public request is five days overdue, too late to extend, on the dashboard
    move_clock(monkeypatch, 20)
    late = manager.get(f"/api/v1/disclosures/{public['id']}").get_json()
    assert late["overdue"] and late["days_remaining"] == -5
    refused = manager.post(f"/api/v1/disclosures/{public['id']}/extension",
                           {"days": 10, "reason": "遅れたため", "notified_on": (received + timedelta(days=20)).isoformat()})
    assert refused.status_code == 409 and refused.get_json()["code"] == "disclosure.extension_late"
    attention = manager.get("/api/v1/dashboard").get_json()["disclosures_needing_attention"]
    assert [(a["number"], a["overdue"]) for a in attention] == [(public["number"], True)]
    client = office.test_client()
    login(client, "yamada")
    dashboard = client.get("/admin/").get_data(as_text=True)
    assert re.search(rf'class="overdue" data-number="{public["number"]}"', dashboard), "not highlighted as overdue"
    assert "期限超過 5 日" in dashboard and personal["number"] not in dashboard
    assert 'class="overdue"' in client.get("/disclosures/").get_data(as_text=True)

    # decided late, it says so; closing it releases its hold, the other's stays
    decided = manager.post(f"/api/v1/disclosures/{public['id']}/decision",
                           {"decision": "refused", "note": "個人に関する情報（条例第7条第2号）"}).get_json()
    assert decided["decided_in_time"] is False and decided["days_remaining"] is None and not decided["overdue"]
    assert manager.get("/api/v1/dashboard").get_json()["disclosures_needing_attention"] == []
    assert held(vault, public["number"]) and held(vault, personal["number"])
    assert manager.post(f"/api/v1/disclosures/{public['id']}/close").get_json()["status"] == "closed"
    assert not held(vault, public["number"]) and held(vault, personal["number"])

    # the requester withdraws: an undecided request closes only as withdrawn
    undecided = manager.post(f"/api/v1/disclosures/{personal['id']}/close")
    assert undecided.status_code == 409 and undecided.get_json()["code"] == "disclosure.undecided"
    withdrawn = manager.post(f"/api/v1/disclosures/{personal['id']}/close", {"withdrawn": True}).get_json()
    assert withdrawn["status"] == "closed" and withdrawn["withdrawn"] and not held(vault, personal["number"])
    assert audit(vault, personal["number"]) == ["disclosure.create", "disclosure.extend", "disclosure.close"]


def test_a_personal_request_without_an_identity_check_is_refused_and_holds_nothing(office, vault):
    rec = vault.recordings()[0]
    manager = Api(office.test_client())
    manager.login("yamada")
    before = len(vault.holds())
    refused = manager.post("/api/v1/disclosures", {"kind": "personal", "requester": REQUESTER, "recording": rec["id"]})
    assert refused.status_code == 400 and refused.get_json()["code"] == "disclosure.identity_needed"
    vague = manager.post("/api/v1/disclosures", {"kind": "personal", "requester": REQUESTER, "identity_check": "other",
                                                 "recording": rec["id"]})
    assert vague.status_code == 400 and vague.get_json()["code"] == "disclosure.identity_note_needed"
    client = office.test_client()
    login(client, "yamada")
    page = post(client, "/disclosures/new", {"kind": "personal", "requester": REQUESTER, "recording": rec["id"]},
                token_from="/disclosures/new")
    assert page.status_code == 400 and "本人確認の方法を選んでください" in page.get_data(as_text=True)
    assert REQUESTER in page.get_data(as_text=True), "what was typed is kept"
    future = manager.post("/api/v1/disclosures", {"kind": "public", "requester": "x", "recording": rec["id"],
                                                  "received_on": (disclosures.today() + timedelta(days=1)).isoformat()})
    assert future.get_json()["code"] == "disclosure.bad_received"
    assert len(vault.holds()) == before and manager.get("/api/v1/disclosures").get_json() == []


def test_only_managers_see_or_change_the_register(office, vault):
    manager = Api(office.test_client())
    manager.login("yamada")
    did = manager.post("/api/v1/disclosures", {"kind": "public", "requester": REQUESTER,
                                               "recording": vault.recordings()[0]["id"]}).get_json()["id"]
    for username in ("suzuki", "sato"):
        client = office.test_client()
        login(client, username)
        for url in ("/disclosures/", f"/disclosures/{did}", "/disclosures/new"):
            assert client.get(url).status_code == 403, url
        assert post(client, f"/disclosures/{did}/close", {"withdrawn": "yes"}, token_from="/account").status_code == 403
        api = Api(office.test_client())
        api.login(username)
        assert api.get("/api/v1/disclosures").status_code == 403
        assert api.get(f"/api/v1/disclosures/{did}").status_code == 403
        assert api.post(f"/api/v1/disclosures/{did}/decision", {"decision": "full"}).status_code == 403
        assert api.post("/api/v1/disclosures", {"kind": "public", "requester": "x"}).status_code == 403
    assert manager.get(f"/api/v1/disclosures/{did}").get_json()["status"] == "open"
    assert REQUESTER not in office.test_client().get("/api/v1/openapi.json").get_data(as_text=True)


def test_every_disclosure_action_is_an_api_operation_with_its_fields(app):
    test_api.test_every_action_of_a_page_is_also_an_api_operation(app)
    spec = app.test_client().get("/api/v1/openapi.json").get_json()["paths"]
    for path in ("/api/v1/disclosures", "/api/v1/disclosures/{disclosure_id}/extension",
                 "/api/v1/disclosures/{disclosure_id}/decision", "/api/v1/disclosures/{disclosure_id}/close",
                 "/api/v1/disclosures/{disclosure_id}/export"):
        op = spec[path]["post"]
        assert op["description"].endswith("Allowed for: managers."), path
        assert op["requestBody"]["content"]["application/json"]["schema"]["properties"], path
