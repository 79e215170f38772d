"""The appliance in a real browser (Debian's Chromium driven by Playwright), against
`kiroku run` as a newcomer starts it: first-run set-up, people, the virtual counter, a
written request, the manager's decision and unlock, and scoped playback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import config_toml
from tests.helpers import wait_for
from tests.webui_helpers import PASSWORDS

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-results"
CONFIG_TOML = config_toml(notice_delay=1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def appliance(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "kiroku.toml").write_text(CONFIG_TOML)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kiroku", "run", "--data", str(data), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    url = f"http://127.0.0.1:{port}/"

    def ready():
        line = proc.stdout.readline()
        lines.append(line)
        return "Data:" in line or proc.poll() is not None  # after the URL and the set-up code

    wait_for(ready, timeout=40, what="kiroku run to print its URL")
    assert proc.poll() is None, "".join(lines)
    assert any(url in line for line in lines), "".join(lines)
    # What the person who started it reads off the terminal to register the first manager.
    code = re.search(r"Set-up code: (\S+)", "".join(lines))
    assert code, "".join(lines)
    # Keep reading its output, or a full pipe would block the appliance's logging.
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    drain.start()
    yield url, data, code[1]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "make test installs Debian's chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def person(browser, url: str, username: str | None = None):
    """A separate browser context: one person at their own desk."""
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    if username:
        page.goto(url + "login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORDS[username])
        page.click("button[type=submit]")
        page.wait_for_load_state()
    return page


def hold(page, selector, ms):
    box = page.locator(selector).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_timeout(ms)
    page.mouse.up()


def register_first_manager(page, code):
    page.fill("input[name=code]", code)
    page.fill("input[name=username]", "yamada")
    page.fill("input[name=display_name]", "山田 太郎")
    page.fill("input[name=password]", PASSWORDS["yamada"])
    page.fill("input[name=confirm]", PASSWORDS["yamada"])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))


def add_person(page, url, username, display, section, role):
    page.goto(url + "admin/people")
    form = page.locator("#add-person")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=display_name]").fill(display)
    form.locator("select[name=section_id]").select_option(label=section)
    form.locator(f"input[name=roles][value={role}]").check()
    form.locator("input[name=password]").fill(PASSWORDS[username])
    form.locator("button[type=submit]").click()
    page.wait_for_selector(f'tr[data-username="{username}"]')


@pytest.mark.slow
def test_from_first_run_to_scoped_playback(appliance, browser):
    url, data, code = appliance

    # 1. First run: no default password; whoever has the set-up code registers the manager.
    manager = person(browser, url)
    manager.goto(url)
    assert manager.url.endswith("/setup/")
    manager.screenshot(path=str(ARTIFACTS / "first-run.png"), full_page=True)
    register_first_manager(manager, code)

    # 2. People: a section, its head, and an operator designated for this device.
    manager.goto(url + "admin/people")
    manager.fill("#add-section input[name=name]", "市民課")
    manager.click("#add-section button[type=submit]")
    add_person(manager, url, "sato", "佐藤 花子", "市民課", "operator")
    add_person(manager, url, "suzuki", "鈴木 一郎", "市民課", "section_head")
    manager.screenshot(path=str(ARTIFACTS / "walk-1-people.png"))

    # 3. The operator records at the counter with the virtual button, and marks the incident.
    operator = person(browser, url, "sato")
    operator.goto(url + "console")
    operator.wait_for_selector('#state[data-state="idle"]')
    hold(operator, "#record-button", 200)
    operator.wait_for_selector('#sign[data-lit="true"]', timeout=5000)
    operator.wait_for_selector('#state[data-state="recording"]', timeout=6000)
    operator.select_option("#mark-form select[name=section]", label="市民課")
    operator.click("#mark")
    operator.wait_for_selector("#mark-done:not([hidden])")
    assert "にトラブル等のマークを付けました（対応担当課：市民課）" in operator.inner_text("#mark-done")
    operator.wait_for_timeout(6000)
    operator.screenshot(path=str(ARTIFACTS / "walk-2-console-recording.png"))
    hold(operator, "#record-button", 200)
    operator.wait_for_selector('#state[data-state="idle"]', timeout=10000)
    assert operator.get_attribute("#sign", "data-lit") == "false"
    operator.wait_for_function("() => document.getElementById('last-recording').textContent.includes('マーク')")
    assert "マーク1件" in operator.inner_text("#last-recording"), "counted as Japanese counts, not '1 marks'"

    # 4. The section head files a written request.
    head = person(browser, url, "suzuki")
    head.goto(url + "requests/new")
    head.locator("input[name=recording]").first.check()
    head.check("input[name=purpose][value=trouble]")
    head.fill("textarea[name=reason]", "窓口での申し出内容に齟齬があったため、事実確認を行う。")
    head.click("#request-form button[type=submit]")
    head.wait_for_selector('#request-status[data-status="submitted"]')
    request_url = head.url
    pdf = head.request.get(request_url + "/form.pdf")
    assert pdf.ok and pdf.body().startswith(b"%PDF")

    # 5. The manager approves a narrower scope (starting inside a segment, so the player must
    # cope with a part cut at a keyframe) and unlocks the footage key with their password.
    manager.goto(request_url)
    requested = manager.inner_text("#request-range")  # "start — end" of the request
    from datetime import datetime, timedelta

    first = datetime.strptime(requested.split(" — ")[0].strip(), "%Y-%m-%d %H:%M:%S")
    manager.fill("#decide-form input[name=scope_start]", (first + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S"))
    manager.fill("#decide-form input[name=valid_hours]", "2")
    manager.check("#decide-form input[name=confirm_written]")  # the signed paper is in the manager's hands
    manager.click("#approve")
    manager.wait_for_selector("#unlock-form")
    manager.fill("#unlock-form input[name=password]", PASSWORDS["yamada"])
    manager.click("#unlock")
    manager.wait_for_selector("#viewing-open")

    # 6. The section head plays the approved range in the browser.
    head.goto(request_url)
    head.click("#watch")
    head.wait_for_selector("#player")
    head.wait_for_function("() => document.getElementById('player').readyState >= 2", timeout=10000)
    head.evaluate("() => document.getElementById('player').play()")
    duration = head.evaluate("() => fetch(document.getElementById('tracks').dataset.manifest).then(r => r.json())")
    # Plays on across the first part's end (a part cut at a keyframe must not stall playback).
    boundary = duration["parts"][0]["duration"] + 1.0
    head.wait_for_function(f"() => document.getElementById('player').currentTime > {boundary}", timeout=20000)
    # The clock beside the timeline tells the moment on screen, not its part's start.
    at, label = head.evaluate("() => [document.getElementById('player').currentTime,"
                              " document.getElementById('wall').textContent]")
    part = [p for p in duration["parts"] if p["start"] <= at][-1]
    expected = datetime.fromisoformat(part["wall"]).replace(tzinfo=None) + timedelta(seconds=at - part["start"])
    assert abs((datetime.strptime(label, "%Y-%m-%d %H:%M:%S") - expected).total_seconds()) <= 1.5, (label, expected)
    # ...and on to the end of the range, where it stops as ended rather than waiting for more.
    head.wait_for_function("() => document.getElementById('player').ended", timeout=20000)
    head.screenshot(path=str(ARTIFACTS / "walk-3-playback.png"))
    viewing_url = head.url

    # ...and cannot reach anything outside it: not by URL, not by changing ids, not by the API.
    assert head.request.get(f"{viewing_url}/part/{len(duration['parts'])}.mp4").status == 404
    assert head.request.get(url + "viewings/not-a-viewing/manifest.json").status == 404
    assert head.request.get(url + "api/v1/audit").status == 403
    assert head.request.get(url + "requests/999").status == 404
    assert operator.request.get(f"{viewing_url}/manifest.json").status == 403, "the operator reached footage"

    # 7. Everything is in the audit log, and it verifies.
    manager.goto(url + "admin/audit")
    text = manager.inner_text("#audit-entries")
    for action in ("request.file", "request.approve", "key.unlock", "view.play", "recording.start", "incident.mark"):
        assert action in text
    assert "検証済み" in manager.inner_text("#verification")
    manager.screenshot(path=str(ARTIFACTS / "walk-4-audit.png"))


def test_a_broken_lamp_shows_as_a_fault_on_the_console(appliance, browser):
    url, data, code = appliance
    manager = person(browser, url)
    manager.goto(url)
    register_first_manager(manager, code)
    manager.goto(url + "lang/en?next=/console")
    manager.wait_for_selector('#state[data-state="idle"]')
    manager.locator("details.sim summary").click()
    manager.locator('button[data-action="lamp_fail"]').click()
    hold(manager, "#record-button", 200)
    manager.wait_for_selector('#state[data-state="fault"]', timeout=5000)
    assert "sign fault: recording is not possible" in manager.locator("#faults").inner_text()
    assert "lamp did not light" in manager.locator("#fault-detail").inner_text()  # the recorder's words, for the fixer
    manager.goto(url + "lang/ja?next=/console")
    manager.wait_for_selector('#state[data-state="fault"]')
    manager.wait_for_function("() => document.getElementById('faults').textContent.includes('録画できません')")
    sentence = manager.locator("#faults").inner_text().split("\n")[0]
    assert "「録画中」表示灯の異常" in sentence and not re.search(r"[A-Za-z]", sentence), \
        "a Japanese sentence without English inside it"
    assert manager.locator("#fault-detail").inner_text().startswith("保守担当者向けの技術情報: ")
    assert manager.get_attribute("#light", "data-pattern") == "fault"
    manager.screenshot(path=str(ARTIFACTS / "console-fault.png"))


def test_the_managers_pages_fit_a_phones_width(appliance, browser):
    url, data, code = appliance
    setup = person(browser, url)
    setup.goto(url)
    register_first_manager(setup, code)
    setup.goto(url + "admin/people")
    setup.fill("#add-section input[name=name]", "市民課")
    setup.click("#add-section button[type=submit]")
    add_person(setup, url, "suzuki", "鈴木 次郎", "市民課", "section_head")
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=setup.context.storage_state())
    page = phone.new_page()
    for path in ("admin/", "admin/people", "admin/audit/", "admin/storage/", "requests/", "console"):
        page.goto(url + path)
        page.wait_for_load_state()
        wide = page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= 390 + 1, f"/{path} is {wide} px wide on a 390-px phone: the page scrolls sideways"
        # a name in a table keeps its characters on one line (not 鈴/木/次/郎 down the cell)
        if path == "admin/people":
            lines = page.locator('tr[data-username="suzuki"] td').nth(1).evaluate(
                "td => { const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length; }")
            assert lines == 1, f"a name breaks over {lines} lines"
    page.screenshot(path=str(ARTIFACTS / "phone-console.png"))


@pytest.mark.slow
def test_an_urgent_provision_is_exported_and_closes_once_its_paperwork_is_in(appliance, browser, tmp_path):
    from kiroku.cli import main

    url, data, code = appliance
    manager = person(browser, url)
    manager.goto(url)
    register_first_manager(manager, code)

    # A few seconds recorded at the counter with the virtual button.
    manager.goto(url + "console")
    manager.wait_for_selector('#state[data-state="idle"]')
    hold(manager, "#record-button", 200)
    manager.wait_for_selector('#state[data-state="recording"]', timeout=6000)
    manager.wait_for_timeout(5000)
    hold(manager, "#record-button", 200)
    manager.wait_for_selector('#state[data-state="idle"]', timeout=10000)

    # 1. The mayor judged it urgent (Art. 9(5)): the provision goes before its written request.
    manager.goto(url + "provisions/")
    manager.click("#new-provision")
    manager.wait_for_url(re.compile(r".*/provisions/new$"))
    manager.check("#provision-form input[name=ground][value=urgent]")
    manager.fill("#provision-form input[name=recipient]", "北警察署 刑事課 佐藤巡査部長")
    manager.click("#provision-form button[type=submit]")
    manager.wait_for_url(re.compile(r".*/provisions/\d+$"))
    provision_url = manager.url
    number = re.search(r"\d{4}-P\d{3}", manager.inner_text("h1")).group(0)
    assert "対象の録画は保存を継続します" in manager.inner_text(".flash")

    # 2. The paperwork shows as pending, here and on the dashboard.
    assert manager.inner_text("#provision-status") == "継続中"
    assert "依頼文書 未提出" in manager.inner_text("#paperwork")
    manager.goto(url + "admin/")
    attention = manager.inner_text("#provisions-attention")
    assert number in attention and "依頼文書 未提出" in attention

    # 3. An export with the manager's passphrase: progress, then a package that verifies.
    manager.goto(provision_url)
    manager.fill("#export-form input[name=password]", PASSWORDS["yamada"])
    manager.click("#export-form button[type=submit]")
    manager.wait_for_selector(".job")
    assert "書き出しを始めました" in manager.inner_text(".flash")
    # The export takes about a second, so the page first shows it running, then reloads itself.
    card = manager.locator(".job")
    if card.get_attribute("data-state") == "running":  # usually; a very fast machine may already be done
        assert "書き出し中" in card.inner_text() and re.search(r"\d+\.\d / \d+\.\d s", card.inner_text())
    manager.wait_for_selector("#download-package", timeout=60000)
    assert "パッケージをダウンロード" in manager.inner_text("#download-package")
    done = manager.locator(".job").inner_text()
    assert "渡す前に映像を確認してください" in done and "顔の自動検出" not in done, "no faces were blurred"
    assert manager.locator("#export-form").is_visible()  # another export stays possible while open
    with manager.expect_download() as download:
        manager.click("#download-package")
    package = tmp_path / download.value.suggested_filename
    download.value.save_as(package)
    assert package.name.endswith(".zip")
    assert main(["verify", str(package)]) == 0

    # 4. Not closable while the written request is missing: the page says so, and a close
    # sent anyway is refused by the appliance, not just by the disabled button.
    assert manager.locator("#close-form button").is_disabled()
    assert "まだ完了できません" in manager.inner_text("#close-form")
    manager.locator("#close-form").evaluate("form => form.submit()")
    manager.wait_for_selector(".flash.error")
    assert "依頼文書がまだ届いていません" in manager.inner_text(".flash")
    assert manager.inner_text("#provision-status") == "継続中"

    # The written request arrives; now the record closes.
    manager.fill("#paperwork-form input[name=reference]", "北署刑第456号")
    manager.fill("#paperwork-form input[name=request_date]", "2026-11-28")
    manager.click("#paperwork-form button[type=submit]")
    manager.wait_for_selector("#paperwork-form", state="detached")
    assert "北署刑第456号" in manager.inner_text("#paperwork")
    # Closing cannot be undone: the page asks first, and a "no" leaves the record open.
    questions = []
    manager.once("dialog", lambda d: (questions.append(d.message), d.dismiss()))
    manager.click("#close-form button[type=submit]")
    manager.wait_for_timeout(300)
    assert questions and "元に戻せません" in questions[0]
    assert manager.get_attribute("#provision-status", "data-status") != "closed"
    manager.once("dialog", lambda d: d.accept())
    manager.click("#close-form button[type=submit]")
    manager.wait_for_selector('#provision-status[data-status="closed"]')
    assert manager.inner_text("#provision-status") == "完了"
    manager.goto(url + "admin/")
    assert number not in manager.inner_text("main")  # nothing left to act on


def test_a_manager_installs_an_update_and_the_page_follows_it_through_the_restart(appliance, browser, tmp_path):
    from tests.test_update import Device, make_key, release
    from tests.test_update_web import device_acts

    url, data, code = appliance
    key, public = make_key(tmp_path / "release.pem")
    device = Device(tmp_path / "root", public, tmp_path / "fakes")
    page = person(browser, url)
    page.goto(url + "setup/")
    register_first_manager(page, code)
    page.click("nav >> text=ソフトウェア更新")
    rel = str(release(tmp_path, key, "0.2.0"))
    # A file over the limit is not sent (the server would close the connection on it): the
    # page says why. The limit is lowered here, for a small file.
    limit = page.get_attribute("#update-form", "data-max-bytes")
    assert limit == str(256 * 2**20)
    page.eval_on_selector("#update-form", "form => { form.dataset.maxBytes = '1000'; }")
    page.set_input_files("input[name=release]", rel)
    assert page.is_visible("#update-too-big") and "ファイルが大きすぎます" in page.inner_text("#update-too-big")
    page.click("#update-install")
    page.wait_for_timeout(500)
    assert page.is_visible("#update-form") and not (data / "update" / "request").exists(), "nothing was sent"
    page.eval_on_selector("#update-form", f"form => {{ form.dataset.maxBytes = '{limit}'; }}")
    page.set_input_files("input[name=release]", [])
    page.set_input_files("input[name=release]", rel)
    assert not page.is_visible("#update-too-big")
    page.click("#update-install")
    page.wait_for_selector("#update-in-progress")
    # The update restarts the web UI: for a while the page's questions go unanswered.
    gone = []
    page.route("**/api/v1/update", lambda route: (gone.append(1), route.abort()))
    for _ in range(60):  # Playwright runs the route's handler only while it is asked to wait
        if len(gone) >= 2:
            break
        page.wait_for_timeout(500)
    assert len(gone) >= 2, "the page did not ask for the outcome while the web UI was away"
    assert device_acts(data, device).returncode == 0
    page.unroute("**/api/v1/update")

    # no reload by hand: the page asks again, and shows the outcome
    page.wait_for_selector("tr.update-installed", timeout=30_000)
    assert "完了（新しい版で動作中）" in page.inner_text("#update-history")
    assert page.is_visible("#update-form"), "the next update can be uploaded"
    page.screenshot(path=str(ARTIFACTS / "update-installed.png"), full_page=True)
    assert device.running == "venv-0.2.0"
    # and the dashboard says so, for the manager who looks there first
    page.click("nav >> text=ダッシュボード")
    assert "0.1.0 → 0.2.0" in page.inner_text("#software-last") and "完了" in page.inner_text("#software-last")
    page.screenshot(path=str(ARTIFACTS / "dashboard-software.png"), full_page=True)
