"""The record button, as a clerk uses it: press to start, press to stop, hold to mark."""

from __future__ import annotations

import time

from firmware.recorder import Recorder, State
from tests.conftest import small_config
from tests.helpers import wait_for


def tap(sim, hold: float = 0.1):
    sim.press()
    time.sleep(hold)
    sim.release()


def test_a_second_press_stops_and_leaves_one_recording(recorder, hardware, footage):
    tap(hardware.simulator)
    wait_for(lambda: recorder.state == State.RECORDING, what="recording")
    time.sleep(1.0)
    tap(hardware.simulator)
    wait_for(lambda: recorder.state == State.IDLE, what="idle after the second press")
    assert not hardware.sign.is_lit
    recs = footage.recordings()
    assert len(recs) == 1 and recs[0]["ended_at"] and recs[0]["end_reason"] == "stopped by button"
    assert recs[0]["segments"] >= 1


def test_contact_chatter_counts_as_one_press(recorder, hardware, config):
    pin = hardware.simulator.button_pin
    for _ in range(5):
        begun = time.monotonic()
        pin.drive_low()
        pin.drive_high()  # bounces within the debounce time…
        pin.drive_low()
        if time.monotonic() - begun < config.button.debounce:
            break
        # …unless a loaded machine held this thread up past it: then those were two real
        # presses (the second cancels the notice). Start again from idle.
        pin.drive_high()
        time.sleep(config.button.debounce * 2)
        if recorder.state != State.IDLE:
            recorder.stop_recording()
        wait_for(lambda: recorder.state == State.IDLE, what="idle, to try the chatter again")
    else:
        raise AssertionError("the machine never let three pin changes happen within the debounce time")
    time.sleep(0.15)
    pin.drive_high()
    wait_for(lambda: recorder.state in (State.NOTICE, State.RECORDING), what="the notice")
    time.sleep(0.3)
    assert recorder.state in (State.NOTICE, State.RECORDING), "chatter must not stop the recording it started"


def test_a_long_press_while_recording_marks_an_incident_and_keeps_recording(recorder, hardware, footage, vault):
    tap(hardware.simulator)
    wait_for(lambda: recorder.state == State.RECORDING, what="recording")
    tap(hardware.simulator, hold=1.3)  # long_press is 1.0 s in the test configuration
    time.sleep(0.3)
    assert recorder.state == State.RECORDING, "a long press must not stop the recording"
    wait_for(lambda: recorder.status()["recording"]["marks"] == 1, what="the mark")
    recorder.stop_recording()
    wait_for(lambda: recorder.state == State.IDLE, what="idle")
    rec = footage.recordings()[0]
    marks = footage.marks(rec["id"])
    assert [m["by"] for m in marks] == ["button"]
    started, ended = vault.db.execute("SELECT started_wall_us, ended_wall_us FROM recordings").fetchone()
    assert started < marks[0]["wall_us"] < ended
    assert rec["held"], "a marked incident is kept until it is closed"


def test_a_long_press_from_idle_starts_recording_and_marks_it(recorder, hardware, footage):
    tap(hardware.simulator, hold=1.3)
    wait_for(lambda: recorder.state == State.RECORDING, what="recording")
    recorder.stop_recording()
    wait_for(lambda: recorder.state == State.IDLE, what="idle")
    assert footage.recordings()[0]["marks"] == 1


def test_a_press_during_the_notice_cancels_before_anything_is_stored(vault, footage):
    from firmware.hardware import open_hardware

    config = small_config(notice={"delay": 3.0})
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, vault) as rec:
        tap(hw.simulator)
        wait_for(lambda: rec.state == State.NOTICE, what="the notice")
        tap(hw.simulator)
        wait_for(lambda: rec.state == State.IDLE, what="idle")
        assert not hw.sign.is_lit
    assert footage.recordings() == []


def test_continuous_mode_keeps_the_sign_lit_and_ignores_short_presses(vault):
    from firmware.hardware import open_hardware

    config = small_config(device={"mode": "continuous"})
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, vault) as rec:
        wait_for(lambda: rec.state == State.RECORDING, what="continuous recording")
        assert hw.sign.is_lit
        tap(hw.simulator)
        time.sleep(0.5)
        assert rec.state == State.RECORDING
        tap(hw.simulator, hold=1.3)
        wait_for(lambda: rec.status()["recording"]["marks"] == 1, what="the mark")
        assert rec.state == State.RECORDING and hw.sign.is_lit
