"""The camera: delivers H.264 frames, stamped with their capture time, to a sink.

Two backends follow the same interface: :class:`SimulatedCamera` (synthetic frames
encoded to real H.264 by libx264 through PyAV) and ``PiCamera`` in ``picamera2_camera``
(the camera module through picamera2's encoder). Nothing above this module knows which
one it has.
"""

from __future__ import annotations

import collections
import threading
import time
from abc import ABC, abstractmethod
from fractions import Fraction

from firmware.hardware.errors import DeviceFailed, DeviceUnavailable
from firmware.hardware.media import EncodedFrame, VideoFormat, VideoSink, boottime_us, wall_at


class Camera(ABC):
    """A camera that, while started, hands every encoded frame to its sink.

    The sink is called on the camera's own thread and must return quickly: it only
    queues the frame (see ``firmware.recorder``).
    """

    device = "camera"
    backend = "?"

    def __init__(self, fmt: VideoFormat, *, bitrate: int, keyframe_interval: float):
        self.format = fmt
        self.bitrate = bitrate
        self.keyframe_interval = keyframe_interval
        self._running = False

    @property
    def is_running(self) -> bool:
        return self._running

    @abstractmethod
    def start(self, sink: VideoSink) -> None:
        """Start capturing; raises :class:`DeviceUnavailable` with a one-line reason."""

    @abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop capturing within ``timeout`` seconds or raise :class:`DeviceFailed`."""

    @abstractmethod
    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (a recording starts on one)."""

    def close(self) -> None:
        if self._running:
            try:
                self.stop()
            except DeviceFailed:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _keyframe_type():
    # PyAV ≥ 14 wants the enum; older releases took the letter.
    try:
        from av.video.frame import PictureType

        return PictureType.I
    except ImportError:  # pragma: no cover - old PyAV
        return "I"


class SimulatedCamera(Camera):
    """Synthetic frames at the configured rate, encoded to H.264 by libx264 in real time.

    Like a real sensor it paces itself by the clock and drops frames it cannot encode in
    time. ``stall()``, ``unplug()`` and ``replug()`` reproduce the failures seen on real
    cameras (a front end that stops delivering, a ribbon cable pulled out).
    """

    backend = "simulated"

    def __init__(self, fmt: VideoFormat, *, bitrate: int, keyframe_interval: float, clock=None):
        super().__init__(fmt, bitrate=bitrate, keyframe_interval=keyframe_interval)
        self._clock = clock or boottime_us
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._keyframe = threading.Event()
        self._stalled = False
        self._unplugged = False
        self._hung = False
        self.latency_us = 0  # encoder pipeline delay: a real encoder hands a frame over later
        self.frames_delivered = 0
        self.frames_skipped = 0
        self.skips: list[tuple[int, int]] = []  # (sensor time µs, frames dropped there): the last 100
        self.failure: Exception | None = None

    # Fault injection (the simulated counter and tests use these).
    def stall(self) -> None:
        self._stalled = True

    def unplug(self) -> None:
        self._unplugged = True
        self._stalled = True

    def replug(self) -> None:
        self._unplugged = False
        self._stalled = False

    def hang(self) -> None:
        """Stop delivering and never stop again (picamera2 after a front-end timeout)."""
        self._hung = True
        self._stalled = True

    def start(self, sink: VideoSink) -> None:
        if self._running:
            raise RuntimeError("camera already started")
        if self._unplugged:
            raise DeviceUnavailable("camera", "not connected", "plug the simulated camera back in (virtual counter)")
        encoder = self._open_encoder()
        self._stop.clear()
        self._stalled = False
        self.failure = None
        self._thread = threading.Thread(target=self._run, args=(encoder, sink), name="sim-camera", daemon=True)
        self._running = True
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if not self._running:
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout)
        self._running = False
        if self._thread.is_alive():
            raise DeviceFailed("camera", f"did not stop within {timeout:.0f} s", "restart the recorder")

    def request_keyframe(self) -> None:
        self._keyframe.set()

    def _open_encoder(self):
        import av

        fmt = self.format
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = fmt.width, fmt.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        ctx.framerate = Fraction(fmt.framerate).limit_denominator(1001)
        ctx.gop_size = max(1, round(fmt.framerate * self.keyframe_interval))
        ctx.bit_rate = self.bitrate
        # What the Pi's encoders produce: no B-frames, a fixed GOP, SPS/PPS before every
        # keyframe (picamera2's repeat=True), Annex B start codes.
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"scenecut=0:repeat-headers=1:keyint={ctx.gop_size}:min-keyint={ctx.gop_size}",
        }
        ctx.open()
        return ctx

    def _run(self, encoder, sink: VideoSink) -> None:
        import av

        from firmware.hardware.synth import Picture

        picture = Picture(self.format.width, self.format.height)
        interval = self.format.frame_us
        keyframe = _keyframe_type()
        start = self._clock()
        index = 0
        pipeline: collections.deque[EncodedFrame] = collections.deque()
        try:
            while True:
                due = start + index * interval
                wait = (due - self._clock()) / 1e6
                if wait > 0 and self._stop.wait(wait) and not self._hung:
                    break
                if self._hung:
                    time.sleep(0.05)  # wedged: ignores stop requests, like a stuck driver call
                    index += 1
                    continue
                if self._stop.is_set():
                    break
                behind = (self._clock() - due) // interval
                if behind > 0:  # a real sensor drops what it cannot deliver in time
                    self.frames_skipped += behind
                    self.skips = [*self.skips[-99:], (int(due), int(behind))]
                    index += behind
                    due = start + index * interval
                yuv = picture.render(due, wall_at(due), index)
                frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                frame.pts = due
                if self._keyframe.is_set():
                    self._keyframe.clear()
                    frame.pict_type = keyframe
                for packet in encoder.encode(frame):
                    if not self._stalled:
                        pipeline.append(EncodedFrame(bytes(packet), bool(packet.is_keyframe), int(packet.pts)))
                while pipeline and pipeline[0].time_us + self.latency_us <= self._clock():
                    sink(pipeline.popleft())
                    self.frames_delivered += 1
                index += 1
        except Exception as exc:  # surfaced by the health check as a stalled camera
            self.failure = exc
