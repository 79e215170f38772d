"""The recorder's states and faults, and what they show: the status light's pattern and the
snapshot ``kiroku ctl status`` and the web UI read."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from firmware import clock
from firmware.hardware import LightPattern
from firmware.store import Recording


class State(str, Enum):
    IDLE = "idle"
    NOTICE = "notice"
    RECORDING = "recording"
    STOPPING = "stopping"
    FAULT = "fault"


@dataclass
class Fault:
    device: str
    message: str
    since: str
    blocking: bool  # True: the counter cannot record until it is cleared

    def to_json(self) -> dict:
        return {"device": self.device, "message": self.message, "since": self.since, "blocking": self.blocking}


def light_pattern(state: State, faults: dict[str, Fault]) -> LightPattern:
    """What the status light shows for a state and the faults in force."""
    blocking = any(f.blocking for f in faults.values())
    if state == State.FAULT or (state == State.IDLE and blocking):
        return LightPattern.FAULT
    if state == State.NOTICE:
        return LightPattern.NOTICE
    if state in (State.RECORDING, State.STOPPING):
        return LightPattern.DEGRADED if faults else LightPattern.RECORDING
    return LightPattern.READY


def describe(recorder) -> dict:
    """A recorder's status as ``kiroku ctl status --json`` and the web UI read it."""
    now = clock.boottime_us()
    sign = recorder.hw.sign
    rec = recorder.recording

    def rec_json(r: Recording | None):
        if r is None:
            return None
        end = r.ended_us if r.ended_us is not None else now
        return {
            "id": r.id, "started_at": r.started_at, "ended_at": r.ended_at, "started_by": r.started_by,
            "duration_s": round((end - r.started_us) / 1e6, 1), "segments": r.segments,
            "marks": len(r.marks), "end_reason": r.end_reason,
        }

    devices = {w.device: w.status(now) for w in recorder.watchers}
    return {
        "state": recorder.state.value,
        "mode": recorder.config.device.mode,
        "device": recorder.config.device.id,
        "simulated": recorder.hw.simulated,
        "sign": {"lit": sign.is_lit, "commanded": sign.is_commanded, "readback": sign.has_readback},
        "status_light": {"pattern": recorder.hw.status_light.pattern.value, "value": recorder.hw.status_light.value},
        "button": {"pressed": recorder.hw.button.is_pressed},
        "recording": rec_json(rec),
        "last_recording": rec_json(recorder.last_recording),
        "faults": [f.to_json() for f in list(recorder.faults.values())],
        "warnings": list(recorder.warnings),
        "capacity_warnings": list(recorder.capacity_warnings),
        "fault_history": list(recorder.fault_history[-10:]),
        "devices": {"camera": devices["camera"], "microphone": devices.get("microphone")},
        "clock": {"synchronised": clock.clock_synchronised(), "now": clock.iso(clock.wall_at(now))},
        "segments_written": recorder.segments_written,
        "frames_refused_at_gate": recorder.gate.frames_refused,
        "frames_dropped_queue_full": recorder.writer.frames_dropped,
        "uptime_s": round(time.monotonic() - recorder._started_monotonic, 1),
        "log": recorder.store.log_head() if hasattr(recorder.store, "log_head") else None,
    }
