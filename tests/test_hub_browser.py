"""The hub in a real browser (Debian's Chromium driven by Playwright), as the city's manager uses
it: log in, make a one-time code, enroll a counter with it (``kiroku enroll`` at the device),
designate an operator for it, see the fault it raises on the dashboard, and make the year's
report. The hub is ``kiroku hub`` and the counter ``kiroku run`` (tests/city_helpers.py);
screenshots land in test-results/."""

from __future__ import annotations

import re

import pytest

from tests.city_helpers import SmallCity, postgres_of, within
from tests.test_browser import ARTIFACTS, browser  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow, pytest.mark.xdist_group("city")]  # one city at a time

PLACE = "市民課窓口 3番"


@pytest.fixture
def city(short_tmp, postgres, hub_dsn, mosquitto):
    with SmallCity(short_tmp / "city", postgres_of(postgres, hub_dsn), mosquitto) as c:
        yield c


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"hub-{name}.png"), full_page=True)


def test_the_manager_enrolls_designates_sees_a_fault_and_makes_the_report(city, browser):  # noqa: F811
    page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()

    # 1. The manager logs in: the dashboard, with nothing enrolled yet.
    page.goto(city.url + "/login")
    page.fill("input[name=username]", city.city.manager)
    page.fill("input[name=password]", city.city.manager_password())
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/hub/$"))
    assert "すべての記録装置" in page.inner_text("h1")
    assert "統合管理" in page.inner_text("header"), "the hub says it is the hub"
    shot(page, "1-dashboard-empty")

    # 2. A one-time code for the counter at 市民課窓口 3番, shown once.
    page.click("nav >> text=装置の登録")
    counter = city.plan("counter-3", PLACE)
    page.fill("#make-code input[name=device]", counter.id)
    page.check("#make-code input[name=kind][value=counter]")
    page.fill("#make-code input[name=place]", PLACE)
    page.click("#make-code button[type=submit]")
    code = page.inner_text("#enrollment-code").strip()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    assert PLACE in page.inner_text("#enrollment") and "一度だけ" in page.inner_text("#enrollment")
    assert f"--code {code}" in page.inner_text("#enrollment pre"), "the command to type at the device"
    shot(page, "2-enrollment-code")

    # 3. At the counter: `kiroku enroll` with the code. The dashboard shows it, by its place.
    counter.enroll(code)
    page.click("nav >> text=装置一覧")
    row = page.locator(f'tr[data-device="{counter.id}"]')
    within(30, lambda: (page.reload(), row.get_attribute("data-online") == "yes")[1], "the counter online")
    assert PLACE in row.inner_text() and "接続中" in row.inner_text() and "待機中" in row.inner_text()
    shot(page, "3-dashboard-enrolled")

    # 4. A person in the register, designated to operate this counter (Art. 5(2)).
    page.click("nav >> text=職員")
    page.fill("#add-section input[name=name]", "市民課")
    page.click("#add-section button[type=submit]")
    form = page.locator("#add-person")
    form.locator("input[name=username]").fill("tanaka")
    form.locator("input[name=display_name]").fill("田中 一郎")
    form.locator("select[name=section_id]").select_option(label="市民課")
    form.locator("input[name=password]").fill("tanaka's first password")
    form.locator("button[type=submit]").click()
    person = page.locator('tr[data-username="tanaka"]')
    person.wait_for()
    button = person.locator(f"button[name=operator-tanaka-{counter.id}]")
    assert button.inner_text() == "指定する" and button.get_attribute("aria-pressed") == "false"
    button.click()
    button = page.locator('tr[data-username="tanaka"]').locator(f"button[name=operator-tanaka-{counter.id}]")
    assert button.inner_text() == "指定中" and button.get_attribute("aria-pressed") == "true"
    assert "操作担当者の指定を保存しました" in page.inner_text("main")
    shot(page, "4-people-designated")
    within(30, lambda: any(e["action"] == "operator.designate" and e["subject"] == "tanaka"
                           for e in counter.audit_log()), "the designation at the counter")

    # 5. tanaka records once at the counter; then its sign fails: the dashboard says where, in
    # words, without anyone reloading it.
    counter.record("tanaka", mark="大声")
    page.click("nav >> text=装置一覧")
    counter.control.request("sim", action="lamp_fail")
    counter.control.request("start", by="tanaka")
    alert = page.locator(f'#alerts [data-alert="sign"][data-device="{counter.id}"]')
    alert.wait_for(timeout=15000)
    assert PLACE in alert.inner_text() and "「録画中」表示灯の故障" in alert.inner_text()
    assert "表示灯" in page.locator(f'tr[data-device="{counter.id}"]').inner_text()
    shot(page, "5-dashboard-sign-fault")
    page.click(f'tr[data-device="{counter.id}"] a')  # the counter's own page: what, since when, its witness
    assert PLACE in page.inner_text("h1") and "「録画中」表示灯の故障" in page.inner_text("main")
    assert "前回から続いています" in page.inner_text("#checkpoints")
    shot(page, "5b-device")

    # 6. The year's report for the city: the counter by its place, its checkpoint, the files.
    hub = city.manager()
    within(30, lambda: hub.device(counter.id)["checkpoint"]["size"] == counter.log_size(), "its log witnessed")
    page.click("nav >> text=運用状況報告")
    report = page.locator("article.report")
    assert PLACE in report.inner_text() and "監査ログのチェックポイント" in report.inner_text()
    recordings = report.locator("tr", has_text="画像等 件数").inner_text().split()
    assert recordings[-2:] == ["1", "1"], "one recording at the counter, one in the city"
    assert counter.latest_checkpoint().split("\n")[2] in report.inner_text()
    with page.expect_download() as download:
        page.click("#downloads >> text=PDF")
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF")
    shot(page, "6-report")

    # 7. And in English, for whoever needs it.
    page.click("header a.lang")
    page.goto(city.url + "/hub/")
    assert "Every recording device" in page.inner_text("h1")
    assert "The 「録画中」 sign has failed" in page.inner_text("#alerts")
    shot(page, "7-dashboard-english")


def test_a_case_at_the_hub_request_opinion_approval_viewing_side_by_side_provision_export_verify(
        locker_city, browser, hub_dsn, tmp_path):  # noqa: F811
    import time

    from tests.test_hub_paperwork import PASSWORD, a_call_since, at_hub, in_locker, person

    city = locker_city
    counter = city.add("counter-1", "市民課窓口 1番")
    pbx = city.add("pbx-1", "代表電話（交換機）", kind="calls")
    joined = time.time()
    footage = f"{counter.id}/{counter.record('sato', mark='大声で威圧された', section='市民課', segments=3)}"
    hub = city.manager()
    at_hub(hub, footage)
    call = a_call_since(hub, pbx, joined)
    person(hub, "suzuki", "福祉課")
    person(hub, "kato", "市民課")

    def signed_in(username: str, password: str = PASSWORD):
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(city.url + "/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return page

    # 1. 福祉課's head asks to see the counter's footage and the call, by place, from the hub.
    suzuki = signed_in("suzuki")
    suzuki.click("nav >> text=視聴請求")  # a section head's home at the hub
    suzuki.goto(city.url + "/requests/new")
    assert "市民課窓口 1番" in suzuki.inner_text("#request-form") and "代表電話" in suzuki.inner_text("#request-form")
    suzuki.check(f"input[name=recording][value='{footage}']")
    suzuki.check(f"input[name=recording][value='{call}']")
    suzuki.check("input[name=purpose][value=trouble]")
    suzuki.fill("textarea[name=reason]", "窓口での口論と、その直前の電話の内容を確認するため。")
    suzuki.click("#request-form button[type=submit]")
    suzuki.wait_for_selector('#request-status[data-status="awaiting_opinion"]')
    request_url = suzuki.url
    shot(suzuki, "case-1-request")
    in_locker(hub_dsn, pbx, call.split("/", 1)[1])  # held by the hub: copied from the call recorder

    # 2. 市民課's head, whose footage it is, gives an opinion (Art. 8(3)).
    kato = signed_in("kato")
    kato.goto(request_url)
    kato.check("#opinion-form input[name=opinion][value=agree]")
    kato.fill("#opinion-form textarea[name=note]", "当課としても確認が必要")
    kato.click("#opinion-form button[type=submit]")
    kato.wait_for_selector('#request-status[data-status="submitted"]')

    # 3. The manager approves both and unlocks them with their passphrase.
    manager = signed_in(city.city.manager, city.city.manager_password())
    manager.goto(request_url)
    assert "当課としても確認が必要" in manager.inner_text("main")
    manager.fill("#decide-form input[name=valid_hours]", "2")
    manager.check("#decide-form input[name=confirm_written]")
    manager.click("#approve")
    manager.fill("#unlock-form input[name=password]", city.city.manager_password())
    manager.click("#unlock")
    manager.wait_for_selector("#viewing-open")
    shot(manager, "case-2-approved")

    # 4. The requester watches: the counter's footage and the call side by side, each on its own
    # timeline with its own clock, both played from the evidence locker.
    suzuki.goto(request_url)
    suzuki.click("#watch")
    suzuki.wait_for_selector("#tracks.side-by-side")
    labels = suzuki.locator(".track-label").all_inner_texts()
    assert any("市民課窓口 1番" in label and "画像" in label for label in labels), labels
    assert any("代表電話" in label and "通話" in label for label in labels), labels
    for player in ("player", "player-1"):
        suzuki.wait_for_function(f"() => document.getElementById('{player}').readyState >= 2", timeout=15000)
        suzuki.evaluate(f"() => document.getElementById('{player}').play()")
    suzuki.wait_for_function("() => document.getElementById('player').currentTime > 1"
                             " && document.getElementById('player-1').currentTime > 1", timeout=20000)
    assert suzuki.evaluate("() => document.getElementById('player').videoWidth") > 0, "the counter's picture"
    assert suzuki.inner_text("#wall") and suzuki.inner_text("#wall-1"), "each says when its moment was"
    assert suzuki.locator("#player-error").is_hidden()
    shot(suzuki, "case-3-side-by-side")

    # 5. The police ask in writing for the counter's footage (Art. 9(4)): the manager provides it
    # from the hub, cut from the evidence locker, and the package verifies.
    from kiroku.cli import main

    manager.goto(city.url + "/provisions/")
    manager.click("#new-provision")
    manager.check("#provision-form input[name=ground][value=crime]")
    manager.fill("#provision-form input[name=recipient]", "北警察署 刑事課")
    manager.fill("#provision-form input[name=reference]", "北署刑第789号")
    manager.fill("#provision-form input[name=request_date]", "2026-12-07")
    manager.select_option("#provision-form select[name=recording]", value=footage)
    assert "市民課窓口 1番" in manager.inner_text("#provision-form select[name=recording]")
    manager.click("#provision-form button[type=submit]")
    manager.wait_for_url(re.compile(r".*/provisions/\d+$"))
    manager.fill("#export-form input[name=password]", city.city.manager_password())
    manager.click("#export-form button[type=submit]")
    manager.wait_for_selector("#download-package", timeout=90000)
    with manager.expect_download() as download:
        manager.click("#download-package")
    package = tmp_path / download.value.suggested_filename
    download.value.save_as(package)
    shot(manager, "case-4-provision-exported")
    assert main(["verify", str(package)]) == 0
