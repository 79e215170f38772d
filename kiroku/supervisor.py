"""``kiroku run``: the recorder and the web UI as two processes, supervised together — and,
once the device is enrolled with a city hub, its uplink as a third.

This is for development and demonstrations; on the Pi each process is its own systemd
service. The children run in their own sessions, so Ctrl-C reaches only this process,
which then stops the uplink, the web UI and the recorder in that order (the recorder closes
its current segment before it exits). A child that dies is restarted after a pause; the
uplink starts as soon as the device is enrolled (``kiroku enroll`` while this runs).
"""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from firmware.control import ControlClient, ControlError, socket_path
from kiroku.engines import die_with_parent

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
        # A session of its own (Ctrl-C reaches only kiroku run, which stops the children in order),
        # and gone with kiroku run however it ends: a killed supervisor leaves no recorder behind.
        self.proc = subprocess.Popen(self.argv, start_new_session=True, preexec_fn=die_with_parent())
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


def _first_run_for_demo(data_dir: Path, device: str) -> None:
    """On simulated hardware only: set a fresh data folder up so the demo records at once.

    The recovery key goes beside the data folder, not into it, and no manager is made
    (the web UI's first-run page will). On a real device set-up is never automatic.
    """
    from firmware.vault.keys import KeyStore
    from firmware.vault.setup import init

    if KeyStore(data_dir).initialised:
        return
    out = data_dir.resolve().parent / f"{data_dir.resolve().name}-recovery-key.txt"
    if out.exists():
        print(f"kiroku: {data_dir} has no keys but {out} exists; move it away or run `kiroku init`", file=sys.stderr)
        return
    init(data_dir, device=device, recovery_out=out)
    print(f"kiroku: first run on simulated hardware: set up {data_dir}; its recovery key is in {out}\n"
          f"        (it opens the recordings: `age -d -i {out} {data_dir}/keys/day/footage/DAY.age`)", flush=True)


def main(*, data_dir: Path, config_path: str | None, simulate: bool, host: str, port: int,
         device: str = "counter-1", kind: str = "counter") -> int:
    """``kind`` is the device's (``device.kind``): a counter runs ``kiroku recorder``, a call
    recorder ``kiroku call-recorder`` — on simulated hardware with its simulated trunk."""
    config = ["--config", config_path] if config_path else []
    common = ["--data", str(data_dir)] + config + (["--simulate"] if simulate else ["--real"])
    python = [sys.executable, "-m", "kiroku"]
    if kind == "calls":
        recorder = _Child("call recorder", python + ["call-recorder", "--data", str(data_dir)] + config
                          + (["--simulate"] if simulate else []))
    else:
        recorder = _Child("recorder", python + ["recorder"] + common)
    web = _Child("web", python + ["web"] + common + ["--host", host, "--port", str(port)])
    uplink = _Child("uplink", python + ["uplink", "--data", str(data_dir)])
    enrolled = Path(data_dir) / "uplink" / "hub.json"
    sock = socket_path(data_dir)

    if simulate:
        _first_run_for_demo(Path(data_dir), device)
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
        if kind == "calls":
            hardware = "a simulated PBX trunk" if simulate else "the PBX trunk's mirror port"
        else:
            hardware = "simulated hardware" if simulate else "the counter's hardware"
        from webui import setup_code

        try:
            code = setup_code.pending(data_dir)  # only someone who sees this terminal can register first
        except (OSError, sqlite3.Error):
            code = None  # the web UI has said why
        print(f"\nkiroku is running on {hardware}.\n"
              f"  Web UI:  http://{host}:{port}/\n"
              + (f"  Set-up code: {setup_code.shown(code)} (the first-run page asks for it)\n" if code else "")
              + f"  Data:    {Path(data_dir).resolve()}\n"
              f"  Control: kiroku ctl --data {data_dir} status\n"
              "Press Ctrl-C to stop.\n", flush=True)
        while not stop.wait(0.5):
            if uplink.proc is None and enrolled.exists():
                uplink.spawn()
            for child in (recorder, web, uplink):
                if child.proc is None:
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                child.restarts += 1
                log.error("%s exited with code %s; restarting it (restart %d)", child.name, code, child.restarts)
                if stop.wait(_RESTART_PAUSE):
                    break
                child.spawn()
    finally:
        uplink.stop()
        web.stop()
        recorder.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("kiroku stopped.", flush=True)
    return 0
