"""Where finished segments go: the data folder, one directory per recording.

Until the vault exists (issue 3) this is a plain, durable folder writer; the vault
replaces it behind the same three calls (``begin``, ``open_segment``, ``update``) and the
segmenter does not change. Layout::

    <data>/segments/<YYYY-MM-DD>/<recording id>/recording.json
    <data>/segments/<YYYY-MM-DD>/<recording id>/00000.mp4   (+ 00000.json)

A segment is written as ``.part`` and renamed only when complete and fsynced, so after a
crash at most the one segment in flight is missing, and ``recover()`` removes its part.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from firmware.fsutil import atomic_write, fsync_dir, makedirs_durable


class StoreError(OSError):
    """A segment could not be stored (disk full, I/O error, folder not writable)."""


@dataclass
class Mark:
    """An incident mark (トラブル等) on a recording."""

    time_us: int
    at: str  # wall time, ISO 8601
    by: str
    note: str = ""
    section: str = ""  # the responsible section (対応担当課), when known


@dataclass
class Recording:
    id: str
    device: str
    mode: str
    started_at: str
    started_us: int
    started_by: str
    clock_synchronised: bool
    ended_at: str | None = None
    ended_us: int | None = None
    end_reason: str | None = None
    segments: int = 0
    marks: list[Mark] = field(default_factory=list)

    @property
    def day(self) -> str:
        return self.started_at[:10]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Recording":
        data = dict(data)
        data["marks"] = [Mark(**m) for m in data.get("marks", [])]
        return cls(**data)


@dataclass
class SegmentInfo:
    recording_id: str
    seq: int
    start_us: int
    end_us: int
    started_at: str
    ended_at: str
    clock_synchronised: bool
    video_frames: int
    audio_samples: int
    has_audio: bool
    bytes: int = 0
    sha256: str = ""

    @property
    def duration(self) -> float:
        return (self.end_us - self.start_us) / 1e6


class SegmentFile:
    """A segment being written. Bytes go straight to ``<name>.part``; ``commit`` makes it real."""

    def __init__(self, final: Path):
        self.final = final
        self.part = final.with_name(final.name + ".part")
        self._hash = hashlib.sha256()
        self._size = 0
        try:
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot create {self.part}: {exc.strerror}") from None

    def write(self, data) -> int:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                self._hash.update(view[:n])
                self._size += n
                view = view[n:]
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot write {self.part}: {exc.strerror}") from None
        return len(data)

    def commit(self, info: SegmentInfo) -> SegmentInfo:
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self.part, self.final)
            fsync_dir(self.final.parent)
            info.bytes, info.sha256 = self._size, self._hash.hexdigest()
            atomic_write(self.final.with_suffix(".json"), json.dumps(asdict(info), indent=1).encode())
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot commit {self.final}: {exc.strerror}") from None
        return info

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self.part)
        except FileNotFoundError:
            pass


class FolderStore:
    """Segments and recording metadata as durable files under ``<data>/segments``."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "segments"

    def _dir(self, recording: Recording) -> Path:
        return self.root / recording.day / recording.id

    def begin(self, recording: Recording) -> None:
        try:
            makedirs_durable(self._dir(recording))
            self.update(recording)
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot create the recording folder: {exc.strerror}") from None

    def update(self, recording: Recording) -> None:
        try:
            atomic_write(self._dir(recording) / "recording.json", json.dumps(recording.to_json(), indent=1).encode())
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot write the recording's metadata: {exc.strerror}") from None

    def open_segment(self, recording: Recording, seq: int) -> SegmentFile:
        return SegmentFile(self._dir(recording) / f"{seq:05d}.mp4")

    def recover(self) -> list[Path]:
        """Remove segments left half-written by a crash; returns what was removed."""
        removed = []
        for part in sorted(self.root.glob("*/*/*.part")):
            part.unlink()
            removed.append(part)
        return removed

    # Reading (status, tests, and later the vault's migration).
    def recordings(self) -> list[Recording]:
        found = []
        for meta in self.root.glob("*/*/recording.json"):
            try:
                found.append(Recording.from_json(json.loads(meta.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(found, key=lambda r: r.started_at)

    def segment_paths(self, recording: Recording) -> list[Path]:
        return sorted(self._dir(recording).glob("[0-9]*.mp4"))

    def segment_infos(self, recording: Recording) -> list[SegmentInfo]:
        return [SegmentInfo(**json.loads(p.with_suffix(".json").read_text())) for p in self.segment_paths(recording)]
