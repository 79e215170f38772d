"""Real backends: picamera2, sounddevice and gpiozero, against faithful doubles where the real
library cannot run here, and against the real library where it can. A missing device is one
line naming it and what to check — never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

import av
import pytest

from firmware.hardware import DeviceFailed, DeviceUnavailable, VideoFormat, open_hardware
from firmware.hardware.media import AudioFormat
from firmware.recorder import Recorder, State
from tests.conftest import QUICK_STALLS, small_config
from tests.helpers import decodes_cleanly, ffprobe, record_segments, wait_for

VIDEO = VideoFormat(640, 360, 15.0)


def pi_camera(**kw):
    from firmware.hardware.picamera2_camera import PiCamera

    return PiCamera(VIDEO, bitrate=800_000, keyframe_interval=1.0, **kw)


# -- the whole command, on this machine (no camera, no GPIO, no sound card) -------------

def test_the_real_recorder_here_fails_with_one_line_naming_the_camera(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kiroku", "recorder", "--real", "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("kiroku recorder: camera: picamera2 is not available")
    assert "python3-picamera2" in lines[0]


def test_no_gpio_library_is_one_line(picamera2_double, sounddevice_double, tmp_path):
    with pytest.raises(DeviceUnavailable) as err:
        open_hardware(small_config(), simulate=False)
    assert err.value.one_line() == ("sign: no GPIO pin library found — on a Raspberry Pi install python3-lgpio; "
                                    "elsewhere run with --simulate")
    assert all(cam.closed for cam in picamera2_double.instances), "devices opened before the failure are closed"


@contextmanager
def _real_recorder(monkeypatch, vault):
    """The recorder on the real backends: the doubles of picamera2 and sounddevice, and
    gpiozero's mock pins standing in for the Pi's (the sign's lamp wired to its read-back)."""
    from gpiozero import Device

    from firmware.hardware.gpio import simulated_pin_factory

    config = small_config(health=QUICK_STALLS)
    gpio = config.gpio
    factory, _lamp = simulated_pin_factory(sign=gpio.sign, readback=gpio.sign_readback or None,
                                           status_light=gpio.status_light)
    monkeypatch.setattr(Device, "pin_factory", factory)
    hw = open_hardware(config, simulate=False)
    rec = Recorder(hw, config, vault).start()
    try:
        yield hw, rec
    finally:
        rec.close()
        hw.close()


@pytest.mark.parametrize("found_by", ["retry", "press"])
def test_a_camera_not_connected_at_start_is_a_fault_shown_until_it_is_there(picamera2_double, sounddevice_double,
                                                                             monkeypatch, vault, found_by):
    """On the appliance a recorder that exited for a loose ribbon cable would restart in a loop
    with the status light dark; it stays up instead, shows the fault, and looks again."""
    from firmware.hardware import LightPattern

    picamera2_double.attached.clear()
    with _real_recorder(monkeypatch, vault) as (hw, rec):
        status = rec.status()
        assert status["state"] == "fault"
        assert [f["message"] for f in status["faults"]] == [
            "camera: no camera module found — power off, check the ribbon cable and start again (a camera module "
            "is found only at start), and that `rpicam-hello --list-cameras` lists it"]
        assert status["devices"]["camera"] == {"backend": "not found", "running": False, "last_frame_age_s": None}
        assert hw.status_light.pattern == LightPattern.FAULT
        assert [r[0] for r in vault.db.execute("SELECT subject FROM audit WHERE action = 'fault'")] == ["camera"]
        picamera2_double.reset()  # a USB camera plugged in (a camera module needs a restart of the Pi)
        if found_by == "press":  # before the recorder's own retry: the start finds the camera
            rec.start_recording(by="test")
            wait_for(lambda: rec.state == State.RECORDING, timeout=20, what="recording")
            assert not rec.faults and hw.status_light.pattern == LightPattern.RECORDING
            rec.stop_recording(by="test")
        wait_for(lambda: rec.state == State.IDLE, timeout=20, what="the fault to clear once the camera is there")
        assert rec.status()["devices"]["camera"]["backend"] == "picamera2" and not rec.faults
        assert hw.status_light.pattern == LightPattern.READY


def test_a_microphone_not_connected_at_start_leaves_video_and_says_so(picamera2_double, sounddevice_double,
                                                                       monkeypatch, vault):
    """Video without sound is better evidence than nothing: a USB microphone left unplugged at
    boot must not keep the recorder from starting, and it is found once plugged in."""
    sounddevice_double.unplug_all()
    sounddevice_double.devices.clear()  # as PortAudio enumerated it at start
    with _real_recorder(monkeypatch, vault) as (hw, rec):
        status = rec.status()
        assert status["state"] == "idle"
        [fault] = status["faults"]
        assert fault["device"] == "microphone" and not fault["blocking"]
        assert fault["message"].startswith("microphone: no audio input device found")
        assert fault["message"].endswith("(I2S: the overlay in config.txt); recording without sound")
        assert status["devices"]["microphone"]["backend"] == "not found"
        sounddevice_double.plug_in()
        mic = hw.microphone
        with pytest.raises(DeviceUnavailable):
            mic.start(lambda block: None)  # PortAudio still has its old list of sound cards
        mic.reset()  # what the recorder's restart does: the list is read again
        mic.start(lambda block: None)
        assert mic.is_running and mic.backend == "sounddevice"
        mic.stop()


# -- picamera2 ------------------------------------------------------------------------------

def test_no_camera_module_is_reported_with_what_to_check(picamera2_double):
    picamera2_double.attached.clear()
    with pytest.raises(DeviceUnavailable) as err:
        pi_camera()
    assert err.value.one_line() == (
        "camera: no camera module found — power off, check the ribbon cable and start again (a camera module "
        "is found only at start), and that `rpicam-hello --list-cameras` lists it"
    )


@pytest.mark.parametrize("platform", ["vc4", "pisp"], ids=["pi4-hardware-encoder", "pi5-libx264"])
def test_frames_arrive_as_h264_stamped_with_sensor_time(picamera2_double, platform):
    from firmware import clock

    picamera2_double.encoders.use_platform(platform)
    frames = []
    with pi_camera() as cam:
        before = clock.boottime_us()
        cam.start(frames.append)
        wait_for(lambda: len(frames) >= 20, what="20 frames")
        cam.request_keyframe()
        time.sleep(0.2)
        cam.stop()
        after = clock.boottime_us()
    assert all(before <= f.time_us <= after for f in frames), "times are absolute sensor (boottime) times"
    # 15 frames per second: each frame one sensor interval after the one before, or a whole number
    # of them where the sensor (like a real one on a loaded machine) dropped frames it was late for
    gaps = [b.time_us - a.time_us for a, b in zip(frames, frames[1:])]
    assert all(abs(g / 66_667 - round(g / 66_667)) < 0.05 for g in gaps), f"off the 15 fps grid: {gaps}"
    assert min(gaps) == pytest.approx(66_667, abs=1_000), "about 15 frames per second"
    assert all(b.time_us > a.time_us for a, b in zip(frames, frames[1:])), "in capture order"
    assert frames[0].keyframe and sum(f.keyframe for f in frames) >= 2
    decoder = av.CodecContext.create("h264", "r")
    decoded = sum(len(decoder.decode(av.Packet(f.data))) for f in frames)
    assert decoded >= len(frames) - 2


def test_the_adapter_passes_only_arguments_both_pi_encoders_accept(picamera2_double):
    picamera2_double.encoders.use_platform("pisp")
    with pi_camera() as cam:
        cam.start(lambda f: None)  # a Pi 5 TypeError here would mean an argument only the Pi 4 takes
        cam.stop()


def test_a_hung_stop_recording_is_bounded(picamera2_double):
    with pi_camera() as cam:
        cam.start(lambda f: None)
        time.sleep(0.2)
        picamera2_double.hang_on_stop = True
        started = time.monotonic()
        with pytest.raises(DeviceFailed) as err:
            cam.stop(timeout=1.0)
        assert time.monotonic() - started < 3
        assert "stop_recording did not return" in str(err.value)
        picamera2_double.hang_on_stop = False


@pytest.mark.slow
def test_the_recorder_records_through_picamera2_and_sounddevice(picamera2_double, sounddevice_double, vault, footage):
    """The real backends end to end, with only the GPIO simulated (the Pi's pins don't exist here)."""
    from firmware.hardware import Hardware, SimulatedSpeaker, Simulator
    from firmware.hardware.gpio import RecordButton, Sign, StatusLight, simulated_pin_factory
    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    config = small_config()
    gpio = config.gpio
    factory, lamp = simulated_pin_factory(sign=gpio.sign, readback=gpio.sign_readback, status_light=gpio.status_light)
    camera = pi_camera()
    mic = SoundDeviceMicrophone(AudioFormat(48000, 1))
    button = RecordButton(gpio.button, hold_time=1.0, pin_factory=factory)
    hw = Hardware(camera=camera, microphone=mic, sign=Sign(gpio.sign, readback=gpio.sign_readback, pin_factory=factory),
                  button=button, status_light=StatusLight(gpio.status_light, pin_factory=factory),
                  speaker=SimulatedSpeaker(), simulator=Simulator(button_pin=button.pin, lamp=lamp, camera=None,
                                                                  microphone=None))
    with hw, Recorder(hw, config, vault) as rec:
        record_segments(rec, hw.simulator, count=2, timeout=15)
    recording = footage.recordings()[0]
    for mp4 in footage.plaintexts(recording["id"]):
        assert sorted(s["codec_name"] for s in ffprobe(mp4)["streams"]) == ["aac", "h264"]
        assert decodes_cleanly(mp4) == ""


# -- sounddevice --------------------------------------------------------------------------

def test_blocks_are_stamped_from_the_adc_time_and_counted_in_samples(sounddevice_double):
    from firmware import clock
    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    sounddevice_double.adc_latency = 0.030
    blocks = []
    mic = SoundDeviceMicrophone(AudioFormat(48000, 1), blocksize=480)
    mic.start(lambda b: blocks.append((clock.boottime_us(), b)))
    wait_for(lambda: len(blocks) >= 30, what="30 blocks")
    mic.stop()
    ages = sorted(received - block.time_us for received, block in blocks)
    # The first sample of a 10 ms block reached us 10 ms + 30 ms latency after capture;
    # scheduling can only add to that.
    assert 10_000 + 30_000 - 2_000 <= ages[len(ages) // 2] <= 10_000 + 30_000 + 20_000
    times = [b.time_us for _, b in blocks]
    assert all(b - a == 10_000 for a, b in zip(times[1:], times[2:])), "480 samples at 48 kHz are 10 ms"
    assert mic.audio_clock.reanchors == 0


def test_a_drifting_sound_card_is_re_anchored(sounddevice_double):
    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    sounddevice_double.rate_error = 0.02  # 2 % fast: 20 ms of drift a second
    blocks = []
    mic = SoundDeviceMicrophone(AudioFormat(48000, 1), blocksize=960)
    mic.start(blocks.append)
    wait_for(lambda: len(blocks) >= 150, timeout=10, what="three seconds of audio")
    mic.stop()
    assert mic.audio_clock.reanchors >= 2


def test_input_overflows_are_counted(sounddevice_double):
    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    sounddevice_double.overflow_every = 5
    mic = SoundDeviceMicrophone(AudioFormat(48000, 1), blocksize=480)
    blocks = []
    mic.start(blocks.append)
    wait_for(lambda: len(blocks) >= 20, what="20 blocks")
    mic.stop()
    assert mic.overflows >= 3


def test_no_sound_card_with_the_real_portaudio_is_one_line():
    import sounddevice

    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    if any(d["max_input_channels"] > 0 for d in sounddevice.query_devices()):
        pytest.skip("this machine has a sound input; the test needs one without (as CI is)")

    with pytest.raises(DeviceUnavailable) as err:
        SoundDeviceMicrophone(AudioFormat(48000, 1))
    text = err.value.one_line()
    assert text.startswith("microphone: no audio input device found")
    assert "arecord -l" in text


def test_a_microphone_index_in_the_config_is_an_index_not_a_name(sounddevice_double):
    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    mic = SoundDeviceMicrophone(AudioFormat(48000, 1), device="0")
    assert mic.name.startswith("USB PnP Sound Device")
    with pytest.raises(DeviceUnavailable):
        SoundDeviceMicrophone(AudioFormat(48000, 1), device="1")


def test_a_named_microphone_that_is_not_there(sounddevice_double):
    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    with pytest.raises(DeviceUnavailable) as err:
        SoundDeviceMicrophone(AudioFormat(48000, 1), device="ReSpeaker")
    assert "input device 'ReSpeaker' not found" in str(err.value)


def test_a_vanished_sound_card_is_noticed_and_found_again(sounddevice_double, vault):
    from firmware.hardware import SimulatedCamera
    from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone

    config = small_config(health=QUICK_STALLS)
    hw = open_hardware(config, simulate=True)
    hw.microphone.close()
    hw.microphone = SoundDeviceMicrophone(AudioFormat(48000, 1))
    assert isinstance(hw.camera, SimulatedCamera)
    with hw, Recorder(hw, config, vault) as rec:
        hw.simulator.press()
        hw.simulator.release()
        wait_for(lambda: rec.state == State.RECORDING, what="recording")
        sounddevice_double.unplug_all()
        wait_for(lambda: "no audio input device found" in " ".join(f["message"] for f in rec.status()["faults"]),
                 timeout=6, what="the microphone reported missing")
        assert rec.state == State.RECORDING, "video goes on"
        sounddevice_double.plug_in()
        wait_for(lambda: not any(f["device"] == "microphone" for f in rec.status()["faults"]), timeout=12,
                 what="the microphone found again after it is plugged back in")
        assert rec.state == State.RECORDING
