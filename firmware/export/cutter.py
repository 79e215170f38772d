"""Cutting and redacting: the plan's segments, decrypted one at a time in memory, into one
MP4 that holds only the approved range.

Without re-encoding the picture starts on the first keyframe at or after the start (never
earlier: nothing before the range leaves) and ends before the end; an exact cut, and
blurring, re-encode it. The sound is always re-encoded, cut to the sample: every segment's
AAC ends in a frame padded past the segment's end, and copying those frames would put the
sound later by that padding at every segment boundary (about 160 ms a minute at 4-s
segments of 48 kHz sound) — re-encoding it is cheap, a drifting sound is not.
"""

from __future__ import annotations

import collections
import hashlib
from fractions import Fraction

from firmware.export.plan import Plan
from firmware.export.request import Redactions
from firmware.media.mp4 import MOVFLAGS, add_template_stream, close_quietly, open_segment

_NUDGE_SAMPLES = 2  # a segment's sound this close to the last one's end carries straight on
_CALL_NUDGE_S = 0.5  # the same for a call's segments (see Cutter._audio_frame)


class _Sink:
    """Write-only, hashing, counting: what the MP4 muxer writes into (never seekable, so it
    writes a fragmented MP4 front to back)."""

    def __init__(self, out):
        self._out = out
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data) -> int:
        self._out.write(data)
        self.sha256.update(data)
        self.bytes += len(data)
        return len(data)


def _muted(mute, t: float, n: int, rate: int):
    """Indices [a, b) of the n samples starting at t that fall in a muted span."""
    for ms, me in mute:
        a, b = max(0, round((ms - t) * rate)), min(n, round((me - t) * rate))
        if a < b:
            yield a, b


class _Copy:
    """The picture of one segment copied into the clip without re-encoding: the packets in
    [begin, end), moved onto the clip's timeline. The shift is the same for every packet
    of the segment, so it is worked out once, in the stream's own time base. (The sound is
    never copied: see the module's docstring.)"""

    __slots__ = ("out", "t0", "tb", "lo", "hi", "shift", "copied", "last")

    def __init__(self, stream, out, t0: float, begin: float, end: float, copied: dict):
        self.out, self.t0 = out, t0
        self.tb = float(stream.time_base)
        self.lo = (begin - t0 - 1e-6) / self.tb  # in pts
        self.hi = (end - t0 - 1e-6) / self.tb
        self.shift = round((t0 - begin) / stream.time_base)
        self.copied = copied  # per output stream: the last time copied (the muxer takes no step back)
        self.last: float | None = None

    def take(self, packet) -> bool:
        pts = packet.pts
        if pts < self.lo or pts >= self.hi:
            return False
        t = self.t0 + pts * self.tb
        key = self.out.index
        if t <= self.copied.get(key, -1.0) + 1e-6:
            return False  # already in, from the previous segment: never twice
        self.copied[key] = self.last = t
        packet.pts = pts + self.shift
        packet.dts = packet.pts if packet.dts is None else packet.dts + self.shift
        packet.stream = self.out
        return True


class Cutter:
    """Feeds the plan's segments, one at a time, into one MP4 that holds only the range."""

    def __init__(self, plan: Plan, out, redactions: Redactions, exact: bool, progress, sound=None):
        import av

        self.av = av
        self.plan = plan
        self.red = redactions
        self.reencode_video = exact or redactions.video
        self.progress = progress
        self.sound = sound  # (rate, layout, bit rate) of the range's sound when its first segment has none
        self.sink = _Sink(out)
        self.video = self.audio = None
        self.started = False  # the output's streams exist (described by the first segment in range)
        self.sound_only = False  # a call: no picture, the sound is cut at any AAC frame
        self.begin: float | None = None  # the clip's zero, seconds of the recording
        self.last_t = plan.start_s
        self.faces = None
        hold = 0
        if redactions.faces:
            from firmware.export import redact

            self.faces = redact.FaceDetector()
            hold = redact.HOLD_FRAMES
        # Frames wait here until the faces found a few frames later are known too, so a face
        # is covered from before the detector first sees it until after it last does.
        self._window: collections.deque = collections.deque()
        self._past: collections.deque = collections.deque(maxlen=max(1, hold))
        self._hold = hold
        self.faces_found = 0
        self._audio_samples = 0  # encoded
        self._audio_written = 0  # handed to the encoder's FIFO: the clip's sound so far, in samples
        self._audio_shift: int | None = None  # this segment's nudge onto the last one's end (see _audio_frame)
        self._copied: dict[int, float] = {}  # per output stream: the last time copied
        # last, so that nothing above can fail with the file open (see abandon)
        self.container = av.open(self.sink, "w", format="mp4", options={"movflags": MOVFLAGS})

    def _streams(self, inp) -> None:
        """The output's streams, described by the first segment (what the camera and mic made)."""
        self.started = True
        vin = inp.streams.video[0] if inp.streams.video else None  # None: a call (Plan.check refused blurs)
        if vin is not None and self.reencode_video:
            self.video = self.container.add_stream("libx264", rate=vin.average_rate or vin.guessed_rate or 30)
            ctx = self.video.codec_context
            ctx.width, ctx.height, ctx.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
            ctx.time_base = self.video.time_base = Fraction(1, 90_000)
            ctx.options = {"preset": "veryfast", "crf": "20"}
        elif vin is not None:
            self.video = add_template_stream(self.container, vin)
        sound = _sound_format(inp.streams.audio[0]) if inp.streams.audio else self.sound
        if sound is not None:
            rate, layout, bit_rate = sound
            self.audio = self.container.add_stream("aac", rate=rate)
            self.audio.codec_context.layout = layout
            # twice the recording's rate, so that a second generation of AAC loses nothing audible
            self.audio.codec_context.bit_rate = 2 * bit_rate
            self.audio.time_base = Fraction(1, rate)
            self.fifo = self.av.AudioFifo()

    def segment(self, seg, data: bytes) -> None:
        t0 = self.plan.t0(seg)
        lo, hi = self.plan.start_s - t0, self.plan.end_s - t0  # the range in the segment's own seconds
        if self.begin is None:
            self.begin = self._first_time(data, t0, lo)
            if self.begin is None:
                return  # no keyframe of this segment lies in the range: the next one's will
        end = t0 + hi
        with open_segment(data) as inp:
            if not self.started:
                self._streams(inp)
            vin = inp.streams.video[0] if inp.streams.video and self.video is not None else None
            ain = inp.streams.audio[0] if inp.streams.audio and self.audio is not None else None
            copy = _Copy(vin, self.video, t0, self.begin, end, self._copied) \
                if vin is not None and not self.reencode_video else None
            self._audio_shift = None
            sound_end = None  # where this segment's sound ends: its last packet's end, not its padded frame's
            # …which FFmpeg 7.1 (Debian trixie's, the device's) does not read from a segment opened
            # as open_segment opens it: it gives no packet durations. The index knows how many
            # samples the segmenter gave the segment; what the decoder gives past them is padding,
            # and kept it would stand in for the next segment's first milliseconds.
            left = seg.audio_samples or None
            priming = True  # each segment's sound has its own encoder, whose first packet is its warm-up
            # demux ends each stream with an empty packet, whose decode() flushes the decoder
            for packet in inp.demux(*(s for s in (vin, ain) if s is not None)):
                if packet.stream is vin:
                    if copy is None:
                        for frame in packet.decode():
                            self._video_frame(frame, t0, end)
                    elif packet.pts is not None and copy.take(packet):
                        self.container.mux(packet)
                    continue
                if packet.pts is not None and packet.duration:
                    stop = t0 + float((packet.pts + packet.duration) * packet.time_base)
                    sound_end = stop if sound_end is None else max(sound_end, stop)
                frames = packet.decode()  # the decoder needs the warm-up packet to decode the next one…
                if priming and packet.pts is not None:
                    # …but what it gives for it is not sound: the edit list skips it, except a
                    # sample or so when the sound starts a sample after the picture does
                    priming = False
                    continue
                for frame in frames:
                    self._audio_frame(frame, t0, end if sound_end is None else min(end, sound_end),
                                      None if left is None else max(0, left))
                    if left is not None:
                        left -= frame.samples
            if copy is not None and copy.last is not None:
                self._tick(copy.last)  # how far the clip got

    def _first_time(self, data: bytes, t0: float, lo: float) -> float | None:
        """Where the clip starts: the start itself when re-encoding, else the first keyframe
        at or after it (never one before: that would show time outside the range)."""
        with open_segment(data) as inp:
            self.sound_only = not inp.streams.video
            which = {"audio": 0} if self.sound_only else {"video": 0}
        if self.reencode_video or self.sound_only:
            return t0 + max(0.0, lo)
        with open_segment(data) as inp:
            for packet in inp.demux(**which):
                if packet.pts is not None and packet.is_keyframe and float(packet.pts * packet.time_base) >= lo - 1e-6:
                    return t0 + float(packet.pts * packet.time_base)
        return None

    # -- video, re-encoded: cut exactly, redacted ------------------------------------------
    def _video_frame(self, frame, t0: float, end: float) -> None:
        t = t0 + float(frame.pts * frame.time_base)
        if t < self.begin - 1e-6 or t >= end - 1e-6:
            return
        planes = frame.to_ndarray(format="yuv420p")  # Y, then U and V at half size
        w, h = frame.width, frame.height
        found = self.faces.detect(planes[:h]) if self.faces is not None else []
        self.faces_found += len(found)
        self._window.append((t, planes, w, h, found))
        while len(self._window) > self._hold:
            self._emit()

    def _emit(self) -> None:
        from firmware.export import redact

        t, planes, w, h, found = self._window.popleft()
        boxes = [(round(r.x * w), round(r.y * h), round(r.w * w), round(r.h * h)) for r in self.red.blur
                 if (r.start is None or r.start <= t + 1e-6) and (r.end is None or t < r.end)]
        if self.faces is not None:
            boxes += [b for f in (*self._past, found, *(item[4] for item in self._window)) for b in f]
            self._past.append(found)
        for box in boxes:
            redact.obscure(planes, w, h, box)
        frame = self.av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = round((t - self.begin) * 90_000)
        frame.time_base = Fraction(1, 90_000)
        self.container.mux(self.video.encode(frame))
        self._tick(t)

    # -- audio, re-encoded: cut to the sample, muted where asked ---------------------------
    def _audio_frame(self, frame, t0: float, end: float, real: int | None = None) -> None:
        """One decoded frame of a segment's sound, placed on the clip's sample grid.

        ``end`` is where the range or the segment's sound ends, whichever comes first, and
        ``real`` how many of the frame's samples are the segment's sound, if known (the
        decoder hands out a last frame padded past it). Sound is placed by its timestamp,
        not appended: what the last segment already gave is not given twice, and where no
        sound was recorded there is silence, so the sound never drifts from the picture.
        A segment that starts within a sample or two of where the last one ended is
        nudged onto it: segment times are kept in microseconds, and a sample dropped or
        doubled at every boundary would click."""
        rate = frame.sample_rate
        samples = frame.to_ndarray()  # planar: (channels, n)
        at = round((t0 + float(frame.pts * frame.time_base) - self.begin) * rate)  # where its first sample belongs
        if self._audio_shift is None:  # the segment's first sound
            gap = at - self._audio_written
            # A call's segments hold its sound sample after sample (the writer fills what the
            # network lost with silence): they are laid end to end, whatever two clocks read
            # a moment apart say. Only a missing segment (seconds) is a gap.
            nudge = round(_CALL_NUDGE_S * rate) if self.sound_only else _NUDGE_SAMPLES
            self._audio_shift = -gap if self._audio_written and abs(gap) <= nudge else 0
        at += self._audio_shift
        a = max(0, self._audio_written - at)  # before the clip's start, or already in
        b = min(samples.shape[1] if real is None else min(real, samples.shape[1]),
                round((end - self.begin) * rate) + self._audio_shift - at)
        if a >= b:
            return
        fmt, layout = frame.format.name, frame.layout.name
        self._silence_until(at + a, samples.shape[0], samples.dtype, fmt, layout, rate)  # nothing was recorded here
        self._write_audio(samples[:, a:b].copy(), fmt, layout, rate)

    def _silence_until(self, upto: int, channels: int, dtype, fmt: str, layout: str, rate: int) -> None:
        """Silence from the sound so far to sample ``upto`` of the clip, a second at a time."""
        import numpy as np

        while self._audio_written < upto:
            n = min(upto - self._audio_written, rate)
            self._write_audio(np.zeros((channels, n), dtype=dtype), fmt, layout, rate)

    def _write_audio(self, samples, fmt: str, layout: str, rate: int) -> None:
        start = self.begin + self._audio_written / rate  # of the recording
        for ma, mb in _muted(self.red.mute, start, samples.shape[1], rate):
            samples[:, ma:mb] = 0
        self.fifo.write(self._audio(samples, fmt, layout, rate))
        self._audio_written += samples.shape[1]
        self._drain(final=False)

    def _audio(self, samples, fmt: str, layout: str, rate: int):
        frame = self.av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
        frame.sample_rate = rate
        return frame

    def _drain(self, final: bool) -> None:
        import numpy as np

        size = self.audio.codec_context.frame_size or 1024
        while self.fifo.samples >= size or (final and self.fifo.samples):
            frame = self.fifo.read(min(size, self.fifo.samples))
            if frame.samples < size:  # the encoder takes whole frames: pad the last with silence
                tail = frame.to_ndarray()
                padded = np.zeros((tail.shape[0], size), dtype=tail.dtype)
                padded[:, :tail.shape[1]] = tail
                frame = self._audio(padded, frame.format.name, frame.layout.name, frame.sample_rate)
            frame.pts = self._audio_samples
            frame.time_base = Fraction(1, frame.sample_rate)
            self._audio_samples += frame.samples
            self.container.mux(self.audio.encode(frame))
        if self.sound_only:
            self._tick(self.begin + self._audio_samples / self.audio.codec_context.sample_rate)

    def _tick(self, t: float) -> None:
        self.last_t = max(self.last_t, t)
        if self.progress:
            self.progress(min(t - self.plan.start_s, self.plan.duration), self.plan.duration)

    def abandon(self) -> None:
        """Close the MP4 after a failure (no package is made)."""
        close_quietly(self.container)

    def close(self) -> None:
        if not self.started:  # nothing was in range: no file worth finishing
            self.container.close()
            return
        if self.reencode_video and self.video is not None:
            while self._window:
                self._emit()
            self.container.mux(self.video.encode(None))
        if self.audio is not None:
            if not self.sound_only:  # the microphone out until the end: silence as long as the picture
                ctx = self.audio.codec_context
                upto = round((min(self.last_t + frame_s(self.plan), self.plan.end_s) - self.begin) * ctx.sample_rate)
                self._silence_until(upto, ctx.channels, "float32", "fltp", ctx.layout.name, ctx.sample_rate)
            self._drain(final=True)
            self.container.mux(self.audio.encode(None))
        self.container.close()


def _sound_format(stream) -> tuple[int, str, int]:
    ctx = stream.codec_context
    return ctx.sample_rate, ctx.layout.name, ctx.bit_rate or 64_000 * ctx.channels


def range_sound(vault, plan_: Plan, opener) -> tuple[int, str, int] | None:
    """The sound's format when the range starts where the microphone was out but has sound
    later: read from the first segment that has it (decrypted in memory, once more)."""
    if not plan_.segments or plan_.segments[0].has_audio:
        return None
    seg = next((s for s in plan_.segments if s.has_audio), None)
    if seg is None:
        return None
    from firmware.vault import age

    key = vault.keys.open_day_key(seg.record_class, seg.key_day, opener)
    with open_segment(age.decrypt(vault.read_sealed(seg.path), [key])) as inp:
        return _sound_format(inp.streams.audio[0]) if inp.streams.audio else None


def plaintexts(vault, segments, opener):
    """Each segment's plaintext, in order, with a future for its SHA-256.

    Only the hashing goes to a second thread: it lets go of the GIL for the whole segment.
    Decrypting holds it between chunks, and in a second thread it made every PyAV call here
    wait for the GIL's switch interval — slower than not overlapping at all (measured)."""
    from concurrent.futures import ThreadPoolExecutor

    from firmware.vault import age

    day_keys: dict = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-hash") as pool:
        for seg in segments:
            key = (seg.record_class, seg.key_day)
            if key not in day_keys:
                day_keys[key] = vault.keys.open_day_key(seg.record_class, seg.key_day, opener)
            data = age.decrypt(vault.read_sealed(seg.path), [day_keys[key]])
            yield seg, data, pool.submit(lambda d: hashlib.sha256(d).hexdigest(), data)
            del data
        day_keys.clear()


def frame_s(plan_: Plan) -> float:
    """How long the last picture (or, for sound alone, the last AAC frame) lasts."""
    seg = plan_.segments[0]
    if seg.video_frames:
        return seg.duration / seg.video_frames
    rate = seg.audio_samples / seg.duration if seg.duration else 0
    return 1024 / rate if rate else 0.0
