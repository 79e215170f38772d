"""Cutting footage without re-encoding: what viewing and exports need to keep to a scope."""

from __future__ import annotations

import io
import math

from firmware.media.mp4 import MOVFLAGS, add_template_stream, open_segment


def trim(mp4: bytes, keep_from: float, keep_to: float | None = None) -> tuple[bytes, float]:
    """Cut a segment to [keep_from, keep_to) seconds without re-encoding; ``None`` keeps it
    to its end.

    The picture starts at the first keyframe at or after ``keep_from`` (a frame before it
    would show time outside the approved range); frames from ``keep_to`` on are dropped.
    The sound is cut to the same span in whole AAC frames (1024 samples: 21 ms at 48 kHz,
    64 ms for a call's 16 kHz), none of which reaches past ``keep_to``: the sound ends up
    to a frame before the picture does rather than let sound from outside the range be
    heard. Sound alone (a call) is cut
    at its first frame at or after ``keep_from``. Timestamps start again at zero. Returns the
    cut file and where in the segment it now begins (that keyframe's time), or ``(b"", 0)``
    when no keyframe lies in the range.
    """
    import av

    eps = 1e-6
    end = math.inf if keep_to is None else keep_to
    with open_segment(mp4) as inp:
        # A call has no picture: every AAC frame stands alone, so its sound is cut at any frame.
        which = {"video": 0} if inp.streams.video else {"audio": 0}
        starts = [float(p.pts * p.time_base) for p in inp.demux(**which)
                  if p.dts is not None and p.is_keyframe and float(p.pts * p.time_base) >= keep_from - eps]
    if not starts or starts[0] >= end - eps:
        return b"", 0.0  # no keyframe inside the range: nothing can be shown without showing more
    begin = starts[0]
    out_buf = io.BytesIO()
    # closed on every path, never by the garbage collector (PyAV before 17 crashes there)
    with open_segment(mp4) as inp, av.open(out_buf, "w", format="mp4", options={
            "movflags": MOVFLAGS}) as out:
        streams = {s.index: add_template_stream(out, s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            t = float(packet.pts * packet.time_base)
            if t < begin - eps or t >= end - eps:
                continue
            if packet.stream.type == "audio" and t + _aac_frame_s(packet.stream) > end + eps:
                continue  # this frame's sound goes on past the range (a segment's own end is no cut)
            shift = int(round(begin / packet.time_base))
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return out_buf.getvalue(), begin


def _aac_frame_s(stream) -> float:
    """How long one of the stream's AAC frames plays. Opened without a probe, the stream
    does not know its frame size; AAC-LC's is 1024 samples."""
    return (stream.codec_context.frame_size or 1024) / (stream.rate or 48_000)
