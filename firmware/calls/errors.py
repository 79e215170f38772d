"""The call recorder's errors: one root, and specific ones that are also a builtin."""

from __future__ import annotations


class CallsError(Exception):
    """The call recorder could not capture or understand the trunk's traffic."""


class CaptureError(CallsError, OSError):
    """The interface cannot be captured on (missing, down, or no capture permission)."""


class PcapError(CallsError, ValueError):
    """A file is not a pcap capture this reader understands (pcapng is not one)."""


class SipError(CallsError, ValueError):
    """Bytes that are not a SIP message."""
