"""Just enough of H.264's Annex B byte stream to cut it into self-contained segments.

A segment must start with a keyframe preceded by the sequence and picture parameter
sets (SPS/PPS), or it cannot be decoded on its own. The Pi's encoders repeat them before
every keyframe when asked (picamera2's ``repeat=True``), but a segment never relies on
that: the last ones seen are put in front of any keyframe that lacks them.
"""

from __future__ import annotations

NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD = 5, 7, 8, 9
_START = b"\x00\x00\x01"


def nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, without their start codes."""
    units = []
    pos = data.find(_START)
    while pos != -1:
        begin = pos + 3
        nxt = data.find(_START, begin)
        end = len(data) if nxt == -1 else nxt
        unit = data[begin:end]
        # A four-byte start code leaves its leading zero on the previous unit.
        if nxt != -1 and unit.endswith(b"\x00"):
            unit = unit.rstrip(b"\x00")
        if unit:
            units.append(unit)
        pos = nxt
    return units


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


def annexb(units: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + u for u in units)


class ParameterSets:
    """Remembers the latest SPS and PPS and makes keyframes self-contained."""

    def __init__(self):
        self.sps: bytes | None = None
        self.pps: bytes | None = None

    def observe(self, frame: bytes) -> None:
        for unit in nal_units(frame):
            kind = nal_type(unit)
            if kind == NAL_SPS:
                self.sps = unit
            elif kind == NAL_PPS:
                self.pps = unit

    @property
    def complete(self) -> bool:
        return self.sps is not None and self.pps is not None

    def header(self) -> bytes:
        assert self.sps is not None and self.pps is not None
        return annexb([self.sps, self.pps])

    def self_contained(self, keyframe: bytes) -> bytes:
        """``keyframe`` with SPS and PPS in front if it does not carry them itself."""
        kinds = {nal_type(u) for u in nal_units(keyframe)}
        if NAL_SPS in kinds and NAL_PPS in kinds:
            return keyframe
        return self.header() + keyframe
