"""The recorder: the state machine between the button, the sign and the stored segments.

    idle ─press─► notice ─(sign proven lit, notice_delay over)─► recording ─press─► stopping ─► idle
                    │                                              │
                    └──────────────── fault ◄──────────────────────┘

Art. 4(2) — nothing captured while the sign is not lit is ever stored, nor before the notice
has lasted ``notice.delay`` — is the :mod:`~firmware.recorder.notice` module's; the devices'
health is the watchers' (:mod:`~firmware.recorder.health`); storing is the media writer's
(:mod:`~firmware.recorder.writer`). This module decides, on one thread, what happens next.

Threads: capture threads (camera, microphone) only pass media through the gate into the
writer's bounded queue; the media thread owns the
:class:`~firmware.media.segmenter.Segmenter` and the store (it is the only writer); the
control thread runs the state machine, so every transition happens on one thread, in order.
Button callbacks and control-socket commands are events on its queue. Overwriting expired
footage is the vault's own background job (:class:`~firmware.vault.retention.RetentionLoop`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

from firmware import clock
from firmware.config import Config
from firmware.hardware import DeviceFailed, DeviceUnavailable, Hardware, LightPattern
from firmware.hardware.media import AudioFormat, VideoFormat
from firmware.media.segmenter import Segmenter
from firmware.recorder.commands import Commands
from firmware.recorder.errors import RecorderRefused
from firmware.recorder.health import RETRY_SECONDS, CameraWatcher, MicrophoneWatcher
from firmware.recorder.notice import Notice
from firmware.recorder.state import Fault, State, describe, light_pattern
from firmware.recorder.writer import Begin, End, Flush, MediaWriter
from firmware.store import Mark, Recording
from firmware.vault.retention import RetentionLoop

log = logging.getLogger("firmware.recorder")

_MEDIA_QUEUE_SECONDS = 10  # how long the SD card may stall before frames are dropped
_ROOM_SECONDS = 300  # a recording may start only with room for this long
_SWEEP_SECONDS = 60.0  # how often retention runs
_RESERVE_GRACE = 3.0  # seconds below the reserve, a sweep having been asked for, before a recording ends
_STOP_GRACE_US = 500_000  # wait this long for in-flight frames captured before "stop"
_STORE_TIMEOUT = 5.0


class Recorder(Commands):
    """Runs one counter: the state machine, with its notice, device watchers and media writer."""

    def __init__(self, hardware: Hardware, config: Config, store, *, media_queue_seconds: float = _MEDIA_QUEUE_SECONDS,
                 sweep_seconds: float = _SWEEP_SECONDS):
        self.hw = hardware
        self.config = config
        self.store = store
        # Room for a few minutes of recording before the sign may light.
        self._room_needed = int((config.camera.bitrate + 128_000) / 8 * _ROOM_SECONDS)
        cam, mic = config.camera, config.microphone
        self._video_format = VideoFormat(cam.width, cam.height, cam.framerate)
        audio_format = AudioFormat(mic.samplerate, mic.channels) if hardware.microphone else None
        self.segmenter = Segmenter(
            store,
            video=self._video_format,
            audio=audio_format,
            segment_us=round(config.recording.segment_seconds * 1e6),
            on_segment=self._segment_stored,
        )
        self._events: queue.Queue = queue.Queue()
        # One queue keeps frames and the recorder's messages in order; only frames and audio
        # count against the limit, so the state machine never blocks on a stalled card.
        self.writer = MediaWriter(store, self.segmenter, report=self._events.put, limit=int(
            media_queue_seconds * (cam.framerate + (mic.samplerate / 1024 if hardware.microphone else 0))))
        self.notice = Notice(hardware, fault=self._fault, on_video=self.writer.video, on_audio=self.writer.audio,
                             on_sign_lost=self._sign_lost)
        self.gate = self.notice.gate
        self.camera = CameraWatcher(self, hardware.camera)
        self.watchers: list = [self.camera]
        if hardware.microphone is not None:
            self.watchers.append(MicrophoneWatcher(self, hardware.microphone))
        self.state = State.IDLE
        self.faults: dict[str, Fault] = {}
        self.fault_history: list[dict] = []
        self.warnings: list[str] = []  # not faults: nothing stops, but someone should act
        self.capacity_warnings: list[dict] = []  # the same, for the web UI to say in its language
        self.fatal: str | None = None
        self.recording: Recording | None = None
        self.last_recording: Recording | None = None
        self.recording_from_us: int | None = None
        self._stop_until_us: int | None = None
        self._end_sent = False
        self._stop_started = 0.0
        self._stop_reason = ""
        self._pending_marks: list[Mark] = []
        self._press_started = False
        self._next_retry = 0.0
        self._heartbeat = time.monotonic()
        self._started_monotonic = time.monotonic()
        self._closed = threading.Event()
        self.segments_written = 0
        self._next_space_check = 0.0
        self._short_since: float | None = None
        hardware.button.on_event = lambda ev: self._events.put(("button", ev))
        self._control = threading.Thread(target=self._control_loop, name="recorder", daemon=True)
        self.retention = RetentionLoop(store, interval=sweep_seconds, bitrate_guess=self._room_needed / _ROOM_SECONDS,
                                       on_warnings=self._capacity_warned,
                                       on_evidence=lambda message: self._events.put(("evidence", message)))

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> "Recorder":
        """Start the recorder's threads (and, in continuous mode, the recording)."""
        self.hw.status_light.show(LightPattern.READY)
        # A LateCamera or LateMicrophone: not connected at start. Without a camera nothing can be
        # recorded; without a microphone, video is (as when one vanishes mid-recording).
        missing = getattr(self.hw.microphone, "missing", None)
        if missing is not None:
            self._fault("microphone", f"{missing.one_line()}; recording without sound", blocking=False)
        missing = getattr(self.hw.camera, "missing", None)
        if missing is not None:
            self._fault("camera", missing.one_line(), blocking=True)
            self.state = State.FAULT
            self._next_retry = time.monotonic() + RETRY_SECONDS
            self._show()
        self.writer.start()
        self._control.start()
        self.retention.start()
        if self.config.device.mode == "continuous":
            self._events.put(("command", "start", {"by": "continuous"}, Future()))
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop cleanly: a recording in progress is ended and its last segment committed."""
        if self._closed.is_set():
            return
        if not self._control.is_alive():
            self._closed.set()
            return
        done: Future = Future()
        self._events.put(("shutdown", done))
        try:
            done.result(timeout)
        except Exception as exc:
            log.error("recorder did not shut down cleanly: %s", exc)
        self._closed.set()
        self.retention.close(5)
        self._control.join(2)
        self.writer.stop(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    @property
    def is_recording(self) -> bool:
        return self.state in (State.RECORDING, State.STOPPING)

    def alive(self) -> bool:
        """What the systemd watchdog is fed on: the state machine turns, and frames flow when they should."""
        if self.fatal or time.monotonic() - self._heartbeat > 2.0:
            return False
        return all(w.flowing() for w in self.watchers)

    def status(self) -> dict:
        """A snapshot for ``kiroku ctl status`` and the web UI (safe from any thread)."""
        return describe(self)

    # -- from the other threads --------------------------------------------------------------
    def _sign_lost(self) -> None:
        self._events.put(("sign_lost",))

    def _segment_stored(self, rec: Recording, info) -> None:
        self.segments_written += 1
        log.info("segment %s/%05d stored: %.2f s, %d bytes", rec.id, info.seq, info.duration, info.bytes)

    def _capacity_warned(self, warnings: list[str], structured: list[dict]) -> None:
        """The vault's capacity plan, as it stands after a sweep: shown until it changes."""
        self.warnings, self.capacity_warnings = warnings, structured

    # -- control thread: the state machine --------------------------------------------------
    def _control_loop(self) -> None:
        while True:
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    if event[0] == "shutdown":
                        self._shutdown(event[1])
                        return
                    self._handle(event)
                self._tick()
            except Exception:  # a bug here must not stop the recorder from answering
                log.exception("recorder state machine error")
            self._heartbeat = time.monotonic()

    def _handle(self, event) -> None:
        kind = event[0]
        if kind == "button":
            self._button(event[1])
        elif kind == "command":
            _, name, kwargs, reply = event
            try:
                reply.set_result(getattr(self, f"_cmd_{name}")(**kwargs))
            except Exception as exc:  # the caller gets the error; the state machine goes on
                reply.set_exception(exc)
        elif kind == "sign_lost":
            if self.state in (State.RECORDING, State.STOPPING, State.NOTICE):
                self._fault("sign", "the sign went dark while recording", blocking=True)
                self._abandon_recording("sign went dark")
        elif kind == "stored":
            self._recording_stored(event[1])
        elif kind == "evidence":  # the index and the log disagree (firmware/vault/vouch.py)
            if event[1] is None:
                self._clear_fault("evidence")
            else:
                self._fault("evidence", event[1], blocking=False)
        elif kind == "store_problem":
            self._fault("storage", event[1], blocking=False)
        elif kind == "storage_failed":
            self._fault("storage", event[1], blocking=True)
            if self.state != State.IDLE:
                self.gate.shut()
                self._to_idle_devices_off()
                self.state = State.FAULT
                self._show()

    # -- transitions -----------------------------------------------------------------
    def _start_devices(self) -> None:
        for watcher in self.watchers:
            watcher.start()

    def _begin_recording(self) -> None:
        now = clock.boottime_us()
        wall = clock.wall_at(now)
        rec = Recording(
            id=wall.strftime("%Y%m%d-%H%M%S-") + f"{wall.microsecond // 1000:03d}",
            device=self.config.device.id,
            mode=self.config.device.mode,
            started_at=clock.iso(wall),
            started_us=now,
            started_wall_us=clock.wall_us_at(now),
            started_by=self._started_by,
            clock_synchronised=clock.clock_synchronised(),
        )
        rec.marks.extend(self._pending_marks)
        self._pending_marks.clear()
        self.recording = rec
        self.recording_from_us = now
        self._stop_until_us = None
        self._stop_reason = ""
        self.writer.need_keyframe = True
        self.camera.restarts = 0
        self.writer.send(Begin(rec))
        self.gate.open(from_us=now)
        self.hw.camera.request_keyframe()
        self.state = State.RECORDING
        self._show()
        log.info("recording %s started (%s)", rec.id, rec.started_by)

    def _begin_stop(self, reason: str) -> None:
        now = clock.boottime_us()
        self.gate.close(until_us=now)
        self._stop_until_us = now
        self._stop_reason = reason
        self._end_sent = False
        self._stop_started = time.monotonic()
        self.state = State.STOPPING
        self._show()
        log.info("recording %s stopping: %s", self.recording.id if self.recording else "?", reason)

    def _abandon_recording(self, reason: str) -> None:
        """The sign failed: keep what was stored while it was lit, end now."""
        self.gate.shut()
        if self.recording is not None and self.state in (State.RECORDING, State.STOPPING):
            # The gate is shut: no more audio will come, so the last segment need not wait for it.
            self.writer.send(End(self.gate.shut_at_us or clock.boottime_us(), reason, audio_over=True))
            self.last_recording, self.recording = self.recording, None
        self._pending_marks.clear()
        self._to_idle_devices_off()
        self.state = State.FAULT
        self._show()

    def _recording_stored(self, rec_id: str) -> None:
        rec = self.recording if self.recording and self.recording.id == rec_id else None
        if rec is not None:
            self.last_recording, self.recording = rec, None
        if self.state == State.STOPPING:
            log.info("recording %s stored", rec_id)
            if self.config.device.mode == "continuous" and self._stop_reason != "stopped by shutdown":
                self.state = State.NOTICE  # a continuous recording rolls straight on: the sign never went out
                self.notice.roll_on()
            else:
                self._to_idle_devices_off()
                self.state = State.IDLE
            self._show()

    def _to_idle_devices_off(self) -> None:
        """Stop capturing and put the sign out (in that order: the sign is the last to go)."""
        self.gate.shut()
        try:
            self.hw.camera.stop(timeout=self.config.health.camera_stop_timeout)
        except DeviceFailed as exc:
            self.fatal = exc.one_line()
        if self.hw.microphone is not None:
            self.hw.microphone.stop()
        if self.config.device.mode != "continuous" or self.fatal:
            self.notice.put_out()
        self.notice.over()

    def _show(self) -> None:
        self.hw.status_light.show(light_pattern(self.state, self.faults))

    def _fault(self, device: str, message: str, *, blocking: bool) -> None:
        if device in self.faults and self.faults[device].message == message:
            return
        now = clock.iso(clock.wall_at(clock.boottime_us()))
        self.faults[device] = Fault(device, message, now, blocking)
        self.fault_history.append({"device": device, "message": message, "at": now})
        del self.fault_history[:-50]
        log.error("fault: %s", message)
        self._show()
        try:
            self.store.audit("recorder", "fault", subject=device, detail={"message": message, "blocking": blocking})
        except Exception:  # a fault must show even when the vault cannot record it
            log.exception("could not write the fault to the audit log")

    def _clear_fault(self, device: str) -> None:
        if self.faults.pop(device, None) is not None:
            log.info("%s: fault cleared", device)
            self._show()

    # -- timers and health -------------------------------------------------------------
    def _tick(self) -> None:
        now = clock.boottime_us()
        if self.state == State.NOTICE:
            given = self.notice.given(now, self.config.health.sign_confirm)
            if given is False:
                self._abandon_recording("sign did not light")
            elif given:
                self._begin_recording()
        elif self.state == State.IDLE:
            self.notice.check_idle(self.faults, self._clear_fault)
        if self.state == State.RECORDING:
            self.notice.check_recording()
        if self.state == State.RECORDING:
            self._keep_the_reserve()
            limit = self.config.recording.max_minutes
            if limit and self.config.device.mode == "on_demand" and self.recording and \
                    now - self.recording.started_us > limit * 60e6:
                self._begin_stop(f"stopped after the {limit:g}-minute limit")
        if self.state == State.STOPPING:
            until = self._stop_until_us or now
            # Frames captured before "stop" may still be in the encoder: wait for them, briefly.
            if not self._end_sent and (self.camera.last_frame_time_us >= until or now - until > _STOP_GRACE_US):
                self.writer.send(End(until, self._stop_reason, audio_over=False))
                self._end_sent = True
            elif self._end_sent and time.monotonic() - self._stop_started > _STORE_TIMEOUT:
                log.warning("audio never caught up; finishing the recording with what arrived")
                self.writer.send(Flush())
                self._stop_started = time.monotonic()
        if self.state in (State.NOTICE, State.RECORDING, State.STOPPING):
            self._check_devices(now)
        elif self.state == State.FAULT and time.monotonic() >= self._next_retry:
            self._next_retry = time.monotonic() + RETRY_SECONDS
            self._retry_after_fault()
        if self.writer.overflowed:
            self.writer.overflowed = False
            self._fault("storage", "storage: the write queue was full and frames were dropped (is the SD card too slow?)",
                        blocking=False)

    def _keep_the_reserve(self) -> None:
        """While recording, once a second: the reserve (``retention.reserve_mb``) stays free for
        the index and the system. Below it, expired footage is overwritten at once; if it is
        still below it a few seconds later (nothing may be overwritten, or something else fills
        the card), the recording ends, indexed, rather than fill the disk."""
        now = time.monotonic()
        if now < self._next_space_check:
            return
        self._next_space_check = now + 1.0
        short = self.store.reserve_shortfall()
        if not short:
            self._short_since = None
            return
        self.retention.wake()
        if self._short_since is None:
            self._short_since = now
        elif now - self._short_since >= _RESERVE_GRACE:
            self._fault("storage", f"storage: the card is full — {short // 2**20 + 1} MB into the"
                                   f" {self.config.retention.reserve_mb} MB reserve and nothing more may be"
                                   " overwritten (within its retention or on hold): the recording was ended",
                        blocking=False)
            self._begin_stop("the card is full")

    def _check_devices(self, now: int) -> None:
        for watcher in self.watchers:
            watcher.check(now)

    def _abandon_on_device_failure(self) -> None:
        if self.state in (State.RECORDING, State.STOPPING):
            if self.state == State.RECORDING:
                self._begin_stop("camera failure")
            if not self._end_sent:
                self.writer.send(End(self._stop_until_us, self._stop_reason, audio_over=False))
                self._end_sent = True
            self.last_recording, self.recording = self.recording, None
        self._pending_marks.clear()
        self._to_idle_devices_off()
        self.state = State.FAULT
        self._next_retry = time.monotonic() + RETRY_SECONDS
        self._show()

    def _retry_after_fault(self) -> None:
        """In FAULT: see whether the devices work again.

        Camera and microphone are checked here; a sign or storage fault stays until the
        next start (a press of the button) proves the lamp or the disk again.
        """
        for watcher in self.watchers:
            fault = self.faults.get(watcher.device)
            if fault is None or not fault.blocking:
                continue
            if watcher is self.camera and self.fatal:
                return
            try:
                watcher.dev.start(lambda _item: None)  # a device check: nothing reaches the gate
                watcher.dev.stop()
            except (DeviceUnavailable, DeviceFailed):
                return
            self._clear_fault(watcher.device)
        if self.config.device.mode == "continuous":
            # Nobody presses a button in continuous mode: try again, which proves the lamp and the disk anew.
            try:
                self._cmd_start(by="continuous")
            except RecorderRefused as exc:
                log.info("continuous mode: still cannot record: %s", exc)
            return
        if not any(f.blocking for f in self.faults.values()):
            self.state = State.IDLE
            self._show()

    def _shutdown(self, done: Future) -> None:
        """Stop: end a recording properly, then put the sign out."""
        try:
            if self.state == State.NOTICE:
                self._stop_reason = "stopped by shutdown"
                self._to_idle_devices_off()
            elif self.state in (State.RECORDING, State.STOPPING):
                if self.state == State.RECORDING:
                    self._begin_stop("stopped by shutdown")
                deadline = time.monotonic() + _STORE_TIMEOUT
                while self.state == State.STOPPING and time.monotonic() < deadline:
                    try:
                        event = self._events.get(timeout=0.05)
                        if event[0] in ("stored", "storage_failed", "sign_lost"):
                            self._handle(event)
                    except queue.Empty:
                        pass
                    self._tick()
                if self.state == State.STOPPING:
                    self.writer.send(Flush())
                self._to_idle_devices_off()
            self.notice.put_out()
            self.hw.status_light.show(LightPattern.OFF)
            self.state = State.IDLE
            done.set_result(None)
        except Exception as exc:
            done.set_exception(exc)
