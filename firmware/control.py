"""The control socket: the only way another process can affect the recorder.

A Unix stream socket in the data folder speaking JSON lines: one request object per
line, one reply object per line. Requests are ``{"op": "status"}``, ``{"op": "start",
"by": NAME}``, ``{"op": "stop", "by": NAME}``, ``{"op": "mark", "by": NAME, "note": …,
"section": …}``, ``{"op": "release", "hold": N}``, ``{"op": "keys.recipients", "by": NAME, "rev": N,
"managers": [{"name", "recipient"}]}`` (the city's managers' keys, from the uplink) and, on
simulated hardware only, ``{"op": "sim", "action": …}``. Replies
are ``{"ok": true, "status": {…}}`` or ``{"ok": false, "error": "…"}``. The socket is
mode 0660, so only the recorder's user and group (the web UI's) can connect; the caller's
uid is logged with every command.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import socketserver
import struct
import threading
import time
from pathlib import Path

from firmware.regulation import HoldReason, Purpose

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
SOCKET_NAME = "control.sock"


class ControlError(Exception):
    """The recorder could not be reached, or refused the request; the message says which."""


class RecorderUnreachable(ControlError, ConnectionError):
    """Nothing answers on the control socket: the recorder is not running, or did not answer."""


class RecorderNotRunning(RecorderUnreachable):
    """No control socket, or nothing listening on it: the request never reached a recorder."""


class RecorderBusy(RecorderUnreachable):
    """The recorder is running but its control socket's queue stayed full (it is answering others)."""


class ControlDenied(ControlError, PermissionError):
    """This user may not use the control socket."""


class CommandRefused(ControlError, RuntimeError):
    """The recorder answered, and refused (it cannot do that now, or the request is wrong)."""


class SocketUnusable(ControlError, ValueError):
    """The control socket cannot be made here (its path is too long, or another recorder owns it)."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > 107:
        raise SocketUnusable(f"the data folder path is too long for a control socket ({path}); use a shorter --data")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: ControlServer = self.server  # type: ignore[assignment]
        try:
            creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except OSError:
            uid = -1
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                self._reply({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                return
            if not line.strip():
                continue
            self._reply(server.dispatch(line, uid))

    def _reply(self, obj: dict) -> None:
        try:
            self.wfile.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves a :class:`~firmware.recorder.Recorder` on ``<data>/control.sock``."""

    daemon_threads = True
    # socketserver's default queue is 5: the web UI's 8 server threads, the hub sync and a
    # `kiroku ctl` asking at once overflowed it while a status took the recorder's lock.
    request_queue_size = 64

    def __init__(self, path: Path, recorder):
        path = Path(path)
        _check_length(path)
        self.recorder = recorder
        if path.exists():
            if _listening(path):
                raise SocketUnusable(f"another recorder is already running on this data folder ({path})")
            path.unlink()  # left behind by a crash
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o660)
        self.path = path
        self._thread: threading.Thread | None = None

    def start(self) -> "ControlServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(2)
            self._thread = None
        self.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def dispatch(self, line: bytes, uid: int) -> dict:
        from firmware.recorder import RecorderError

        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"not a JSON object: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": 'a request is a JSON object with an "op" string'}
        op = request["op"]
        by = str(request.get("by") or f"uid:{uid}")[:80]
        rec = self.recorder
        try:
            if op == "status":
                return {"ok": True, "status": rec.status()}
            if op in ("start", "stop", "mark"):
                log.info("control: %s by %s (uid %d)", op, by, uid)
            if op == "start":
                return {"ok": True, "status": rec.start_recording(by=by)}
            if op == "stop":
                return {"ok": True, "status": rec.stop_recording(by=by)}
            if op == "mark":
                note, section = request.get("note", ""), request.get("section", "")
                if not isinstance(note, str) or not isinstance(section, str):
                    return {"ok": False, "error": "note and section must be strings"}
                return {"ok": True, "status": rec.mark(by=by, note=note[:500], section=section[:80])}
            if op == "reload":
                log.info("control: reload by %s (uid %d)", by, uid)
                return {"ok": True, "status": rec.reload()}
            if op == "audit":
                return self._audit(rec, request, by, uid)
            if op == "hold":
                return self._hold(rec, request, by)
            if op == "keys.recipients":
                log.info("control: keys.recipients by %s (uid %d)", by, uid)
                return self._recipients(rec, request, by, uid)
            if op == "release":
                hold = request.get("hold")
                if not isinstance(hold, int):
                    return {"ok": False, "error": 'release needs a "hold" number'}
                log.info("control: release hold %d by %s (uid %d)", hold, by, uid)
                try:
                    rec.store.release_hold(hold, by=by)
                except KeyError as exc:
                    return {"ok": False, "error": str(exc.args[0])}
                return {"ok": True, "status": rec.status()}
            if op == "sim":
                if rec.hw.simulator is None:
                    return {"ok": False, "error": "sim: this recorder runs on real hardware"}
                action = request.get("action")
                if not isinstance(action, str):
                    return {"ok": False, "error": 'sim needs an "action" string'}
                rec.hw.simulator.act(action)
                return {"ok": True, "status": rec.status()}
        except (RecorderError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        except TimeoutError:
            return {"ok": False, "error": "the recorder did not answer in time"}
        except Exception as exc:  # an answer, always: a caller must never hang on a bug here
            log.exception("control: %s failed", op)
            return {"ok": False, "error": f"{op} failed: {exc}"}
        return {"ok": False, "error": f"unknown op {op!r} (status, start, stop, mark, release, hold, audit, reload,"
                                      " keys.recipients, sim)"}


    _ACTION = re.compile(r"[a-z][a-z_.]{1,40}")
    PURPOSES = ("", *Purpose)  # Art. 7 (1)–(4), and Art. 12's disclosure requests

    def _audit(self, rec, request: dict, by: str, uid: int) -> dict:
        """An entry in the audit log, for another process (the web UI) that may not write it."""
        action, subject = request.get("action"), request.get("subject", "")
        purpose, detail = request.get("purpose", ""), request.get("detail", {})
        if not isinstance(action, str) or not self._ACTION.fullmatch(action):
            return {"ok": False, "error": "audit needs an action like 'request.file'"}
        if not isinstance(subject, str) or len(subject) > 200 or purpose not in self.PURPOSES:
            return {"ok": False, "error": f"audit: bad subject or purpose (one of {', '.join(self.PURPOSES[1:])})"}
        if not isinstance(detail, dict) or len(json.dumps(detail)) > 8192:
            return {"ok": False, "error": "audit: detail must be a JSON object under 8 KiB"}
        if not rec.store.ready:
            return {"ok": False, "error": "the vault is not set up"}
        seq = rec.store.audit(by, action, purpose=purpose, subject=subject, detail={**detail, "uid": uid})
        return {"ok": True, "status": {"seq": seq}}

    _MANAGER = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
    MAX_MANAGERS = 64

    def _recipients(self, rec, request: dict, by: str, uid: int) -> dict:
        """The city's managers' public keys (docs/hub.md), which every new day key is sealed to
        besides this device's own managers and the recovery key. A change is in the audit log
        before it takes effect; the same list again changes nothing and logs nothing."""
        from firmware.vault import age

        managers, rev = request.get("managers"), request.get("rev")
        if not isinstance(managers, list) or len(managers) > self.MAX_MANAGERS or not isinstance(rev, int):
            return {"ok": False, "error": f'keys.recipients needs "rev" (a number) and "managers": a list of at most'
                                          f" {self.MAX_MANAGERS} {{name, recipient}}"}
        parsed = []
        for item in managers:
            name = item.get("name") if isinstance(item, dict) else None
            text = item.get("recipient") if isinstance(item, dict) else None
            if not isinstance(name, str) or not self._MANAGER.fullmatch(name) or not isinstance(text, str):
                return {"ok": False, "error": "keys.recipients: each manager needs a name (a-z, 0-9, _ . -) and a"
                                              " recipient"}
            try:
                parsed.append((name, age.X25519Recipient.parse(text)))
            except ValueError as exc:
                return {"ok": False, "error": f"keys.recipients: {name}: {exc}"}
        if not rec.store.ready:
            return {"ok": False, "error": "the vault is not set up"}

        def record(before: list, after: list) -> None:
            names_before, names_after = {r: n for n, r in before}, {r: n for n, r in after}
            rec.store.audit(by, "keys.recipients", subject="hub", detail={
                "rev": rev, "recipients": [{"name": n, "recipient": r} for n, r in after],
                "added": sorted(n for r, n in names_after.items() if r not in names_before),
                "removed": sorted(n for r, n in names_before.items() if r not in names_after), "uid": uid})

        changed = rec.store.keys.set_hub_recipients(parsed, record=record)
        return {"ok": True, "status": {"changed": changed, "managers": len(parsed)}}

    def _hold(self, rec, request: dict, by: str) -> dict:
        reason, reference = request.get("reason"), str(request.get("reference", ""))[:80]
        ids = request.get("recording_ids", [])
        if reason not in tuple(HoldReason) or not isinstance(ids, list) \
                or not all(isinstance(i, str) for i in ids):
            return {"ok": False, "error": "hold needs a reason and a list of recording_ids"}
        start, end = request.get("start_wall_us"), request.get("end_wall_us")
        holds = [rec.store.hold(reason=reason, by=by, recording_id=i, reference=reference) for i in ids]
        if isinstance(start, int) and isinstance(end, int) and start < end:
            holds.append(rec.store.hold(reason=reason, by=by, start_wall_us=start, end_wall_us=end, reference=reference))
        return {"ok": True, "status": {"holds": holds}}


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class ControlClient:
    """Talks to a running recorder. Each call opens a short connection.

    A full queue on the socket (the recorder answering many at once) is waited out for up
    to ``busy_wait`` seconds, then reported as :class:`RecorderBusy`."""

    def __init__(self, path: Path, timeout: float = 15.0, busy_wait: float = 2.0):
        self.path = Path(path)
        self.timeout = timeout
        self.busy_wait = busy_wait

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + self.busy_wait
        pause = 0.01
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
                return sock
            except BlockingIOError:  # EAGAIN: the listen queue is full
                sock.close()
                if time.monotonic() + pause > deadline:
                    raise RecorderBusy(f"the recorder is busy: its control socket stayed full for {self.busy_wait:g} s"
                                       " — try again in a moment") from None
                time.sleep(pause)  # a client's short back-off; nothing to wait on but time
                pause = min(pause * 2, 0.2)
            except BaseException:
                sock.close()
                raise

    def request(self, op: str, **fields) -> dict:
        """Send one request; returns the recorder's status, or raises :class:`ControlError`."""
        _check_length(self.path)
        sock = None
        try:
            try:
                sock = self._connect()
            except (FileNotFoundError, ConnectionRefusedError):
                raise RecorderNotRunning(
                    f"the recorder is not running (no control socket at {self.path}) — "
                    "start it with `kiroku run` or `kiroku recorder`"
                ) from None
            except PermissionError:
                raise ControlDenied(f"not allowed to use {self.path} — run as the kiroku user or its group") from None
            sock.sendall(json.dumps({"op": op, **fields}, ensure_ascii=False).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RecorderUnreachable("the recorder closed the connection without answering")
                reply += chunk
        except socket.timeout:
            raise RecorderUnreachable(f"the recorder did not answer within {self.timeout:g} s") from None
        except (ConnectionResetError, BrokenPipeError):
            raise RecorderUnreachable("the recorder closed the connection without answering") from None
        finally:
            if sock is not None:
                sock.close()
        try:
            answer = json.loads(reply)
        except ValueError:
            raise RecorderUnreachable(f"the recorder's answer is not JSON: {reply[:80]!r}") from None
        if not answer.get("ok"):
            raise CommandRefused(answer.get("error", "refused"))
        return answer["status"]

    def status(self) -> dict:
        return self.request("status")
