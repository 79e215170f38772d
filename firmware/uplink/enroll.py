"""``kiroku enroll``: the device joins the city's hub with a one-time code (docs/hub.md, "Enrollment").

The manager makes the code at the hub for one device id. Here the device sends the code
with its id, kind, place and the verifier key of its audit log to ``HUB/api/v1/enroll``
(HTTPS, verified against ``--ca`` or the system's authorities; plain HTTP only to a hub on
this machine's loopback), and keeps what comes back — the broker's address, its own broker
account, the CA the broker's certificate is checked against, the managers' public keys — in
``DATA/uplink/`` (``files.py``). Nothing happens unlogged: the recorder must be running, and
the enrollment is in the device's audit log (``hub.enroll``, no password in it) before the
device counts as enrolled. The managers' keys go to the recorder, which logs that change too
(``keys.recipients``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import ssl
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from firmware import __version__, paths
from firmware.config import ConfigError, load
from firmware.control import ControlClient, ControlError, socket_path
from firmware.uplink import (BadAddress, BadMessage, DeviceNotReady, EnrollmentRefused, HubUnreachable,
                            UplinkError)
from firmware.uplink.files import Enrollment, UplinkFolder
from firmware.uplink.messages import USERNAME, parse_managers

PATH = "/api/v1/enroll"
MAX_ANSWER = 1 << 20
TIMEOUT = 30.0
_DEVICE = USERNAME  # a device id: config.DeviceConfig.id's pattern is narrower still


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A hub answers where it was asked: a redirect (to plain HTTP, to someone else) is refused."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise HubUnreachable(f"the hub redirected the enrollment to {newurl}: give that address as --hub if it is the"
                             " city's hub")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint(hub: str) -> str:
    """The enrollment URL of a hub given as ``https://host[:port][/prefix]``."""
    parts = urlsplit(hub)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadAddress(f"--hub {hub!r}: give the hub's address as https://HOST[:PORT]")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise BadAddress(f"--hub {hub!r}: plain HTTP only to a hub on this machine; the city's hub is https://…")
    return hub.rstrip("/") + PATH


def request_body(*, code: str, device: str, kind: str, place: str, vkey: str) -> dict:
    return {"v": 1, "code": code, "device": device, "kind": kind, "place": place, "vkey": vkey,
            "software": __version__}


def parse_answer(answer: dict, device: str) -> tuple[dict, str, dict]:
    """The hub's answer (201), checked: ``(broker, ca_pem, managers)``."""
    from cryptography import x509

    if not isinstance(answer, dict) or answer.get("v") != 1:
        raise BadMessage("the hub's answer is not an enrollment of schema version 1")
    if answer.get("device") != device:
        raise BadMessage(f"the hub enrolled {answer.get('device')!r}, not this device ({device})")
    broker = answer.get("broker")
    if not isinstance(broker, dict):
        raise BadMessage('the hub\'s answer has no "broker"')
    host, port = broker.get("host"), broker.get("port")
    username, password = broker.get("username"), broker.get("password")
    client_id = broker.get("client_id") or username
    ca_pem = broker.get("ca_pem")
    if not isinstance(host, str) or not host or not isinstance(port, int) or isinstance(port, bool) \
            or not 0 < port < 65536:
        raise BadMessage("the hub's answer has no usable broker host and port")
    if not all(isinstance(v, str) and 0 < len(v) <= 256 for v in (username, password, client_id)):
        raise BadMessage("the hub's answer has no usable broker account (username, password, client_id)")
    try:
        if not isinstance(ca_pem, str) or not x509.load_pem_x509_certificates(ca_pem.encode()):
            raise ValueError("no certificate")
    except ValueError as exc:
        raise BadMessage(f"the hub's answer has no usable CA certificate (ca_pem): {exc}") from None
    managers = parse_managers(answer.get("managers"))
    return {"host": host, "port": port, "username": username, "password": password, "client_id": client_id}, \
        ca_pem, managers


def post(url: str, body: dict, *, ca: Path | None, timeout: float = TIMEOUT) -> dict:
    """POST ``body`` as JSON; the hub's JSON answer, or the error the hub (or the way to it) gave."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects())
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json",
                                              "User-Agent": f"kiroku/{__version__}"})
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(MAX_ANSWER + 1)
    except HubUnreachable:
        raise
    except urllib.error.HTTPError as exc:
        try:
            said = json.loads(exc.read(64 * 1024))
            said = said if isinstance(said, dict) else {}
        except ValueError:
            said = {}
        why = str(said.get("error") or exc.reason)[:300]
        if exc.code == 403:
            raise EnrollmentRefused(f"the hub refused the code ({why}): it may be mistyped, already used or expired"
                                    " — ask the manager for a new one") from None
        if exc.code == 409:
            raise EnrollmentRefused(f"the hub already has a device {body['device']!r} ({why}): give this device"
                                    " another id (device.id in kiroku.toml), or ask the manager to remove the old"
                                    " one") from None
        if exc.code == 400:
            raise BadMessage(f"the hub found the request unusable ({why})") from None
        raise HubUnreachable(f"the hub answered HTTP {exc.code} ({why}): try again later") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise HubUnreachable(f"the hub's certificate does not verify ({reason.verify_message}): give the city's CA"
                                 " with --ca FILE") from None
        raise HubUnreachable(f"cannot reach the hub at {url} ({reason}): check the address and the network") from None
    except (OSError, ValueError) as exc:
        raise HubUnreachable(f"cannot reach the hub at {url} ({exc}): check the address and the network") from None
    if len(data) > MAX_ANSWER:
        raise BadMessage("the hub's answer is too long")
    try:
        return json.loads(data)
    except ValueError:
        raise BadMessage("the hub's answer is not JSON: is this the hub's address?") from None


def enroll(data_dir: Path, hub: str, code: str, *, ca: Path | None = None, config_path: str | None = None,
           timeout: float = TIMEOUT) -> Enrollment:
    """Join the hub; returns what the uplink will use. Raises :class:`UplinkError` with what to do."""
    data_dir = Path(data_dir)
    folder = UplinkFolder(data_dir)
    if folder.enrolled:
        raise DeviceNotReady(f"this device is already enrolled with {folder.enrollment().hub}: to join another hub,"
                             f" remove {folder.root} (as the manager decides) and enroll again")
    try:
        config = load(paths.config_file(data_dir, config_path))
    except ConfigError as exc:
        raise DeviceNotReady(f"configuration: {exc}") from None
    device = config.device.id
    try:
        vkey = (data_dir / "keys" / "device.vkey").read_text().strip()
    except FileNotFoundError:
        raise DeviceNotReady(f"no device keys in {data_dir}: set the device up first (kiroku init)") from None
    if not vkey.startswith(f"kiroku/{device}+"):
        made_for = vkey.split("+", 1)[0]
        raise DeviceNotReady(f"the device's keys were made for {made_for!r}, but kiroku.toml says the device is"
                             f" {device!r}: make them agree before enrolling")
    if not code.strip():
        raise BadAddress("--code: give the one-time code the manager made at the hub")
    url = endpoint(hub)
    if ca is not None and not Path(ca).is_file():
        raise BadAddress(f"--ca {ca}: no such file")
    control = ControlClient(socket_path(data_dir), timeout=10)
    try:
        control.status()
    except ControlError as exc:
        raise DeviceNotReady(f"{exc} — enrollment is written in the device's audit log, which only the recorder"
                             " writes") from None

    answer = post(url, request_body(code=code.strip(), device=device, kind=config.device.kind,
                                    place=config.device.location, vkey=vkey), ca=ca, timeout=timeout)
    broker, ca_pem, managers = parse_answer(answer, device)
    place = answer.get("place") if isinstance(answer.get("place"), str) else config.device.location
    enrollment = Enrollment(hub=hub, device=device, kind=config.device.kind, place=place,
                            host=broker["host"], port=broker["port"], username=broker["username"],
                            password=broker["password"], client_id=broker["client_id"],
                            enrolled_at=datetime.now().astimezone().isoformat(timespec="seconds"))
    try:
        control.request("audit", by="kiroku enroll", action="hub.enroll", subject=hub[:200], detail={
            "device": device, "kind": enrollment.kind, "place": enrollment.place,
            "broker": f"{enrollment.host}:{enrollment.port}", "account": enrollment.username,
            "managers": [m["name"] for m in managers["managers"]], "managers_rev": managers["rev"]})
    except ControlError as exc:
        raise DeviceNotReady(f"the hub enrolled this device, but the recorder could not log it ({exc}): nothing was"
                             " kept — ask the manager for a new code and enroll again with the recorder running"
                             ) from None
    folder.save_enrollment(enrollment, ca_pem)
    folder.cache("managers", managers)
    try:
        control.request("keys.recipients", by="kiroku enroll", rev=managers["rev"], managers=managers["managers"])
    except ControlError:
        pass  # the uplink hands them over as soon as the recorder takes them (they are kept in managers.json)
    return enrollment


DESCRIPTION = "Join this device to the city hub with the one-time code the manager made there (docs/hub.md)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``kiroku enroll``'s options (its own parser and the ``kiroku`` command's)."""
    parser.add_argument("--data", type=Path, default=None, help="the device's data folder")
    parser.add_argument("--hub", required=True, help="the hub's address, https://HOST[:PORT]")
    parser.add_argument("--code", required=True, help="the one-time code from the hub")
    parser.add_argument("--ca", type=Path, default=None,
                        help="the CA the hub's HTTPS certificate is checked against (default: the system's)")
    parser.add_argument("--config", default=None, help="the settings file (default: DATA/kiroku.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiroku enroll", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``kiroku enroll --data DIR --hub URL --code CODE [--ca FILE]``: returns the exit code
    (0 enrolled, 1 the hub refused or could not be reached, 2 something here must be fixed first)."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    data = args.data if args.data is not None else paths.default_data_dir()
    refusal = paths.enter_shared_data_dir(data)
    if refusal:
        print(f"kiroku enroll: {refusal}", file=sys.stderr)
        return 2
    try:
        e = enroll(data, args.hub, args.code, ca=args.ca, config_path=args.config)
    except (EnrollmentRefused, HubUnreachable, BadMessage) as exc:
        print(f"kiroku enroll: {exc}", file=sys.stderr)
        return 1
    except (UplinkError, OSError) as exc:
        print(f"kiroku enroll: {exc}", file=sys.stderr)
        return 2
    print(f"kiroku enroll: {e.device} ({e.place or 'no place set'}) joined {e.hub}: broker {e.host}:{e.port} as"
          f" {e.username}; start the uplink (kiroku uplink --data {data})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
