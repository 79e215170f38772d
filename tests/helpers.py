"""What the tests look at, the way a person or a player would: ffprobe, decoding, pins."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from firmware import clock
from firmware.hardware.synth import read_capture_time, tick_onsets
from firmware.recorder import State


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def record_segments(recorder, simulator, count: int = 1, timeout: float = 10.0) -> None:
    """A clerk's press, held until ``count`` segments are stored, then stopped and idle again."""
    simulator.press()
    simulator.release()
    wait_for(lambda: recorder.segments_written >= count, timeout=timeout, what=f"{count} stored segment(s)")
    recorder.stop_recording()
    wait_for(lambda: recorder.state == State.IDLE, what="idle")


def _media_args(media: Path | bytes) -> tuple[str, bytes | None]:
    # Decrypted footage is only ever piped, never written to disk (as on the device).
    return ("pipe:0", media) if isinstance(media, (bytes, bytearray)) else (str(media), None)


def recorder_answers(data_dir: Path) -> bool:
    """Whether a recorder is running on ``data_dir`` (its socket file alone proves nothing)."""
    from firmware.control import ControlClient, socket_path

    try:
        ControlClient(socket_path(data_dir), timeout=2).status()
        return True
    except Exception:
        return False


def ffprobe(media: Path | bytes) -> dict:
    source, data = _media_args(media)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", source],
        input=data, capture_output=True, check=True,
    )
    return json.loads(out.stdout)


def decodes_cleanly(media: Path | bytes) -> str:
    """ffmpeg's complaints when decoding the whole file on its own ('' if none)."""
    source, data = _media_args(media)
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", source, "-f", "null", "-"],
                         input=data, capture_output=True)
    return out.stderr.decode().strip() + ("" if out.returncode == 0 else f" (exit {out.returncode})")


def _open(media: Path | bytes):
    import io

    return av.open(io.BytesIO(media) if isinstance(media, (bytes, bytearray)) else str(media))


class Footage:
    """What a manager holding the recovery key can see in a vault: recordings, decrypted in memory."""

    def __init__(self, vault, identity):
        self.vault = vault
        self.identity = identity

    def recordings(self) -> list[dict]:
        return list(reversed(self.vault.recordings()))  # oldest first

    def segments(self, recording_id: str):
        return self.vault.segments(recording_id)

    def plaintexts(self, recording_id: str) -> list[bytes]:
        return [self.vault.open_segment_plaintext(info, self.identity) for info in self.segments(recording_id)]

    def ticks(self, recording_id: str) -> list[float]:
        """Where the stored sound ticks, in seconds from the first segment's start: each
        segment's sound laid where its start time puts it, so a tick that a segment
        boundary cut in two is still one tick, at its start."""
        infos = self.segments(recording_id)
        placed, rate = [], 48_000
        for info, mp4 in zip(infos, self.plaintexts(recording_id)):
            sound = _sound(mp4)
            if sound is not None:
                first, pcm, rate = sound
                placed.append(((info.start_us - infos[0].start_us) / 1e6 + first, pcm))
        if not placed:
            return []
        origin = min(0.0, placed[0][0])  # a warm-up frame may start a hair before the picture
        at = [round((t - origin) * rate) for t, _ in placed]
        timeline = np.zeros(max(a + len(pcm) for a, (_, pcm) in zip(at, placed)), np.int16)
        for a, (_, pcm) in zip(at, placed):
            timeline[a:a + len(pcm)] = pcm
        return [origin + t for t in tick_onsets(timeline[:, None], rate)]

    def marks(self, recording_id: str) -> list[dict]:
        rows = self.vault.db.execute("SELECT by, note, section, wall_us FROM marks WHERE recording_id = ? ORDER BY id",
                                     (recording_id,)).fetchall()
        return [dict(zip(("by", "note", "section", "wall_us"), r)) for r in rows]


@dataclass
class Decoded:
    frame_times_us: list[int | None]  # capture time read from each frame's barcode
    frame_pts_us: list[int]  # presentation time in the file
    audio_first_pts_s: float | None
    tick_positions_s: list[float]  # in the file's timeline
    audio_seconds: float


def _sound(media: Path | bytes) -> tuple[float, np.ndarray, int] | None:
    """The decoded sound, as 16-bit mono samples: where its first sample plays, and the rate."""
    with _open(media) as c:
        if not c.streams.audio:
            return None
        chunks, first, rate = [], 0.0, c.streams.audio[0].rate
        for f in c.decode(audio=0):
            if not chunks:
                first = float(f.pts * f.time_base)
            chunks.append(f.to_ndarray().reshape(-1) if f.format.is_planar else f.to_ndarray()[0])
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return first, (pcm * 32767).astype(np.int16) if pcm.dtype.kind == "f" else pcm, rate


def decode(media: Path | bytes) -> Decoded:
    with _open(media) as c:
        times, pts = [], []
        for f in c.decode(video=0):
            times.append(read_capture_time(f.to_ndarray(format="gray")))
            pts.append(round(float(f.pts * f.time_base) * 1e6))
    first, tick_positions, seconds = None, [], 0.0
    sound = _sound(media)
    if sound is not None:
        first, pcm, rate = sound
        seconds = len(pcm) / rate
        tick_positions = [first + p for p in tick_onsets(pcm[:, None], rate)]
    return Decoded(times, pts, first, tick_positions, seconds)


def av_offsets_us(media: Path | bytes, start_us: int) -> tuple[list[int], list[int]]:
    """How far each frame and each audio tick sits from where its capture time belongs.

    Video: (file start + pts) − the capture time burned into the frame. Audio: the
    simulated microphone ticks at every whole second of capture time, so a tick heard at
    file position p belongs at a whole second; the offset is the distance to it.
    """
    d = decode(media)
    video = [start_us + p - t for p, t in zip(d.frame_pts_us, d.frame_times_us) if t is not None]
    audio = []
    for pos in d.tick_positions_s:
        t = start_us + round(pos * 1e6)
        audio.append(((t + 500_000) % 1_000_000) - 500_000)
    return video, audio


class PinLog:
    """When a mock pin changed, on the media timebase — the pin's own record, not kiroku's."""

    def __init__(self, pin):
        self.pin = pin
        pin.clear_states()
        # MockPin timestamps are monotonic deltas from its last change.
        self._origin_monotonic = pin._last_change
        self._offset_us = clock.boottime_us() - round(time.monotonic() * 1e6)

    def changes(self) -> list[tuple[int, bool]]:
        t = self._origin_monotonic
        out = []
        for state in self.pin.states[1:]:
            t += state.timestamp
            out.append((round(t * 1e6) + self._offset_us, bool(state.state)))
        return out

    def first(self, value: bool) -> int:
        for t, v in self.changes():
            if v == value:
                return t
        raise AssertionError(f"pin never went {'high' if value else 'low'}")
