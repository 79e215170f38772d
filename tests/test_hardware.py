"""hardware/: the documents a city's IT staff build from must agree with the firmware."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from firmware.config import Config

HARDWARE = Path(__file__).resolve().parent.parent / "hardware"


def _bcm(pin: str) -> int:
    return int(pin.removeprefix("GPIO"))


def test_the_capacity_tables_in_the_readme_are_what_the_firmware_defaults_give():
    import runpy

    capacity = runpy.run_path(str(HARDWARE / "capacity.py"), run_name="capacity")
    assert capacity["tables"]() in (HARDWARE / "README.md").read_text(), \
        "hardware/README.md's capacity table is stale: paste `python hardware/capacity.py` into it"


def test_a_card_too_small_for_the_minimum_is_not_shown_as_enough():
    import runpy

    capacity = runpy.run_path(str(HARDWARE / "capacity.py"), run_name="capacity")
    config = Config()
    assert capacity["days"](256, 1, config) >= 90 > capacity["days"](256, 2, config)
    # one hour of the default stream is about 1.87 GB: 4 Mbit/s video + audio + container
    assert 1.8e9 < capacity["bytes_per_second"](config) * 3600 < 1.95e9


def test_the_pin_map_the_wiring_and_the_boot_settings_agree_with_the_firmware():
    gpio = Config().gpio
    readme = (HARDWARE / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in readme.splitlines()
            if line.startswith("| ") and line.count("|") > 5}
    assert rows["record button"] == gpio.button
    assert rows["「録画中」 sign"] == gpio.sign
    assert rows["sign read-back"] == gpio.sign_readback
    assert rows["status light"] == gpio.status_light

    svg = ET.parse(HARDWARE / "wiring.svg").getroot()  # well-formed, so it renders in the README
    text = " ".join(t for t in svg.itertext())
    for pin in (gpio.button, gpio.sign, gpio.sign_readback, gpio.status_light):
        assert pin in text, f"the wiring diagram does not show {pin}"

    boot = (HARDWARE / "config.txt").read_text()
    settings = re.findall(r"^gpio=(\d+)=(\S+)$", boot, re.M)
    assert (str(_bcm(gpio.sign)), "op,dl" if gpio.sign_active_high else "op,dh") in settings, \
        "the sign must stay dark from power-on"
    assert (str(_bcm(gpio.button)), "ip,pu") in settings
    assert (str(_bcm(gpio.sign_readback)), "ip,pd") in settings
    assert "dtparam=watchdog=on" in boot
