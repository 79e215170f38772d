"""The recorder as a process: Ctrl-C and SIGTERM close the segment being written, a crash
loses at most that one segment, systemd hears that it is alive only while it works."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from firmware.control import ControlClient, socket_path
from firmware.vault import Vault
from tests.conftest import config_toml, recovery_identity, set_up
from tests.helpers import Footage, alive, decodes_cleanly, descendants, recorder_answers, wait_for


def footage_of(data_dir) -> Footage:
    return Footage(Vault.open(data_dir), recovery_identity(data_dir.parent / f"{data_dir.name}-recovery.txt"))

CONFIG_TOML = config_toml(segment_seconds=4.0, extra="[health]\ncamera_stop_timeout = 1.0\nrestart_attempts = 1\n")
# for the test of a camera that hangs: noticed within a second
STALLING_TOML = config_toml(segment_seconds=4.0,
                            extra="[health]\ncamera_stall = 1.0\ncamera_stop_timeout = 1.0\nrestart_attempts = 1\n")


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A test that fails half-way must not leave its recorder recording (and taking a CPU) behind."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.terminate()  # kiroku run stops its recorder and web UI on SIGTERM
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def started(proc: subprocess.Popen) -> subprocess.Popen:
    _started.append(proc)
    return proc


def spawn(data_dir, *extra, env=None, config=CONFIG_TOML):
    (data_dir / "kiroku.toml").write_text(config)
    if not (data_dir / "keys").exists():
        set_up(data_dir)
    return started(subprocess.Popen(
        [sys.executable, "-m", "kiroku", "recorder", "--simulate", "--data", str(data_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ))


def recording(data_dir, proc):
    client = ControlClient(socket_path(data_dir))
    wait_for(lambda: recorder_answers(data_dir) or proc.poll() is not None, timeout=20, what="the recorder")
    assert proc.poll() is None, proc.stderr.read()
    client.request("sim", action="press")
    client.request("sim", action="release")
    wait_for(lambda: client.status()["state"] == "recording", what="recording")
    return client


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_process_mid_segment_closes_that_segment_properly(sig, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = spawn(data)
    client = recording(data, proc)
    wait_for(lambda: client.status()["recording"]["segments"] >= 1, timeout=10, what="a first segment")
    time.sleep(2.0)  # halfway through the second 4-second segment
    before = client.status()["recording"]  # how much of it had closed at the signal
    signalled_us = time.time_ns() // 1000
    proc.send_signal(sig)
    assert proc.wait(15) == 0
    footage = footage_of(data)
    rec = footage.recordings()[0]
    mp4s = footage.plaintexts(rec["id"])
    assert len(mp4s) > before["segments"], "the half-written segment was kept, not lost"
    infos = footage.segments(rec["id"])
    assert infos[-1].end_wall_us >= signalled_us - 1_000_000, \
        f"footage up to the signal is missing: it ends {(signalled_us - infos[-1].end_wall_us) / 1e6:.1f} s before"
    assert all(decodes_cleanly(p) == "" for p in mp4s)
    assert not list(data.rglob("*.part"))
    assert rec["end_reason"] == "stopped by shutdown" and rec["ended_at"]
    assert not socket_path(data).exists()


def test_after_a_crash_at_most_the_segment_in_flight_is_missing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = spawn(data)
    client = recording(data, proc)
    wait_for(lambda: client.status()["recording"]["segments"] >= 2, timeout=15, what="two segments",
             progress=lambda: client.status()["recording"]["segments"])
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    footage = footage_of(data)
    rec = footage.recordings()[0]
    complete = footage.segments(rec["id"])
    assert len(complete) >= 2 and list(data.rglob("*.part")), "a segment was in flight"
    assert socket_path(data).exists(), "the killed process left its socket behind"
    proc = spawn(data)
    wait_for(lambda: recorder_answers(data), timeout=20, what="the restarted recorder")
    assert not list(data.rglob("*.part")), "the unfinished segment is cleared away on start"
    assert footage.segments(rec["id"]) == complete
    assert all(decodes_cleanly(p) == "" for p in footage.plaintexts(rec["id"]))
    assert footage.recordings()[0]["end_reason"] == "the recorder stopped unexpectedly"
    proc.terminate()
    assert proc.wait(15) == 0


def test_a_second_recorder_on_the_same_data_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    first = spawn(data)
    wait_for(lambda: recorder_answers(data), timeout=20, what="the first recorder")
    second = spawn(data)
    assert second.wait(20) == 2
    err = second.stderr.read()
    assert "another recorder is already running" in err and "Traceback" not in err
    first.terminate()
    assert first.wait(15) == 0


def test_systemd_hears_ready_and_watchdog_only_while_frames_flow(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify")
    notify.bind(notify_path)
    notify.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1500000")
    proc = spawn(data, env=env, config=STALLING_TOML)
    messages: list[tuple[float, str]] = []

    def drain(seconds, until=None):
        """Collect what the recorder tells systemd for ``seconds``, or until a message says ``until``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                messages.append((time.monotonic(), notify.recv(4096).decode()))
            except TimeoutError:
                continue
            if until is not None and until in messages[-1][1]:
                return True
        return False

    # (as long as the recorder takes to start, which on a busy machine is seconds: as recording() waits)
    assert drain(20, until="READY=1"), "systemd never heard READY=1"
    client = recording(data, proc)
    drain(2)
    assert any("WATCHDOG=1" in m for _, m in messages[-4:]), "fed while recording"
    # The camera wedges and will not even stop (picamera2 #1264): only a new process helps.
    client.request("sim", action="camera_hang")
    hung_at = time.monotonic()
    drain(6)
    assert proc.wait(10) == 3, "exits so that systemd restarts it"
    fed_after = [t for t, m in messages if "WATCHDOG=1" in m and t > hung_at + 2.5]
    assert fed_after == [], "the watchdog was fed while no frames flowed"
    assert any("STOPPING=1" in m for _, m in messages)
    footage = footage_of(data)
    rec = footage.recordings()[0]
    assert all(decodes_cleanly(p) == "" for p in footage.plaintexts(rec["id"]))
    notify.close()


def test_ctl_status_during_recording_reports_the_sign_on(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = spawn(data)
    recording(data, proc)
    out = subprocess.run([sys.executable, "-m", "kiroku", "ctl", "--data", str(data), "status"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0
    assert "state      recording" in out.stdout
    assert "sign       lit" in out.stdout
    as_json = subprocess.run([sys.executable, "-m", "kiroku", "ctl", "--data", str(data), "--json", "status"],
                             capture_output=True, text=True, timeout=20)
    assert json.loads(as_json.stdout)["sign"]["lit"] is True
    proc.terminate()
    assert proc.wait(15) == 0


def test_ctrl_c_to_kiroku_run_mid_recording_stops_both_processes_and_keeps_the_segment(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "kiroku.toml").write_text(CONFIG_TOML)
    set_up(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = started(subprocess.Popen([sys.executable, "-m", "kiroku", "run", "--data", str(data), "--port", str(port)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    client = recording(data, proc)
    wait_for(lambda: client.status()["recording"]["segments"] >= 1, timeout=10, what="a first segment")
    time.sleep(1.5)
    closed = client.status()["recording"]["segments"]  # mid-way through the next one
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert "kiroku stopped." in proc.stdout.read()
    footage = footage_of(data)
    rec = footage.recordings()[0]
    mp4s = footage.plaintexts(rec["id"])
    assert len(mp4s) > closed, "the segment under way at Ctrl-C is kept"
    assert all(decodes_cleanly(p) == "" for p in mp4s)
    assert rec["end_reason"] == "stopped by shutdown"
    assert not recorder_answers(data), "no recorder is left running"


def test_kiroku_run_killed_with_sigkill_leaves_no_recorder_or_web_ui_behind(tmp_path):
    """Its children run in sessions of their own (so that Ctrl-C reaches only kiroku run, which
    stops them in order); killed outright, it cannot stop them — the kernel does, and the same
    folder can be run again at once, the interrupted segment recovered."""

    data = tmp_path / "data"
    data.mkdir()
    (data / "kiroku.toml").write_text(CONFIG_TOML)
    set_up(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "kiroku", "run", "--data", str(data), "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recording(data, proc)
    wait_for(lambda: len(descendants(proc.pid)) >= 2, timeout=20, what="the recorder and the web UI")
    children = descendants(proc.pid)
    proc.kill()
    proc.wait(10)
    try:
        wait_for(lambda: not any(alive(p) for p in children), timeout=20, what="its children gone with it")
    finally:
        for pid in filter(alive, children):  # what the test found left behind goes too
            os.kill(pid, signal.SIGKILL)
    again = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: recorder_answers(data) or again.poll() is not None, timeout=30, what="a new recorder")
        assert again.poll() is None
    finally:
        again.send_signal(signal.SIGINT)
        assert again.wait(30) == 0
    footage = footage_of(data)
    assert footage.recordings()[0]["end_reason"], "the interrupted recording was closed on the next start"
