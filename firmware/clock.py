"""Time as evidence: one monotonic timebase for media, mapped to wall time per segment.

Every media timestamp in kiroku is CLOCK_BOOTTIME in microseconds: it is what the Pi's
camera stamps frames with (libcamera's SensorTimestamp), it never jumps when NTP corrects
the wall clock, and it keeps counting through a suspend. Wall time is attached to a
segment when it is written, together with whether the clock was synchronised then
(DESIGN.md §5).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from datetime import datetime

from firmware.hardware.media import boottime_us, wall_at  # the timebase is the hardware's: re-exported here

__all__ = ["boottime_us", "boot_id", "clock_synchronised", "iso", "wall_at", "wall_us_at"]

_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised (STA_UNSYNC is set)


def wall_us_at(boot_us: int) -> int:
    """Like :func:`wall_at`, as µs since the Unix epoch (what the index stores)."""
    return time.time_ns() // 1000 - (boottime_us() - boot_us)


def boot_id() -> str:
    """This boot's identity: boottime values are comparable only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _load_adjtimex():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.adjtimex
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_adjtimex = _load_adjtimex()


def clock_synchronised() -> bool:
    """Whether the kernel considers the wall clock synchronised (NTP/chrony or an RTC sync).

    Reads adjtimex(2) with modes=0, which any user may do and which never blocks; this
    is the same bit that ``timedatectl`` reports as "System clock synchronized".
    """
    if _adjtimex is None:
        return False
    # struct timex is ~208 bytes on 64-bit Linux; a zeroed, larger buffer means modes=0 (read only).
    buf = ctypes.create_string_buffer(512)
    state = _adjtimex(buf)
    return state >= 0 and state != _TIME_ERROR


def iso(dt: datetime) -> str:
    """An ISO 8601 timestamp with milliseconds and offset, as stored in metadata."""
    return dt.isoformat(timespec="milliseconds")
