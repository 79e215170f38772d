"""Written viewing requests at the hub (issue 25; Art. 7–8): filed by a section head for any
device's recordings and for calls, an opinion from the responsible section, the manager's
approval of an exact scope, and the viewing — played from the evidence locker, so that a device
that is off (or gone) does not stop the case. On the real engines and real devices."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime
from urllib.parse import quote

import pytest

from tests.city_helpers import Browserless, HubSession, hub_database, within

pytestmark = [pytest.mark.hub, pytest.mark.slow, pytest.mark.xdist_group("city")]


@pytest.fixture
def city(locker_city):
    return locker_city

PASSWORD = "a section head's city password 9"


def person(manager: HubSession, username: str, section: str) -> None:
    sections = {s["name"]: s["id"] for s in manager.api("GET", "/sections")}
    section_id = sections.get(section) or manager.api("POST", "/sections", {"name": section})["id"]
    manager.api("POST", "/people", {"username": username, "display_name": username, "section_id": section_id,
                                    "roles": ["section_head"], "password": PASSWORD})


def signed_in(city, username: str) -> HubSession:
    session = HubSession(city.url)
    session.log_in(username, PASSWORD)
    return session


def at_hub(manager: HubSession, name: str) -> dict:
    """The recording ``DEVICE/ID`` as the hub lists it, once its device has said it ended."""
    return within(60, lambda: next((r for r in manager.api("GET", "/recordings")
                                    if r["id"] == name and r["ended_at"]), None), f"{name} known at the hub")


def in_locker(hub_dsn: str, device, recording: str) -> None:
    """Every segment the device stored of ``recording`` (as its own index says) kept in the locker."""
    with device._db() as conn:
        stored = {r[0] for r in conn.execute("SELECT path FROM segments WHERE recording_id = ?", (recording,))}

    def kept():
        with hub_database(hub_dsn) as db:
            rows = db.execute("SELECT path FROM locker WHERE device = %s AND recording_id = %s AND state = 'kept'",
                              (device.id, recording)).fetchall()
        return stored and stored <= {r["path"] for r in rows}

    within(60, kept, f"{device.id}/{recording} kept in the evidence locker")


def a_call_since(manager: HubSession, pbx, joined: float) -> str:
    """A call the call recorder recorded, and ended, after it joined the city. (One that began
    before is sealed, until the key changed, to a day key the city's managers cannot open: only
    the device's own managers and the recovery key — keys.day_recipient.)"""
    def found():
        return next((r["id"] for r in manager.api("GET", "/recordings") if r["device"] == pbx.id and r["ended_at"]
                     and datetime.fromisoformat(r["started_at"]).timestamp() > joined), None)

    return within(180, found, "a call on the simulated trunk since it joined, ended, at the hub")


def probe(data: bytes) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json", "-"],
                         input=data, capture_output=True, timeout=30, check=True)
    return sorted(s["codec_type"] for s in json.loads(out.stdout)["streams"])


def exported(manager: HubSession, city, record: str, out) -> tuple[bytes, str]:
    """An export of ``record`` (``/provisions/ID``, ``/disclosures/ID``) at the hub with the
    manager's passphrase: its package, downloaded to ``out``, and what ``kiroku verify`` says
    of it (which must pass)."""
    job = manager.api("POST", f"{record}/export", {"password": city.city.manager_password(), "blur_faces": False},
                      expect=202)["job_id"]
    status = within(120, lambda: (s := manager.api("GET", f"{record}/export/{job}"))["state"] != "running" and s,
                    "the export cut from the locker")
    assert status["state"] == "done", status
    code, _, package = manager.request("GET", f"/api/v1{record}/export/{job}/package")
    assert code == 200 and package[:2] == b"PK", package[:300]
    out.write_bytes(package)
    verified = subprocess.run([sys.executable, "-m", "kiroku", "verify", str(out)], capture_output=True, text=True,
                              timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return package, verified.stdout


def hub_log_actions(hub_dsn: str, subject: str) -> list[str]:
    with hub_database(hub_dsn) as db:
        return [r["action"] for r in db.execute("SELECT action FROM audit WHERE subject = %s ORDER BY seq",
                                                (subject,))]


def test_a_request_for_counter_footage_and_a_call_is_filed_given_an_opinion_approved_and_watched_at_the_hub(
        city, hub_dsn):
    counter = city.add("counter-1", "市民課窓口 1番")
    pbx = city.add("pbx-1", "代表電話（交換機）", kind="calls")
    joined = time.time()
    footage = f"{counter.id}/{counter.record('sato', segments=2)}"  # no mark: nothing is copied for it yet
    manager = city.manager()
    at_hub(manager, footage)
    call = a_call_since(manager, pbx, joined)
    person(manager, "suzuki", "福祉課")  # asks; the footage is 市民課's
    person(manager, "kato", "市民課")
    suzuki, kato = signed_in(city, "suzuki"), signed_in(city, "kato")

    # The call is found by its number, typed any way; only the manager is shown numbers (Art. 13).
    shown = within(60, lambda: next((r for r in manager.api("GET", "/recordings")
                                     if r["id"] == call and r.get("external_display")), None), "the call's numbers")
    digits = "".join(ch for ch in shown["external_display"] if ch.isdigit())
    typed = "".join(chr(ord(ch) + 0xFEE0) for ch in digits[:4]) + "-" + digits[4:]  # full width, a hyphen
    found = suzuki.api("GET", "/recordings?number=" + quote(typed))
    assert call in [r["id"] for r in found] and footage not in [r["id"] for r in found]
    assert all(r["record_class"] == "call" and "external_display" not in r for r in found), found
    with hub_database(hub_dsn) as db:
        logged = db.execute("SELECT actor, detail FROM audit WHERE action = 'calls.search' ORDER BY seq").fetchall()
    assert [(r["actor"], json.loads(r["detail"])["number"]) for r in logged] == [("suzuki", digits[1:])]

    filed = suzuki.api("POST", "/requests", {
        "purpose": "trouble", "reason": "窓口での口論と、その直前の電話の確認", "recording": [footage, call],
        "responsible_section": "市民課"})
    number = filed["number"]
    assert filed["status"] == "awaiting_opinion", "another section's footage: its head is asked first (Art. 8(3))"
    # The hub holds them: the devices copy them, still sealed, to the locker.
    in_locker(hub_dsn, counter, footage.split("/", 1)[1])
    in_locker(hub_dsn, pbx, call.split("/", 1)[1])

    assert kato.api("GET", f"/requests/{filed['id']}")["opinion_needed_from_me"]
    kato.api("POST", f"/requests/{filed['id']}/opinion", {"opinion": "agree", "note": "確認済み"})
    assert manager.api("GET", f"/requests/{filed['id']}")["status"] == "submitted"

    approved = manager.api("POST", f"/requests/{filed['id']}/decision", {
        "decision": "approved", "scope_recording": [footage, call], "valid_hours": 2,
        "confirm_responsible": True, "confirm_written": True})
    assert approved["status"] == "approved"
    # a wrong passphrase opens nothing
    status, _, _ = manager.request("POST", f"/api/v1/requests/{filed['id']}/unlock",
                                   body={"password": "not the manager's passphrase"})
    assert status == 403
    viewing = manager.api("POST", f"/requests/{filed['id']}/unlock", {"password": city.city.manager_password()})

    # The section head watches it: counter footage (picture and sound) and the call (sound).
    timeline = suzuki.api("GET", f"/viewings/{viewing['id']}")
    tracks = timeline["tracks"]
    assert sorted((t["device"], t["sound_only"]) for t in tracks) == sorted([(counter.id, False), (pbx.id, True)]), \
        "two tracks, side by side: the counter's footage and the call"
    parts = [p for t in tracks for p in t["parts"]]
    assert len(parts) == viewing["segments"] >= 3
    kinds = []
    for part in parts:
        status, _, data = suzuki.request("GET", f"/api/v1/viewings/{viewing['id']}/part/{part['n']}.mp4")
        assert status == 200 and data[4:8] == b"ftyp"
        kinds.append(probe(data))
    assert ["audio", "video"] in kinds and ["audio"] in kinds, f"the footage and the call both play: {kinds}"
    # nobody else: not the head who gave the opinion, not even the manager who unlocked it
    for other in (kato, manager):
        status, _, _ = other.request("GET", f"/api/v1/viewings/{viewing['id']}/part/0.mp4")
        assert status in (403, 404)

    # every step in the hub's audit log, in order: the wrong passphrase and the refused look too
    assert [a for a in hub_log_actions(hub_dsn, number) if a != "view.seek"] == [
        "request.file", "request.opinion", "request.approve", "key.unlock_failed", "key.unlock", "view.play",
        "access.refused"]

    # Each step is in the counter's own log too, by the hub, with the hub's entry (Art. 8: the
    # device tells everything done with its footage); the call recorder's likewise.
    def noted(device) -> list[str]:
        return [e["detail"]["action"] for e in device.audit_log()
                if e["action"] == "hub.action" and e["subject"] == number]

    steps = ["request.file", "request.opinion", "request.approve", "key.unlock", "view.play"]
    within(60, lambda: all(step in noted(counter) for step in steps), "the hub's actions in the counter's log")
    within(30, lambda: all(step in noted(pbx) for step in steps), "the hub's actions in the call recorder's log")
    hub_seqs = [e["detail"]["hub_seq"] for e in counter.audit_log() if e["action"] == "hub.action"]
    assert hub_seqs == sorted(set(hub_seqs)), "each once, in the hub's order"

    # Closed: the viewing ends, the hub's holds are released.
    manager.api("POST", f"/requests/{filed['id']}/close", {})
    status, _, _ = suzuki.request("GET", f"/api/v1/viewings/{viewing['id']}/part/0.mp4")
    assert status in (404, 410)
    with hub_database(hub_dsn) as db:
        assert db.execute("SELECT count(*) AS n FROM holds WHERE reference = %s AND released_at IS NULL",
                          (number,)).fetchone()["n"] == 0


def test_footage_of_a_device_that_is_gone_is_still_watched_at_the_hub(city, hub_dsn):
    counter = city.add("counter-2", "市民課窓口 2番")
    recording = counter.record("sato", mark="大声で威圧された", section="市民課", segments=2)
    footage = f"{counter.id}/{recording}"
    in_locker(hub_dsn, counter, recording)  # the mark: its device copied it at once
    counter.kill()
    shutil.rmtree(counter.data)  # burnt, with its card

    manager = city.manager()
    person(manager, "kato", "市民課")
    kato = signed_in(city, "kato")
    filed = kato.api("POST", "/requests", {"purpose": "trouble", "reason": "威圧行為の確認", "recording": [footage]})
    assert filed["status"] == "submitted", "the responsible section's own head: no opinion to wait for"
    manager.api("POST", f"/requests/{filed['id']}/decision", {
        "decision": "approved", "scope_recording": [footage], "valid_hours": 1, "confirm_written": True})
    viewing = manager.api("POST", f"/requests/{filed['id']}/unlock", {"password": city.city.manager_password()})
    timeline = kato.api("GET", f"/viewings/{viewing['id']}")
    assert timeline["codecs"].startswith("avc1.")
    status, _, data = kato.request("GET", f"/api/v1/viewings/{viewing['id']}/part/0.mp4")
    assert status == 200 and probe(data) == ["audio", "video"]


def test_a_request_for_footage_not_yet_in_the_locker_is_not_shown_with_a_piece_missing(city, hub_dsn):
    counter = city.add("counter-3", "市民課窓口 3番")
    footage = f"{counter.id}/{counter.record('sato', segments=1)}"
    manager = city.manager()
    at_hub(manager, footage)
    counter.kill()  # before the hub's hold could ask it for a copy
    person(manager, "kato", "市民課")
    kato = signed_in(city, "kato")
    filed = kato.api("POST", "/requests", {"purpose": "trouble", "reason": "確認", "recording": [footage],
                                           "responsible_section": "市民課"})
    manager.api("POST", f"/requests/{filed['id']}/decision", {
        "decision": "approved", "scope_recording": [footage], "valid_hours": 1, "confirm_responsible": True,
        "confirm_written": True})
    status, _, data = manager.request("POST", f"/api/v1/requests/{filed['id']}/unlock",
                                      body={"password": city.city.manager_password()})
    answer = json.loads(data)
    assert status == 409 and answer["code"] == "hub.not_in_locker", answer
    assert counter.id in answer.get("detail", "") and "off line" in answer["detail"], answer
    assert Browserless(city.url).request("GET", "/requests/")[0] in (302, 303), "the pages need a log-in"


def test_an_urgent_provision_at_the_hub_is_exported_from_the_locker_of_a_device_that_is_gone_and_verifies(
        city, hub_dsn, tmp_path):
    counter = city.add("counter-4", "市民課窓口 4番")
    recording = counter.record("sato", mark="刃物を持って来庁", section="市民課", segments=2)
    footage = f"{counter.id}/{recording}"
    in_locker(hub_dsn, counter, recording)
    counter.kill()
    shutil.rmtree(counter.data)  # taken away with its card

    manager = city.manager()
    at_hub(manager, footage)
    # Urgent (Art. 9(5)): the police are at the counter, the written request follows (Art. 11(2)).
    made = manager.api("POST", "/provisions", {"ground": "urgent", "recipient": "北警察署 刑事課",
                                               "recording": footage})
    number = made["number"]
    assert made["status"] == "open" and made["paperwork_pending"]
    wrong = manager.request("POST", f"/api/v1/provisions/{made['id']}/export",
                            body={"password": "not mine", "blur_faces": False})
    assert wrong[0] == 403, wrong[2]
    package, verified = exported(manager, city, f"/provisions/{made['id']}", tmp_path / "p.zip")
    assert "INTACT: it is what the city hub exported" in verified, verified
    assert f"the footage is device {counter.id}'s, cut from the evidence locker" in verified
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(package)) as z:
        manifest = json.loads(z.read(next(n for n in z.namelist() if n.endswith("manifest.json"))))
    assert manifest["recording"]["id"] == recording and manifest["device"]["log"] == "kiroku/hub"
    with hub_database(hub_dsn) as db:
        committed = {json.loads(r["detail"])["sha256"] for r in db.execute(
            "SELECT detail FROM device_log WHERE device = %s AND action = 'segment.sealed'", (counter.id,))}
    assert {s["sealed_sha256"] for s in manifest["original_segments"]} <= committed, \
        "each segment it was cut from is one the device's log committed"

    # The paperwork follows; then it closes, and the hub's hold ends.
    manager.api("POST", f"/provisions/{made['id']}/paperwork", {"reference": "北署刑第456号",
                                                                 "request_date": "2026-12-07"})
    assert manager.api("POST", f"/provisions/{made['id']}/close", {})["status"] == "closed"
    assert hub_log_actions(hub_dsn, number)[:3] == ["provision.create", "key.unlock_failed", "export.create"]
    with hub_database(hub_dsn) as db:
        assert db.execute("SELECT count(*) AS n FROM holds WHERE reference = %s AND released_at IS NULL",
                          (number,)).fetchone()["n"] == 0


def test_a_citizens_disclosure_request_at_the_hub_holds_the_footage_and_hands_over_a_verified_package(
        city, hub_dsn, tmp_path):
    counter = city.add("counter-5", "福祉課窓口")
    footage = f"{counter.id}/{counter.record('sato', segments=2)}"  # no mark: the request's hold copies it
    manager = city.manager()
    at_hub(manager, footage)
    made = manager.api("POST", "/disclosures", {"kind": "personal", "requester": "市民 太郎",
                                                "identity_check": "licence", "recording": footage})
    assert made["status"] == "open"
    in_locker(hub_dsn, counter, footage.split("/", 1)[1])
    manager.api("POST", f"/disclosures/{made['id']}/decision", {"decision": "full"})
    _, verified = exported(manager, city, f"/disclosures/{made['id']}", tmp_path / "d.zip")
    assert "the city hub" in verified
    with hub_database(hub_dsn) as db:
        logged = " ".join(r["detail"] for r in db.execute("SELECT detail FROM audit WHERE subject = %s",
                                                            (made["number"],)))
    assert "市民 太郎" not in logged, "the citizen's name is personal data: never in the log"
