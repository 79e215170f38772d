"""Errors of the hardware layer.

Every message names the device and says what to check, in one line, because it is what a
city's IT staff read on the console or in the journal when a counter does not record.
"""

from __future__ import annotations


class HardwareError(Exception):
    """Base class of every error raised by ``firmware.hardware``."""

    def __init__(self, device: str, problem: str, hint: str = ""):
        self.device = device
        self.problem = problem
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.device}: {self.problem}"
        return f"{text} — {self.hint}" if self.hint else text


class DeviceUnavailable(HardwareError, OSError):
    """The device is missing, unplugged, or its driver or library is not installed."""


class DeviceMissing(DeviceUnavailable):
    """Its library works, but the device itself is not there (not connected, not detected)."""


class DeviceFailed(HardwareError, RuntimeError):
    """The device was working and stopped: it stalled, vanished, or would not stop."""
