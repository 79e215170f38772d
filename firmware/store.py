"""What the recorder hands to its store: recordings, incident marks, finished segments.

The store itself is the vault (``firmware.vault.Vault``): it seals each segment as it is
written and indexes it. These records are plain data so that the recorder and the
segmenter do not depend on how the vault keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class StoreError(OSError):
    """A segment could not be stored (disk full, I/O error, vault not set up)."""


@dataclass
class Mark:
    """An incident mark (トラブル等) on a recording."""

    time_us: int  # boottime
    at: str  # wall time, ISO 8601
    wall_us: int
    by: str
    note: str = ""
    section: str = ""  # the responsible section (対応担当課), when known


@dataclass
class Recording:
    id: str
    device: str
    mode: str
    started_at: str
    started_us: int  # boottime
    started_wall_us: int
    started_by: str
    clock_synchronised: bool
    record_class: str = "footage"
    section: str = ""
    ended_at: str | None = None
    ended_us: int | None = None
    ended_wall_us: int | None = None
    end_reason: str | None = None
    segments: int = 0
    marks: list[Mark] = field(default_factory=list)

    @property
    def day(self) -> str:
        return self.started_at[:10]


@dataclass
class SegmentInfo:
    recording_id: str
    seq: int
    start_us: int  # boottime
    end_us: int
    start_wall_us: int
    end_wall_us: int
    started_at: str
    ended_at: str
    clock_synchronised: bool
    video_frames: int
    audio_samples: int
    has_audio: bool
    record_class: str = "footage"
    key_day: str = ""
    path: str = ""  # relative to the data folder
    boot_id: str = ""
    bytes: int = 0
    sha256: str = ""  # of the sealed file
    erased_at: str | None = None  # overwritten (only listed on request)

    @property
    def duration(self) -> float:
        return (self.end_us - self.start_us) / 1e6
