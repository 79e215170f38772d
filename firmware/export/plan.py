"""The plan of an export: which segments of a recording, which part of them, resolved against
the index; what cannot be exported whole (overwritten, out of range) is refused here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmware.export.errors import ExportRefused
from firmware.export.request import Redactions

_US = 1_000_000


@dataclass
class Plan:
    recording: dict
    segments: list  # SegmentInfo, kept, overlapping the range, in order
    origin_mono_us: int  # the recording's second zero: its first segment's start
    start_s: float  # the approved range, seconds from the recording's start
    end_s: float

    def t0(self, seg) -> float:
        return (seg.start_us - self.origin_mono_us) / _US

    def wall(self, t: float) -> int:
        """Seconds of the recording → wall time (µs), through the segment that holds them."""
        for seg in self.segments:
            if self.t0(seg) <= t <= self.t0(seg) + seg.duration + 1e-6:
                return seg.start_wall_us + round((t - self.t0(seg)) * _US)
        seg = self.segments[-1]
        return seg.start_wall_us + round((t - self.t0(seg)) * _US)

    @property
    def duration(self) -> float:
        return self.end_s - self.start_s

    @property
    def sound_only(self) -> bool:
        """A call: no segment has a picture."""
        return not any(s.video_frames for s in self.segments)

    def check(self, redactions: Redactions) -> None:
        if redactions.video and self.sound_only:
            raise ExportRefused("this recording has sound only (a call): there is no picture to blur — "
                              "leave out --blur and --blur-faces; --mute silences spans of it")


def _parse_time(text, all_segments, origin_mono_us: int) -> float:
    """Seconds from the recording's start, an ISO 8601 time, or a datetime."""
    if isinstance(text, datetime):
        when = text
    else:
        try:
            return float(text)
        except (TypeError, ValueError):
            pass
        try:
            when = datetime.fromisoformat(str(text))
        except ValueError:
            raise ExportRefused(f"{text!r} is neither seconds from the recording's start nor an ISO time "
                              "(like 2026-11-28T10:15:30+09:00)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # the device's local time
    wall = round(when.timestamp() * _US)
    for seg in all_segments:
        if wall <= seg.end_wall_us:  # inside this segment, or before it (before the first frame, in a gap)
            return (seg.start_us - origin_mono_us + max(0, wall - seg.start_wall_us)) / _US
    last = all_segments[-1]
    return (last.end_us - origin_mono_us + wall - last.end_wall_us) / _US  # after the end: the caller says so


def plan(vault, recording_id: str, start, end) -> Plan:
    """Resolve an export's range against the index; refuse what cannot be exported whole."""
    recording = vault.recording(recording_id)
    if recording is None:
        raise ExportRefused(f"no recording {recording_id!r} — `kiroku vault list` shows the recordings and their ids")
    every = vault.segments(recording_id, with_erased=True)
    if not every:
        raise ExportRefused(f"recording {recording_id} has no footage")
    origin = every[0].start_us
    start_s, end_s = _parse_time(start, every, origin), _parse_time(end, every, origin)
    length = (every[-1].end_us - origin) / _US
    if not 0 <= start_s < end_s:
        raise ExportRefused(f"the range {start}–{end} is empty or negative: the end must come after the start")
    if start_s >= length:
        raise ExportRefused(f"the recording is only {length:.1f} s long; the range starts at {start_s:g} s")
    end_s = min(end_s, length)
    inside = [s for s in every if (s.start_us - origin) / _US < end_s and (s.end_us - origin) / _US > start_s]
    gone = [s for s in inside if s.erased_at]
    if gone:
        raise ExportRefused(f"part of the range was overwritten on {gone[0].erased_at[:10]} (retention); "
                          "choose a range inside what is kept (`kiroku vault list`)")
    return Plan(recording, inside, origin, start_s, end_s)
