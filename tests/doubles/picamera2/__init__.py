"""A faithful test double of the parts of picamera2 kiroku uses (see ../README.md).

Semantics kept from the real library:
- ``Picamera2(camera_num)`` indexes ``global_camera_info()``, so with no camera attached
  it raises ``IndexError`` — exactly what the real constructor does.
- ``start_recording(encoder, output)`` sets ``encoder.output`` (which refuses anything not
  a ``picamera2.outputs.Output``), starts the encoder (which starts its outputs) and the
  camera; frames are handed to the encoder with their sensor timestamp in ns of
  CLOCK_BOOTTIME (the frame's own time on the sensor's grid; frames not taken in time are
  dropped), and the encoder calls ``outputframe(frame, keyframe, timestamp)`` with
  ``timestamp`` in µs since ``encoder.firsttimestamp``.
- ``stop_recording()`` stops the camera, then the encoder (which stops its outputs).
"""

from __future__ import annotations

import threading
import time

# Test controls -------------------------------------------------------------------------
attached = [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}]
hang_on_stop = False  # stop_recording() never returns (picamera2 issue #1264)
stalled = False  # the front end stops delivering frames ("Dequeue timer … expired")
instances: list = []


def reset() -> None:
    global hang_on_stop, stalled
    attached[:] = [{"Model": "imx708", "Location": 2, "Rotation": 180,
                    "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}]
    hang_on_stop = False
    stalled = False
    instances.clear()
    from picamera2 import encoders

    encoders.use_platform("vc4")


class Picamera2:
    @staticmethod
    def global_camera_info():
        return [dict(c) for c in attached]

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        camera_num = self.global_camera_info()[camera_num]["Num"]  # IndexError with no camera, as the real one
        self.camera_idx = camera_num
        self.camera_config = None
        self.is_open = True
        self.started = False
        self._encoders = set()
        self._thread = None
        self._stop = threading.Event()
        self.closed = False
        instances.append(self)

    # picamera2's own signature, defaults and all (the double is faithful to it)
    def create_video_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,  # noqa: B006
                                   buffer_count=6, controls={}, display="main", encode="main", queue=True,  # noqa: B006
                                   sensor={}, use_case="video"):  # noqa: B006
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        valid = {"format", "size", "stride", "framesize", "preserve_ar"}
        for key in main:
            if key not in valid:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
        main = {"format": "XBGR8888", "size": (1280, 720)} | dict(main)
        if main["size"][0] % 2 or main["size"][1] % 2:
            raise RuntimeError("width and height should be even")
        return {"use_case": use_case, "buffer_count": buffer_count, "main": main, "lores": lores,
                "controls": dict(controls), "display": display, "encode": encode}

    def configure(self, camera_config=None):
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.camera_config = camera_config

    def start_recording(self, encoder, output, pts=None, config=None, quality=None, name=None):
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        encoder.output = output
        main = self.camera_config["main"]
        encoder.width, encoder.height = main["size"]
        encoder.format = main["format"]
        framerate = float(self.camera_config["controls"].get("FrameRate", 30.0))
        if getattr(encoder, "framerate", None) is None:
            encoder.framerate = framerate
        encoder.start(quality=quality)
        self._encoders.add(encoder)
        self._stop.clear()
        self.started = True
        self._thread = threading.Thread(target=self._camera_thread, args=(framerate,), daemon=True)
        self._thread.start()

    def _camera_thread(self, framerate: float) -> None:
        # A sensor exposes a frame every interval and stamps it with its own time, however late
        # the application takes it; a frame nobody took in time is dropped, never delivered in a
        # burst with the next (a starved thread here must not make frames a few µs apart).
        interval = round(1e9 / framerate)
        start = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        index = 0
        while not self._stop.is_set():
            index += 1
            due = start + index * interval
            delay = due - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            if delay > 0 and self._stop.wait(delay / 1e9):
                return
            behind = (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - due) // interval
            if behind > 0:
                index += behind
                due = start + index * interval
            if stalled:
                continue
            for encoder in list(self._encoders):
                encoder.encode("main", due)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.started = False

    def stop_recording(self):
        self.stop()  # the camera stops first; then, in issue #1264, stopping the encoder never returns
        if hang_on_stop:
            threading.Event().wait()
        for encoder in list(self._encoders):
            encoder.stop()
        self._encoders.clear()

    def close(self):
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.closed = True
