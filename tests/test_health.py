"""Devices fail at counters that run for years: the recorder notices within seconds, keeps
what it has, recovers what it can and says so on the light, in ctl status and the web UI."""

from __future__ import annotations

import errno
import json
import time
import zipfile

import pytest

from kiroku.cli import main
from firmware.hardware import LightPattern
from firmware.recorder import Recorder, State
from firmware.store import StoreError
from firmware.vault import Vault
from tests.conftest import QUICK_STALLS, small_config
from tests.helpers import Footage, decode, decodes_cleanly, ffprobe, segments_of, wait_for, whole_ticks


@pytest.fixture
def config():
    """Camera and microphone stalls noticed within a second, as the device tests here make one."""
    return small_config(health=QUICK_STALLS)


@pytest.fixture
def card_config():
    """For a card that stalls or fills: the product's own stall thresholds, so that a camera
    starved by a loaded machine is not mistaken for the fault the test makes."""
    return small_config()


def start(recorder, hardware):
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.state == State.RECORDING, what="recording")


def fault_devices(recorder):
    return {f["device"] for f in recorder.status()["faults"]}


def test_a_stalled_camera_is_restarted_and_recording_goes_on(recorder, hardware, footage):
    start(recorder, hardware)
    wait_for(lambda: recorder.segments_written >= 1, what="a first segment")
    stalled_at = time.monotonic()
    hardware.simulator.camera_stall()
    wait_for(lambda: any(h["device"] == "camera" for h in recorder.status()["fault_history"]),
             timeout=3, what="the camera fault")
    detected = time.monotonic() - stalled_at
    assert detected < 2.5, f"a stalled camera took {detected:.1f} s to notice"
    written = recorder.segments_written
    wait_for(lambda: recorder.segments_written >= written + 2, timeout=10, what="segments after the restart",
             progress=segments_of(recorder))
    assert recorder.state == State.RECORDING
    history = recorder.status()["fault_history"]
    assert any("no frame" in h["message"] for h in history)
    recorder.stop_recording()
    wait_for(lambda: recorder.state == State.IDLE, what="idle")
    rec = footage.recordings()[0]
    for i, mp4 in enumerate(footage.plaintexts(rec["id"])):
        assert decodes_cleanly(mp4) == "", f"segment {i} was not closed cleanly"


def test_an_unplugged_camera_ends_in_a_visible_fault_and_recovers_when_plugged_in(recorder, hardware, footage):
    start(recorder, hardware)
    wait_for(lambda: recorder.segments_written >= 1, what="a first segment")
    hardware.simulator.camera_unplug()
    wait_for(lambda: recorder.state == State.FAULT, timeout=10, what="the fault state")
    status = recorder.status()
    assert "camera" in fault_devices(recorder)
    assert status["status_light"]["pattern"] == LightPattern.FAULT.value
    assert not status["sign"]["lit"], "the sign does not claim a recording that is not happening"
    rec = wait_for(lambda: [r for r in footage.recordings() if r["ended_at"]], what="the recording closed")[0]
    assert "camera" in rec["end_reason"]
    for mp4 in footage.plaintexts(rec["id"]):
        assert decodes_cleanly(mp4) == ""
    hardware.simulator.camera_replug()
    wait_for(lambda: recorder.state == State.IDLE, timeout=12, what="recovery after replugging")
    assert "camera" not in fault_devices(recorder)
    start(recorder, hardware)


def test_an_unplugged_microphone_leaves_video_only_segments_until_it_returns(recorder, hardware, footage, data_dir,
                                                                              recovery, tmp_path):
    start(recorder, hardware)
    wait_for(lambda: recorder.segments_written >= 1, what="a first segment")
    hardware.simulator.microphone_unplug()
    wait_for(lambda: "microphone" in fault_devices(recorder), timeout=10, what="the microphone fault")
    assert recorder.state == State.RECORDING, "video goes on without sound"
    assert recorder.status()["status_light"]["pattern"] == LightPattern.DEGRADED.value
    written = recorder.segments_written
    wait_for(lambda: recorder.segments_written >= written + 2, timeout=10, what="more segments",
             progress=segments_of(recorder))
    hardware.simulator.microphone_replug()
    wait_for(lambda: "microphone" not in fault_devices(recorder), timeout=10, what="the microphone back")
    recording_id = footage.recordings()[0]["id"]

    def whole_segments_with_sound_after_the_gap():
        # counted in what is stored, not in segments written: on a busy machine the sound may
        # come back a segment later than the fault clears
        sound = [info.has_audio for info in footage.segments(recording_id)]
        return False in sound and sound[len(sound) - sound[::-1].index(False):].count(True) >= 2

    wait_for(whole_segments_with_sound_after_the_gap, timeout=15, what="two segments with sound after the gap",
             progress=segments_of(recorder))
    recorder.stop_recording()
    wait_for(lambda: recorder.state == State.IDLE, what="idle")
    rec = footage.recordings()[0]
    kinds = [sorted(s["codec_type"] for s in ffprobe(p)["streams"]) for p in footage.plaintexts(rec["id"])]
    assert ["video"] in kinds, "some segments were stored without sound, and say so"
    assert kinds[-1] == ["audio", "video"], "sound returned after the microphone came back"
    infos = footage.segments(rec["id"])
    assert all(i.has_audio == (k == ["audio", "video"]) for i, k in zip(infos, kinds))
    # Exported, the sound after the gap is where it was heard, not moved up to close the gap;
    # a range that starts without sound still has the sound that comes later, and one that
    # ends without sound has silence as long as the picture.
    key = tmp_path / "recovery.txt"
    key.write_text(str(recovery) + "\n")
    at = [(info.start_us - infos[0].start_us) / 1e6 for info in infos]
    ticks = footage.ticks(rec["id"])
    silent = [a for a, k in zip(at, kinds) if k == ["video"]]
    after = max(t for t in ticks if t < silent[0] + 0.1)
    assert any(t > silent[-1] for t in ticks), "ticks after the gap, to place"
    for n, (lo, hi) in enumerate([(0, at[-1] + infos[-1].duration), (silent[0] + 0.1, at[-1] + infos[-1].duration),
                                      (0, silent[-1] + 1.0)]):
        package = tmp_path / f"{n}.zip"
        assert main(["export", "--data", str(data_dir), "--recovery-key", str(key), "--recording", rec["id"],
                     "--start", f"{lo:.3f}", "--end", f"{hi:.3f}", "--ground", "3", "--recipient", "北警察署",
                     "--reference", "北署刑第1号", "--out", str(package)]) == 0
        with zipfile.ZipFile(package) as z:
            clip = z.read(next(n for n in z.namelist() if n.endswith("/clip.mp4")))
            made = json.loads(z.read(next(n for n in z.namelist() if n.endswith("/manifest.json"))))["clip"]
        decoded = decode(clip)
        every = [made["start_s"] + t for t in decoded.tick_positions_s]
        heard = whole_ticks(every, made["start_s"], made["end_s"])
        expected = whole_ticks(ticks, made["start_s"], made["end_s"])
        assert expected and len(heard) == len(expected) and all(abs(h - e) < 0.002 for h, e in zip(heard, expected)), \
            f"{lo}–{hi} s: ticks heard in the clip at {heard} s, stored at {expected} s (silent from {silent[0]} s)"
        assert decoded.audio_seconds == pytest.approx(made["duration_s"], abs=0.05), "sound as long as the picture"
        assert made["audio"] == "re-encoded" and (n != 2 or max(every) <= after + 1e-3)



class SlowStore(Vault):
    """An SD card that stalls: every write of a segment takes a while."""

    delay = 0.0

    def open_segment(self, recording, seq, start_us):
        segment = super().open_segment(recording, seq, start_us)
        write = segment.write

        def slow_write(data):
            time.sleep(self.delay)
            return write(data)

        segment.write = slow_write
        return segment


def test_a_stalled_card_drops_frames_visibly_and_recording_resumes_at_a_keyframe(card_config, data_dir, recovery):
    from firmware.hardware import open_hardware

    config = card_config
    store = SlowStore.open(data_dir, config)
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, store, media_queue_seconds=0.5) as rec:
        start(rec, hw)
        wait_for(lambda: rec.segments_written >= 1, what="a first segment")
        store.delay = 1.5
        wait_for(lambda: "storage" in fault_devices(rec), timeout=10, what="the write-queue fault")
        assert any("write queue" in f["message"] for f in rec.status()["faults"] if f["device"] == "storage")
        store.delay = 0.0
        written = rec.segments_written
        wait_for(lambda: rec.segments_written >= written + 2, timeout=15, what="segments after the stall",
                 progress=segments_of(rec))
        rec.stop_recording()
        wait_for(lambda: rec.state == State.IDLE, timeout=15, what="idle")
    footage = Footage(store, recovery)
    recording = footage.recordings()[0]
    infos = footage.segments(recording["id"])
    assert any(a.end_us < b.start_us for a, b in zip(infos, infos[1:])), "the lost time is a visible gap"
    for mp4 in footage.plaintexts(recording["id"]):
        assert decodes_cleanly(mp4) == ""


class FullStore(Vault):
    full = False

    def open_segment(self, recording, seq, start_us):
        segment = super().open_segment(recording, seq, start_us)
        write = segment.write

        def write_or_fail(data):
            if self.full:
                raise StoreError(errno.ENOSPC, "cannot write: No space left on device")
            return write(data)

        segment.write = write_or_fail
        return segment


def test_a_full_disk_stops_recording_keeps_what_was_stored_and_puts_the_sign_out(card_config, data_dir, recovery):
    from firmware.hardware import open_hardware

    config = card_config
    store = FullStore.open(data_dir, config)
    with open_hardware(config, simulate=True) as hw, Recorder(hw, config, store) as rec:
        start(rec, hw)
        wait_for(lambda: rec.segments_written >= 1, what="a first segment")
        store.full = True
        wait_for(lambda: rec.state == State.FAULT, timeout=10, what="the storage fault")
        assert "No space left" in " ".join(f["message"] for f in rec.status()["faults"])
        assert not hw.sign.is_lit
    footage = Footage(store, recovery)
    recording = footage.recordings()[0]
    mp4s = footage.plaintexts(recording["id"])
    assert mp4s and all(decodes_cleanly(p) == "" for p in mp4s)
    assert not list(data_dir.rglob("*.part")), "the half-written segment is removed"
    assert recording["end_reason"].startswith("storage failure")


def test_a_stalled_microphone_is_restarted_and_sound_returns(recorder, hardware, footage):
    start(recorder, hardware)
    wait_for(lambda: recorder.segments_written >= 1, what="a first segment")
    hardware.simulator.microphone_stall()
    wait_for(lambda: "microphone" in fault_devices(recorder), timeout=10, what="the microphone fault")
    wait_for(lambda: "microphone" not in fault_devices(recorder), timeout=6, what="the microphone recovered")
    written = recorder.segments_written
    wait_for(lambda: recorder.segments_written >= written + 2, timeout=10, what="segments after recovery",
             progress=segments_of(recorder))
    recorder.stop_recording()
    wait_for(lambda: recorder.state == State.IDLE, what="idle")
    infos = footage.segments(footage.recordings()[0]["id"])
    missing = [i.duration - i.audio_samples / 48000 for i in infos]
    assert max(missing) > 0.5, "the stall shows as missing sound, not as invented silence"
    assert all(m < 0.05 for m in missing[-2:]), "sound came back whole after the restart"


def test_a_camera_that_fails_to_start_with_an_os_error_is_a_fault_not_a_stuck_notice(recorder, hardware):
    def broken(sink):
        raise OSError(16, "Device or resource busy: /dev/video11")

    hardware.camera.start = broken
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.state == State.FAULT, what="the fault")
    assert "Device or resource busy" in " ".join(f["message"] for f in recorder.status()["faults"])
    assert not hardware.sign.is_lit, "the sign is not left claiming a recording"
