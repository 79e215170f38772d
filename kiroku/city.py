"""``kiroku city``: the whole city on one machine, simulated — a private PostgreSQL and Mosquitto
under DIR, the hub, N simulated counters (and a call recorder with ``--calls``), every device
enrolled with a one-time code exactly as a real one is (``kiroku enroll``), each device's data
folder at ``DIR/devices/NAME`` (so ``kiroku ctl --data DIR/devices/counter-2 start`` drives
it), and ``DIR/city.json`` listing where everything is.

Every process is the real one (``kiroku hub``, ``kiroku run``), supervised here: Ctrl-C (or
SIGTERM) stops them all, the engines last. A second start on the same DIR finds the same
city: its database, its broker's accounts, its devices and their footage.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

from firmware.fsutil import atomic_write
from kiroku.engines import EngineError, die_with_parent, engine_root, free_port, port_open, stop_process, wait_until
from kiroku.engines.mosquitto import Mosquitto
from kiroku.engines.postgres import Postgres

PLACES = ["市民課窓口 {n}番", "保険年金課窓口 {n}番", "税務課窓口 {n}番", "福祉課窓口 {n}番"]
KIROKU = [sys.executable, "-m", "kiroku"]


@dataclass
class Device:
    id: str
    kind: str
    place: str
    data: Path
    port: int
    proc: subprocess.Popen | None = None


def _say(text: str) -> None:
    print(f"kiroku city: {text}", flush=True)


def _place(i: int) -> str:
    return PLACES[(i - 1) % len(PLACES)].format(n=(i - 1) // len(PLACES) + 1)


class City:
    """The city's processes and folders. ``run()`` is ``kiroku city``; the tests use its parts
    with servers of their own (``pg`` and ``mqtt`` set instead of :meth:`start_engines`):
    ``device_settings`` is added to each new device's kiroku.toml, ``id_prefix`` to its id."""

    def __init__(self, folder: Path, *, counters: int, calls: bool, port: int, manager: str,
                 password_file: Path | None, device_settings: str = "", id_prefix: str = ""):
        self.folder = folder.resolve()
        self.counters, self.calls, self.port = counters, calls, port
        self.manager = manager
        self.password_file = password_file
        self.device_settings, self.id_prefix = device_settings, id_prefix
        self.engines: list = []
        self.s3 = None  # the evidence locker's store (kiroku.engines.s3.S3Store), when there is one
        self.engines_root: Path | None = None
        self.hub: subprocess.Popen | None = None
        self.devices: list[Device] = []
        self.stop = threading.Event()

    # -- engines and hub -----------------------------------------------------------------------

    def _before(self) -> dict:
        """Where the servers were the last time this city ran (city.json), or {}."""
        try:
            return json.loads((self.folder / "city.json").read_text()).get("engines") or {}
        except (OSError, ValueError, AttributeError):
            return {}

    def start_engines(self) -> None:
        # A city started again is the same city: the same servers' folders, and the same broker
        # port, which every device was enrolled with (it is in their hub.json).
        before = self._before()
        root = Path(before["folder"]) if before.get("folder") and Path(before["folder"]).is_dir() else \
            engine_root(self.folder / "engines")
        if root != self.folder / "engines":
            _say(f"the servers' folders are in {root} (their accounts cannot reach {self.folder})")
        self.engines_root = root
        for name, key in (("PostgreSQL", "database_port"), ("the broker", "broker_port")):
            if before.get(key) and port_open(before[key]):
                raise EngineError(f"port {before[key]}, {name}'s when this city last ran (its devices were enrolled"
                                  " with it), is taken by another program: stop it and start the city again")
        self.pg = Postgres(root / "postgres", before.get("database_port")).start()
        self.engines.append(self.pg)
        _say(f"PostgreSQL on 127.0.0.1:{self.pg.port}")
        self.mqtt = Mosquitto(root / "mosquitto", before.get("broker_port")).start()
        self.engines.append(self.mqtt)
        _say(f"Mosquitto (TLS) on 127.0.0.1:{self.mqtt.port}")
        from kiroku.engines.s3 import S3Store

        # the locker's certificate from the city's CA, which devices trust already (the broker's)
        self.s3 = S3Store(root / "s3", before.get("locker_port"), ca=self.mqtt._ca).start()
        self.engines.append(self.s3)
        _say(f"the evidence locker (S3, TLS) on {self.s3.endpoint}, bucket {self.s3.bucket}")

    def hub_config(self) -> Path:
        hub = self.folder / "hub"
        hub.mkdir(parents=True, exist_ok=True, mode=0o700)
        secrets_ = {"database.dsn": self.pg.dsn, "broker-admin": self.mqtt.admin[1]}
        if not (hub / "broker-hub").exists():
            secrets_["broker-hub"] = secrets.token_urlsafe(24)
        for name, value in secrets_.items():
            atomic_write(hub / name, (value + "\n").encode(), mode=0o600)
        locker = ""
        if self.s3 is not None:
            atomic_write(hub / "locker-key", ("\n".join(self.s3.hub_key) + "\n").encode(), mode=0o600)
            locker = (f'[locker]\nendpoint = "{self.s3.endpoint}"\nbucket = "{self.s3.bucket}"\n'
                      f'key_file = "{hub / "locker-key"}"\nca = "{self.s3.ca}"\n')
        config = hub / "hub.toml"
        config.write_text(
            "# Written by kiroku city: the hub of a simulated city on this machine.\n"
            f'[hub]\nfolder = "{hub / "state"}"\n'
            f'[database]\ndsn_file = "{hub / "database.dsn"}"\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {self.mqtt.port}\nca = "{self.mqtt.ca}"\n'
            f'admin = "{self.mqtt.admin[0]}"\nadmin_password_file = "{hub / "broker-admin"}"\n'
            f'hub_password_file = "{hub / "broker-hub"}"\n'
            f'[web]\nhost = "127.0.0.1"\nport = {self.port}\nhttps = false\n' + locker)
        return config

    def manager_password(self) -> str:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        path = self.folder / "manager-password.txt"
        if not path.exists():
            atomic_write(path, (secrets.token_urlsafe(15) + "\n").encode(), mode=0o600)
        return path.read_text().strip()

    def start_hub(self) -> None:
        config = self.hub_config()
        password = self.manager_password()
        secret = self.folder / "hub" / ".manager-password"
        atomic_write(secret, (password + "\n").encode(), mode=0o600)
        try:
            out = subprocess.run([*KIROKU, "hub", "--config", str(config), "add-manager", self.manager,
                                  "--password-file", str(secret), "--section", "資産経営課",
                                  "--display-name", "管理責任者"],
                                 capture_output=True, text=True)
        finally:
            secret.unlink(missing_ok=True)
        if out.returncode != 0 and "exists already" not in out.stderr:
            raise EngineError(f"the first manager could not be made: {out.stderr.strip()}")
        log = open(self.folder / "hub" / "hub.log", "ab")
        self.hub = subprocess.Popen([*KIROKU, "hub", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent())
        wait_until(lambda: port_open(self.port), timeout=60, what=f"the hub on 127.0.0.1:{self.port}", proc=self.hub,
                   log=self.folder / "hub" / "hub.log")
        _say(f"the hub on http://127.0.0.1:{self.port}/ (manager {self.manager!r})")

    # -- devices -------------------------------------------------------------------------------

    def plan_device(self, name: str, kind: str, place: str, port: int | None = None) -> Device:
        """A device of this city, its data folder at DIR/devices/ID, its web UI on ``port`` (the
        next after the hub's and the devices' before it, or any free one if that is taken)."""
        device_id = self.id_prefix + name
        if port is None:
            port = self.port + 1 + len(self.devices)
            port = port if not port_open(port) else free_port()
        d = Device(device_id, kind, place, self.folder / "devices" / device_id, port)
        self.devices.append(d)
        return d

    def plan_devices(self) -> None:
        for i in range(1, self.counters + 1):
            self.plan_device(f"counter-{i}", "counter", _place(i))
        if self.calls:
            self.plan_device("pbx-1", "calls", "代表電話（交換機）")

    def _api(self):
        """The manager's session at the hub's API (what a script of the city's would do)."""
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        url = f"http://127.0.0.1:{self.port}/api/v1"

        def call(method: str, path: str, body: dict | None = None, token: str = ""):
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", "X-CSRFToken": token})
            with opener.open(req, timeout=30) as response:
                return json.loads(response.read() or b"null")

        token = call("GET", "/session")["csrf_token"]
        token = call("POST", "/session", {"username": self.manager, "password": self.manager_password()},
                     token)["csrf_token"]
        return call, token

    def set_up_device(self, d: Device, call, token: str) -> None:
        self.prepare_device(d)
        if (d.data / "uplink" / "hub.json").exists():
            return
        code = call("POST", "/enrollments", {"device": d.id, "kind": d.kind, "place": d.place},
                    token)["enrollment_code"]
        self.enroll_device(d, code)

    def prepare_device(self, d: Device, *, keys: bool = True) -> None:
        """Its data folder, its settings and (unless ``keys`` is false: its first-run page
        makes them) its keys (``kiroku init``), once."""
        d.data.mkdir(parents=True, exist_ok=True)
        config = d.data / "kiroku.toml"
        if not config.exists():
            config.write_text(f'[device]\nid = "{d.id}"\nlocation = "{d.place}"\nkind = "{d.kind}"\n'
                              + self.device_settings)
        if keys and not (d.data / "keys" / "device.key").exists():
            subprocess.run([*KIROKU, "init", "--data", str(d.data), "--recovery-key-out",
                            str(d.data.parent / f"{d.id}-recovery-key.txt")], check=True, capture_output=True)

    def enroll_device(self, d: Device, code: str) -> None:
        """The device enrolls itself with the code, as ``kiroku enroll`` does at a real one (its
        recorder must be running: the enrollment is in its audit log); ``kiroku run`` then
        starts its uplink."""
        if d.proc is None or d.proc.poll() is not None:
            self.start_device(d)
        out = subprocess.run([*KIROKU, "enroll", "--data", str(d.data), "--hub", f"http://127.0.0.1:{self.port}",
                              "--code", code], capture_output=True, text=True)
        if out.returncode != 0:
            raise EngineError(f"{d.id} could not enroll: {out.stderr.strip() or out.stdout.strip()}")

    def start_device(self, d: Device) -> None:
        log = open(d.data.parent / f"{d.id}.log", "ab")
        d.proc = subprocess.Popen([*KIROKU, "run", "--data", str(d.data), "--port", str(d.port)], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                  preexec_fn=die_with_parent())
        wait_until(lambda: port_open(d.port), timeout=60, what=f"{d.id}'s web UI", proc=d.proc,
                   log=d.data.parent / f"{d.id}.log")

    def start_devices(self) -> None:
        self.plan_devices()
        call, token = self._api()
        for d in self.devices:
            self.set_up_device(d, call, token)
        for d in self.devices:
            if d.proc is None:
                self.start_device(d)
            _say(f"{d.id} ({d.place}) on http://127.0.0.1:{d.port}/ — data {d.data}")

    def write_manifest(self) -> Path:
        path = self.folder / "city.json"
        body = {
            "hub": {"url": f"http://127.0.0.1:{self.port}/", "config": str(self.folder / "hub" / "hub.toml"),
                    "manager": self.manager,
                    "manager_password_file": str(self.password_file or self.folder / "manager-password.txt")},
            "database": {"host": "127.0.0.1", "port": self.pg.port, "dsn_file": str(self.folder / "hub" /
                                                                                    "database.dsn")},
            "broker": {"host": "127.0.0.1", "port": self.mqtt.port, "ca": str(self.mqtt.ca), "tls": True},
            "engines": {"folder": str(self.engines_root or ""), "database_port": self.pg.port,
                        "broker_port": self.mqtt.port, "locker_port": self.s3.port if self.s3 else None},
            "locker": self._locker_manifest(),
            "devices": [{"id": d.id, "kind": d.kind, "place": d.place, "data": str(d.data),
                         "web": f"http://127.0.0.1:{d.port}/"} for d in self.devices],
        }
        atomic_write(path, json.dumps(body, ensure_ascii=False, indent=2).encode(), mode=0o640)
        return path

    def _locker_manifest(self) -> dict | None:
        """Where the evidence locker is, and the auditors' credential: read-only (its own listener)."""
        if self.s3 is None:
            return None
        key_file = self.folder / "hub" / "locker-auditor-key"
        atomic_write(key_file, ("\n".join(self.s3.auditor_key) + "\n").encode(), mode=0o600)
        return {"endpoint": self.s3.endpoint, "bucket": self.s3.bucket, "ca": str(self.s3.ca),
                "auditor_endpoint": self.s3.auditor_endpoint, "auditor_key_file": str(key_file),
                "auditor_read_only": True}

    # -- the whole ------------------------------------------------------------------------------

    def run(self) -> int:
        previous = {sig: signal.signal(sig, lambda *_: self.stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start_engines()
            self.start_hub()
            self.start_devices()
            _say(f"everything is listed in {self.write_manifest()}; Ctrl-C stops the city")
            while not self.stop.wait(1):
                for name, proc in [("the hub", self.hub), *((d.id, d.proc) for d in self.devices)]:
                    if proc is not None and proc.poll() is not None:
                        _say(f"{name} exited with code {proc.returncode}: stopping the city (see its log in "
                             f"{self.folder})")
                        return 1
            return 0
        except (EngineError, OSError, urllib.error.URLError, subprocess.CalledProcessError) as exc:
            print(f"kiroku city: {exc}", file=sys.stderr)
            return 2
        finally:
            for d in self.devices:
                stop_process(d.proc)
            stop_process(self.hub)
            for engine in reversed(self.engines):
                engine.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(*, folder: Path, counters: int, calls: bool, port: int, manager: str | None,
         password_file: Path | None) -> int:
    if port and port_open(port):
        print(f"kiroku city: port {port} is in use — pass --port N", file=sys.stderr)
        return 2
    longest = Path(folder).resolve() / "devices" / f"counter-{max(counters, 1)}" / "control.sock"
    if len(os.fsencode(longest)) > 107:  # a Unix socket's path limit: each device's control socket
        print(f"kiroku city: --data {folder} is too long a path for the devices' control sockets ({longest}):"
              " give a shorter one", file=sys.stderr)
        return 2
    return City(folder, counters=counters, calls=calls, port=port or free_port(), manager=manager or "manager",
                password_file=password_file).run()

