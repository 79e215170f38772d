"""The connection to the city's broker: MQTT 5 over verified TLS, as this device's own account
(paho-mqtt 2).

One thread keeps it up, and is the only one that touches the socket: it connects, runs
paho's network loop as an external event loop (``loop_read``/``loop_write``/``loop_misc``
around a ``select`` of its own, which other threads' publications wake through a socket
pair — paho would otherwise write a publication to the TLS socket from the caller's thread,
at the same moment as the loop: a corrupt TLS stream), and after any failure — the
broker down, the network gone, a certificate that does not verify, the account refused —
says once, in one line, what is wrong and what to check, waits (1 s, doubling to 15 s, with
jitter so that a city's devices do not all come back in the same second) and tries again,
for as long as the process runs. The session is persistent (clean start off, a week's expiry)
and the keep-alive 15 s; the last will, retained, says the device is offline when the
connection drops without a goodbye.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.uplink.files import Enrollment

log = logging.getLogger(__name__)


def _guarded(callback):
    """A paho callback that logs its own failure: paho's logger is quiet unless asked (-v)."""

    def run(self, *args):
        try:
            return callback(self, *args)
        except Exception:
            log.exception("the uplink's %s failed", callback.__name__.strip("_"))

    run.__name__ = callback.__name__
    return run

KEEPALIVE = 15  # seconds: the broker declares the device gone (its will) after 1.5× this without a word
SESSION_EXPIRY = 7 * 86400  # what the hub sends while the device is away waits a week for it
MIN_DELAY, MAX_DELAY = 1.0, 15.0


def describe(exc: BaseException, host: str, port: int, ca: Path) -> str:
    """One line: what went wrong connecting, and what to check."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the broker at {where} did not prove itself against {ca} ({exc.verify_message}): check that the"
                " device talks to the city's broker, or enroll it again")
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the broker at {where} failed ({exc.reason or exc}): check the broker's TLS set-up"
    if isinstance(exc, socket.gaierror):
        return f"cannot find the broker's address {host!r} ({exc.strerror}): check the network's name service (DNS)"
    if isinstance(exc, (ConnectionRefusedError, TimeoutError, socket.timeout)):
        return (f"cannot reach the broker at {where} ({exc.strerror or 'timed out'}): check the network and that the"
                " hub's broker is running")
    if isinstance(exc, OSError):
        return f"cannot reach the broker at {where} ({exc.strerror or exc}): check the network"
    return f"connecting to the broker at {where} failed: {exc}"


class Link:
    """``Link(...).start()`` … ``close()``. Callbacks run on the link's thread and must be quick."""

    def __init__(self, enrollment: Enrollment, ca: Path, *, will: tuple[str, bytes], subscriptions: list[str],
                 on_connect: Callable[[], None], on_message: Callable[[str, bytes], None],
                 on_published: Callable[[int, bool, str], None]):
        self.enrollment = enrollment
        self.ca = Path(ca)
        self._subscriptions = subscriptions
        self._on_connect, self._on_message, self._on_published = on_connect, on_message, on_published
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._said: str | None = None
        self._was_up = False
        self._thread: threading.Thread | None = None

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=enrollment.client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(enrollment.username, enrollment.password)
        # Verified against the CA the device was given at enrollment, host name included.
        context = ssl.create_default_context(cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        client.tls_set_context(context)
        client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._connected_cb
        client.on_disconnect = self._disconnected_cb
        client.on_message = self._message_cb
        client.on_publish = self._published_cb
        client.on_subscribe = self._subscribed_cb
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = lambda *_: None
        client.suppress_exceptions = True  # a bug in a callback never kills the link (each logs its own: _guarded)
        client.enable_logger(logging.getLogger("kiroku.uplink.paho"))
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY
        client.connect_async(enrollment.host, enrollment.port, keepalive=KEEPALIVE, clean_start=False,
                             properties=properties)
        self._client = client
        self._subscribe_mids: dict[int, list[str]] = {}

    # -- the caller's side ---------------------------------------------------------------------
    def start(self) -> "Link":
        self._thread = threading.Thread(target=self._run, name="uplink-link", daemon=True)
        self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        """Hand a message (QoS 1) to the broker; returns its id, whose acknowledgement comes to
        ``on_published``, or None when not connected (nothing is queued: the caller decides
        what to send when the link is back)."""
        if not self.connected:
            return None
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("could not hand a message for %s to the broker: %s", topic, mqtt.error_string(info.rc))
            return None
        # Not connected after all (it dropped just now): paho keeps it and sends it on reconnecting.
        return info.mid

    def close(self, timeout: float = 6.0) -> None:
        """Say goodbye (a clean DISCONNECT: the broker then keeps the will to itself) and stop."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is None:  # never started
            self._wake_r.close()
            self._wake_w.close()
            return
        self._want_write()  # out of the select at once
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> "Link":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the link's thread -------------------------------------------------------------------
    def _say(self, message: str | None, level: int = logging.WARNING) -> None:
        """Each problem once, until it changes or the link is up: an hour's outage is one line."""
        if message is not None and message != self._said:
            log.log(level, "%s", message)
        self._said = message

    def _run(self) -> None:
        delay = MIN_DELAY
        client, e = self._client, self.enrollment
        while not self._stop.is_set():
            try:
                client.reconnect()
            except (OSError, ValueError) as exc:  # ssl.SSLError and socket.gaierror are OSErrors
                self._say(describe(exc, e.host, e.port, self.ca) + " — retrying; recording goes on")
            else:
                self._was_up = False
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stop.is_set():
                    rc = self._pump(0.5)
                if self._stop.is_set():
                    break
                self._connected.clear()
                if self._was_up:
                    delay = MIN_DELAY  # it was up: come back at once
                    self._say(f"lost the connection to the broker at {e.host}:{e.port}"
                              f" ({mqtt.error_string(rc)}): reconnecting")
            self._stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, MAX_DELAY)
        if client.is_connected():
            client.disconnect()
            for _ in range(20):  # until the DISCONNECT is written and the socket closed
                if client.socket() is None or self._pump(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        self._connected.clear()
        self._wake_r.close()
        self._wake_w.close()

    def _want_write(self, *_) -> None:
        """paho has something to send (a publication from another thread): wake the select."""
        try:
            self._wake_w.send(b"w")
        except OSError:  # full (it is awake already) or closed (stopping)
            pass

    def _pump(self, timeout: float) -> MQTTErrorCode:
        """One round of paho's network loop, on this thread only (paho's ``_loop``, with the wake-up)."""
        client = self._client
        sock = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        pending = sock.pending() if hasattr(sock, "pending") else 0  # TLS bytes read but not yet handed over
        try:
            readable, writable, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [], [],
                                                  0 if pending else timeout)
        except (OSError, ValueError, TypeError):  # the socket was closed under us
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if self._wake_r in readable:
            try:
                self._wake_r.recv(4096)
            except BlockingIOError:
                pass
        if sock in readable or pending:
            rc = client.loop_read()
            if rc or client.socket() is None:
                return rc or MQTTErrorCode.MQTT_ERR_CONN_LOST
        if client.want_write():
            rc = client.loop_write()
            if rc or client.socket() is None:
                return rc or MQTTErrorCode.MQTT_ERR_CONN_LOST
        return client.loop_misc()

    @_guarded
    def _connected_cb(self, client, _userdata, flags, reason_code, _properties) -> None:
        e = self.enrollment
        if reason_code.is_failure:
            if reason_code.value in (134, 135, 138):  # bad user name or password, not authorised, banned
                self._say(f"the broker at {e.host}:{e.port} refused this device's account {e.username!r}"
                          f" ({reason_code}): the device may have been removed at the hub — ask the manager,"
                          " and enroll it again", logging.ERROR)
            else:
                self._say(f"the broker at {e.host}:{e.port} refused the connection ({reason_code}): retrying")
            return
        self._say(None)
        self._was_up = True
        log.info("connected to the broker at %s:%d as %s (%s session)", e.host, e.port, e.username,
                 "resumed" if flags.session_present else "new")
        self._connected.set()
        if self._subscriptions:
            result, mid = client.subscribe([(topic, 1) for topic in self._subscriptions])
            if mid is not None:
                self._subscribe_mids[mid] = list(self._subscriptions)
        self._on_connect()

    @_guarded
    def _disconnected_cb(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._connected.clear()

    @_guarded
    def _subscribed_cb(self, _client, _userdata, mid, reason_codes, _properties) -> None:
        topics = self._subscribe_mids.pop(mid, [])
        for topic, code in zip(topics, reason_codes):
            if code.is_failure:
                log.error("the broker refused this device's subscription to %s (%s): check the device's access at"
                          " the hub", topic, code)

    @_guarded
    def _message_cb(self, _client, _userdata, message) -> None:
        self._on_message(message.topic, bytes(message.payload))

    @_guarded
    def _published_cb(self, _client, _userdata, mid, reason_code, _properties) -> None:
        self._on_published(mid, not reason_code.is_failure, str(reason_code))
