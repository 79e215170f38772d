"""The recorder: the state machine between the button, the sign and the stored segments.

    idle ─press─► notice ─(sign proven lit, notice_delay over)─► recording ─press─► stopping ─► idle
                    │                                              │
                    └──────────────── fault ◄──────────────────────┘

Art. 4(2) of the regulation asks that a system running only when needed tells the
person *before* it records. Here that is one invariant, enforced in one place
(:class:`NoticeGate`): **nothing captured while the sign is not lit is ever stored**, and
nothing captured before the notice has lasted ``notice.delay`` either. On-demand mode
deliberately keeps no pre-roll: a buffer of the seconds before the press would be
recording before the notice.

Threads: capture threads (camera, microphone) only pass media through the gate into a
bounded queue; the media thread owns the :class:`~firmware.media.segmenter.Segmenter` and the
store (it is the only writer); the control thread runs the state machine, so every
transition happens on one thread, in order. Button callbacks and control-socket
commands are events on its queue.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum

from firmware import clock
from firmware.config import Config
from firmware.hardware import (
    AudioBlock,
    ButtonEvent,
    DeviceFailed,
    DeviceUnavailable,
    EncodedFrame,
    Hardware,
    LightPattern,
)
from firmware.hardware.media import AudioFormat, VideoFormat
from firmware.media.segmenter import Segmenter
from firmware.store import Mark, Recording

log = logging.getLogger(__name__)

_MEDIA_QUEUE_SECONDS = 10  # how long the SD card may stall before frames are dropped
_ROOM_SECONDS = 300  # a recording may start only with room for this long
_SWEEP_SECONDS = 60.0  # how often retention runs
_RETRY_SECONDS = 5.0
_STOP_GRACE_US = 500_000  # wait this long for in-flight frames captured before "stop"
_STORE_TIMEOUT = 5.0


def _set_end(rec: Recording, end_us: int, reason: str) -> None:
    rec.ended_us = end_us
    rec.ended_at = clock.iso(clock.wall_at(end_us))
    rec.ended_wall_us = clock.wall_us_at(end_us)
    rec.end_reason = reason


class State(str, Enum):
    IDLE = "idle"
    NOTICE = "notice"
    RECORDING = "recording"
    STOPPING = "stopping"
    FAULT = "fault"


class RecorderError(Exception):
    """A command the recorder cannot carry out now; the message says why."""


@dataclass
class Fault:
    device: str
    message: str
    since: str
    blocking: bool  # True: the counter cannot record until it is cleared

    def to_json(self) -> dict:
        return {"device": self.device, "message": self.message, "since": self.since, "blocking": self.blocking}


class NoticeGate:
    """The only door between capture and storage.

    A frame or sample passes only if the gate is open, its capture time lies in
    ``[from, until)``, and the sign has been lit continuously since before it was
    captured (``sign.lit_since_us``). The moment the sign is found dark — by the
    read-back's edge, or by a frame that arrives while it is dark — the gate shuts for
    good (until the state machine opens it again after a new, proven notice), so a lamp
    that flickers off and on never lets a frame captured in the dark through, however
    late the encoder delivers it.
    """

    def __init__(self, sign, *, on_video, on_audio, on_sign_lost):
        self._sign = sign
        self._on_video = on_video
        self._on_audio = on_audio
        self._on_sign_lost = on_sign_lost
        self._open = False
        self._from_us = 0
        self._until_us: int | None = None
        self.shut_at_us: int | None = None  # when the sign was last found dark
        self.frames_refused = 0
        sign.on_dark = self.sign_went_dark

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self, from_us: int) -> None:
        self._from_us, self._until_us, self.shut_at_us = from_us, None, None
        self._open = True

    def close(self, until_us: int) -> None:
        """Admit only what was captured before ``until_us`` (frames still in flight)."""
        self._until_us = until_us

    def shut(self) -> None:
        self._open = False

    def sign_went_dark(self) -> None:
        if self._open:
            self._open = False
            self.shut_at_us = clock.boottime_us()
            self._on_sign_lost()

    def _admits(self, time_us: int) -> bool:
        if not self._open or time_us < self._from_us:
            return False
        if self._until_us is not None and time_us >= self._until_us:
            return False
        lit_since = self._sign.lit_since_us
        if lit_since is None or lit_since > self._from_us:
            # Dark now, or dark at some moment since the notice: nothing more passes.
            self.sign_went_dark()
            return False
        return True

    def video(self, frame: EncodedFrame) -> None:
        if self._admits(frame.time_us):
            self._on_video(frame)
        else:
            self.frames_refused += 1

    def audio(self, block: AudioBlock) -> None:
        if not self._admits(max(block.time_us, self._from_us)):
            return
        # Trim the samples that fall outside [from, until).
        rate = block.samplerate
        lo = max(0, -(-(self._from_us - block.time_us) * rate // 1_000_000))
        hi = block.frames
        if self._until_us is not None:
            hi = min(hi, max(0, -(-(self._until_us - block.time_us) * rate // 1_000_000)))
        if hi <= lo:
            return
        if lo or hi < block.frames:
            block = AudioBlock(block.samples[lo:hi], block.time_us + lo * 1_000_000 // rate, rate)
        self._on_audio(block)


class Recorder:
    """Runs one counter: the state machine, the media thread and the device health checks."""

    def __init__(self, hardware: Hardware, config: Config, store, *, media_queue_seconds: float = _MEDIA_QUEUE_SECONDS,
                 sweep_seconds: float = _SWEEP_SECONDS):
        self.hw = hardware
        self.config = config
        self.store = store
        # Room for a few minutes of recording before the sign may light.
        self._room_needed = int((config.camera.bitrate + 128_000) / 8 * _ROOM_SECONDS)
        self._sweep_seconds = sweep_seconds
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
        # One queue keeps frames and the recorder's messages in order; only frames and audio
        # count against the limit, so the state machine never blocks on a stalled card.
        self._media_limit = int(media_queue_seconds * (cam.framerate + (mic.samplerate / 1024 if hardware.microphone else 0)))
        self._media: queue.Queue = queue.Queue()
        self._events: queue.Queue = queue.Queue()
        self.gate = NoticeGate(
            hardware.sign, on_video=self._queue_video, on_audio=self._queue_audio, on_sign_lost=self._sign_lost
        )
        self.state = State.IDLE
        self.faults: dict[str, Fault] = {}
        self.fault_history: list[dict] = []
        self.warnings: list[str] = []  # not faults: nothing stops, but someone should act
        self.capacity_warnings: list[dict] = []  # the same, for the web UI to say in its language
        self.fatal: str | None = None
        self.recording: Recording | None = None
        self.last_recording: Recording | None = None
        self.sign_on_us: int | None = None
        self.recording_from_us: int | None = None
        self._notice_delay_us = 0
        self._announcement_until_us = 0
        self._stop_until_us: int | None = None
        self._end_sent = False
        self._stop_started = 0.0
        self._stop_reason = ""
        self._pending_marks: list[Mark] = []
        self._press_started = False
        self._need_keyframe = True
        self._overflowed = False
        self._last_video_us = 0  # when the camera last delivered (for stall detection)
        self._last_frame_time_us = 0  # capture time of that frame
        self._last_audio_us = 0
        self._camera_restarts = 0
        self._camera_restarted_us = 0
        self._mic_restarted_us = 0
        self._next_retry = 0.0
        self._heartbeat = time.monotonic()
        self._started_monotonic = time.monotonic()
        self._closed = threading.Event()
        self.segments_written = 0
        self.frames_dropped_queue = 0
        hardware.button.on_event = lambda ev: self._events.put(("button", ev))
        self._control = threading.Thread(target=self._control_loop, name="recorder", daemon=True)
        self._media_thread = threading.Thread(target=self._media_loop, name="media", daemon=True)
        self._retention_thread = threading.Thread(target=self._retention_loop, name="retention", daemon=True)

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
            self._next_retry = time.monotonic() + _RETRY_SECONDS
            self._show()
        self._media_thread.start()
        self._control.start()
        self._retention_thread.start()
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
        self._retention_thread.join(5)
        self._control.join(2)
        self._media.put(("quit",))
        self._media_thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- commands (any thread) -------------------------------------------------------
    def _command(self, name: str, timeout: float = 10.0, **kwargs):
        if self._closed.is_set():
            raise RecorderError("the recorder is shutting down")
        reply: Future = Future()
        self._events.put(("command", name, kwargs, reply))
        return reply.result(timeout)

    def start_recording(self, by: str = "ctl") -> dict:
        return self._command("start", by=by)

    def stop_recording(self, by: str = "ctl") -> dict:
        return self._command("stop", by=by)

    def mark(self, by: str = "ctl", note: str = "", section: str = "") -> dict:
        return self._command("mark", by=by, note=note, section=section)

    def reload(self, path=None) -> dict:
        """Re-read the configuration file and apply what can change while running."""
        from firmware import config as config_module
        from firmware.paths import config_file

        if self.store.data_dir is None:
            raise RecorderError("no data folder to read the configuration from")
        new = config_module.load(path or config_file(self.store.data_dir, None))
        old = self.config
        # Safe at any moment: read afresh at the next notice, segment, tick or sweep.
        self.config = dataclasses.replace(old, notice=dataclasses.replace(old.notice, delay=new.notice.delay),
                                          recording=new.recording, retention=new.retention)
        self.segmenter.segment_us = round(new.recording.segment_seconds * 1e6)
        self.store.retention = new.retention
        pending = [name for name in ("device", "camera", "microphone", "gpio", "button", "health", "web")
                   if getattr(new, name) != getattr(old, name)]
        if new.notice.announcement != old.notice.announcement:
            pending.append("notice.announcement")
        log.info("configuration reloaded; waiting for a restart: %s", ", ".join(pending) or "nothing")
        return {**self.status(), "restart_needed_for": pending}

    @property
    def is_recording(self) -> bool:
        return self.state in (State.RECORDING, State.STOPPING)

    def alive(self) -> bool:
        """What the systemd watchdog is fed on: the state machine turns, and frames flow when they should."""
        if self.fatal or time.monotonic() - self._heartbeat > 2.0:
            return False
        if self.hw.camera.is_running and self._last_video_us:
            return clock.boottime_us() - self._last_video_us < self.config.health.camera_stall * 2e6
        return True

    def status(self) -> dict:
        """A snapshot for ``kiroku ctl status`` and the web UI (safe from any thread)."""
        now = clock.boottime_us()
        sign = self.hw.sign
        rec = self.recording
        cam, mic = self.hw.camera, self.hw.microphone

        def rec_json(r: Recording | None):
            if r is None:
                return None
            end = r.ended_us if r.ended_us is not None else now
            return {
                "id": r.id, "started_at": r.started_at, "ended_at": r.ended_at, "started_by": r.started_by,
                "duration_s": round((end - r.started_us) / 1e6, 1), "segments": r.segments,
                "marks": len(r.marks), "end_reason": r.end_reason,
            }

        return {
            "state": self.state.value,
            "mode": self.config.device.mode,
            "device": self.config.device.id,
            "simulated": self.hw.simulated,
            "sign": {"lit": sign.is_lit, "commanded": sign.is_commanded, "readback": sign.has_readback},
            "status_light": {"pattern": self.hw.status_light.pattern.value, "value": self.hw.status_light.value},
            "button": {"pressed": self.hw.button.is_pressed},
            "recording": rec_json(rec),
            "last_recording": rec_json(self.last_recording),
            "faults": [f.to_json() for f in list(self.faults.values())],
            "warnings": list(self.warnings),
            "capacity_warnings": list(self.capacity_warnings),
            "fault_history": list(self.fault_history[-10:]),
            "devices": {
                "camera": {
                    "backend": cam.backend, "running": cam.is_running,
                    "last_frame_age_s": round((now - self._last_video_us) / 1e6, 2) if cam.is_running and self._last_video_us else None,
                },
                "microphone": None if mic is None else {
                    "backend": mic.backend, "running": mic.is_running,
                    "last_audio_age_s": round((now - self._last_audio_us) / 1e6, 2) if mic.is_running and self._last_audio_us else None,
                },
            },
            "clock": {"synchronised": clock.clock_synchronised(), "now": clock.iso(clock.wall_at(now))},
            "segments_written": self.segments_written,
            "frames_refused_at_gate": self.gate.frames_refused,
            "frames_dropped_queue_full": self.frames_dropped_queue,
            "uptime_s": round(time.monotonic() - self._started_monotonic, 1),
        }

    # -- capture threads ---------------------------------------------------------------
    def _on_camera_frame(self, frame: EncodedFrame) -> None:
        self._last_video_us = clock.boottime_us()
        self._last_frame_time_us = frame.time_us
        self.gate.video(frame)

    def _on_microphone_block(self, block: AudioBlock) -> None:
        self._last_audio_us = clock.boottime_us()
        self.gate.audio(block)

    def _queue_video(self, frame: EncodedFrame) -> None:
        if self._need_keyframe and not frame.keyframe:
            self.frames_dropped_queue += self._overflowed
            return
        if self._media.qsize() >= self._media_limit:
            # The store is stalled: drop, and resume at the next keyframe in a new segment.
            self.frames_dropped_queue += 1
            self._overflowed = True
            self._need_keyframe = True
            return
        self._media.put(("video", frame, self._need_keyframe))
        self._need_keyframe = False

    def _queue_audio(self, block: AudioBlock) -> None:
        if self._media.qsize() >= self._media_limit:
            self._overflowed = True
            return
        self._media.put(("audio", block))

    def _sign_lost(self) -> None:
        self._events.put(("sign_lost",))

    # -- media thread: the only writer of the store -----------------------------------------
    def _media_loop(self) -> None:
        seg = self.segmenter
        recording: Recording | None = None
        ending = False
        while True:
            try:
                item = self._media.get(timeout=0.1)
            except queue.Empty:
                item = None
            try:
                if item is None:
                    seg.tick()
                elif item[0] == "video":
                    _, frame, discontinuity = item
                    if discontinuity and not ending:
                        seg.cut()  # frames were lost: close what we have; the keyframe starts anew
                    seg.video(frame)
                elif item[0] == "audio":
                    seg.audio(item[1])
                elif item[0] == "begin":
                    recording, ending = item[1], False
                    self.store.begin(recording)
                    seg.begin(recording)
                elif item[0] == "mark":
                    _, rec, mark = item
                    rec.marks.append(mark)
                    try:
                        self.store.add_mark(rec.id, mark)
                    except Exception as exc:  # the mark is lost, not the footage: say so, keep recording
                        log.exception("could not store an incident mark")
                        self._events.put(("store_problem", f"storage: an incident mark could not be saved ({exc})"))
                elif item[0] == "audio_enabled":
                    seg.set_audio(item[1])
                elif item[0] == "end":
                    _, until_us, reason, audio_over = item
                    ending = True
                    seg.end(until_us, wait_for_audio=not audio_over)
                    if recording is not None:
                        _set_end(recording, until_us, reason)
                elif item[0] == "flush":
                    seg.flush()
                elif item[0] == "quit":
                    seg.flush()
                    if recording is not None:
                        self._finish_recording(recording, reason=recording.end_reason or "stopped by shutdown")
                    return
                if ending and recording is not None and not seg.busy:
                    self._finish_recording(recording)
                    recording, ending = None, False
            except Exception as exc:  # every failure here is a storage fault
                log.exception("storing failed")
                try:
                    seg.flush()  # keep the segments that were complete but waiting for their audio
                except Exception:
                    pass
                seg.abort()
                if recording is not None:
                    try:
                        self._finish_recording(recording, reason=f"storage failure: {exc}")
                    except Exception:
                        pass
                recording, ending = None, False
                self._events.put(("storage_failed", str(exc)))

    def _finish_recording(self, rec: Recording, reason: str | None = None) -> None:
        if rec.ended_us is None or reason:
            _set_end(rec, rec.ended_us or clock.boottime_us(), reason or "stopped")
        self.store.end(rec)
        self._events.put(("stored", rec.id))

    def _retention_loop(self) -> None:
        """Overwrite expired footage in the background, never on the media thread, and keep
        an eye on how long the card can keep footage at the rate it is being recorded."""
        while True:
            try:
                if self.store.ready:
                    self.store.sweep()
                    self._plan_capacity()
            except Exception:
                log.exception("retention sweep failed")
            if self._closed.wait(self._sweep_seconds):
                return

    def _plan_capacity(self) -> None:
        status = self.store.status(bitrate_guess=self._room_needed / _ROOM_SECONDS)
        warnings, structured = [], []
        for cls, c in status["classes"].items():
            if c["warning"]:
                structured.append({"record_class": cls, "projected_days": round(c["projected_days"]),
                                   "min_days": c["min_days"]})
                warnings.append(f"capacity: the card holds about {c['projected_days']:.0f} days of {cls} at the "
                                f"current rate, below the {c['min_days']}-day minimum plus the margin — "
                                "fit a larger card or record less")
        if warnings and warnings != self.warnings:
            self.store.audit("recorder", "capacity.warning", detail={"warnings": warnings})
            for w in warnings:
                log.warning(w)
        self.warnings, self.capacity_warnings = warnings, structured

    def _segment_stored(self, rec: Recording, info) -> None:
        self.segments_written += 1
        log.info("segment %s/%05d stored: %.2f s, %d bytes", rec.id, info.seq, info.duration, info.bytes)

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
        elif kind == "store_problem":
            self._fault("storage", event[1], blocking=False)
        elif kind == "storage_failed":
            self._fault("storage", event[1], blocking=True)
            if self.state != State.IDLE:
                self.gate.shut()
                self._to_idle_devices_off()
                self.state = State.FAULT
                self._show()

    def _button(self, event: ButtonEvent) -> None:
        log.info("button %s in state %s", event.value, self.state.value)
        continuous = self.config.device.mode == "continuous"
        if event is ButtonEvent.PRESSED:
            self._press_started = False
            if continuous:
                return
            if self.state in (State.IDLE, State.FAULT):
                try:
                    self._cmd_start(by="button")
                    self._press_started = True
                except RecorderError as exc:
                    log.warning("button: %s", exc)
        elif event is ButtonEvent.RELEASED:
            if continuous or self._press_started:
                return
            if self.state in (State.NOTICE, State.RECORDING):
                self._cmd_stop(by="button")
        elif event is ButtonEvent.HELD:
            try:
                self._cmd_mark(by="button")
            except RecorderError as exc:
                log.warning("button: %s", exc)

    def _cmd_start(self, by: str) -> dict:
        if self.state in (State.NOTICE, State.RECORDING):
            raise RecorderError(f"already {self.state.value}")
        if self.state == State.STOPPING:
            raise RecorderError("still storing the previous recording; try again in a moment")
        if self.fatal:
            raise RecorderError(f"the recorder must restart: {self.fatal}")
        # The sign must not light for a recording that cannot be kept.
        if not self.store.ready:
            self._fault("storage", "the vault is not set up — run `kiroku init` or open the web UI's first-run page",
                        blocking=True)
            self.state = State.FAULT
            self._show()
            raise RecorderError("the vault is not set up: nothing could be sealed")
        if not self.store.room_for(self._room_needed):
            self._fault("storage", "the disk is full of footage still within its retention or on hold: "
                                   "a recording could not be kept", blocking=True)
            self.state = State.FAULT
            self._show()
            raise RecorderError("the disk is full: recording cannot start")
        self.faults.pop("sign", None)
        self.faults.pop("storage", None)
        now = clock.boottime_us()
        self.hw.sign.on()
        self.sign_on_us = now
        self.state = State.NOTICE
        self._started_by = by
        announcement = 0.0
        if self.hw.announcement is not None and self.hw.speaker is not None:
            try:
                announcement = self.hw.speaker.play(*self.hw.announcement)
            except DeviceUnavailable as exc:
                self._fault("speaker", exc.one_line(), blocking=False)
        # The notice counts from when the lamp is proven lit, and lasts the announcement too.
        self._notice_delay_us = round(self.config.notice.delay * 1e6)
        self._announcement_until_us = now + round(announcement * 1e6)
        try:
            self._start_devices()
        except DeviceUnavailable as exc:
            self._fault(exc.device, exc.one_line(), blocking=True)
            self._to_idle_devices_off()
            self.state = State.FAULT
            self._show()
            raise RecorderError(exc.one_line()) from None
        self._show()
        log.info("notice started by %s; recording %.1f s after the lamp is lit", by,
                 max(self.config.notice.delay, announcement))
        return self.status()

    def _cmd_stop(self, by: str) -> dict:
        if self.config.device.mode == "continuous" and by not in ("shutdown", "timer"):
            raise RecorderError("continuous mode records all the time; change device.mode to stop it")
        if self.state == State.NOTICE:
            log.info("notice cancelled by %s before recording began", by)
            self._pending_marks.clear()
            self._to_idle_devices_off()
            self.state = State.IDLE
            self._show()
            return self.status()
        if self.state != State.RECORDING:
            raise RecorderError(f"not recording (state: {self.state.value})")
        self._begin_stop(f"stopped by {by}")
        return self.status()

    def _cmd_mark(self, by: str, note: str = "", section: str = "") -> dict:
        now = clock.boottime_us()
        mark = Mark(time_us=now, at=clock.iso(clock.wall_at(now)), wall_us=clock.wall_us_at(now), by=by,
                    note=note, section=section)
        if self.state == State.NOTICE:
            self._pending_marks.append(mark)
            marked = None  # the recording about to start, which has no id yet
        elif self.state in (State.RECORDING, State.STOPPING) and self.recording is not None:
            self._media.put(("mark", self.recording, mark))  # the media thread writes the store
            marked = self.recording.id
        elif self.last_recording is not None:
            self._media.put(("mark", self.last_recording, mark))
            marked = self.last_recording.id
        else:
            raise RecorderError("there is no recording to mark")
        log.info("incident marked by %s", by)
        return {**self.status(), "marked": marked}

    def _cmd_status(self) -> dict:
        return self.status()

    # -- transitions -----------------------------------------------------------------
    def _start_devices(self) -> None:
        cam, mic = self.hw.camera, self.hw.microphone
        if not cam.is_running:
            self._last_video_us = clock.boottime_us()
            try:
                cam.start(self._on_camera_frame)
            except DeviceUnavailable:
                raise
            except Exception as exc:  # e.g. the encoder device busy: a fault like any other
                raise DeviceUnavailable("camera", f"could not start ({exc})", "check the camera and the journal") from exc
            fault = self.faults.get("camera")
            if fault is not None and fault.blocking:
                self._clear_fault("camera")  # found by this start (a late camera), not by the retry
        if mic is not None and not mic.is_running:
            self._last_audio_us = clock.boottime_us()
            try:
                mic.start(self._on_microphone_block)
            except Exception as exc:
                # Video without sound is better evidence than nothing: record on, and say so.
                text = exc.one_line() if isinstance(exc, DeviceUnavailable) else f"microphone: could not start ({exc})"
                self._fault("microphone", f"{text}; recording without sound", blocking=False)
            else:
                self._clear_fault("microphone")
            self._media.put(("audio_enabled", mic.is_running))

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
        self._need_keyframe = True
        self._camera_restarts = 0
        self._media.put(("begin", rec))
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
            self._media.put(("end", self.gate.shut_at_us or clock.boottime_us(), reason, True))
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
                self._notice_delay_us = self._announcement_until_us = 0
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
            self.hw.sign.off()
        self.sign_on_us = None

    def _show(self) -> None:
        blocking = any(f.blocking for f in self.faults.values())
        if self.state == State.FAULT or (self.state == State.IDLE and blocking):
            pattern = LightPattern.FAULT
        elif self.state == State.NOTICE:
            pattern = LightPattern.NOTICE
        elif self.state in (State.RECORDING, State.STOPPING):
            pattern = LightPattern.DEGRADED if self.faults else LightPattern.RECORDING
        else:
            pattern = LightPattern.READY
        self.hw.status_light.show(pattern)

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
        health = self.config.health
        sign = self.hw.sign
        if self.state == State.NOTICE:
            lit = sign.lit_since_us
            if lit is None:
                if now - (self.sign_on_us or now) > health.sign_confirm * 1e6:
                    self._fault("sign", "sign: the lamp did not light — check the lamp and its wiring", blocking=True)
                    self._abandon_recording("sign did not light")
            elif now >= max(lit + self._notice_delay_us, self._announcement_until_us):
                self._begin_recording()
        elif self.state == State.IDLE and sign.has_readback:
            if sign.is_lit and not sign.is_commanded:
                self._fault("sign", "sign: the read-back reports the lamp lit while the sign is off — "
                                    "check the optocoupler wiring", blocking=False)
            elif "sign" in self.faults and not self.faults["sign"].blocking and not sign.is_lit:
                self._clear_fault("sign")
        if self.state == State.RECORDING and sign.lit_since_us is None:
            self.gate.sign_went_dark()  # even when no frame comes to notice it
        if self.state == State.RECORDING:
            limit = self.config.recording.max_minutes
            if limit and self.config.device.mode == "on_demand" and self.recording and \
                    now - self.recording.started_us > limit * 60e6:
                self._begin_stop(f"stopped after the {limit:g}-minute limit")
        if self.state == State.STOPPING:
            until = self._stop_until_us or now
            # Frames captured before "stop" may still be in the encoder: wait for them, briefly.
            if not self._end_sent and (self._last_frame_time_us >= until or now - until > _STOP_GRACE_US):
                self._media.put(("end", until, self._stop_reason, False))
                self._end_sent = True
            elif self._end_sent and time.monotonic() - self._stop_started > _STORE_TIMEOUT:
                log.warning("audio never caught up; finishing the recording with what arrived")
                self._media.put(("flush",))
                self._stop_started = time.monotonic()
        if self.state in (State.NOTICE, State.RECORDING, State.STOPPING):
            self._check_devices(now)
        elif self.state == State.FAULT and time.monotonic() >= self._next_retry:
            self._next_retry = time.monotonic() + _RETRY_SECONDS
            self._retry_after_fault()
        if self._overflowed:
            self._overflowed = False
            self._fault("storage", "storage: the write queue was full and frames were dropped (is the SD card too slow?)",
                        blocking=False)

    def _check_devices(self, now: int) -> None:
        health = self.config.health
        cam = self.hw.camera
        if not cam.is_running:
            self._restart_camera("camera: not running")
        elif now - self._last_video_us > health.camera_stall * 1e6:
            self._restart_camera(f"camera: no frame for {health.camera_stall:g} s")
        elif "camera" in self.faults and self._camera_restarted_us and self._last_video_us > self._camera_restarted_us:
            # Frames flow again: the fault is over (the history keeps it), and so is the count.
            self._camera_restarted_us = 0
            self._camera_restarts = 0
            self._clear_fault("camera")
        mic = self.hw.microphone
        if mic is None:
            return
        if mic.is_running and now - self._last_audio_us > health.microphone_stall * 1e6:
            self._restart_microphone(f"microphone: no sound for {health.microphone_stall:g} s")
        elif mic.is_running and "microphone" in self.faults and self._mic_restarted_us \
                and self._last_audio_us > self._mic_restarted_us:
            self._mic_restarted_us = 0
            self._clear_fault("microphone")
            self._media.put(("audio_enabled", True))  # from the next segment on
        elif not mic.is_running and "microphone" in self.faults and time.monotonic() >= self._next_retry \
                and self.state != State.NOTICE:  # looking for sound cards would end the announcement
            self._next_retry = time.monotonic() + _RETRY_SECONDS
            self._restart_microphone(None)

    def _restart_camera(self, why: str) -> None:
        self._camera_restarts += 1
        attempts = self.config.health.restart_attempts
        self._fault("camera", f"{why} — restarting it ({self._camera_restarts}/{attempts})", blocking=False)
        cam = self.hw.camera
        self._need_keyframe = True  # the next frame through starts a new segment
        try:
            cam.stop(timeout=self.config.health.camera_stop_timeout)
        except DeviceFailed as exc:
            # picamera2 can hang in stop after a front-end timeout: only a new process recovers.
            self.fatal = exc.one_line()
            self._fault("camera", exc.one_line(), blocking=True)
            self._abandon_on_device_failure()
            return
        if self._camera_restarts > attempts:
            self._fault("camera", f"{why}; gave up after {attempts} restarts — check the camera cable", blocking=True)
            self._abandon_on_device_failure()
            return
        try:
            self._last_video_us = clock.boottime_us()
            self._camera_restarted_us = self._last_video_us
            cam.start(self._on_camera_frame)
            cam.request_keyframe()
        except Exception as exc:
            text = exc.one_line() if isinstance(exc, DeviceUnavailable) else f"camera: could not start ({exc})"
            self._fault("camera", text, blocking=True)
            self._abandon_on_device_failure()

    def _abandon_on_device_failure(self) -> None:
        if self.state in (State.RECORDING, State.STOPPING):
            if self.state == State.RECORDING:
                self._begin_stop("camera failure")
            if not self._end_sent:
                self._media.put(("end", self._stop_until_us, self._stop_reason, False))
                self._end_sent = True
            self.last_recording, self.recording = self.recording, None
        self._pending_marks.clear()
        self._to_idle_devices_off()
        self.state = State.FAULT
        self._next_retry = time.monotonic() + _RETRY_SECONDS
        self._show()

    def _restart_microphone(self, why: str | None) -> None:
        """Restart the microphone; the fault clears once sound flows again (``_check_devices``)."""
        mic = self.hw.microphone
        assert mic is not None
        if why:
            self._fault("microphone", f"{why} — restarting it; recording continues without sound", blocking=False)
            self._media.put(("audio_enabled", False))
        mic.stop()
        mic.reset()
        try:
            self._last_audio_us = self._mic_restarted_us = clock.boottime_us()
            mic.start(self._on_microphone_block)
        except Exception as exc:
            text = exc.one_line() if isinstance(exc, DeviceUnavailable) else f"microphone: could not start ({exc})"
            self._fault("microphone", f"{text}; recording continues without sound", blocking=False)

    def _retry_after_fault(self) -> None:
        """In FAULT: see whether the devices work again.

        Camera and microphone are checked here; a sign or storage fault stays until the
        next start (a press of the button) proves the lamp or the disk again.
        """
        for device in ("camera", "microphone"):
            fault = self.faults.get(device)
            if fault is None or not fault.blocking:
                continue
            if device == "camera" and self.fatal:
                return
            dev = self.hw.camera if device == "camera" else self.hw.microphone
            try:
                dev.start(lambda _item: None)  # a device check: nothing reaches the gate
                dev.stop()
            except (DeviceUnavailable, DeviceFailed):
                return
            self._clear_fault(device)
        if self.config.device.mode == "continuous":
            # Nobody presses a button in continuous mode: try again, which proves the lamp and the disk anew.
            try:
                self._cmd_start(by="continuous")
            except RecorderError as exc:
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
                    self._media.put(("flush",))
                self._to_idle_devices_off()
            self.hw.sign.off()
            self.hw.status_light.show(LightPattern.OFF)
            self.state = State.IDLE
            done.set_result(None)
        except Exception as exc:
            done.set_exception(exc)
