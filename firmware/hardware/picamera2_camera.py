"""The camera module through picamera2: its H.264 encoder feeding one Output of ours.

picamera2 exists only on Raspberry Pi OS (it needs libcamera's Python bindings from apt),
so it is imported when a :class:`PiCamera` is opened, never at module import. On a Pi 4
``H264Encoder`` is the V4L2 hardware encoder; on a Pi 5 (no hardware encoder) the same
name is the libx264 software encoder, whose constructor takes fewer arguments: we pass
only the ones both accept.

picamera2 calls ``outputframe(frame, keyframe, timestamp, packet, audio)`` with
``timestamp`` in µs since the encoder's first frame; ``encoder.firsttimestamp`` is that
frame's sensor time (CLOCK_BOOTTIME), so their sum is the capture time kiroku uses.
"""

from __future__ import annotations

import threading

from firmware.hardware.camera import Camera
from firmware.hardware.errors import DeviceFailed, DeviceMissing, DeviceUnavailable
from firmware.hardware.media import EncodedFrame, VideoFormat, VideoSink

_INSTALL_HINT = (
    "install Raspberry Pi OS's python3-picamera2 (apt) and create the venv with --system-site-packages"
)


def _import_picamera2():
    try:
        import picamera2
        from picamera2.encoders import H264Encoder
        from picamera2.outputs import Output
    except ImportError as exc:
        raise DeviceUnavailable("camera", f"picamera2 is not available ({exc})", _INSTALL_HINT) from None
    return picamera2.Picamera2, H264Encoder, Output


def _bounded(call, timeout: float, what: str) -> None:
    """Run ``call`` on a helper thread; picamera2 is known to hang in stop after a stall."""
    error: list[BaseException] = []

    def run():
        try:
            call()
        except BaseException as exc:  # re-raised on the caller's thread
            error.append(exc)

    worker = threading.Thread(target=run, name=f"camera-{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise DeviceFailed("camera", f"{what} did not return within {timeout:.0f} s", "the recorder restarts itself")
    if error:
        raise DeviceFailed("camera", f"{what} failed: {error[0]}", "check the camera cable and the journal")


class PiCamera(Camera):
    """A Raspberry Pi camera module (or a USB camera libcamera knows) via picamera2."""

    backend = "picamera2"

    def __init__(self, fmt: VideoFormat, *, bitrate: int, keyframe_interval: float, camera_num: int = 0):
        super().__init__(fmt, bitrate=bitrate, keyframe_interval=keyframe_interval)
        Picamera2, self._H264Encoder, Output = _import_picamera2()
        self._Output = _sink_output_class(Output)
        cameras = Picamera2.global_camera_info()
        if len(cameras) <= camera_num:
            raise DeviceMissing(
                "camera",
                "no camera module found" if not cameras else f"camera {camera_num} not found ({len(cameras)} attached)",
                "power off, check the ribbon cable and start again (a camera module is found only at start), "
                "and that `rpicam-hello --list-cameras` lists it",
            )
        try:
            # One Picamera2 for the life of the process: re-creating it leaks libcamera state.
            self._picam2 = Picamera2(camera_num)
            config = self._picam2.create_video_configuration(
                main={"size": (fmt.width, fmt.height), "format": "YUV420"},
                controls={"FrameRate": float(fmt.framerate)},
            )
            self._picam2.configure(config)
        except RuntimeError as exc:
            raise DeviceUnavailable("camera", f"could not be opened ({exc})", "is another program using it?") from None
        self._encoder = None

    def start(self, sink: VideoSink) -> None:
        if self._running:
            raise RuntimeError("camera already started")
        encoder = self._H264Encoder(
            bitrate=self.bitrate, repeat=True, iperiod=max(1, round(self.format.framerate * self.keyframe_interval))
        )
        output = self._Output(encoder, sink)
        try:
            self._picam2.start_recording(encoder, output)
        except Exception as exc:  # RuntimeError from libcamera, OSError from the encoder's /dev/video11…
            raise DeviceUnavailable("camera", f"could not start ({exc})", "check the camera cable and the journal") from None
        self._encoder = encoder
        self._running = True

    def stop(self, timeout: float = 5.0) -> None:
        if not self._running:
            return
        self._running = False
        self._encoder = None
        _bounded(self._picam2.stop_recording, timeout, "stop_recording")

    def request_keyframe(self) -> None:
        encoder = self._encoder
        if encoder is not None:
            encoder.force_key_frame()

    def close(self) -> None:
        super().close()
        picam2, self._picam2 = getattr(self, "_picam2", None), None
        if picam2 is not None:
            try:
                _bounded(picam2.close, 5.0, "close")
            except DeviceFailed:
                pass


def _sink_output_class(Output):
    """A picamera2 Output (it must subclass picamera2's own) that forwards to a sink."""

    class SinkOutput(Output):
        def __init__(self, encoder, sink: VideoSink):
            super().__init__()
            self._encoder = encoder
            self._sink = sink

        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
            if audio or not self.recording or timestamp is None:
                return
            first = self._encoder.firsttimestamp or 0
            self._sink(EncodedFrame(bytes(frame), bool(keyframe), int(first) + int(timestamp)))

    return SinkOutput
