"""What people ask of the recorder — a press of the button, or a command over the control
socket (start, stop, mark, reload) — and how the state machine answers it.

``Commands`` is a part of :class:`~firmware.recorder.Recorder`: public commands may come from
any thread and are queued; the ``_cmd_*`` methods and ``_button`` run on the state
machine's own thread, where every transition happens.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

from firmware import clock
from firmware.hardware import ButtonEvent, DeviceUnavailable
from firmware.recorder.errors import RecorderRefused
from firmware.recorder.state import State
from firmware.recorder.writer import MarkIncident
from firmware.store import Mark

log = logging.getLogger("firmware.recorder")


class Commands:
    # -- from any thread ---------------------------------------------------------------
    def _command(self, name: str, timeout: float = 10.0, **kwargs):
        if self._closed.is_set():
            raise RecorderRefused("the recorder is shutting down")
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
            raise RecorderRefused("no data folder to read the configuration from")
        new = config_module.load(path or config_file(self.store.data_dir, None))
        self.config, pending = self.config.reloaded(new)
        self.segmenter.segment_us = round(new.recording.segment_seconds * 1e6)
        self.store.retention = new.retention
        log.info("configuration reloaded; waiting for a restart: %s", ", ".join(pending) or "nothing")
        return {**self.status(), "restart_needed_for": pending}

    # -- on the state machine's thread ---------------------------------------------------
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
                except RecorderRefused as exc:
                    log.warning("button: %s", exc)
        elif event is ButtonEvent.RELEASED:
            if continuous or self._press_started:
                return
            if self.state in (State.NOTICE, State.RECORDING):
                self._cmd_stop(by="button")
        elif event is ButtonEvent.HELD:
            try:
                self._cmd_mark(by="button")
            except RecorderRefused as exc:
                log.warning("button: %s", exc)

    def _cmd_start(self, by: str) -> dict:
        if self.state in (State.NOTICE, State.RECORDING):
            raise RecorderRefused(f"already {self.state.value}")
        if self.state == State.STOPPING:
            raise RecorderRefused("still storing the previous recording; try again in a moment")
        if self.fatal:
            raise RecorderRefused(f"the recorder must restart: {self.fatal}")
        # The sign must not light for a recording that cannot be kept.
        if not self.store.ready:
            self._fault("storage", "the vault is not set up — run `kiroku init` or open the web UI's first-run page",
                        blocking=True)
            self.state = State.FAULT
            self._show()
            raise RecorderRefused("the vault is not set up: nothing could be sealed")
        problem = self.store.sealing_problem("footage")
        if problem:
            self._fault("storage", problem, blocking=True)
            self.state = State.FAULT
            self._show()
            raise RecorderRefused(problem)
        problem = self.store.room_problem(self._room_needed)
        if problem:
            self._fault("storage", problem, blocking=True)
            self.state = State.FAULT
            self._show()
            raise RecorderRefused("the disk is full: recording cannot start")
        self.faults.pop("sign", None)
        self.faults.pop("storage", None)
        now = clock.boottime_us()
        self.notice.light(now)
        self.state = State.NOTICE
        self._started_by = by
        announcement = self.notice.announce(now, self.config.notice.delay)
        try:
            self._start_devices()
        except DeviceUnavailable as exc:
            self._fault(exc.device, exc.one_line(), blocking=True)
            self._to_idle_devices_off()
            self.state = State.FAULT
            self._show()
            raise RecorderRefused(exc.one_line()) from None
        self._show()
        log.info("notice started by %s; recording %.1f s after the lamp is lit", by,
                 max(self.config.notice.delay, announcement))
        return self.status()

    def _cmd_stop(self, by: str) -> dict:
        if self.config.device.mode == "continuous" and by not in ("shutdown", "timer"):
            raise RecorderRefused("continuous mode records all the time; change device.mode to stop it")
        if self.state == State.NOTICE:
            log.info("notice cancelled by %s before recording began", by)
            self._pending_marks.clear()
            self._to_idle_devices_off()
            self.state = State.IDLE
            self._show()
            return self.status()
        if self.state != State.RECORDING:
            raise RecorderRefused(f"not recording (state: {self.state.value})")
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
            self.writer.send(MarkIncident(self.recording, mark))  # the media thread writes the store
            marked = self.recording.id
        elif self.last_recording is not None:
            self.writer.send(MarkIncident(self.last_recording, mark))
            marked = self.last_recording.id
        else:
            raise RecorderRefused("there is no recording to mark")
        log.info("incident marked by %s", by)
        return {**self.status(), "marked": marked}

    def _cmd_status(self) -> dict:
        return self.status()
