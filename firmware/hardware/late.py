"""A real camera or microphone that was not there when the recorder started.

With a loose ribbon cable or a USB microphone left unplugged, exiting would only make
systemd restart the recorder in a loop with the status light dark. Instead the recorder
gets one of these: it starts, shows the fault (``missing`` says what is wrong) — without a
camera nothing is recorded, without a microphone video is, as when one vanishes
mid-recording — and every start looks for the device again, through ``opener``, which
raises :class:`DeviceUnavailable` while it is still not there. (That finds a USB camera or
microphone plugged in later; a camera module on the ribbon cable is detected only when
the Pi starts, so for it the fault stays, telling the clerk and the manager why.)
"""

from __future__ import annotations

from firmware.hardware.camera import Camera
from firmware.hardware.errors import DeviceUnavailable
from firmware.hardware.microphone import Microphone


class _Late:
    _device = None

    def _wait_for(self, opener, missing: DeviceUnavailable) -> None:
        self._opener = opener
        self.missing: DeviceUnavailable | None = missing

    @property
    def backend(self) -> str:
        return self._device.backend if self._device is not None else "not found"

    @property
    def is_running(self) -> bool:
        return self._device is not None and self._device.is_running

    def start(self, sink) -> None:
        if self._device is None:
            try:
                self._device = self._opener()
            except DeviceUnavailable as exc:
                self.missing = exc
                raise
            self.missing = None
        self._device.start(sink)

    def close(self) -> None:
        if self._device is not None:
            self._device.close()


class LateCamera(_Late, Camera):
    def __init__(self, opener, missing, fmt, *, bitrate: int, keyframe_interval: float):
        super().__init__(fmt, bitrate=bitrate, keyframe_interval=keyframe_interval)
        self._wait_for(opener, missing)

    def stop(self, timeout: float = 5.0) -> None:
        if self._device is not None:
            self._device.stop(timeout)

    def request_keyframe(self) -> None:
        if self._device is not None:
            self._device.request_keyframe()


class LateMicrophone(_Late, Microphone):
    def __init__(self, opener, missing, fmt, *, rescan=None, blocksize: int = 1024):
        super().__init__(fmt, blocksize=blocksize)
        self._wait_for(opener, missing)
        self._rescan = rescan

    def stop(self) -> None:
        if self._device is not None:
            self._device.stop()

    def reset(self) -> None:
        if self._device is not None:
            self._device.reset()
        elif self._rescan is not None:
            self._rescan()  # a microphone plugged in since is unknown to the sound system until then
