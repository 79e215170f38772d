"""Art. 7–8 through the web UI: written requests, opinions, decisions, and viewing exactly the
approved scope — judged from the pixels that reach the viewer, not from our own bookkeeping."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime

import pytest

from firmware.control import ControlServer, socket_path
from firmware.recorder import State
from tests.helpers import _sound, decode, record_segments, wait_for
from tests.webui_helpers import PASSWORDS, csrf, login, logout, post, staff
from webui import create_app


@pytest.fixture
def server(recorder, data_dir):
    srv = ControlServer(socket_path(data_dir), recorder).start()
    yield srv
    srv.close()


@pytest.fixture
def app(data_dir):
    return create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                       "KIROKU_SCRYPT_WORK_FACTOR": 10})


@pytest.fixture
def office(server, app):
    """The staff, and one marked recording of about eight seconds at 市民課's counter."""
    client = app.test_client()
    staff(client, app)
    login(client, "sato")
    token = csrf(client, "/console")
    client.post("/api/v1/recorder/start", headers={"X-CSRFToken": token})
    wait_for(lambda: server.recorder.state == State.RECORDING, what="recording")
    client.post("/api/v1/recorder/mark", headers={"X-CSRFToken": token}, json={"section": "市民課"})
    time.sleep(8)
    client.post("/api/v1/recorder/stop", headers={"X-CSRFToken": token})
    wait_for(lambda: server.recorder.state == State.IDLE, timeout=10, what="idle")
    logout(client)
    return app


def file_request(client, recording_id: str, purpose: str = "trouble") -> int:
    response = post(client, "/requests/new", {"recording": [recording_id], "purpose": purpose,
                                              "reason": "窓口で大声を出された件の事実確認のため"},
                    token_from="/requests/new")
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("/", 1)[1])


def local(wall_us: int) -> str:
    return datetime.fromtimestamp(wall_us / 1e6).strftime("%Y-%m-%dT%H:%M:%S")


def recording_of(vault):
    return vault.recordings()[0]


def test_a_request_by_the_responsible_section_goes_straight_to_the_manager(office, vault):
    client = office.test_client()
    login(client, "suzuki")
    rec = recording_of(vault)
    request_id = file_request(client, rec["id"])
    page = client.get(f"/requests/{request_id}").get_data(as_text=True)
    assert 'data-status="submitted"' in page
    number = re.search(r"視聴請求 (\d{4}-\d{4})", page).group(1)
    holds = [h for h in vault.holds() if h["reference"] == number]
    assert holds and holds[0]["reason"] == "request" and holds[0]["recording_id"] == rec["id"]
    pdf = client.get(f"/requests/{request_id}/form.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf.data, capture_output=True, check=True).stdout.decode()
    for words in ("画像等視聴請求書", number, "市民課", "第7条第1号", "印"):
        assert words in text, f"the printed form lacks {words!r}"


def test_another_sections_head_needs_the_responsible_heads_opinion_first(office, vault):
    client = office.test_client()
    login(client, "takahashi")  # 税務課
    request_id = file_request(client, recording_of(vault)["id"], purpose="business")
    assert 'data-status="awaiting_opinion"' in client.get(f"/requests/{request_id}").get_data(as_text=True)
    logout(client)
    login(client, "yamada")
    page = client.get(f"/requests/{request_id}").get_data(as_text=True)
    assert 'id="decide-form"' not in page, "the manager cannot decide before the opinion"
    logout(client)
    login(client, "suzuki")  # 市民課's head
    post(client, f"/requests/{request_id}/opinion", {"opinion": "disagree", "note": "必要性が低い"},
         token_from=f"/requests/{request_id}")
    logout(client)
    login(client, "yamada")
    page = client.get(f"/requests/{request_id}").get_data(as_text=True)
    assert "不同意" in page and "必要性が低い" in page and 'id="decide-form"' in page


def approve(client, request_id: int, start_us: int, end_us: int, recording_id: str):
    return post(client, f"/requests/{request_id}/decide",
                {"decision": "approved", "scope_recording": [recording_id], "scope_start": local(start_us),
                 "scope_end": local(end_us), "valid_hours": "2", "note": "範囲を限定", "confirm_written": "yes"},
                token_from=f"/requests/{request_id}")


def test_the_viewer_sees_exactly_the_approved_range_and_nothing_else(office, vault, recovery):
    rec = recording_of(vault)
    segments = vault.segments(rec["id"])
    begin = segments[0].start_wall_us
    # From inside the recording, on whole seconds (the form takes seconds), to a whole second
    # well inside a segment: the range's end cuts it.
    start = -(-(begin + 2_000_000) // 1_000_000) * 1_000_000
    end = next(w for w in (start + 3_000_000, start + 4_000_000)
               if any(s.start_wall_us + 200_000 < w < s.end_wall_us - 200_000 for s in segments))
    scope = (start, end)
    manager, viewer, other = office.test_client(), office.test_client(), office.test_client()
    login(viewer, "suzuki")
    request_id = file_request(viewer, rec["id"])
    login(manager, "yamada")
    approve(manager, request_id, *scope, rec["id"])
    wrong = post(manager, f"/requests/{request_id}/unlock", {"password": "not the password"},
                 token_from=f"/requests/{request_id}")
    assert wrong.status_code == 302
    assert 'id="viewing-open"' not in manager.get(f"/requests/{request_id}").get_data(as_text=True)
    post(manager, f"/requests/{request_id}/unlock", {"password": PASSWORDS["yamada"]}, token_from=f"/requests/{request_id}")
    page = viewer.get(f"/requests/{request_id}").get_data(as_text=True)
    viewing_url = re.search(r'id="watch" href="(/viewings/[^"]+)"', page).group(1)

    manifest = viewer.get(viewing_url + "/manifest.json").get_json()
    assert manifest["codecs"].startswith("avc1.") and "mp4a" in manifest["codecs"]
    assert abs(manifest["duration"] - (end - start) / 1e6) < 0.2
    offsets = {s.path: s.start_wall_us - s.start_us for s in segments}  # wall − capture clock, per segment
    inside = [s for s in segments if s.start_wall_us < scope[1] and s.end_wall_us > scope[0]]
    assert len(manifest["parts"]) == len(inside) > 1 and scope[1] < inside[-1].end_wall_us
    shown, heard = [], 0.0
    for part in manifest["parts"]:
        response = viewer.get(f"{viewing_url}/part/{part['n']}.mp4")
        assert response.status_code in (200, 204)
        if response.status_code == 200:
            seen = decode(response.data)
            shown += [t for t in seen.frame_times_us if t is not None]
            # Its sound, placed on the viewing's timeline, begins inside the range. Where the
            # range's end cuts a segment, it ends inside it too; where the segment's own end
            # ends the part, it lasts to there (followed by the padding of its last AAC frame).
            at = float(response.headers["X-Kiroku-Start"]) + seen.audio_first_pts_s
            until = at + seen.audio_seconds
            assert at >= part["start"] - 1e-3, f"part {part['n']} is heard before the approved range"
            if part["n"] == len(manifest["parts"]) - 1:
                assert until <= manifest["duration"] + 1e-3, "sound after the range was heard"
            else:  # as long as the stored segment's sound lasts (to a millisecond or so of AAC
                # priming; the bug this catches dropped the last 21-ms frame)
                first, pcm, rate = _sound(vault.open_segment_plaintext(inside[part["n"]], recovery))
                cut_from = max(0, scope[0] - inside[part["n"]].start_wall_us) / 1e6
                assert until == pytest.approx(part["start"] + first + len(pcm) / rate - cut_from, abs=5e-3), \
                    f"part {part['n']} lost sound at its end"
            heard += seen.audio_seconds
    offset = next(iter(offsets.values()))
    walls = [t + offset for t in shown]
    assert walls, "something was shown"
    assert min(walls) >= scope[0] and max(walls) < scope[1], "a frame outside the approved range reached the viewer"
    assert max(walls) - min(walls) > 1.5e6, "most of the approved range was shown"
    assert heard > manifest["duration"] - 1.1, "the approved range was heard, but for the first part's cut"

    # Nothing else, by URL, by id, by API.
    assert viewer.get(f"{viewing_url}/part/{len(manifest['parts'])}.mp4").status_code == 404
    assert viewer.get(f"{viewing_url}/part/-1.mp4").status_code == 404
    assert viewer.get("/viewings/someone-elses/manifest.json").status_code == 404
    login(other, "takahashi")
    assert other.get(viewing_url + "/manifest.json").status_code == 404, "another section head got in"
    assert other.get(f"/requests/{request_id}").status_code == 404
    assert manager.get(viewing_url + "/manifest.json").status_code == 403, "the manager is not the viewer"
    assert viewer.get("/api/v1/audit").status_code == 403

    actions = [(e["action"], e["purpose"]) for e in vault.audit_log.entries(vault.db)]
    for wanted in ("request.file", "request.approve", "key.unlock_failed", "key.unlock", "view.play"):
        assert (wanted, "trouble") in actions, f"{wanted} is not in the audit log with its purpose"
    # Every refusal of a logged-in person is there too: who tried what.
    refused = {(e["actor"], e["detail"]["what"]) for e in vault.audit_log.entries(vault.db)
               if e["action"] == "access.refused"}
    assert {("takahashi", "viewing"), ("takahashi", "request"), ("suzuki", "api.audit_entries")} <= refused, refused


def test_closing_the_request_ends_the_viewing_drops_the_keys_and_releases_the_hold(office, vault):
    from webui.services import state

    manager, viewer, request_id, viewing_url = open_viewing(office, vault)
    assert viewer.get(viewing_url + "/manifest.json").status_code == 200
    assert state(office).viewings._open, "the day keys are held in memory while the viewing is open"
    post(manager, f"/requests/{request_id}/close", token_from=f"/requests/{request_id}")
    assert viewer.get(viewing_url + "/manifest.json").status_code == 404
    assert not state(office).viewings._open, "the keys were dropped"
    assert not [h for h in vault.holds() if h["reason"] == "request"], "the request's hold was released"


def rec_start(vault, rec) -> int:
    return vault.segments(rec["id"])[0].start_wall_us


def test_an_expired_session_loses_the_key(office, vault):
    from webui.db import connect
    from webui.services import state

    manager, viewer, request_id, viewing_url = open_viewing(office, vault)
    assert viewer.get(viewing_url + "/manifest.json").status_code == 200
    conn = connect(office.config["KIROKU_DATA"])
    conn.execute("UPDATE sessions SET last_seen = last_seen - 3600 WHERE user_id ="
                 " (SELECT id FROM users WHERE username = 'suzuki')")
    conn.close()
    assert viewer.get(viewing_url + "/manifest.json").status_code == 302, "the idle session was not ended"
    assert not state(office).viewings._open, "the key outlived the session"
    login(viewer, "suzuki")
    assert viewer.get(viewing_url + "/manifest.json").status_code == 404, "logging in again does not bring it back"


def test_a_signed_scan_is_attached_and_only_pdf_or_images_are_taken(office, vault):
    import io

    client, manager = office.test_client(), office.test_client()
    login(client, "suzuki")
    rec = recording_of(vault)
    request_id = file_request(client, rec["id"])
    # Art. 8(1): in writing. With no scan, the manager must say they hold the paper.
    login(manager, "yamada")
    page = manager.get(f"/requests/{request_id}").get_data(as_text=True)
    assert 'id="no-scan"' in page and 'name="confirm_written"' in page
    decide = {"decision": "approved", "scope_recording": [rec["id"]], "valid_hours": "2"}
    post(manager, f"/requests/{request_id}/decide", decide, token_from=f"/requests/{request_id}")
    assert 'data-status="submitted"' in manager.get(f"/requests/{request_id}").get_data(as_text=True), \
        "approved without the written request"
    token = csrf(client, f"/requests/{request_id}")
    bad = client.post(f"/requests/{request_id}/scan", data={"csrf_token": token,
                                                            "scan": (io.BytesIO(b"MZ\x90\x00 not a scan"), "x.exe")})
    assert bad.status_code == 302 and b"scan_download" not in client.get(f"/requests/{request_id}").data
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    client.post(f"/requests/{request_id}/scan", data={"csrf_token": token, "scan": (io.BytesIO(png), "form.png")})
    assert client.get(f"/requests/{request_id}/scan").data == png
    entry = next(e for e in vault.audit_log.entries(vault.db) if e["action"] == "request.scan")
    assert len(entry["detail"]["sha256"]) == 64
    # With the scan attached, the manager still says they checked it is the signed form; the log
    # says on what the approval rests.
    page = manager.get(f"/requests/{request_id}").get_data(as_text=True)
    assert 'id="no-scan"' not in page and "添付のスキャンが、署名・押印された請求書であることを確かめた" in page
    post(manager, f"/requests/{request_id}/decide", decide, token_from=f"/requests/{request_id}")
    assert 'data-status="submitted"' in manager.get(f"/requests/{request_id}").get_data(as_text=True)
    post(manager, f"/requests/{request_id}/decide", {**decide, "confirm_written": "yes"},
         token_from=f"/requests/{request_id}")
    approval = next(e for e in vault.audit_log.entries(vault.db) if e["action"] == "request.approve")
    assert approval["detail"]["written_request"] == "scan"


def test_the_section_heads_api_lists_only_what_they_may_see(office, vault):
    client = office.test_client()
    login(client, "suzuki")
    file_request(client, recording_of(vault)["id"])
    logout(client)
    login(client, "takahashi")
    assert client.get("/api/v1/requests").get_json() == [], "another section's request is not listed"
    logout(client)
    login(client, "yamada")
    assert len(client.get("/api/v1/requests").get_json()) == 1



def open_viewing(office, vault, scope_seconds: int = 4):
    rec = recording_of(vault)
    manager, viewer = office.test_client(), office.test_client()
    login(viewer, "suzuki")
    request_id = file_request(viewer, rec["id"])
    login(manager, "yamada")
    approve(manager, request_id, rec_start(vault, rec), rec_start(vault, rec) + scope_seconds * 1_000_000, rec["id"])
    post(manager, f"/requests/{request_id}/unlock", {"password": PASSWORDS["yamada"]}, token_from=f"/requests/{request_id}")
    viewing_url = re.search(r'id="watch" href="(/viewings/[^"]+)"',
                            viewer.get(f"/requests/{request_id}").get_data(as_text=True)).group(1)
    return manager, viewer, request_id, viewing_url


def test_a_viewing_belongs_to_the_session_that_opened_it(office, vault):
    manager, viewer, request_id, viewing_url = open_viewing(office, vault)
    assert viewer.get(viewing_url + "/manifest.json").status_code == 200
    elsewhere = office.test_client()
    login(elsewhere, "suzuki")  # the same person, another browser
    assert elsewhere.get(viewing_url + "/manifest.json").status_code == 404


def test_after_the_viewer_ends_the_viewing_the_page_says_it_has_ended(office, vault):
    manager, viewer, request_id, viewing_url = open_viewing(office, vault)
    viewing_id = viewing_url.rsplit("/", 1)[1]
    post(viewer, f"/viewings/{viewing_id}/close", token_from=f"/requests/{request_id}")
    page = viewer.get(f"/requests/{request_id}").get_data(as_text=True)
    assert 'id="viewing-ended"' in page and "視聴は終了しました" in page
    assert "鍵を開くのを待っています" not in page, "the page says it is waiting for something already over"
    assert 'id="watch"' not in page
    assert "[&#34;" not in page and '["' not in page, "the approved recordings are shown as a JSON list"
    assert 'id="unlock-form"' in manager.get(f"/requests/{request_id}").get_data(as_text=True)
    # Once the approved period is over, nobody is told to ask for an unlock that would be refused.
    from webui.db import connect

    conn = connect(office.config["KIROKU_DATA"])
    conn.execute("UPDATE decisions SET valid_until = ? WHERE request_id = ?", (time.time() - 1, request_id))
    conn.commit()
    conn.close()
    for who in (viewer, manager):
        page = who.get(f"/requests/{request_id}").get_data(as_text=True)
        assert 'id="window-over"' in page and 'id="unlock-form"' not in page and "依頼してください" not in page
    # The storage page names what holds the recording, in words.
    storage = manager.get("/admin/storage/").get_data(as_text=True)
    assert 'data-reason="request">視聴の請求<' in storage and "<th>理由</th>" in storage


def test_the_window_end_closes_a_viewing_nobody_touches(office, vault):
    from webui import viewing
    from webui.services import state

    manager, viewer, request_id, viewing_url = open_viewing(office, vault)
    for v in state(office).viewings._open.values():
        v.closes_at = time.time() - 1
    viewing.sweep(office)
    assert not state(office).viewings._open
    entry = next(e for e in vault.audit_log.entries(vault.db) if e["action"] == "viewing.close")
    assert entry["detail"]["reason"] == "window ended" and entry["detail"]["keys_dropped"] is True


def test_no_footage_leaves_unless_its_viewing_is_logged(office, vault, server):
    manager, viewer, request_id, viewing_url = open_viewing(office, vault)
    server.close()  # the recorder cannot log anything now
    response = viewer.get(viewing_url + "/part/0.mp4")
    assert response.status_code == 503 and not response.data.startswith(b"\x00\x00\x00")
    # With the recorder back, the same request is logged, then served.
    restarted = ControlServer(socket_path(office.config["KIROKU_DATA"]), server.recorder).start()
    try:
        assert viewer.get(viewing_url + "/part/0.mp4").status_code == 200
        assert any(e["action"] == "view.play" for e in vault.audit_log.entries(vault.db))
    finally:
        restarted.close()


def test_others_cannot_tell_whether_a_request_exists(office, vault):
    client = office.test_client()
    login(client, "suzuki")
    request_id = file_request(client, recording_of(vault)["id"])
    logout(client)
    login(client, "takahashi")
    token = csrf(client, "/requests/")
    existing = client.post(f"/requests/{request_id}/opinion", data={"csrf_token": token, "opinion": "agree"})
    missing = client.post("/requests/9999/opinion", data={"csrf_token": token, "opinion": "agree"})
    assert existing.status_code == missing.status_code == 404


def test_an_unmarked_recordings_section_is_confirmed_by_the_manager(server, app, vault, recorder, hardware):
    client = app.test_client()
    staff(client, app)
    record_segments(recorder, hardware.simulator)  # an unmarked recording
    login(client, "takahashi")  # 税務課's head declares 税務課 responsible for an unmarked recording
    r = post(client, "/requests/new", {"recording": [recording_of(vault)["id"]], "purpose": "business",
                                       "reason": "確認", "responsible_section": "税務課"}, token_from="/requests/new")
    request_id = int(r.headers["Location"].rsplit("/", 1)[1])
    logout(client)
    login(client, "yamada")
    page = client.get(f"/requests/{request_id}").get_data(as_text=True)
    assert "請求者の申告" in page
    rec = recording_of(vault)
    r = approve(client, request_id, rec_start(vault, rec), rec_start(vault, rec) + 2_000_000, rec["id"])
    assert 'data-status="submitted"' in client.get(f"/requests/{request_id}").get_data(as_text=True), \
        "approved without confirming the declared section"


def test_the_recording_picker_narrows_to_a_day_and_to_marked_recordings_and_marks_only_those(office, vault):
    client = office.test_client()
    login(client, "suzuki")
    rec = vault.recordings()[0]
    today = rec["started_at"][:10]  # the device's local time, as the picker's day

    def offered(query: str = "") -> str:
        page = client.get(f"/requests/new{query}").get_data(as_text=True)
        return page.split('id="request-form"', 1)[1]

    assert rec["id"] in offered() and "★" in offered(), "the marked recording, with its star"
    assert rec["id"] in offered(f"?day={today}&marked=1")
    assert rec["id"] not in offered("?day=1999-01-01"), "another day: not offered"
    assert 'value="1999-01-01"' in client.get("/requests/new?day=1999-01-01").get_data(as_text=True), \
        "the filter says what it narrowed to"


def test_the_picker_says_how_long_each_recording_is_what_its_star_means_and_a_refusal_keeps_the_choices(
        office, vault):
    client = office.test_client()
    login(client, "suzuki")
    rec = recording_of(vault)
    page = client.get("/requests/new").get_data(as_text=True)
    assert 'id="pick-legend"' in page and "★ トラブル等のマーク" in page, "the star is explained"
    offered = page.split('id="request-form"', 1)[1]
    assert re.search(re.escape(rec["id"]) + r" — [^<]*\(0:0[6-9]\) \(市民課\) ★", offered), "its length and section"
    # refused for want of a reason: what was ticked is still ticked
    refused = post(client, "/requests/new", {"recording": [rec["id"]], "purpose": "trouble", "reason": ""},
                   token_from="/requests/new")
    assert refused.status_code == 400
    assert re.search(r'value="' + re.escape(rec["id"]) + r'" checked', refused.get_data(as_text=True))


def test_the_approval_form_starts_from_the_range_requested_and_says_no_opinion_was_needed(office, vault):
    client = office.test_client()
    login(client, "suzuki")  # 市民課's head: the footage is 市民課's, so no other section is asked
    request_id = file_request(client, recording_of(vault)["id"])
    logout(client)
    login(client, "yamada")
    page = client.get(f"/requests/{request_id}").get_data(as_text=True)
    asked = client.get(f"/api/v1/requests/{request_id}").get_json()
    assert asked["start"] and f'name="scope_start" value="{asked["start"].replace(" ", "T")}"' in page
    assert f'name="scope_end" value="{asked["end"].replace(" ", "T")}"' in page
    assert "意見は不要です" in page and "—" not in page.split('id="opinion-state"', 1)[1][:80]
