"""The provision register in the web UI (Art. 9–11): a record with its ground and paperwork,
the footage held while it is open, a signed export made in the background, and a record
that cannot be closed while the law still asks for something."""

from __future__ import annotations

import json
import re

import pytest

from pathlib import Path

from kiroku.cli import main
from tests import test_requests
from tests.helpers import wait_for
from tests.webui_helpers import PASSWORDS, login, logout, post

# The same office as the viewing-request tests: the staff, and one marked recording.
server, app, office = test_requests.server, test_requests.app, test_requests.office

pytestmark = pytest.mark.slow


def create(client, recording_id: str, ground: str, reference: str = "") -> int:
    response = post(client, "/provisions/new", {"ground": ground, "recipient": "北警察署 刑事課 佐藤巡査部長",
                                                "reference": reference, "recording": recording_id},
                    token_from="/provisions/new")
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def actions(vault, subject: str) -> list[str]:
    return [r[0] for r in vault.db.execute("SELECT action FROM audit WHERE subject = ? ORDER BY seq", (subject,))]


def test_an_urgent_provision_goes_first_its_paperwork_follows_and_only_then_it_closes(office, vault, tmp_path):
    client = office.test_client()
    login(client, "yamada")
    rec = vault.recordings()[0]
    pid = create(client, rec["id"], "urgent")
    page = client.get(f"/provisions/{pid}").get_data(as_text=True)
    number = re.search(r"外部提供 (\d{4}-P\d{3})", page).group(1)
    assert "依頼文書 未提出" in page
    assert number in client.get("/admin/").get_data(as_text=True)  # on the dashboard until the paperwork is in
    held = [h for h in vault.holds() if h["reference"] == number]
    assert held and held[0]["reason"] == "provision" and held[0]["recording_id"] == rec["id"]

    # a wrong password starts nothing; the right one exports in the background
    post(client, f"/provisions/{pid}/export", {"password": "not mine"}, token_from=f"/provisions/{pid}")
    assert "data-job" not in client.get(f"/provisions/{pid}").get_data(as_text=True)
    post(client, f"/provisions/{pid}/export", {"password": PASSWORDS["yamada"]}, token_from=f"/provisions/{pid}")
    page = client.get(f"/provisions/{pid}").get_data(as_text=True)
    job = re.search(r'data-job="([^"]+)"', page).group(1)
    url = f"/provisions/{pid}/export/{job}.json"
    status = wait_for(lambda: (s := client.get(url).get_json())["state"] != "running" and s, timeout=60,
                      what="the export", interval=0.2, progress=lambda: client.get(url).get_json()["done"])
    assert status["state"] == "done", status
    package = client.get(f"/provisions/{pid}/export/{job}/package")
    assert package.status_code == 200 and package.mimetype == "application/zip"
    (tmp_path / "p.zip").write_bytes(package.data)
    assert main(["verify", str(tmp_path / "p.zip")]) == 0
    # An unsealed package goes once as it is; again — from this session or another — only with
    # the passphrase, counted like any other wrong one.
    again = f"/provisions/{pid}/export/{job}/package"
    refused = client.get(again, follow_redirects=True)
    assert refused.mimetype == "text/html" and "パスワードをもう一度入力してください" in refused.get_data(as_text=True)
    assert 'class="download-again"' in refused.get_data(as_text=True), "the page asks for it where the link was"
    wrong = post(client, again, {"password": "not mine"}, token_from=f"/provisions/{pid}")
    assert wrong.mimetype != "application/zip"
    other = office.test_client()
    login(other, "yamada")
    assert other.get(again).mimetype != "application/zip", "another session, however it was opened, asks too"
    taken = post(other, again, {"password": PASSWORDS["yamada"]}, token_from=f"/provisions/{pid}")
    assert taken.status_code == 200 and taken.data == package.data
    # nothing decrypted was left on the device's disk
    exports = list((Path(office.config["KIROKU_DATA"]) / "web" / "exports").iterdir())
    assert exports and all(p.read_bytes().startswith(b"age-encryption.org/v1\n") for p in exports)

    # not closable while the written request is missing; the footage stays held
    post(client, f"/provisions/{pid}/close", token_from=f"/provisions/{pid}")
    assert 'data-status="open"' in client.get(f"/provisions/{pid}").get_data(as_text=True)
    assert any(h["reference"] == number for h in vault.holds())
    post(client, f"/provisions/{pid}/paperwork", {"reference": "北署刑第456号", "request_date": "2026-11-28"},
         token_from=f"/provisions/{pid}")
    post(client, f"/provisions/{pid}/close", token_from=f"/provisions/{pid}")
    assert 'data-status="closed"' in client.get(f"/provisions/{pid}").get_data(as_text=True)
    assert not any(h["reference"] == number for h in vault.holds())
    assert actions(vault, number) == ["provision.create", "key.unlock_failed", "export.create", "export.download",
                                      "key.unlock_failed", "export.download",
                                      "provision.paperwork", "provision.close"]
    entry = vault.db.execute("SELECT detail FROM audit WHERE subject = ? AND action = 'export.create'",
                             (number,)).fetchone()[0]
    assert json.loads(entry)["ground"] == "urgent"


def test_a_committee_provision_closes_only_after_return_or_erasure(office, vault):
    client = office.test_client()
    login(client, "yamada")
    pid = create(client, vault.recordings()[0]["id"], "committee", reference="第三者委員会 委第7号")
    post(client, f"/provisions/{pid}/close", token_from=f"/provisions/{pid}")
    assert 'data-status="open"' in client.get(f"/provisions/{pid}").get_data(as_text=True)
    post(client, f"/provisions/{pid}/return", {"kind": "erasure"}, token_from=f"/provisions/{pid}")
    post(client, f"/provisions/{pid}/close", token_from=f"/provisions/{pid}")
    assert 'data-status="open"' in client.get(f"/provisions/{pid}").get_data(as_text=True)
    post(client, f"/provisions/{pid}/return", {"outcome": "委員長より消去済みの報告書を受領"},
         token_from=f"/provisions/{pid}")
    post(client, f"/provisions/{pid}/close", token_from=f"/provisions/{pid}")
    page = client.get(f"/provisions/{pid}").get_data(as_text=True)
    assert 'data-status="closed"' in page and "消去済み" in page


def test_a_provision_without_its_paperwork_is_refused_unless_urgent(office, vault):
    client = office.test_client()
    login(client, "yamada")
    response = post(client, "/provisions/new", {"ground": "investigation", "recipient": "北警察署",
                                                "recording": vault.recordings()[0]["id"]}, token_from="/provisions/new")
    assert response.status_code == 400 and "依頼文書の番号" in response.get_data(as_text=True)


def test_only_managers_see_the_register(office, vault):
    client = office.test_client()
    login(client, "yamada")
    pid = create(client, vault.recordings()[0]["id"], "law", reference="法令照会 1")
    logout(client)
    login(client, "suzuki")
    for url in ("/provisions/", f"/provisions/{pid}", "/provisions/new"):
        assert client.get(url).status_code in (403, 404)
