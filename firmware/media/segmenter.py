"""The segmenter: cuts the admitted stream into short, self-contained fragmented-MP4 files.

Video is passed through as the camera encoded it (never re-encoded); audio PCM is
encoded to AAC. A segment starts on a keyframe and ends where the next one starts, so
segments are gapless: segment *n* covers ``[start, end)`` in capture time and segment
*n+1* starts at that ``end``. Each file plays on its own.

Audio and video arrive on separate clocks and with different delays, so audio is only
placed once video has shown where the segment boundaries are: samples later than the
newest video frame wait in ``_audio_backlog``. A segment whose end is known is kept open
until audio has caught up with that end (or, if the microphone falls silent, until
``audio_wait_us`` has passed), then finished and committed to the store.

All of this runs on the recorder's media thread, never on a capture thread.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from firmware import clock
from firmware.hardware.media import AudioBlock, AudioFormat, EncodedFrame, VideoFormat
from firmware.media.errors import SegmentError
from firmware.media.h264 import ParameterSets
from firmware.media.mp4 import MOVFLAGS, add_template_stream, close_quietly, set_remux_time_base
from firmware.store import Recording, SegmentInfo

log = logging.getLogger(__name__)

_US = Fraction(1, 1_000_000)


def _video_template(header_and_keyframe: bytes):
    """An input stream describing the H.264 stream (size, profile, avcC) from its SPS/PPS.

    Opening an ``h264`` output stream directly would open libx264 with default settings,
    and its *own* parameter sets would end up in the MP4's avcC box instead of the
    camera's. Describing the stream by demuxing its first keyframe gets them right.
    """
    import av

    probe = av.open(io.BytesIO(header_and_keyframe), format="h264")
    return probe, probe.streams.video[0]


class _Muxer:
    """One MP4 file being written: H.264 packets passed through, PCM encoded to AAC."""

    def __init__(self, out, keyframe: bytes, video: VideoFormat, audio: AudioFormat | None):
        import av

        self._av = av
        self.container = av.open(out, "w", format="mp4", options={"movflags": MOVFLAGS})
        try:
            probe, template = _video_template(keyframe)
            try:
                self.video = add_template_stream(self.container, template)
            finally:
                probe.close()
            set_remux_time_base(self.video, _US)
            self.audio = None
            if audio is not None:
                stream = self.container.add_stream("aac", rate=audio.samplerate)
                stream.codec_context.layout = "mono" if audio.channels == 1 else "stereo"
                stream.codec_context.bit_rate = 64_000 * audio.channels
                stream.time_base = Fraction(1, audio.samplerate)
                self.audio = stream
                self._layout = "mono" if audio.channels == 1 else "stereo"
        except BaseException:
            self.abandon()  # never left to the garbage collector: PyAV before 17 crashes there
            raise

    def mux_video(self, data: bytes, keyframe: bool, pts_us: int, duration_us: int) -> None:
        packet = self._av.Packet(data)
        packet.stream = self.video
        packet.time_base = _US
        packet.pts = packet.dts = pts_us
        packet.duration = max(1, duration_us)
        packet.is_keyframe = keyframe
        self.container.mux(packet)

    def mux_audio(self, samples: np.ndarray, pts: int, samplerate: int) -> None:
        frame = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout=self._layout
        )
        frame.sample_rate = samplerate
        frame.pts = pts
        frame.time_base = Fraction(1, samplerate)
        self.container.mux(self.audio.encode(frame))

    def close(self) -> None:
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))
        self.container.close()

    def abandon(self) -> None:
        close_quietly(self.container)


@dataclass
class _Segment:
    seq: int
    start_us: int
    file: object  # the store's segment: write / commit / abort
    muxer: _Muxer
    has_audio: bool
    end_us: int | None = None
    pending: EncodedFrame | None = None  # muxed when its duration is known
    frames: int = 0
    samples: int = 0
    audio_next: int | None = None  # pts (in samples) the next audio chunk should have
    started_at: str = ""
    ended_at: str = ""
    start_wall_us: int = 0
    end_wall_us: int = 0
    clock_synchronised: bool = False


class Segmenter:
    """Turns admitted frames and audio blocks of one recording at a time into segments."""

    def __init__(
        self,
        store,
        *,
        video: VideoFormat,
        audio: AudioFormat | None,
        segment_us: int,
        audio_wait_us: int = 1_000_000,
        on_segment: Callable[[Recording, SegmentInfo], None] | None = None,
        now: Callable[[], int] = clock.boottime_us,
    ):
        self.store = store
        self.video_format = video
        self.audio_format = audio
        self.segment_us = segment_us
        self.audio_wait_us = audio_wait_us
        self.on_segment = on_segment
        self._now = now
        self._recording: Recording | None = None
        self._current: _Segment | None = None
        self._closing: list[_Segment] = []
        self._params = ParameterSets()
        self._next_seq = 0
        self._horizon_us: int | None = None  # capture time of the newest video frame placed
        self._audio_backlog: list[AudioBlock] = []
        self._audio_upto_us: int | None = None  # end of the newest audio received
        self._audio_enabled = audio is not None
        self._ending = False
        self.frames_dropped = 0
        self.segments_written = 0

    # -- state -----------------------------------------------------------------------
    @property
    def recording(self) -> Recording | None:
        return self._recording

    @property
    def busy(self) -> bool:
        """True while a segment is open or waiting for its audio."""
        return self._current is not None or bool(self._closing)

    def set_audio(self, enabled: bool) -> None:
        """Whether segments opened from now on carry an audio track (off while the mic is faulty)."""
        self._audio_enabled = enabled and self.audio_format is not None

    # -- input -----------------------------------------------------------------------
    def begin(self, recording: Recording) -> None:
        if self.busy:
            raise SegmentError("a recording is still being segmented")
        self._recording = recording
        self._next_seq = 0
        self._horizon_us = None
        self._audio_backlog.clear()
        self._audio_upto_us = None
        self._ending = False

    def video(self, frame: EncodedFrame) -> None:
        if self._recording is None or self._ending:
            return
        if frame.keyframe:
            self._params.observe(frame.data)
        cur = self._current
        if cur is None:
            if not frame.keyframe or not self._params.complete:
                self.frames_dropped += 1  # a segment can only start on a decodable keyframe
                return
            self._current = self._open(frame)
        elif frame.keyframe and frame.time_us - cur.start_us >= self.segment_us - self.video_format.frame_us // 2:
            # (half a frame of slack: 120 frames at 30 fps are 3.99996 s of µs timestamps)
            self._close_at(cur, frame.time_us)
            self._current = None
            self._current = self._open(frame)
        else:
            self._flush_pending(cur, frame.time_us)
            cur.pending = frame
        self._horizon_us = frame.time_us
        self._place_audio()
        self._finish_ready()

    def audio(self, block: AudioBlock) -> None:
        if self._recording is None:
            return
        self._audio_backlog.append(block)
        self._audio_upto_us = max(self._audio_upto_us or block.end_us, block.end_us)
        # Keep a bounded backlog before the first segment opens.
        if self._current is None and not self._closing:
            cutoff = block.end_us - 2_000_000
            self._audio_backlog = [b for b in self._audio_backlog if b.end_us > cutoff]
            return
        self._place_audio()
        self._finish_ready()

    def end(self, until_us: int | None = None, *, wait_for_audio: bool = True) -> None:
        """The recording is over: the open segment ends one frame after its last frame,
        or at ``until_us`` (the moment recording was stopped) if that comes first.

        ``wait_for_audio=False`` when no more audio can come (the gate was shut): the
        last segments are finished at once with the audio they have.
        """
        if self._recording is None:
            return
        self._ending = True
        self.cut(until_us)
        if not wait_for_audio:
            for seg in list(self._closing):
                self._finish(seg)
        if not self.busy:
            self._recording = None

    def cut(self, until_us: int | None = None) -> None:
        """Close the open segment now; the next keyframe starts a new one (after lost frames)."""
        cur = self._current
        if cur is not None:
            last = cur.pending.time_us if cur.pending else cur.start_us
            end = last + self.video_format.frame_us
            if until_us is not None and last < until_us < end:
                end = until_us
            self._close_at(cur, end)  # if this fails, the segment is still current, and abort() finds it
            self._current = None
            self._horizon_us = max(self._horizon_us or end, end)
            self._place_audio()
        self._finish_ready()

    def tick(self) -> None:
        """Finish segments whose audio is overdue (a silent or unplugged microphone)."""
        now = self._now()
        for seg in list(self._closing):
            if now - seg.end_us > self.audio_wait_us:
                log.warning("segment %d: audio did not arrive in time; finishing without the rest", seg.seq)
                self._finish(seg)
        if self._ending and not self.busy:
            self._recording = None

    def flush(self) -> None:
        """Finish everything now (shutdown): whatever audio has arrived is kept."""
        if self._current is not None:
            self.end()
        for seg in list(self._closing):
            self._finish(seg)
        self._recording = None

    def abort(self) -> None:
        """Drop open segments without committing them (the store failed)."""
        for seg in [s for s in (self._current, *self._closing) if s is not None]:
            seg.muxer.abandon()
            seg.file.abort()
        self._current = None
        self._closing.clear()
        self._recording = None

    # -- internals -------------------------------------------------------------------
    def _open(self, keyframe: EncodedFrame) -> _Segment:
        assert self._recording is not None
        data = self._params.self_contained(keyframe.data)
        file = self.store.open_segment(self._recording, self._next_seq, keyframe.time_us)
        has_audio = self._audio_enabled
        try:
            muxer = _Muxer(file, data, self.video_format, self.audio_format if has_audio else None)
        except Exception as exc:
            file.abort()
            raise SegmentError(f"cannot start segment {self._next_seq}: {exc}") from exc
        seg = _Segment(self._next_seq, keyframe.time_us, file, muxer, has_audio)
        # Wall time is read as the segment happens, so a later clock step does not move it.
        seg.started_at = clock.iso(clock.wall_at(keyframe.time_us))
        seg.start_wall_us = clock.wall_us_at(keyframe.time_us)
        seg.clock_synchronised = clock.clock_synchronised()
        seg.pending = EncodedFrame(data, True, keyframe.time_us)
        self._next_seq += 1
        return seg

    def _flush_pending(self, seg: _Segment, next_us: int) -> None:
        frame = seg.pending
        if frame is None:
            return
        seg.muxer.mux_video(frame.data, frame.keyframe, frame.time_us - seg.start_us, next_us - frame.time_us)
        seg.frames += 1
        seg.pending = None

    def _close_at(self, seg: _Segment, end_us: int) -> None:
        self._flush_pending(seg, end_us)
        seg.end_us = end_us
        seg.ended_at = clock.iso(clock.wall_at(end_us))
        seg.end_wall_us = seg.start_wall_us + (end_us - seg.start_us)
        seg.clock_synchronised = seg.clock_synchronised and clock.clock_synchronised()
        self._closing.append(seg)

    def _targets(self) -> list[_Segment]:
        return [s for s in (*self._closing, self._current) if s is not None]

    def _place_audio(self) -> None:
        """Give each open segment the audio samples that fall inside it, up to the video horizon."""
        if self._horizon_us is None:
            return
        horizon = self._horizon_us
        keep: list[AudioBlock] = []
        for block in self._audio_backlog:
            rate = block.samplerate
            # Samples whose capture time is before the horizon can be placed now.
            placeable = min(block.frames, max(0, -(-(horizon - block.time_us) * rate // 1_000_000)))
            for seg in self._targets():
                if not seg.has_audio:
                    continue
                lo = max(0, -(-(seg.start_us - block.time_us) * rate // 1_000_000))
                hi = placeable
                if seg.end_us is not None:
                    hi = min(hi, max(0, -(-(seg.end_us - block.time_us) * rate // 1_000_000)))
                if hi > lo:
                    self._write_audio(seg, block, lo, hi)
            if placeable < block.frames:
                rest = block.samples[placeable:]
                keep.append(AudioBlock(rest, block.time_us + placeable * 1_000_000 // rate, rate))
        self._audio_backlog = keep

    def _write_audio(self, seg: _Segment, block: AudioBlock, lo: int, hi: int) -> None:
        rate = block.samplerate
        first_us = block.time_us + lo * 1_000_000 // rate
        pts = round((first_us - seg.start_us) * rate / 1_000_000)
        samples = block.samples[lo:hi]
        if seg.audio_next is not None:
            if pts < seg.audio_next:  # overlap after a re-anchor: keep what is already there
                samples = samples[seg.audio_next - pts:]
                pts = seg.audio_next
            elif pts - seg.audio_next <= 2:  # rounding, not a gap
                pts = seg.audio_next
        if len(samples) == 0:
            return
        seg.muxer.mux_audio(samples, pts, rate)
        seg.samples += len(samples)
        seg.audio_next = pts + len(samples)

    def _finish_ready(self) -> None:
        for seg in list(self._closing):
            # Audio counts as complete up to one sample short of the end (sample rounding).
            slack = 1_000_000 // self.audio_format.samplerate if self.audio_format else 0
            audio_done = not seg.has_audio or (
                self._audio_upto_us is not None and self._audio_upto_us >= seg.end_us - slack
            )
            if audio_done:
                self._finish(seg)

    def _finish(self, seg: _Segment) -> None:
        self._closing.remove(seg)
        assert self._recording is not None and seg.end_us is not None
        try:
            seg.muxer.close()
        except Exception as exc:
            seg.muxer.abandon()  # closed here, never by the garbage collector (PyAV before 17 crashes there)
            seg.file.abort()
            raise SegmentError(f"cannot finish segment {seg.seq}: {exc}") from exc
        info = SegmentInfo(
            recording_id=self._recording.id,
            seq=seg.seq,
            start_us=seg.start_us,
            end_us=seg.end_us,
            started_at=seg.started_at,
            ended_at=seg.ended_at,
            start_wall_us=seg.start_wall_us,
            end_wall_us=seg.end_wall_us,
            clock_synchronised=seg.clock_synchronised,
            video_frames=seg.frames,
            audio_samples=seg.samples,
            has_audio=seg.has_audio,
        )
        info = seg.file.commit(info)
        self.segments_written += 1
        self._recording.segments = max(self._recording.segments, seg.seq + 1)
        if self.on_segment is not None:
            self.on_segment(self._recording, info)
