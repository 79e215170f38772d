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
from firmware.hardware.synth import Tone, read_capture_time, tick_onsets
from firmware.recorder import State


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition", progress=None):
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds.

    For media work, which a busy machine slows (tests run side by side with the boot test), pass
    ``progress``: a function whose value changes as the work advances, such as the segments a
    recorder has written. The timeout then counts from its last change: work that keeps
    advancing is waited for (up to four timeouts in all), work that has stopped still fails
    after one timeout. What is waited for does not change, only how long a slow machine gets."""
    started = time.monotonic()
    deadline = started + timeout
    limit = started + 4 * timeout if progress is not None else deadline
    last = progress() if progress is not None else None
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if progress is not None and (current := progress()) != last:
            last, deadline = current, min(now + timeout, limit)
        if now >= deadline:
            break
        time.sleep(interval)
    since = " since the last progress" if progress is not None and now < limit else ""
    raise AssertionError(f"timed out after {timeout:g} s{since} waiting for {what} "
                         f"({now - started:.1f} s in all)")


def segments_of(recorder):
    """``progress`` for wait_for: the segments an in-process recorder has written."""
    return lambda: recorder.segments_written


def record_segments(recorder, simulator, count: int = 1, timeout: float = 10.0) -> None:
    """A clerk's press, held until ``count`` segments are stored, then stopped and idle again."""
    simulator.press()
    simulator.release()
    wait_for(lambda: recorder.segments_written >= count, timeout=timeout, what=f"{count} stored segment(s)",
             progress=segments_of(recorder))
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


def lay_down(vault, config, *, seconds: int, first_us: int) -> str:
    """A recording made without the recorder's threads, so its timing is exactly as given:
    the simulated camera's frames from ``first_us`` on (a keyframe every second, so a segment
    starts every ``segment_seconds`` from there) and the simulated microphone's sound, fed
    through the segmenter into ``vault`` in capture order as the benchmark does. Returns the
    recording's id."""
    from fractions import Fraction

    from kiroku.bench.storing import record_footage
    from firmware.hardware.media import AudioBlock, AudioFormat, EncodedFrame, VideoFormat
    from firmware.hardware.synth import Picture
    from firmware.recorder.writer import set_end as _set_end
    from firmware.media.segmenter import Segmenter
    from firmware.store import Recording

    fps, (w, h), rate = 15, (config.camera.width, config.camera.height), 48_000
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 1_000_000), fps
    enc.options = {"preset": "ultrafast", "tune": "zerolatency",
                   "x264-params": f"scenecut=0:repeat-headers=1:keyint={fps}:min-keyint={fps}"}
    enc.open()
    picture, frames = Picture(w, h), []
    for i in range(seconds * fps + 1):
        t = first_us + i * 1_000_000 // fps
        frame = av.VideoFrame.from_ndarray(picture.render(t, clock.wall_at(t), i), format="yuv420p")
        frame.pts = t
        frames += [EncodedFrame(bytes(p), bool(p.is_keyframe), int(p.pts)) for p in enc.encode(frame)]
    frames += [EncodedFrame(bytes(p), bool(p.is_keyframe), int(p.pts)) for p in enc.encode(None)]
    tone, block = Tone(rate, 1), 1024
    start = first_us - 200_000  # the microphone was on a little before the picture
    blocks = [AudioBlock(tone.render(start + n * block * 1_000_000 // rate, block),
                         start + n * block * 1_000_000 // rate, rate)
              for n in range((seconds + 1) * rate // block)]
    wall = clock.wall_at(first_us)
    rec = Recording(id=wall.strftime("%Y%m%d-%H%M%S-") + f"{wall.microsecond // 1000:03d}", device="test",
                    mode="on_demand", started_at=clock.iso(wall), started_us=first_us,
                    started_wall_us=clock.wall_us_at(first_us), started_by="test", clock_synchronised=True)
    segmenter = Segmenter(vault, video=VideoFormat(w, h, fps), audio=AudioFormat(rate, 1),
                          segment_us=round(config.recording.segment_seconds * 1_000_000),
                          now=lambda: frames[-1].time_us)
    record_footage(vault, segmenter, rec, frames, blocks)
    _set_end(rec, frames[-1].time_us, "stopped")
    vault.end(rec)
    return rec.id


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


def whole_ticks(ticks: list[float], start_s: float, end_s: float) -> list[float]:
    """The ticks that lie wholly inside a clip from ``start_s`` to ``end_s``. One that the
    clip's edge cuts, or all but cuts, may or may not be told from noise, in the clip as in
    the stored footage, so a comparison of the two leaves it out on both sides."""
    return [t for t in ticks if start_s + 1e-3 <= t and t + Tone.TICK_US / 1e6 <= end_s]


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


# -- processes -------------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children in sessions of their own included), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
