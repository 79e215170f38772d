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


def test_the_simulated_ticks_are_read_back_where_they_begin_and_only_whole(tmp_path):
    """The ruler the sound tests measure with: a tick is placed to the sample, through a
    codec, and one whose beginning was not heard (the sound starts mid-tick, or a muted
    span ends inside one) is not counted, where the loudness alone would have counted it."""
    import av
    import numpy as np
    import pytest

    from firmware.hardware.synth import Tone, tick_onsets

    rate = 48_000
    tone = Tone(rate, 1)
    pcm = tone.render(1_000_012_000, rate * 7 // 2)  # 12 ms into a tick: its beginning is not here
    assert [round(t * 1e6) for t in tick_onsets(pcm, rate)] == [988_000, 1_988_000, 2_988_000]
    muted = pcm.copy()
    muted[:round(1.000 * rate)] = 0  # muted until 12 ms into the second tick
    assert [round(t * 1e6) for t in tick_onsets(muted, rate)] == [1_988_000, 2_988_000]
    ended = pcm[:round(2.998 * rate)]  # ends 10 ms into the last tick: its beginning was heard
    assert [round(t * 1e6) for t in tick_onsets(ended, rate)] == [988_000, 1_988_000, 2_988_000]

    # through AAC at the recorder's bit rate, and back: still within a sample
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = 64_000
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    with av.open(str(path)) as inp:
        frames = list(inp.decode(audio=0))
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
        first = float(frames[0].pts * frames[0].time_base)
    found = [first + t for t in tick_onsets((decoded * 32767).astype(np.int16)[:, None], rate)]
    assert found == pytest.approx([0.988, 1.988, 2.988], abs=1 / rate)
