"""Telling systemd how the recorder is doing (sd_notify), without depending on libsystemd.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the same binary runs
under ``kiroku run`` and as the Pi's ``Type=notify`` service.
"""

from __future__ import annotations

import os
import socket


def notify(*assignments: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=…``, ``STOPPING=1``…; False if not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
        except OSError:
            return False
    return True


def watchdog_seconds() -> float | None:
    """The unit's ``WatchdogSec`` if the watchdog is meant for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None
