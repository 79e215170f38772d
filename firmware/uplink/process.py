"""``kiroku uplink``: the device's link to the city hub, as a process (docs/hub.md).

Once a second the loop looks at what there is to do: the outbox (the audit log from the
first entry the broker has not acknowledged, one batch in flight at a time), the status
(published when it changes, and every 5 s), the latest checkpoint again when nothing new was
written for 30 s, and the managers' keys the hub sent, handed to the recorder. The MQTT link
keeps itself up on its own thread (``link.py``); nothing here waits for the network, and
nothing the network does reaches the recorder: the uplink only reads the index and asks the
recorder over the control socket, as the web UI does.

The acknowledged position moves only when the broker acknowledges a batch (PUBACK with a
success code); a refused batch (the account may not publish there) leaves it where it was,
is said in the log, and is tried again later. After a kill -9 the uplink starts again from
``state.json``: some entries may be sent twice, and the hub keeps each once.

``main`` returns the exit code: 0 after a clean stop, and also when the device is not
enrolled (there is nothing to do); 2 when what enrollment left is unusable.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from firmware import __version__, paths, systemd
from firmware.control import ControlError
from firmware.uplink import BadMessage, UplinkError
from firmware.uplink.files import Position, UplinkFolder
from firmware.uplink.link import Link
from firmware.uplink.locker import Copier
from firmware.uplink.messages import (device_topic, hub_topic, parse_lines, parse_locker, parse_managers,
                                      parse_notices, parse_operators)
from firmware.uplink.outbox import AuditReader, Batch
from firmware.uplink.status import StatusSource, signature

log = logging.getLogger("kiroku.uplink")

STATUS_EVERY = 5.0
CHECKPOINT_EVERY = 30.0
RETRY_REFUSED = 30.0  # a refused batch is tried again after this (the hub may fix the account meanwhile)
INFLIGHT_PATIENCE = 120.0  # a batch neither acknowledged nor refused this long while connected is sent again
POLL = 1.0


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _json(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class Uplink:
    """The uplink of the device in ``data_dir``: ``Uplink(data_dir).run(stop)``, then ``close()``."""

    def __init__(self, data_dir: Path, *, status_every: float = STATUS_EVERY,
                 checkpoint_every: float = CHECKPOINT_EVERY, retry_refused: float = RETRY_REFUSED,
                 monotonic=time.monotonic):
        self.data_dir = Path(data_dir)
        self.folder = UplinkFolder(self.data_dir)
        self.enrollment = self.folder.enrollment()  # NotEnrolled, BadMessage
        if not self.folder.ca.exists():
            raise BadMessage(f"{self.folder.ca} is missing: enroll the device again")
        self.device = self.enrollment.device
        self.status_every, self.checkpoint_every, self.retry_refused = status_every, checkpoint_every, retry_refused
        self._monotonic = monotonic
        self.reader = AuditReader(self.data_dir)
        self.source = StatusSource(self.data_dir, monotonic=monotonic)
        self.position = self.folder.position()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # what the link's thread hands over: acknowledgements, messages, connects
        self._outcomes: dict[int, tuple[bool, str]] = {}
        self._others: dict[int, str] = {}  # ids of status and checkpoint messages: their topic, for refusals
        self._connects = 0
        self._managers: dict | None = self.folder.cached("managers")  # to hand to the recorder (again: harmless)
        self._managers_tried = -1e9
        self._inflight: tuple[int, Batch, float] | None = None
        self._refused_until = 0.0
        self._status_seq = 0
        self._last_status = -1e9
        self._last_signature: tuple | None = None
        self._last_log = -1e9
        self._said: dict[str, str] = {}
        self._failure: str | None = None
        self.link = Link(
            self.enrollment, self.folder.ca,
            will=(device_topic(self.device, "online"), _json({"v": 1, "online": False})),
            subscriptions=[hub_topic(self.device, "operators"), hub_topic(self.device, "managers"),
                           hub_topic(self.device, "locker"), hub_topic(self.device, "notices"),
                           hub_topic(self.device, "lines")],
            on_connect=self._connected, on_message=self._message, on_published=self._published)
        self.copier = Copier(self.data_dir, self.folder.root, self.folder.ca)

    def close(self) -> None:
        """Say offline (retained) if the broker can still hear it, leave cleanly, and let go."""
        if self.link is None:
            return
        if self.link.connected:
            mid = self.link.publish(device_topic(self.device, "online"),
                                    _json({"v": 1, "online": False, "at": _now()}), retain=True)
            deadline = self._monotonic() + 2.0
            while mid is not None and self._monotonic() < deadline:
                with self._lock:
                    if mid in self._outcomes:
                        break
                self._wake.wait(0.05)
        self.link.close()
        self.link = None
        self.copier.close()
        self.reader.close()
        self.source.close()

    def __enter__(self) -> "Uplink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.link.start()
        self.copier.start()
        log.info("uplink for %s (%s) to %s:%d; the hub holds %d audit entries of this device", self.device,
                 self.enrollment.kind, self.enrollment.host, self.enrollment.port, self.position.acknowledged)
        systemd.notify("READY=1", f"STATUS=uplink to {self.enrollment.host}:{self.enrollment.port}")
        while not stop.is_set():
            try:
                self.tick()
                self._failure = None
            except Exception as exc:  # a bug here must not end the uplink: the next round tries again
                if repr(exc) != self._failure:  # with its traceback once, not every second
                    log.exception("uplink round failed (trying again every second)")
                    self._failure = repr(exc)
            systemd.notify("WATCHDOG=1")
            self._wake.wait(POLL)
            self._wake.clear()
        systemd.notify("STOPPING=1")

    def tick(self) -> None:
        now = self._monotonic()
        self._take_outcomes(now)
        self._hand_managers_over(now)
        if not self.link.connected:
            return
        with self._lock:
            connects, self._connects = self._connects, 0
        if connects:
            self._publish_other(device_topic(self.device, "online"),
                                {"v": 1, "online": True, "at": _now(), "software": __version__}, retain=True)
            self._last_signature = None  # a fresh status at once
            if self._inflight is not None:  # paho sends it again on the new connection: patience anew
                self._inflight = (*self._inflight[:2], now)
        self._status(now)
        self._outbox(now)

    # -- status --------------------------------------------------------------------------------
    def _status(self, now: float) -> None:
        size = self._quietly("audit log", self.reader.size)
        status = self.source.read(checkpoint_size=size, acknowledged=self.position.acknowledged)
        sig = signature(status)
        if sig == self._last_signature and now - self._last_status < self.status_every:
            return
        self._status_seq += 1
        self._publish_other(device_topic(self.device, "status"),
                            {"v": 1, "seq": self._status_seq, "at": _now(), **status, "device": self.device},
                            retain=True)
        self._last_signature, self._last_status = sig, now

    # -- the outbox ------------------------------------------------------------------------------
    def _outbox(self, now: float) -> None:
        if self._inflight is not None:
            if now - self._inflight[2] < INFLIGHT_PATIENCE:
                return
            log.warning("audit entries %d…%d were not acknowledged in %.0f s: sending them again",
                        self._inflight[1].start, self._inflight[1].end - 1, INFLIGHT_PATIENCE)
            self._inflight = None
        if now < self._refused_until:
            return
        start = self.position.acknowledged
        batch = self._quietly("audit log", lambda: self.reader.batch(start))
        if batch is not None:
            if not self.reader.follows(self.position.checkpoint, batch):
                self._say("rewritten", logging.ERROR,
                          f"the audit log no longer extends the checkpoint the hub holds (size {start}): it was"
                          " rewritten or cut short on this device — the hub flags it; sending what the log says now")
            mid = self.link.publish(device_topic(self.device, "log"), _json(batch.payload()))
            if mid is not None:
                self._inflight = (mid, batch, now)
                self._last_log = now
            return
        if now - self._last_log >= self.checkpoint_every:
            self._republish_checkpoint(start)
            self._last_log = now

    def _republish_checkpoint(self, acknowledged: int) -> None:
        """The latest checkpoint again, with no entries: a log rewritten or cut short without
        anything new written is caught within a minute too."""
        size = self._quietly("audit log", self.reader.size)
        if not size:
            return
        if size < acknowledged:
            self._say("shrunk", logging.ERROR, f"the audit log has {size} entries but the hub already holds"
                      f" {acknowledged}: it was cut short on this device — the hub flags it")
        note = self._quietly("audit log", lambda: self.reader.checkpoint(size))
        if note is None:
            return
        if size == acknowledged and self.position.checkpoint not in (None, note):
            self._say("rewritten", logging.ERROR, f"the audit log's checkpoint at {size} entries is not the one the"
                      " hub holds: the log was rewritten on this device — the hub flags it")
        self._publish_other(device_topic(self.device, "log"), {
            "v": 1, "entries": [], "checkpoint": note, "proof": {"old_size": acknowledged, "hashes": []},
            "recordings": []})

    def _take_outcomes(self, now: float) -> None:
        with self._lock:
            outcomes, self._outcomes = self._outcomes, {}
        for mid, (ok, reason) in outcomes.items():
            if self._inflight is not None and mid == self._inflight[0]:
                batch = self._inflight[1]
                self._inflight = None
                if ok:
                    self.position = Position(batch.end, batch.checkpoint, _now())
                    self.folder.save_position(self.position)
                    self._said.pop("refused", None)
                    self._wake.set()  # the next batch at once
                else:
                    self._refused_until = now + self.retry_refused
                    self._say("refused", logging.ERROR,
                              f"the broker refused audit entries {batch.start}…{batch.end - 1} ({reason}): this"
                              f" device's account may not publish on {device_topic(self.device, 'log')} — check"
                              f" its access at the hub; nothing is lost, the outbox stays at entry {batch.start}")
                continue
            topic = self._others.pop(mid, None)
            if topic is not None and not ok:
                self._say(f"refused:{topic}", logging.ERROR, f"the broker refused a message on {topic} ({reason}):"
                          " check this device's access at the hub")

    def _publish_other(self, topic: str, payload: dict, *, retain: bool = False) -> None:
        mid = self.link.publish(topic, _json(payload), retain=retain)
        if mid is not None:
            if len(self._others) > 1000:  # never acknowledged (a connection lost meanwhile): forget them
                self._others.clear()
            self._others[mid] = topic

    # -- what the hub sends ------------------------------------------------------------------
    def _message(self, topic: str, payload: bytes) -> None:
        """On the link's thread: check, keep, and leave the rest to the loop."""
        name = topic.rsplit("/", 1)[-1]
        if topic == hub_topic(self.device, "locker"):
            self._locker(payload)
            return
        parse = {"operators": parse_operators, "managers": parse_managers, "notices": parse_notices,
                 "lines": parse_lines}.get(name)
        if parse is None or topic != hub_topic(self.device, name):
            return
        if not payload:
            return  # a retained message cleared at the hub: the last list stands until a new one comes
        try:
            message = parse(payload)
        except BadMessage as exc:
            self._say(f"bad:{name}", logging.ERROR, f"the hub sent {name} this device cannot use ({exc}):"
                      " keeping the last good list")
            return
        if self.folder.cached(name) == message:
            return
        try:
            self.folder.cache(name, message)
        except OSError as exc:
            self._say(f"cache:{name}", logging.ERROR, f"cannot keep the hub's {name} in {self.folder.root} ({exc}):"
                      " check the data partition")
            return
        log.info("the hub sent %s (revision %d, %d)", name, message["rev"], len(message[name]))
        if name == "managers":
            with self._lock:
                self._managers = message
                self._managers_tried = -1e9
            self._wake.set()

    def _locker(self, payload: bytes) -> None:
        """What the hub wants copied to the evidence locker (``locker.py`` copies it)."""
        if not payload:
            return
        try:
            message = parse_locker(payload)
        except BadMessage as exc:
            self._say("bad:locker", logging.ERROR, f"the hub sent a locker list this device cannot use ({exc}):"
                      " nothing copied from it")
            return
        self._said.pop("bad:locker", None)
        self.copier.offer(message)

    def _hand_managers_over(self, now: float) -> None:
        """The managers' keys to the recorder, which logs any change before it seals a day key
        to them (``keys.recipients``); while it does not answer, again every few seconds."""
        with self._lock:
            message = self._managers
        if message is None or now - self._managers_tried < STATUS_EVERY:
            return
        self._managers_tried = now
        try:
            answer = self.source.control.request("keys.recipients", by="hub", rev=message["rev"],
                                                 managers=message["managers"])
        except ControlError as exc:
            self._say("managers", logging.WARNING, f"the managers' keys (revision {message['rev']}) wait for the"
                      f" recorder: {exc}")
            return
        self._said.pop("managers", None)
        with self._lock:
            if self._managers is message:
                self._managers = None
        if answer.get("changed"):
            log.info("day keys are now sealed to the city's managers of revision %d too", message["rev"])

    # -- the link's thread hands over ----------------------------------------------------------
    def _connected(self) -> None:
        with self._lock:
            self._connects += 1
        self._wake.set()

    def _published(self, mid: int, ok: bool, reason: str) -> None:
        with self._lock:
            self._outcomes[mid] = (ok, reason)
        self._wake.set()

    # -- saying things once ----------------------------------------------------------------------
    def _say(self, key: str, level: int, message: str) -> None:
        if self._said.get(key) != message:
            log.log(level, "%s", message)
            self._said[key] = message

    def _quietly(self, what: str, read):
        """``read()``, or None with one line in the log: the index may not exist yet, be busy, or
        be damaged; the uplink goes on and tries again next round."""
        try:
            value = read()
        except Exception as exc:
            self._say(f"read:{what}", logging.WARNING, f"cannot read the {what} in {self.data_dir} ({exc}):"
                      " trying again")
            self.reader.close()
            return None
        self._said.pop(f"read:{what}", None)
        return value


# -- the process ---------------------------------------------------------------------------------

DESCRIPTION = ("Publish this device's status and audit log to the city hub, receive its operators and"
               " managers' keys, and copy what is under a hold to the evidence locker (docs/hub.md).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``kiroku uplink``'s options (its own parser and the ``kiroku`` command's)."""
    parser.add_argument("--data", type=Path, default=None, help="the device's data folder")
    parser.add_argument("-v", "--verbose", action="store_true")
    # for tests: the same behaviour in less time
    parser.add_argument("--status-every", type=float, default=STATUS_EVERY, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY, help=argparse.SUPPRESS)
    parser.add_argument("--retry-refused", type=float, default=RETRY_REFUSED, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiroku uplink", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    data = args.data if args.data is not None else paths.default_data_dir()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                            format="%(asctime)s uplink %(levelname)s %(message)s", datefmt="%H:%M:%S")
        # paho's own words repeat ours ("failed to receive on socket" after "lost the connection"):
        # they are for -v; a failure in a callback of ours is logged by the link itself.
        logging.getLogger("kiroku.uplink.paho").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    refusal = paths.enter_shared_data_dir(data)
    if refusal:
        print(f"kiroku uplink: {refusal}", file=sys.stderr)
        return 2
    if not UplinkFolder(data).enrolled:
        print(f"kiroku uplink: this device is not enrolled with a hub (no {data / 'uplink' / 'hub.json'}):"
              " nothing to do — `kiroku enroll --data DIR --hub URL --code CODE` joins it to one")
        return 0
    try:
        uplink = Uplink(data, status_every=args.status_every, checkpoint_every=args.checkpoint_every,
                        retry_refused=args.retry_refused)
    except (UplinkError, OSError) as exc:
        print(f"kiroku uplink: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def stopping(*_):  # only flags: the loop notices within a moment
        stop.set()
        uplink.wake()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uplink.run(stop)
    finally:
        uplink.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("uplink stopped")
    return 0
