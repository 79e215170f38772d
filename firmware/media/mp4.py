"""What every MP4 kiroku writes shares: the fragmented-MP4 flags and the PyAV remuxing
helpers that keep the camera's H.264 as it was encoded (segments, cuts, exports, calls)."""

from __future__ import annotations

import io
from fractions import Fraction

# Fragmented, so that a segment cut short by a power failure is still readable up to its
# last fragment; the moov written first (empty), so that a player needs no seek to the end.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+delay_moov"


def open_segment(data: bytes):
    """A stored segment's plaintext as a PyAV container. Its moov box already describes
    every stream, so nothing is decoded to probe it (that cost milliseconds per segment)."""
    import av

    return av.open(io.BytesIO(data), format="mp4", options={"probesize": "32", "analyzeduration": "0"},
                   buffer_size=max(32768, len(data)))


def add_template_stream(container, template):
    """An output stream that takes ``template``'s packets as they are (remuxing, never encoding).

    ``opaque=True``: the stream's codec context is the template's decoder, not a new encoder.
    Without it PyAV before 17 (Debian trixie's, the image's, is 14.2) opens a libx264 *encoder*
    for a video stream when the file starts, writes that encoder's parameters into the MP4 in
    place of the camera's, and the video in the file does not play at all; the boot test's
    stack run (image-build/boottest/stack.py) found it. Later PyAV never opens it either way.
    """
    if hasattr(container, "add_stream_from_template"):  # PyAV ≥ 14
        return container.add_stream_from_template(template, opaque=True)
    return container.add_stream(template=template)  # pragma: no cover - PyAV 12/13


def close_quietly(container) -> None:
    """Close an output container after a failure, ignoring what closing it raises.

    Closed, never left to the garbage collector: PyAV before 17.0.1 (the image's is 14.2)
    crashes the process finishing an MP4 there; the boot test's stack run found it.
    """
    try:
        container.close()
    except Exception:
        pass


def set_remux_time_base(stream, time_base: Fraction) -> None:
    """Set the time base of a stream made by :func:`add_template_stream`.

    PyAV 14 passes the setting on to the stream's codec context, here the template's
    decoder, which refuses it. The MP4 muxer then chooses the time base itself (90 kHz for
    video) and ``mux()`` rescales every packet into it, so the file says the same times.
    """
    try:
        stream.time_base = time_base
    except RuntimeError:  # PyAV 14: "Cannot access 'time_base' as a decoder"
        pass
