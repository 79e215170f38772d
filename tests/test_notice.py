"""Art. 4(2): the person is told before anything is recorded, and nothing is stored while the
sign is dark. Frame times here are read from the pixels of the stored frames and the sign's
times from its mock pins, not from anything kiroku wrote about itself."""

from __future__ import annotations

import pytest

from firmware.hardware import LightPattern
from firmware.recorder import Recorder, State
from tests.conftest import small_config
from tests.helpers import PinLog, decode, record_segments, wait_for


def _first_recording(footage):
    return wait_for(footage.recordings, what="a stored recording")[0]


@pytest.mark.parametrize("delay", [0.5, 1.5])
def test_first_stored_frame_was_captured_after_the_sign_lit_and_the_notice_delay(delay, vault, footage):
    from firmware.hardware import open_hardware

    config = small_config(notice={"delay": delay})
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, vault) as rec:
        lamp = PinLog(hw.simulator.sign_readback_pin)
        record_segments(rec, hw.simulator)
        sign_on = lamp.first(True)

    recording = _first_recording(footage)
    frames = decode(footage.plaintexts(recording["id"])[0])
    first_frame_time = frames.frame_times_us[0]
    assert first_frame_time is not None, "the first stored frame carries its capture time"
    assert first_frame_time >= sign_on + delay * 1e6, (
        f"first frame captured {(first_frame_time - sign_on) / 1e3:.0f} ms after the sign lit; "
        f"the notice lasts {delay * 1e3:.0f} ms"
    )
    # Audio starts with the segment, never before its first frame.
    assert frames.audio_first_pts_s is not None and frames.audio_first_pts_s >= 0


def test_a_failing_lamp_stops_storage_and_shows_a_fault(recorder, hardware, footage):
    lamp = PinLog(hardware.simulator.sign_readback_pin)  # the read-back: what the lamp really did
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.segments_written >= 1, timeout=10, what="a first segment")
    hardware.simulator.lamp_fail()
    wait_for(lambda: recorder.state == State.FAULT, what="the fault state")
    lamp_dark = lamp.first(False)

    status = recorder.status()
    assert any(f["device"] == "sign" for f in status["faults"])
    assert status["status_light"]["pattern"] == LightPattern.FAULT.value
    assert not hardware.sign.is_commanded, "the sign output is switched off after the fault"

    recording = wait_for(lambda: [r for r in footage.recordings() if r["ended_at"]], what="the recording closed")[0]
    stored = [t for p in footage.plaintexts(recording["id"]) for t in decode(p).frame_times_us]
    assert stored and all(t is not None for t in stored)
    assert max(stored) < lamp_dark, "a frame captured after the lamp went dark was stored"
    assert recording["end_reason"] == "sign went dark"


def test_nothing_is_recorded_when_the_lamp_never_lights(recorder, hardware, footage):
    hardware.simulator.lamp_fail()
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.state == State.FAULT, what="the fault state")
    status = recorder.status()
    assert "lamp did not light" in " ".join(f["message"] for f in status["faults"])
    assert footage.recordings() == []
    assert recorder.segments_written == 0
    assert not hardware.camera.is_running, "the camera is not left running"


def test_after_a_lamp_repair_the_next_press_records_again(recorder, hardware):
    hardware.simulator.lamp_fail()
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.state == State.FAULT, what="the fault state")
    hardware.simulator.lamp_repair()
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.state == State.RECORDING, what="recording after the repair")
    assert recorder.status()["faults"] == []


def test_the_announcement_is_played_first_and_lengthens_the_notice(vault, footage):
    from firmware.hardware import open_hardware

    config = small_config(notice={"delay": 0.5, "announcement": "chime"})
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, vault) as rec:
        record_segments(rec, hw.simulator)
        played = hw.speaker.played
    assert len(played) == 1
    started, seconds = played[0]
    assert seconds > 0.5, "the chime is longer than the configured delay"
    first = decode(footage.plaintexts(_first_recording(footage)["id"])[0]).frame_times_us[0]
    assert first >= started + seconds * 1e6, "recording began before the announcement ended"


def test_a_lamp_that_flickers_while_frames_are_in_flight_stores_nothing_from_the_dark(recorder, hardware, footage):
    """The encoder hands frames over 150 ms after capture; the lamp goes dark for 50 ms and
    comes back before any frame captured in the dark arrives. Those frames must still be refused."""
    hardware.camera.latency_us = 150_000
    readback = PinLog(hardware.simulator.sign_readback_pin)
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.segments_written >= 1, timeout=10, what="a first segment")
    hardware.simulator.lamp_flicker()
    wait_for(lambda: recorder.state == State.FAULT, what="the fault state")
    dark = readback.first(False)
    recording = wait_for(lambda: [r for r in footage.recordings() if r["ended_at"]], what="the recording closed")[0]
    stored = [t for p in footage.plaintexts(recording["id"]) for t in decode(p).frame_times_us]
    assert stored and max(stored) < dark, "a frame captured while the lamp was dark was stored"
    last = footage.segments(recording["id"])[-1]
    assert last.end_us <= dark + 40_000, "audio captured in the dark was kept"
    assert any(f["device"] == "sign" for f in recorder.status()["faults"])


def test_the_notice_counts_from_when_the_lamp_is_proven_lit(data_dir, vault, footage):
    from firmware.hardware import open_hardware

    config = small_config(notice={"delay": 0.5}, health={"sign_confirm": 2.0})
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, vault) as rec:
        hw.simulator.sign_pin.light_delay = 0.4  # a relay and lamp that take 0.4 s to light
        readback = PinLog(hw.simulator.sign_readback_pin)
        record_segments(rec, hw.simulator)
        lit = readback.first(True)
    first = decode(footage.plaintexts(_first_recording(footage)["id"])[0]).frame_times_us[0]
    assert first >= lit + 0.5e6, f"only {(first - lit) / 1e3:.0f} ms of notice after the lamp lit"


def test_continuous_mode_recovers_by_itself_after_a_lamp_blip(vault):
    from firmware.hardware import open_hardware

    config = small_config(device={"mode": "continuous"})
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, vault) as rec:
        wait_for(lambda: rec.state == State.RECORDING, what="continuous recording")
        first = rec.recording.id
        hw.simulator.lamp_flicker()
        wait_for(lambda: any(f["device"] == "sign" for f in rec.status()["fault_history"]), what="the fault")
        # (the recording read once: between two reads it may end, and rec.recording be None)
        wait_for(lambda: rec.state == State.RECORDING and getattr(rec.recording, "id", first) != first, timeout=15,
                 what="a new recording without anyone pressing")
        assert hw.sign.is_lit
