"""The device's side of the city hub (docs/hub.md): the uplink and enrollment.

The uplink (``kiroku uplink``) is a process of its own, so that nothing the network does can
reach the recorder: it reads the recorder's index read-only, asks the recorder through the
control socket (as the web UI does), and speaks MQTT 5 to the city's broker. It publishes
the device's status and its audit log — the log itself is the outbox — and receives the
operators the hub designated for this device and the city's managers' public keys.

Enrollment (``kiroku enroll``, ``enroll.py``) joins the device to a hub with a one-time code
and leaves what the uplink needs in ``DATA/uplink/`` (``files.py``).

Entry points for the command line: :func:`main` (``kiroku uplink --data DIR``) and
:func:`firmware.uplink.enroll.main` (``kiroku enroll --data DIR --hub URL --code CODE``).
"""

from __future__ import annotations


class UplinkError(Exception):
    """Base of the uplink's and enrollment's errors; the message says what failed and what to do."""


class NotEnrolled(UplinkError, FileNotFoundError):
    """The device has not joined a hub (no ``DATA/uplink/hub.json``)."""


class BadMessage(UplinkError, ValueError):
    """A payload is not what docs/hub.md says it is."""


class EnrollmentRefused(UplinkError, PermissionError):
    """The hub refused the enrollment (a wrong, used or expired code; a device id already taken)."""


class HubUnreachable(UplinkError, ConnectionError):
    """The hub could not be reached, or did not answer as a hub does."""


class DeviceNotReady(UplinkError, RuntimeError):
    """Something on the device must be put right first (its recorder not running, its keys or
    settings, an enrollment already there); the message says what."""


class BadAddress(UplinkError, ValueError):
    """An address or a file given on the command line cannot be used."""


def main(argv: list[str] | None = None) -> int:
    """``kiroku uplink --data DIR``: returns the exit code."""
    from firmware.uplink.process import main as run

    return run(argv)
