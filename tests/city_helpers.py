"""A small city for the integration tests, made of the real processes: the hub as ``kiroku hub``
and each device as ``kiroku run`` (recorder, web UI and, once enrolled, uplink), set up and
enrolled with a one-time code by ``kiroku city``'s own code (:class:`kiroku.city.City`) — only
the servers are the test session's (tests/engines.py), or a broker of the test's own when it
stops it. Everything it started is stopped when the test ends, however it ends.

What the tests look at is what people see: the hub's pages and API as the manager logged in
(:class:`HubSession`), a device's web UI as a person at the counter (:class:`Browserless`), and
the device's own records read from its data folder (read-only).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path
from types import SimpleNamespace

from firmware.control import ControlClient, socket_path
from kiroku.city import City, Device
from kiroku.engines import free_port, stop_process
from tests.conftest import config_toml
from tests.helpers import alive, descendants

# Small frames and short segments: three devices record side by side on two cores.
DEVICE_SETTINGS = config_toml(notice_delay=0.5, segment_seconds=2.0)


def wait_until(check, *, deadline: float, what: str, every: float = 0.1):
    """``check()`` until it is true, or AssertionError once ``deadline`` (time.monotonic()) passes."""
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within the time allowed")
        time.sleep(every)


def within(seconds: float, check, what: str, every: float = 0.1):
    """``check()`` true within ``seconds`` from now."""
    return wait_until(check, deadline=time.monotonic() + seconds, what=f"{what} (within {seconds:g} s)", every=every)


# -- reading pages ---------------------------------------------------------------------------------

class _Rows(HTMLParser):
    """The dashboard's device rows (``<tr data-device=…>``): their data- attributes and their text."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self._current: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-device" in attrs:
            self._current = attrs["data-device"]
            self.rows[self._current] = {**{k[5:]: v for k, v in attrs.items() if k.startswith("data-")}, "text": ""}

    def handle_endtag(self, tag):
        if tag == "tr":
            self._current = None

    def handle_data(self, data):
        if self._current is not None:
            self.rows[self._current]["text"] += data


def device_rows(page: str) -> dict[str, dict]:
    parser = _Rows()
    parser.feed(page)
    for row in parser.rows.values():
        row["text"] = " ".join(row["text"].split())
    return parser.rows


def text_of(page: str, element_id: str) -> str:
    """The words of the element with ``id`` (its tags removed, spaces collapsed), '' if absent."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', page, re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(2)).split()) if match else ""


# -- people at a web UI ------------------------------------------------------------------------------

class Browserless:
    """Someone at a web UI (the hub's or a device's) without a browser: cookies, CSRF tokens, forms
    and the JSON API, over HTTP on loopback."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect())
        self.token = ""

    def request(self, method: str, path: str, *, form: dict | None = None, body: dict | None = None,
                timeout: float = 30) -> tuple[int, dict, bytes]:
        headers, data = {}, None
        if body is not None:
            headers = {"Content-Type": "application/json", "X-CSRFToken": self.token}
            data = json.dumps(body).encode()
        elif form is not None:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            data = urllib.parse.urlencode({"csrf_token": self.token, **form}, doseq=True).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def page(self, path: str) -> str:
        status, _, data = self.request("GET", path)
        text = data.decode()
        token = re.search(r'name="csrf-token" content="([^"]+)"', text)
        if token:
            self.token = token.group(1)
        assert status == 200, f"GET {path}: {status}\n{text[:2000]}"
        return text

    def submit(self, path: str, form: dict, *, page: str | None = None) -> tuple[int, str]:
        """A form as a person sends it: the page first (its CSRF token), then the POST. Returns the
        status and where it sent the browser (or the page it answered)."""
        self.page(page or path)
        status, headers, data = self.request("POST", path, form=form)
        return status, headers.get("Location", "") or data.decode()

    def api(self, method: str, path: str, body: dict | None = None, *, expect: int | tuple = (200, 201)):
        if not self.token:
            self.token = self._json("GET", "/api/v1/session")["csrf_token"]
        return self._json(method, "/api/v1" + path, body, expect=expect)

    def _json(self, method: str, path: str, body: dict | None = None, *, expect: int | tuple = 200):
        status, _, data = self.request(method, path, body=body if body is not None or method != "GET" else None)
        expect = (expect,) if isinstance(expect, int) else expect
        assert status in expect, f"{method} {path}: {status} {data[:500]!r}"
        return json.loads(data or b"null")

    def log_in(self, username: str, password: str) -> None:
        self.token = self._json("GET", "/api/v1/session")["csrf_token"]
        self.token = self._json("POST", "/api/v1/session", {"username": username, "password": password})["csrf_token"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to look at (where a log-in sends someone), not to follow."""

    def redirect_request(self, *args, **kwargs):
        return None


class HubSession(Browserless):
    """The manager at the hub."""

    def devices(self) -> dict[str, dict]:
        return {d["id"]: d for d in self.api("GET", "/devices")}

    def device(self, device_id: str) -> dict:
        return self.devices().get(device_id) or {}

    def dashboard(self) -> tuple[str, dict[str, dict]]:
        page = self.page("/hub/")
        return page, device_rows(page)


# -- the processes ----------------------------------------------------------------------------------

class CityDevice:
    """One device of the test city: its data folder, its processes, its control socket."""

    def __init__(self, city: "SmallCity", device: Device):
        self.city, self.d = city, device
        self.killed: list[int] = []

    id = property(lambda self: self.d.id)
    place = property(lambda self: self.d.place)
    data = property(lambda self: self.d.data)
    url = property(lambda self: f"http://127.0.0.1:{self.d.port}")

    @property
    def control(self) -> ControlClient:
        return ControlClient(socket_path(self.data), timeout=10)

    def status(self) -> dict:
        return self.control.status()

    def processes(self) -> list[int]:
        return [self.d.proc.pid, *descendants(self.d.proc.pid)] if self.d.proc else []

    def kill(self) -> None:
        """As a power cut would: SIGKILL to ``kiroku run`` and every process it started (they run in
        sessions of their own, so its process group alone would leave them running)."""
        pids = self.processes()
        self.killed = pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.d.proc.wait(10)
        wait_until(lambda: not any(alive(p) for p in pids), deadline=time.monotonic() + 10,
                   what="the device's processes gone")

    def start(self) -> None:
        self.city.city.start_device(self.d)

    def enroll(self, code: str) -> None:
        """Set up, started, and joined to the hub with ``code`` (``kiroku enroll``)."""
        self.city.city.prepare_device(self.d)
        self.city.city.enroll_device(self.d, code)

    def stop(self) -> None:
        pids = self.processes()
        stop_process(self.d.proc)
        for pid in pids:  # whatever outlived its supervisor
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def log(self) -> str:
        path = self.data.parent / f"{self.id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- what the device itself holds, read-only --------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.data / 'kiroku.db'}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def audit_log(self) -> list[dict]:
        with closing(self._db()) as conn:
            return [{**dict(r), "detail": json.loads(r["detail"])} for r in conn.execute(
                "SELECT seq, at, actor, action, purpose, subject, detail FROM audit ORDER BY seq")]

    def log_size(self) -> int:
        with closing(self._db()) as conn:
            return conn.execute("SELECT size FROM audit_state").fetchone()[0]

    def latest_checkpoint(self) -> str:
        from firmware.vault.audit import AuditLog
        from firmware.vault.keys import KeyStore

        with closing(self._db()) as conn:
            return AuditLog(KeyStore(self.data)).latest_checkpoint(conn)

    def vkey(self) -> str:
        return (self.data / "keys" / "device.vkey").read_text().strip()

    # -- at the counter ----------------------------------------------------------------------------
    def record(self, by: str = "sato", *, mark: str | None = None, section: str = "市民課",
               segments: int = 1) -> str:
        """A clerk records until ``segments`` are stored (marking an incident on the way if
        ``mark``) and stops; returns the recording's id."""
        c = self.control
        c.request("start", by=by)
        within(15, lambda: c.status()["state"] == "recording", f"{self.id} recording")
        if mark is not None:
            c.request("mark", by=by, note=mark, section=section)
        within(30, lambda: (c.status().get("recording") or {}).get("segments", 0) >= segments,
               f"{segments} segment(s) on {self.id}")
        recording = c.status()["recording"]["id"]
        c.request("stop", by=by)
        within(15, lambda: c.status()["state"] == "idle", f"{self.id} idle again")
        return recording


class SmallCity:
    """``SmallCity(folder, pg, broker).start()`` … ``close()``: the hub, and devices added with
    :meth:`add`. ``pg`` has the database's ``dsn`` and the cluster's ``port``; ``broker`` is a
    started :class:`kiroku.engines.mosquitto.Mosquitto`. Device ids carry a prefix of this city's
    own, so that cities meeting on the session's broker never share an account."""

    def __init__(self, folder: Path, pg, broker, *, manager: str = "yamada", s3=None):
        self.broker = broker
        self.city = City(folder, counters=0, calls=False, port=free_port(), manager=manager, password_file=None,
                         device_settings=DEVICE_SETTINGS, id_prefix=f"t{secrets.token_hex(2)}-")
        self.city.pg, self.city.mqtt = pg, broker
        self.city.s3 = s3  # an S3Store: the hub keeps an evidence locker there
        self.devices: list[CityDevice] = []
        self.url = f"http://127.0.0.1:{self.city.port}"

    @property
    def hub_log(self) -> str:
        path = self.city.folder / "hub" / "hub.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def manager(self) -> HubSession:
        """The manager, logged in at the hub."""
        session = HubSession(self.url)
        session.log_in(self.city.manager, self.city.manager_password())
        return session

    def start(self) -> "SmallCity":
        self.start_hub()
        return self

    def start_hub(self) -> None:
        self.city.start_hub()  # the first manager made at the server (kiroku hub add-manager), then kiroku hub
        within(30, lambda: Browserless(self.url).request("GET", "/api/v1/session")[0] == 200, "the hub answering")

    def stop_hub(self) -> None:
        stop_process(self.city.hub)
        self.city.hub = None

    def plan(self, name: str, place: str, *, kind: str = "counter") -> CityDevice:
        """A device of this city, not set up yet."""
        device = CityDevice(self, self.city.plan_device(name, kind, place, port=free_port()))
        self.devices.append(device)
        return device

    def add(self, name: str, place: str, *, kind: str = "counter") -> CityDevice:
        """A device set up (``kiroku init``), started (``kiroku run``) and enrolled (``kiroku enroll``
        with a code the manager made at the hub), as ``kiroku city`` does it."""
        device = self.plan(name, place, kind=kind)
        call, token = self.city._api()
        self.city.set_up_device(device.d, call, token)
        return device

    def close(self) -> None:
        for device in self.devices:
            device.stop()
        self.stop_hub()
        if self.devices and self.broker.proc is not None:
            from hub.broker import Admin

            admin = Admin("127.0.0.1", self.broker.port, *self.broker.admin, str(self.broker.ca))
            try:
                for device in self.devices:
                    admin.remove_device(device.id)
            finally:
                admin.close()

    def __enter__(self) -> "SmallCity":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


def postgres_of(postgres, dsn: str):
    """What :class:`kiroku.city.City` needs of its PostgreSQL: the database's dsn, the cluster's port."""
    return SimpleNamespace(dsn=dsn, port=postgres.port)


def hub_database(dsn: str):
    """The hub's own records, for what its pages do not show (the order things arrived in)."""
    import psycopg
    from psycopg.rows import dict_row

    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)

