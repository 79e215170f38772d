"""What the device keeps about its hub, in ``DATA/uplink/`` (docs/hub.md, "On the device"):

    hub.json        the enrollment: the hub, the broker's address, this device's broker account
                    and its password — 0600, readable by the uplink's account only
    ca.pem          the certificate authority the broker's certificate is checked against (0600)
    state.json      the outbox's position: how many audit entries the broker acknowledged, and
                    the checkpoint signed at that point (the hub holds it too)
    operators.json  the operators the hub designated for this device, as last received; the web
                    UI reads it and brings web.db in line (webui/hubsync.py), so it is 0640
    managers.json   the city's managers' public keys, as last received (0640)

The device is enrolled when ``hub.json`` exists. Each file appears whole or not at all
(``atomic_write``), so a power cut or a kill -9 leaves the old or the new, never half.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from firmware.fsutil import atomic_write, makedirs_durable
from firmware.uplink import BadMessage, NotEnrolled

log = logging.getLogger(__name__)

FOLDER = "uplink"
SECRET = 0o600  # the account's password, and what proves whom it talks to
SHARED = 0o640  # what the web UI (the kiroku group) reads


@dataclass(frozen=True)
class Enrollment:
    """What ``kiroku enroll`` received: enough to connect to the city's broker as this device."""

    hub: str  # the hub's URL, as given to kiroku enroll
    device: str
    kind: str  # counter | calls
    place: str
    host: str  # the broker
    port: int
    username: str
    password: str = field(repr=False)
    client_id: str
    enrolled_at: str

    @classmethod
    def from_json(cls, data: dict) -> "Enrollment":
        try:
            broker = data["broker"]
            found = cls(hub=data["hub"], device=data["device"], kind=data["kind"], place=data.get("place", ""),
                        host=broker["host"], port=broker["port"], username=broker["username"],
                        password=broker["password"], client_id=broker.get("client_id") or broker["username"],
                        enrolled_at=data.get("enrolled_at", ""))
        except (KeyError, TypeError):
            raise BadMessage("hub.json lacks a field (hub, device, kind, broker: host, port, username,"
                             " password)") from None
        if not isinstance(found.port, int) or not 0 < found.port < 65536 or not all(
                isinstance(v, str) and v for v in (found.host, found.username, found.password, found.device)):
            raise BadMessage("hub.json: the broker's host, port, username or password is not usable")
        return found

    def to_json(self) -> dict:
        d = asdict(self)
        broker = {k: d.pop(k) for k in ("host", "port", "username", "password", "client_id")}
        return {"v": 1, **d, "broker": broker}


@dataclass(frozen=True)
class Position:
    """How far the outbox got: entries ``0 … acknowledged - 1`` of the audit log reached the
    broker, which acknowledged them; ``checkpoint`` is the note the device signed at that
    size (None before the first batch). The next batch starts at ``acknowledged`` and proves
    that it extends ``checkpoint``."""

    acknowledged: int = 0
    checkpoint: str | None = None
    at: str = ""


class UplinkFolder:
    """``DATA/uplink/``: read and written only through here."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / FOLDER

    @property
    def enrolled(self) -> bool:
        return (self.root / "hub.json").exists()

    @property
    def hub_url(self) -> str | None:
        """The hub's address as enrollment gave it (``hub.url``, readable by the web UI, which
        links its admin pages there), or None."""
        try:
            return (self.root / "hub.url").read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def enrollment(self) -> Enrollment:
        try:
            text = (self.root / "hub.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotEnrolled(f"this device is not enrolled with a hub (no {self.root / 'hub.json'}):"
                              " run `kiroku enroll --data DIR --hub URL --code CODE`") from None
        try:
            return Enrollment.from_json(json.loads(text))
        except ValueError as exc:
            raise BadMessage(f"{self.root / 'hub.json'}: {exc} — enroll the device again") from None

    def save_enrollment(self, enrollment: Enrollment, ca_pem: str) -> None:
        """The CA first, hub.json last: hub.json is what makes the device enrolled."""
        makedirs_durable(self.root)
        atomic_write(self.ca, ca_pem.encode(), mode=SECRET)
        self.save_position(Position())  # a new hub has nothing of this device's log yet
        atomic_write(self.root / "hub.url", (enrollment.hub + "\n").encode(), mode=SHARED)
        atomic_write(self.root / "hub.json", _dumps(enrollment.to_json()), mode=SECRET)

    # -- the outbox's position -------------------------------------------------------------
    def position(self) -> Position:
        path = self.root / "state.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found = Position(int(data["acknowledged"]), data.get("checkpoint"), data.get("at", ""))
        except FileNotFoundError:
            return Position()
        except (ValueError, KeyError, TypeError, OSError) as exc:
            # Starting again from the first entry loses nothing: the hub keeps each entry once.
            log.warning("%s is unreadable (%s): publishing the audit log from its first entry again", path, exc)
            return Position()
        if found.acknowledged < 0 or (found.acknowledged and not isinstance(found.checkpoint, str)):
            log.warning("%s makes no sense: publishing the audit log from its first entry again", path)
            return Position()
        return found

    def save_position(self, position: Position) -> None:
        makedirs_durable(self.root)
        atomic_write(self.root / "state.json", _dumps({"v": 1, **asdict(position)}), mode=SHARED)

    # -- what the hub sent ---------------------------------------------------------------------
    def cached(self, name: str) -> dict | None:
        """``operators`` or ``managers`` as last received (already checked), or None."""
        try:
            return json.loads((self.root / f"{name}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            log.warning("%s.json in %s is unreadable (%s): waiting for the hub to send it again", name, self.root, exc)
            return None

    def cache(self, name: str, message: dict) -> None:
        makedirs_durable(self.root)
        atomic_write(self.root / f"{name}.json", _dumps(message), mode=SHARED)


def _dumps(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode()
