"""``kiroku run``: the recorder and the web UI as two processes, supervised together.

This is for development and demonstrations; on the Pi each process is its own systemd
service. The children run in their own sessions, so Ctrl-C reaches only this process,
which then stops the web UI and the recorder in that order (the recorder closes its
current segment before it exits). A child that dies is restarted after a pause.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from firmware.control import ControlClient, ControlError, socket_path

log = logging.getLogger("kiroku.run")

_RESTART_PAUSE = 2.0
_STOP_TIMEOUT = 15.0


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _answers(sock: Path) -> bool:
    # A socket file alone proves nothing: a killed recorder leaves its file behind.
    try:
        ControlClient(sock, timeout=2).status()
        return True
    except ControlError:
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class _Child:
    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def spawn(self) -> subprocess.Popen:
        self.proc = subprocess.Popen(self.argv, start_new_session=True)
        return self.proc

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s; killing it", self.name, _STOP_TIMEOUT)
            proc.kill()
            proc.wait()


def main(*, data_dir: Path, config_path: str | None, simulate: bool, host: str, port: int) -> int:
    common = ["--data", str(data_dir)] + (["--config", config_path] if config_path else [])
    common += ["--simulate"] if simulate else ["--real"]
    python = [sys.executable, "-m", "firmware"]
    recorder = _Child("recorder", python + ["recorder"] + common)
    web = _Child("web", python + ["web"] + common + ["--host", host, "--port", str(port)])
    sock = socket_path(data_dir)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        proc = recorder.spawn()
        if not _wait_for(lambda: _answers(sock), 30, proc):
            recorder.stop()
            return proc.returncode if proc.returncode not in (None, 0) else 2
        proc = web.spawn()
        if not _wait_for(lambda: _port_open(host, port), 30, proc):
            web.stop()
            recorder.stop()
            return proc.returncode if proc.returncode not in (None, 0) else 2
        hardware = "simulated hardware" if simulate else "the counter's hardware"
        print(f"\nkiroku is running on {hardware}.\n"
              f"  Web UI:  http://{host}:{port}/\n"
              f"  Data:    {Path(data_dir).resolve()}\n"
              f"  Control: kiroku ctl --data {data_dir} status\n"
              "Press Ctrl-C to stop.\n", flush=True)
        while not stop.wait(0.5):
            for child in (recorder, web):
                assert child.proc is not None
                code = child.proc.poll()
                if code is None:
                    continue
                child.restarts += 1
                log.error("%s exited with code %s; restarting it (restart %d)", child.name, code, child.restarts)
                if stop.wait(_RESTART_PAUSE):
                    break
                child.spawn()
    finally:
        web.stop()
        recorder.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("kiroku stopped.", flush=True)
    return 0
