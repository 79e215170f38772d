"""The virtual counter in a real browser (Debian's Chromium driven by Playwright), against
`kiroku run` as a newcomer starts it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from firmware.vault import Vault
from tests.conftest import config_toml, recovery_identity
from tests.helpers import Footage
from tests.helpers import decodes_cleanly, ffprobe, wait_for

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
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "run", "--data", str(data), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    url = f"http://127.0.0.1:{port}/"

    def ready():
        line = proc.stdout.readline()
        lines.append(line)
        return url in line or proc.poll() is not None

    wait_for(ready, timeout=40, what="kiroku run to print its URL")
    assert proc.poll() is None, "".join(lines)
    # Keep reading its output, or a full pipe would block the appliance's logging.
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    drain.start()
    yield url, data
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "make test installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        yield page
        browser.close()


def hold(page, selector, ms):
    box = page.locator(selector).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_timeout(ms)
    page.mouse.up()


def test_a_newcomer_records_with_the_virtual_button(appliance, page):
    url, data = appliance
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(url)
    assert page.url.endswith("/counter")
    page.wait_for_selector('#state[data-state="idle"]')
    assert page.locator("#state").inner_text() == "待機中"
    assert page.get_attribute("#sign", "data-lit") == "false"

    hold(page, "#record-button", 200)
    page.wait_for_selector('#sign[data-lit="true"]', timeout=5000)
    page.wait_for_selector('#state[data-state="recording"]', timeout=5000)
    assert page.locator("#state").inner_text() == "録画中"
    page.wait_for_timeout(4500)
    page.screenshot(path=str(ARTIFACTS / "counter-recording.png"))

    hold(page, "#record-button", 200)
    page.wait_for_selector('#state[data-state="idle"]', timeout=10000)
    assert page.get_attribute("#sign", "data-lit") == "false"
    assert "セグメント" in page.locator("#last-recording").inner_text()

    # A fresh `kiroku run` on simulated hardware set itself up and left the recovery key beside the data.
    footage = Footage(Vault.open(data), recovery_identity(data.parent / "data-recovery-key.txt"))
    rec = footage.recordings()[0]
    mp4s = footage.plaintexts(rec["id"])
    assert len(mp4s) >= 2
    total = sum(float(ffprobe(p)["format"]["duration"]) for p in mp4s)
    assert 4.0 < total < 7.0
    assert all(decodes_cleanly(p) == "" for p in mp4s)


def test_a_broken_lamp_shows_as_a_fault_on_the_page(appliance, page):
    url, data = appliance
    page.goto(url + "lang/en?next=/counter")
    page.wait_for_selector('#state[data-state="idle"]')
    page.locator("details.sim summary").click()
    page.locator('button[data-action="lamp_fail"]').click()
    hold(page, "#record-button", 200)
    page.wait_for_selector('#state[data-state="fault"]', timeout=5000)
    assert "lamp did not light" in page.locator("#faults").inner_text()
    assert page.get_attribute("#light", "data-pattern") == "fault"
    page.screenshot(path=str(ARTIFACTS / "counter-fault.png"))
    assert Vault.open(data).recordings() == []
