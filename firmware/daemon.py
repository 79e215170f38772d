"""The recorder process (``kiroku recorder``): hardware, state machine, control socket.

``main`` returns the exit code: 0 after a clean stop, 2 when a device or the data folder
is unusable (one line on stderr says which and what to check), 3 when a device hung and
only a fresh process can recover it (systemd restarts it). Signal handlers only set a
flag; the main loop notices it, ends any recording properly and exits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from firmware import systemd
from firmware.config import Config
from firmware.control import ControlError, ControlServer, socket_path
from firmware.hardware import HardwareError, open_hardware
from firmware.recorder import Recorder
from firmware.vault import Vault
from firmware.vault.errors import KeyStoreError

log = logging.getLogger("kiroku.recorder")

EXIT_OK, EXIT_UNUSABLE, EXIT_RESTART = 0, 2, 3


class DataDirError(OSError):
    """The data folder cannot be used (missing permissions, or another recorder owns it)."""


def lock_data_dir(data_dir: Path):
    """Hold ``<data>/recorder.lock`` for the life of the process: one recorder per data folder."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(data_dir / "recorder.lock", os.O_RDWR | os.O_CREAT, 0o640)
    except OSError as exc:
        raise DataDirError(f"data folder {data_dir}: {exc.strerror} — check it exists and is writable") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirError(f"data folder {data_dir}: another recorder is already running on it") from None
    return fd


def recorder_running(data_dir: Path) -> bool:
    """Whether a recorder holds ``<data>/recorder.lock`` now. Asks without taking it for
    long, read-only (a seized card's copy has the file and nobody holding it)."""
    try:
        fd = os.open(Path(data_dir) / "recorder.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def config_digest(config: Config) -> str:
    """A short fingerprint of the settings in force, recorded in the audit log at start."""
    import dataclasses
    import hashlib
    import json

    return hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()[:16]


def main(data_dir: Path, config: Config, *, simulate: bool) -> int:
    data_dir = Path(data_dir)
    try:
        lock = lock_data_dir(data_dir)
    except DataDirError as exc:
        print(f"kiroku recorder: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        hardware = open_hardware(config, simulate=simulate)
    except HardwareError as exc:
        print(f"kiroku recorder: {exc.one_line()}", file=sys.stderr)
        os.close(lock)
        return EXIT_UNUSABLE
    try:
        vault = Vault.open(data_dir, config)
    except (OSError, sqlite3.Error) as exc:
        print(f"kiroku recorder: vault in {data_dir}: {exc} — check the data partition", file=sys.stderr)
        hardware.close()
        os.close(lock)
        return EXIT_UNUSABLE
    try:
        if vault.ready:
            vault.keys.signing_key()  # every entry of the log is signed with it: without it, nothing is done
    except KeyStoreError as exc:
        print(f"kiroku recorder: {exc}", file=sys.stderr)
        vault.close()
        hardware.close()
        os.close(lock)
        return EXIT_UNUSABLE
    for finding in vault.recover():
        log.warning("recovered after a crash: %s: %s", finding.path, finding.detail)
    if not vault.ready:
        log.warning("the vault is not set up: recording is refused until `kiroku init` or the first-run page")

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    recorder = Recorder(hardware, config, vault)
    if vault.ready:
        vault.audit("recorder", "recorder.start", detail={
            "simulated": hardware.simulated, "mode": config.device.mode, "config": config_digest(config)})
    server = None
    code = EXIT_OK
    try:
        try:
            server = ControlServer(socket_path(data_dir), recorder)
        except (ControlError, OSError) as exc:
            print(f"kiroku recorder: control socket: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
        recorder.start()
        server.start()
        backend = "simulated hardware" if hardware.simulated else "the counter's hardware"
        log.info("recorder ready on %s (%s mode); control socket %s", backend, config.device.mode, server.path)
        systemd.notify("READY=1", f"STATUS=idle, on {backend}")
        watchdog = systemd.watchdog_seconds()
        interval = min(1.0, watchdog / 3) if watchdog else 1.0
        last_state = None
        while not stop.wait(interval):
            if recorder.fatal:
                log.error("%s — exiting so that a fresh process can recover the device", recorder.fatal)
                code = EXIT_RESTART
                break
            if recorder.alive():
                systemd.notify("WATCHDOG=1")
            if recorder.state != last_state:
                last_state = recorder.state
                systemd.notify(f"STATUS={last_state.value}")
    finally:
        systemd.notify("STOPPING=1")
        log.info("stopping")
        if server is not None:
            server.close()
        recorder.close()
        hardware.close()
        if vault.ready:
            vault.audit("recorder", "recorder.stop", detail={"exit_code": code})
        vault.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(lock)
        log.info("stopped")
    return code
