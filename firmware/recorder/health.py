"""Health: one watcher per capture device, so the recorder checks a list of them.

A watcher starts its device for a recording, hears what it captures first (to know that
it flows) and passes it on to the notice gate, and on every tick of the state machine
checks it: a camera without frames for ``health.camera_stall`` seconds is restarted in a
new segment, one that cannot be restarted ends the recording with a blocking fault, and one
that hangs even when told to stop needs a fresh process (``recorder.fatal``); a microphone
without sound for ``health.microphone_stall`` is restarted, and meanwhile segments are
written without sound (video without sound is better evidence than nothing).
"""

from __future__ import annotations

import time

from firmware import clock
from firmware.hardware import AudioBlock, DeviceFailed, DeviceUnavailable, EncodedFrame
from firmware.recorder.state import State
from firmware.recorder.writer import AudioEnabled

RETRY_SECONDS = 5.0  # a missing device is looked for again this often


class CameraWatcher:
    """The camera: without it nothing can be recorded."""

    device = "camera"

    def __init__(self, recorder, camera):
        self.rec = recorder
        self.dev = camera
        self.last_us = 0  # when the camera last delivered (for stall detection)
        self.last_frame_time_us = 0  # capture time of that frame
        self.restarts = 0
        self.restarted_us = 0

    def on_frame(self, frame: EncodedFrame) -> None:
        self.last_us = clock.boottime_us()
        self.last_frame_time_us = frame.time_us
        self.rec.notice.gate.video(frame)

    def start(self) -> None:
        """Start capturing for a recording; a camera that cannot start raises DeviceUnavailable."""
        cam = self.dev
        if cam.is_running:
            return
        self.last_us = clock.boottime_us()
        try:
            cam.start(self.on_frame)
        except DeviceUnavailable:
            raise
        except Exception as exc:  # e.g. the encoder device busy: a fault like any other
            raise DeviceUnavailable("camera", f"could not start ({exc})", "check the camera and the journal") from exc
        fault = self.rec.faults.get("camera")
        if fault is not None and fault.blocking:
            self.rec._clear_fault("camera")  # found by this start (a late camera), not by the retry

    def check(self, now: int) -> None:
        health = self.rec.config.health
        if not self.dev.is_running:
            self.restart("camera: not running")
        elif now - self.last_us > health.camera_stall * 1e6:
            self.restart(f"camera: no frame for {health.camera_stall:g} s")
        elif "camera" in self.rec.faults and self.restarted_us and self.last_us > self.restarted_us:
            # Frames flow again: the fault is over (the history keeps it), and so is the count.
            self.restarted_us = 0
            self.restarts = 0
            self.rec._clear_fault("camera")

    def restart(self, why: str) -> None:
        rec = self.rec
        self.restarts += 1
        attempts = rec.config.health.restart_attempts
        rec._fault("camera", f"{why} — restarting it ({self.restarts}/{attempts})", blocking=False)
        cam = self.dev
        rec.writer.need_keyframe = True  # the next frame through starts a new segment
        try:
            cam.stop(timeout=rec.config.health.camera_stop_timeout)
        except DeviceFailed as exc:
            # picamera2 can hang in stop after a front-end timeout: only a new process recovers.
            rec.fatal = exc.one_line()
            rec._fault("camera", exc.one_line(), blocking=True)
            rec._abandon_on_device_failure()
            return
        if self.restarts > attempts:
            rec._fault("camera", f"{why}; gave up after {attempts} restarts — check the camera cable", blocking=True)
            rec._abandon_on_device_failure()
            return
        try:
            self.last_us = clock.boottime_us()
            self.restarted_us = self.last_us
            cam.start(self.on_frame)
            cam.request_keyframe()
        except Exception as exc:
            text = exc.one_line() if isinstance(exc, DeviceUnavailable) else f"camera: could not start ({exc})"
            rec._fault("camera", text, blocking=True)
            rec._abandon_on_device_failure()

    def flowing(self) -> bool:
        """What the watchdog asks: frames flow while the camera runs."""
        if self.dev.is_running and self.last_us:
            return clock.boottime_us() - self.last_us < self.rec.config.health.camera_stall * 2e6
        return True

    def status(self, now: int) -> dict:
        cam = self.dev
        return {"backend": cam.backend, "running": cam.is_running,
                "last_frame_age_s": round((now - self.last_us) / 1e6, 2) if cam.is_running and self.last_us else None}


class MicrophoneWatcher:
    """The microphone: without it, footage is recorded without sound, and says so."""

    device = "microphone"

    def __init__(self, recorder, microphone):
        self.rec = recorder
        self.dev = microphone
        self.last_us = 0  # when the microphone last delivered
        self.restarted_us = 0

    def on_block(self, block: AudioBlock) -> None:
        self.last_us = clock.boottime_us()
        self.rec.notice.gate.audio(block)

    def start(self) -> None:
        mic = self.dev
        if mic.is_running:
            return
        self.last_us = clock.boottime_us()
        try:
            mic.start(self.on_block)
        except Exception as exc:
            # Video without sound is better evidence than nothing: record on, and say so.
            text = exc.one_line() if isinstance(exc, DeviceUnavailable) else f"microphone: could not start ({exc})"
            self.rec._fault("microphone", f"{text}; recording without sound", blocking=False)
        else:
            self.rec._clear_fault("microphone")
        self.rec.writer.send(AudioEnabled(mic.is_running))

    def check(self, now: int) -> None:
        rec, mic = self.rec, self.dev
        health = rec.config.health
        if mic.is_running and now - self.last_us > health.microphone_stall * 1e6:
            self.restart(f"microphone: no sound for {health.microphone_stall:g} s")
        elif mic.is_running and "microphone" in rec.faults and self.restarted_us and self.last_us > self.restarted_us:
            self.restarted_us = 0
            rec._clear_fault("microphone")
            rec.writer.send(AudioEnabled(True))  # from the next segment on
        elif not mic.is_running and "microphone" in rec.faults and time.monotonic() >= rec._next_retry \
                and rec.state != State.NOTICE:  # looking for sound cards would end the announcement
            rec._next_retry = time.monotonic() + RETRY_SECONDS
            self.restart(None)

    def restart(self, why: str | None) -> None:
        """Restart the microphone; the fault clears once sound flows again (``check``)."""
        rec, mic = self.rec, self.dev
        if why:
            rec._fault("microphone", f"{why} — restarting it; recording continues without sound", blocking=False)
            rec.writer.send(AudioEnabled(False))
        mic.stop()
        mic.reset()
        try:
            self.last_us = self.restarted_us = clock.boottime_us()
            mic.start(self.on_block)
        except Exception as exc:
            text = exc.one_line() if isinstance(exc, DeviceUnavailable) else f"microphone: could not start ({exc})"
            rec._fault("microphone", f"{text}; recording continues without sound", blocking=False)

    def flowing(self) -> bool:
        return True  # the watchdog follows the camera: a silent microphone is a fault, not a hang

    def status(self, now: int) -> dict:
        mic = self.dev
        return {"backend": mic.backend, "running": mic.is_running,
                "last_audio_age_s": round((now - self.last_us) / 1e6, 2) if mic.is_running and self.last_us else None}
