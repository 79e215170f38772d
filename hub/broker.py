"""The hub's side of the broker: accounts and what each may do (Mosquitto's dynamic-security
plugin, administered over ``$CONTROL/dynamic-security/v1``), and what the hub publishes to
devices (retained: the operators designated for each, the managers' public keys).

- The hub's own account reads what every device publishes and writes under ``kiroku/v1/h/``.
- Each device's account may publish only under ``kiroku/v1/d/{id}/`` and read only
  ``kiroku/v1/h/{id}/``, with the client id ``kiroku-{id}``. Deleting it disconnects the
  device at once (the plugin kicks it), so a removed device's credential stops working then.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

CONTROL = "$CONTROL/dynamic-security/v1"
HUB_ACCOUNT = "kiroku-hub"
PREFIX = "kiroku/v1"
RECONNECT_MAX = 15  # seconds between the hub's attempts to reach its broker, at most


class BrokerError(RuntimeError):
    """The broker refused or did not answer; the message says what and what to check."""


def device_topic(device: str, kind: str) -> str:
    return f"{PREFIX}/d/{device}/{kind}"


def hub_topic(device: str, kind: str) -> str:
    return f"{PREFIX}/h/{device}/{kind}"


def client(client_id: str, username: str, password: str, ca: str, **kw) -> mqtt.Client:
    """A paho client for MQTT 5 over TLS verified against ``ca``."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kw)
    c.username_pw_set(username, password)
    c.tls_set(ca_certs=ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    # paho doubles its wait up to 2 minutes: after a broker outage of a minute or two the hub would
    # sit out another minute with the broker back, its dashboard stale. A device waits at most 15 s.
    c.reconnect_delay_set(1, RECONNECT_MAX)
    return c


def connect_properties(session_expiry: int):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry
    return props


class Admin:
    """The dynamic-security administrator: one connection, one command at a time."""

    def __init__(self, host: str, port: int, username: str, password: str, ca: str):
        self._lock = threading.Lock()
        self._answers: list[dict] = []
        self._changed = threading.Condition()
        self._connected = threading.Event()
        self.c = client(f"kiroku-hub-admin-{secrets.token_hex(4)}", username, password, ca)
        self.c.on_message = self._message
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda c, u, mid, reasons, p: self._connected.set()  # answers can come now
        try:
            self.c.connect(host, port, keepalive=30)
        except OSError as exc:
            raise BrokerError(f"the broker at {host}:{port} cannot be reached ({exc}): check [broker] in the hub's "
                              "configuration and that Mosquitto runs") from None
        self.c.loop_start()
        if not self._connected.wait(10):
            self.close()
            raise BrokerError(f"the broker at {host}:{port} did not accept the administrator {username!r}: "
                              "check its password and that the dynamic-security plugin is loaded")

    def _on_connect(self, c, userdata, flags, reason, properties):
        if not reason.is_failure:
            c.subscribe(f"{CONTROL}/response", qos=1)

    def _message(self, c, userdata, message):
        with self._changed:
            self._answers.append(json.loads(message.payload))
            self._changed.notify_all()

    def command(self, *commands: dict) -> list[dict]:
        """Send dynamic-security commands; their responses (an ``error`` in one raises BrokerError,
        except the ones ``ok_errors`` in the command allows)."""
        with self._lock:
            with self._changed:
                seen = len(self._answers)
            self.c.publish(CONTROL, json.dumps({"commands": [{k: v for k, v in c.items() if k != "ok_errors"}
                                                             for c in commands]}), qos=1)
            with self._changed:
                if not self._changed.wait_for(lambda: len(self._answers) > seen, timeout=10):
                    raise BrokerError("the broker's dynamic-security plugin did not answer in 10 s")
                responses = self._answers[seen]["responses"]
        for cmd, response in zip(commands, responses):
            error = response.get("error")
            if error and error not in cmd.get("ok_errors", ()):
                raise BrokerError(f"broker: {response.get('command')}: {error}")
        return responses

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()

    # -- accounts ------------------------------------------------------------------------------

    def ensure_hub_account(self, password: str) -> None:
        """The hub's own account and role (made once; its password set to ``password``)."""
        role = "kiroku-hub"
        self.command(
            {"command": "createRole", "rolename": role, "ok_errors": ("Role already exists",)},
            {"command": "addRoleACL", "rolename": role, "acltype": "subscribePattern",
             "topic": f"{PREFIX}/d/+/#", "allow": True, "ok_errors": ("ACL with this topic already exists",)},
            {"command": "addRoleACL", "rolename": role, "acltype": "publishClientSend",
             "topic": f"{PREFIX}/h/#", "allow": True, "ok_errors": ("ACL with this topic already exists",)},
            {"command": "createClient", "username": HUB_ACCOUNT, "password": password,
             "roles": [{"rolename": role}], "ok_errors": ("Client already exists",)},
            {"command": "setClientPassword", "username": HUB_ACCOUNT, "password": password},
        )

    def add_device(self, device: str) -> tuple[str, str]:
        """A new account for ``device``: its user name and password (shown once, to the device)."""
        username, password, role = f"kiroku-{device}", secrets.token_urlsafe(24), f"kiroku-device-{device}"
        self.command(
            {"command": "createRole", "rolename": role},
            {"command": "addRoleACL", "rolename": role, "acltype": "publishClientSend",
             "topic": f"{PREFIX}/d/{device}/#", "allow": True},
            {"command": "addRoleACL", "rolename": role, "acltype": "subscribePattern",
             "topic": f"{PREFIX}/h/{device}/#", "allow": True},
            {"command": "createClient", "username": username, "password": password, "clientid": username,
             "roles": [{"rolename": role}]},
        )
        return username, password

    def remove_device(self, device: str) -> None:
        """Delete the device's account (it is disconnected at once) and its role."""
        self.command({"command": "deleteClient", "username": f"kiroku-{device}", "ok_errors": ("Client not found",)},
                     {"command": "deleteRole", "rolename": f"kiroku-device-{device}",
                      "ok_errors": ("Role not found",)})
