"""picamera2.encoders: ``H264Encoder`` is the V4L2 hardware encoder on a Pi 4 (VC4) and
the libx264 software encoder on a Pi 5, with a different constructor — as in
picamera2/encoders/__init__.py. ``use_platform`` switches between the two.

Both produce real H.264 here (libx264 through PyAV), Annex B, SPS/PPS before every
keyframe when ``repeat`` is true (only before the first otherwise), no B-frames.
"""

from __future__ import annotations

import threading
from fractions import Fraction

from picamera2.outputs import Output


class Quality:
    MEDIUM = 2


class Encoder:
    def __init__(self, framerate=30):
        self._width = 0
        self._height = 0
        self._format = None
        self._output = []
        self._running = False
        self._lock = threading.Lock()
        self._output_lock = threading.Lock()
        self.firsttimestamp = None
        self.frames_encoded = 0
        self._key_frames_requested = 0
        self._key_frames_generated = 0

    @property
    def running(self):
        return self._running

    @property
    def output(self):
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value):
        if isinstance(value, list):
            for out in value:
                if not isinstance(out, Output):
                    raise RuntimeError("Must pass Output")
        elif isinstance(value, Output):
            value = [value]
        else:
            raise RuntimeError("Must pass Output")
        self._output = value

    @property
    def width(self):
        return self._width

    @width.setter
    def width(self, value):
        if not isinstance(value, int):
            raise RuntimeError("Width must be integer")
        self._width = value

    @property
    def height(self):
        return self._height

    @height.setter
    def height(self, value):
        if not isinstance(value, int):
            raise RuntimeError("Height must be integer")
        self._height = value

    @property
    def format(self):
        return self._format

    @format.setter
    def format(self, value):
        self._format = value

    def start(self, quality=None):
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self.frames_encoded = 0
            self._running = True
            self.firsttimestamp = None
            for out in self._output:
                out.start()
            self._start()

    def stop(self):
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._stop()
            for out in self._output:
                out.stop()

    def encode(self, stream, sensor_ns):
        with self._lock:
            if not self._running:
                return
            self._encode(stream, sensor_ns)
        self.frames_encoded += 1

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        with self._output_lock:
            for out in self._output:
                out.outputframe(frame, keyframe, timestamp, packet, audio)

    def _timestamp(self, sensor_ns):
        ts = int(sensor_ns / 1000)  # ns to us, as picamera2's Encoder._timestamp
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
            return 0
        return ts - self.firsttimestamp

    def force_key_frame(self):
        self._key_frames_requested += 1

    # Real encoding through libx264 -----------------------------------------------------
    def _start(self):
        import av

        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = self._width, self._height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        gop = int(self.iperiod or 30)
        ctx.gop_size = gop
        ctx.bit_rate = int(self.bitrate or 2_000_000)
        repeat = "1" if self.repeat else "0"
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency",
                       "x264-params": f"scenecut=0:keyint={gop}:repeat-headers={repeat}"}
        ctx.open()
        self._ctx = ctx
        self._index = 0

    def _stop(self):
        for packet in self._ctx.encode(None):
            self._emit(packet)
        self._ctx = None

    def _encode(self, stream, sensor_ns):
        import av
        import numpy as np
        from av.video.frame import PictureType

        timestamp_us = self._timestamp(sensor_ns)
        y = np.full((self._height * 3 // 2, self._width), 128, np.uint8)
        y[: self._height] = (np.arange(self._width)[None, :] + self._index * 4) % 256
        self._index += 1
        frame = av.VideoFrame.from_ndarray(y, format="yuv420p")
        frame.pts = timestamp_us
        if self._key_frames_requested > self._key_frames_generated:
            self._key_frames_generated += 1
            frame.pict_type = PictureType.I
        for packet in self._ctx.encode(frame):
            self._emit(packet)

    def _emit(self, packet):
        self.outputframe(bytes(packet), bool(packet.is_keyframe), int(packet.pts), self._packet_arg(packet))


class _V4L2H264Encoder(Encoder):
    """picamera2/encoders/h264_encoder.py (Pi 4): passes packet=None, and hands encoded
    frames over from its own poll thread a couple of frames after they were queued
    (V4L2Encoder.thread_poll)."""

    PIPELINE_FRAMES = 2

    def __init__(self, bitrate=None, repeat=True, iperiod=None, framerate=None, enable_sps_framerate=False,
                 qp=None, profile=None):
        super().__init__()
        self.bitrate = bitrate
        self.iperiod = iperiod
        self.repeat = repeat
        self.qp = qp
        self.profile = profile
        self.framerate = framerate
        self._enable_framerate = enable_sps_framerate

    def _packet_arg(self, packet):
        return None

    def _start(self):
        import queue

        super()._start()
        self._pending = queue.Queue()
        self._poll = threading.Thread(target=self._thread_poll, daemon=True)
        self._poll.start()

    def _emit(self, packet):
        self._pending.put((bytes(packet), bool(packet.is_keyframe), int(packet.pts)))

    def _thread_poll(self):
        held = []
        while True:
            item = self._pending.get()
            if item is None:
                break
            held.append(item)
            if len(held) > self.PIPELINE_FRAMES:
                frame, keyframe, ts = held.pop(0)
                self.outputframe(frame, keyframe, ts, None)
        for frame, keyframe, ts in held:
            self.outputframe(frame, keyframe, ts, None)

    def _stop(self):
        super()._stop()
        self._pending.put(None)
        self._poll.join()


class _LibavH264Encoder(Encoder):
    """picamera2/encoders/libav_h264_encoder.py (Pi 5): passes the av.Packet."""

    def __init__(self, bitrate=None, repeat=True, iperiod=30, framerate=30, qp=None, profile=None):
        super().__init__()
        self.repeat = repeat
        self.bitrate = bitrate
        self.iperiod = iperiod
        self.framerate = framerate
        self.qp = qp
        self.profile = profile

    def _packet_arg(self, packet):
        return packet


H264Encoder = _V4L2H264Encoder
LibavH264Encoder = _LibavH264Encoder


def use_platform(platform: str) -> None:
    """"vc4" (Pi 4: hardware encoder) or "pisp" (Pi 5: libx264)."""
    global H264Encoder
    H264Encoder = _V4L2H264Encoder if platform == "vc4" else _LibavH264Encoder
