"""``kiroku call-recorder``: the call recorder's process, the one writer of its data folder.

A call recorder is a device of its own, installed beside the PBX (its mirror port is in
the machine room, not at a counter): its data folder holds calls, not footage, and this
process is to it what ``kiroku recorder`` is to a counter — the only process that writes
its vault and audit log, serving the same control socket so the same web UI runs on it.

Two threads: one only receives frames (so a slow disk never makes the kernel drop
packets; what it cannot hand on is counted), one decodes, tracks, renders and seals.
The main thread tells systemd it is alive and watches the trunk: no SIP at all during
office hours means the mirror is broken, which is a fault on the admin page.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from firmware import clock, systemd
from firmware.calls import net, numbers
from firmware.calls.capture import CaptureError, LiveCapture, SimulatedCapture
from firmware.calls.render import CallWriter
from firmware.calls.call import Call
from firmware.calls.tracker import MAX_UNANSWERED, Tracker
from firmware.config import Config
from firmware.control import ControlError, ControlServer, socket_path
from firmware.daemon import DataDirError, lock_data_dir
from firmware.recorder import RecorderRefused
from firmware.vault import Vault

log = logging.getLogger(__name__)

EXIT_OK, EXIT_UNUSABLE = 0, 2
_QUEUE_MAX = 200_000  # frames between the two threads (≈ 30 s of 60 G.711 calls)
_QUEUE_BYTES = 64 * 2**20  # and bytes: a burst of large frames cannot exhaust the memory
_TICK = 0.05
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_trunk(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6]:PORT, or several hosts of one carrier (its SBCs signal from
    more than one address) separated by commas → ("host1,host2", port)."""
    hosts, ports = [], set()
    for part in [p.strip() for p in text.split(",") if p.strip()] or [""]:
        host, port = _one_trunk(part, text)
        hosts.append(host)
        ports.add(port)
    if len(ports) > 1:
        raise ValueError(f"trunk {text!r}: give every address of the carrier the same SIP port")
    return ",".join(hosts), ports.pop()


def _one_trunk(text: str, whole: str) -> tuple[str, int]:
    if not text:
        raise ValueError("the trunk is not set: give --trunk HOST[:PORT] (the carrier side's SIP address)"
                         " or calls.trunk in the configuration")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "5060"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "5060"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"trunk {whole!r}: the port must be a number from 1 to 65535")
    return host, int(port)


class CallRecorder:
    """Captures, tracks and stores calls; what the control socket serves."""

    def __init__(self, vault: Vault, config: Config, *, trunk: str, interface: str = "", source=None):
        self.store = vault
        self.config = config
        self.hw = SimpleNamespace(simulator=None, simulated=False)
        self.trunk_host, self.trunk_port = parse_trunk(trunk)
        self.interface = interface
        c = config.calls
        self.writer = CallWriter(vault, device=config.device.id, segment_seconds=c.segment_seconds,
                                 window=c.jitter_window, bitrate=c.bitrate)
        self.tracker = Tracker(self.writer, trunk_host=self.trunk_host, trunk_port=self.trunk_port,
                               outside_line_prefix=c.outside_line_prefix, window=c.jitter_window,
                               idle_timeout=c.idle_timeout)
        self.tracker.lines = numbers.Lines(c.recorded_lines, c.excluded_lines)
        self.decoder = net.Decoder()
        self._source = source
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.queue_drops = 0
        self._bytes_in = self._bytes_out = 0
        self.processing_errors = 0
        self.faults: dict[str, dict] = {}
        self.fatal = ""
        self._started = time.time()
        self._beat = time.monotonic()
        self._refused_seen, self._refused_at = 0, 0.0

    # -- what the control socket asks ----------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            # Counts only: the status reaches operators, who may not see callers' numbers.
            active = sum(1 for _ in self.tracker.calls.values())
            answered = sum(c.answered is not None for c in self.tracker.calls.values())
            counters = self.tracker.counters
            last_sip = counters.last_sip
            kernel = getattr(self._source, "kernel_drops", 0)
            return {
                "kind": "call",
                "state": "fault" if self.faults else "listening",
                "mode": "call",
                "device": self.config.device.id,
                "simulated": isinstance(self._source, SimulatedCapture),
                "trunk": f"{self.trunk_host}:{self.trunk_port}",
                "interface": self.interface,
                "recording": None,
                "active_calls": active,
                "answered_calls": answered,
                "processing_errors": self.processing_errors,
                "calls_stored": self.writer.calls_stored,
                "faults": list(self.faults.values()),
                "warnings": list(self.writer.errors[-5:]),
                "last_sip_at": clock.iso(datetime.fromtimestamp(last_sip).astimezone()) if last_sip else None,
                "sip_messages": counters.sip_messages,
                "rtp_packets": counters.rtp_packets,
                "dropped": {"kernel": kernel, "queue": self.queue_drops},
                "clock": {"synchronised": clock.clock_synchronised(),
                          "now": clock.iso(datetime.now().astimezone())},
                "uptime_s": round(time.time() - self._started, 1),
            }

    def start_recording(self, by: str = "ctl") -> dict:
        raise RecorderRefused("a call recorder records every external call by itself: there is nothing to start")

    stop_recording = mark = start_recording

    def reload(self, path=None) -> dict:
        """Re-read the configuration: the lines recorded (Art. 3) apply to the next call."""
        from firmware import config as config_module
        from firmware.paths import config_file

        if self.store.data_dir is not None:
            new = config_module.load(path or config_file(self.store.data_dir, None))
            with self._lock:
                self.config = new
                self.tracker.lines = numbers.Lines(new.calls.recorded_lines, new.calls.excluded_lines)
            log.info("configuration reloaded: lines recorded %r, excluded %r", new.calls.recorded_lines,
                     new.calls.excluded_lines)
        return self.status()

    def alive(self) -> bool:
        return time.monotonic() - self._beat < 10 and all(t.is_alive() for t in self._threads)

    # -- running -------------------------------------------------------------------------
    def start(self) -> "CallRecorder":
        if self._source is None:
            self._source = LiveCapture(self.interface, sip_port=self.trunk_port)
        if not isinstance(self._source, PcapSource):  # a replayed capture has no calls of the service's to go on with
            self._take_up_calls()
        receive = threading.Thread(target=self._receive, name="call-capture", daemon=True)
        work = threading.Thread(target=self._work, name="call-tracker", daemon=True)
        self._threads = [receive, work]
        for t in self._threads:
            t.start()
        return self

    def close(self, *, end_calls: bool = False) -> None:
        """Stop. Calls in progress are sealed as far as they were heard and kept, to go on when
        the recorder starts again (a restart, an update, a reboot); ``end_calls``: ended here
        instead (a replayed capture, whose calls have nothing to go on with)."""
        self._stop.set()
        if self._source is not None and hasattr(self._source, "close"):
            self._source.close()
        for t in self._threads:
            t.join(timeout=15)  # within the unit's TimeoutStopSec, with time left to seal the calls
        with self._lock:
            if end_calls:
                self.tracker.close()
            else:
                self.tracker.suspend()

    def _take_up_calls(self) -> None:
        """The calls a previous run left in progress go on (``Vault.call_dialogs``)."""
        try:
            left = self.store.call_dialogs()
        except (OSError, sqlite3.Error) as exc:
            self._fault("resume", f"the calls in progress when the call recorder stopped cannot be read ({exc}):"
                                  " they are closed by `kiroku vault check --repair`")
            return
        for rec, kept, next_seq, samples in left:
            try:
                call = Call.restore(kept)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("call %s: its kept state is unreadable (%s): closed at its last sealed segment", rec.id, exc)
                try:
                    self.store.close_left_call(rec.id)
                except (OSError, sqlite3.Error) as err:
                    log.error("call %s: cannot close it either (%s)", rec.id, err)
                continue
            self.writer.resume(call, rec, next_seq, samples)
            self.tracker.resume(call)
        if left and self._source_is_live():
            with self._lock:
                self.tracker.tick(time.time())  # a call silent past its timeout while the recorder was away ends now

    def _receive(self) -> None:
        q, limit = self._queue, _QUEUE_MAX
        try:
            for ts, frame in self._source.frames():
                if self._stop.is_set():
                    return
                # Bounded in frames and in bytes (each counter written by one thread only).
                if len(q) >= limit or self._bytes_in - self._bytes_out >= _QUEUE_BYTES:
                    self.queue_drops += 1
                    continue
                self._bytes_in += len(frame)
                q.append((ts, frame))
        except CaptureError as exc:
            self._fault("capture", str(exc))
            self.fatal = str(exc)
        except Exception as exc:  # the capture must never die silently
            log.exception("capture failed")
            self.fatal = f"capture failed: {exc}"
        finally:
            self._queue.append(None)  # the end of the source

    def _work(self) -> None:
        q = self._queue
        last_tick = 0.0
        while True:
            self._beat = time.monotonic()
            try:
                item = q.popleft()
            except IndexError:
                if self._stop.wait(0.01):
                    return
                with self._lock:
                    try:
                        self.tracker.tick(time.time() if self._source_is_live() else self.tracker.now)
                    except Exception as exc:
                        self._processing_failed(exc)
                continue
            if item is None:
                return
            ts, frame = item
            self._bytes_out += len(frame)
            with self._lock:
                try:
                    if frame:
                        for d in self.decoder.frame(ts, frame):
                            self.tracker.datagram(d)
                    if ts - last_tick >= _TICK or not frame:
                        last_tick = ts
                        self.tracker.tick(ts)
                        self.decoder.expire(ts)
                except Exception as exc:
                    # One packet no code foresaw must not end every call in progress: it is
                    # counted and shown, and the next packet is taken as usual.
                    self._processing_failed(exc)

    def _processing_failed(self, exc: Exception) -> None:
        self.processing_errors += 1
        if self.processing_errors == 1 or self.processing_errors % 1000 == 0:
            log.exception("processing a packet failed (%d so far)", self.processing_errors)
        if "processing" not in self.faults:
            self._fault("processing", f"the call recorder failed to process traffic ({type(exc).__name__}: {exc}) —"
                                      " calls go on being recorded; send the journal to the maintainers")

    def _source_is_live(self) -> bool:
        return getattr(self._source, "live", False)  # a real or simulated mirror port, not a replayed file

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until a finite source (a replayed capture) has been processed entirely."""
        for t in self._threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    # -- the trunk watchdog ----------------------------------------------------------------
    def in_office_hours(self, when: datetime) -> bool:
        c = self.config.calls
        if not c.office_hours:
            return False
        days = [d for d in c.office_days.split(",") if d]
        if _DAYS[when.weekday()] not in days:
            return False
        start, end = c.office_hours.split("-")
        return start <= when.strftime("%H:%M") < end

    def watch(self, now: float | None = None) -> None:
        """A fault while no SIP has crossed the trunk for ``silence_minutes`` of office hours,
        and while INVITEs are refused for a flood (cleared ten quiet minutes after the last)."""
        now = time.time() if now is None else now
        refused = self.tracker.counters.refused
        if refused > self._refused_seen:
            self._refused_seen, self._refused_at = refused, now
            if "flood" not in self.faults:
                self._fault("flood", f"INVITEs not recorded ({refused} so far): more than {MAX_UNANSWERED} calls were"
                                     " waiting for an answer at once — a flood of INVITEs on the trunk; check the"
                                     " carrier's side and the PBX's log")
        elif "flood" in self.faults and now - self._refused_at > 600:
            self._clear("flood")
        last = max(self.tracker.counters.last_sip, self._started)
        silent = now - last
        limit = self.config.calls.silence_minutes * 60
        if silent > limit and self.in_office_hours(datetime.fromtimestamp(now)):
            if "trunk_silent" not in self.faults:
                self._fault("trunk_silent", f"no SIP seen on the trunk {self.trunk_host}:{self.trunk_port} for"
                                            f" {int(silent // 60)} minutes of office hours — check the mirror port"
                                            f" (its cable, and the switch's port-mirroring setting)")
        elif silent <= limit and "trunk_silent" in self.faults:
            self._clear("trunk_silent")

    def _fault(self, name: str, message: str) -> None:
        self.faults[name] = {"device": name, "message": message, "since": clock.iso(datetime.now().astimezone())}
        log.error("%s", message)
        if self.store.ready:
            self.store.audit("call-recorder", "fault.raised", subject=name, detail={"message": message[:300]})

    def _clear(self, name: str) -> None:
        self.faults.pop(name, None)
        log.info("fault cleared: %s", name)
        if self.store.ready:
            self.store.audit("call-recorder", "fault.cleared", subject=name)


class PcapSource:
    """A saved capture replayed through the live path, in its own time."""

    def __init__(self, path: Path):
        self.path = path
        self.kernel_drops = 0

    def frames(self):
        yield from net.read_pcap(self.path)

    def close(self) -> None:
        pass


def main(data_dir: Path, config: Config, *, interface: str, trunk: str, pcap: Path | None = None,
         simulate: bool = False) -> int:
    """``simulate``: the trunk is :class:`SimulatedCapture`'s (made-up calls in real time, no
    capture, no privilege), its carrier the trunk unless one is given."""
    data_dir = Path(data_dir)
    if simulate and pcap is None:
        trunk = trunk or SimulatedCapture.SIP_HOST
    try:
        parse_trunk(trunk)
    except ValueError as exc:
        print(f"kiroku call-recorder: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if pcap is None and not interface and not simulate:
        print("kiroku call-recorder: no capture interface: give --interface IF (the port the PBX trunk is mirrored"
              " to) or calls.interface in the configuration", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        lock = lock_data_dir(data_dir)
    except DataDirError as exc:
        print(f"kiroku call-recorder: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        vault = Vault.open(data_dir, config)
    except (OSError, sqlite3.Error) as exc:
        print(f"kiroku call-recorder: vault in {data_dir}: {exc} — check the data partition", file=sys.stderr)
        os.close(lock)
        return EXIT_UNUSABLE
    for finding in vault.recover():
        log.warning("recovered after a crash: %s: %s", finding.path, finding.detail)
    if not vault.ready:
        print(f"kiroku call-recorder: the vault in {data_dir} is not set up: run `kiroku init` first",
              file=sys.stderr)
        vault.close()
        os.close(lock)
        return EXIT_UNUSABLE
    try:
        if pcap is not None:
            source = PcapSource(pcap)
        elif simulate:
            source = SimulatedCapture()
        else:
            source = LiveCapture(interface, sip_port=parse_trunk(trunk)[1])
    except (CaptureError, OSError) as exc:
        print(f"kiroku call-recorder: {exc}", file=sys.stderr)
        vault.close()
        os.close(lock)
        return EXIT_UNUSABLE
    if config.device.kind != "calls":
        log.warning('device.kind is "%s": set [device] kind = "calls" in kiroku.toml so that the public notice'
                    " (kiroku notice) describes the call recorder, not a counter's camera", config.device.kind)
    recorder = CallRecorder(vault, config, trunk=trunk, interface=interface, source=source)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    where = f"pcap:{Path(pcap).name}" if pcap is not None else "simulated" if simulate else interface
    vault.audit("call-recorder", "recorder.start", detail={"kind": "call", "trunk": trunk, "interface": where})
    server = None
    code = EXIT_OK
    try:
        try:
            server = ControlServer(socket_path(data_dir), recorder)
        except (ControlError, OSError) as exc:
            print(f"kiroku call-recorder: control socket: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
        recorder.start()
        server.start()
        log.info("call recorder ready on %s, trunk %s", where, trunk)
        systemd.notify("READY=1", f"STATUS=listening on {where}")
        watchdog = systemd.watchdog_seconds()
        interval = min(1.0, watchdog / 3) if watchdog else 1.0
        while not stop.wait(interval):
            if pcap is not None and not any(t.is_alive() for t in recorder._threads):
                break  # the whole capture has been replayed
            if recorder.fatal:
                log.error("%s — exiting so that systemd restarts the call recorder", recorder.fatal)
                code = EXIT_UNUSABLE
                break
            recorder.watch()
            if recorder.alive():
                systemd.notify("WATCHDOG=1")
    finally:
        systemd.notify("STOPPING=1")
        if server is not None:
            server.close()
        recorder.close(end_calls=pcap is not None)
        vault.audit("call-recorder", "recorder.stop", detail={"exit_code": code,
                                                              "calls_stored": recorder.writer.calls_stored})
        vault.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(lock)
    return code
