"""The media writer: the recorder's only writer of the store, on its own thread.

Capture threads hand admitted frames and sound to :meth:`MediaWriter.video` and
:meth:`~MediaWriter.audio`; the state machine sends it what happens to the recording
(:class:`Begin`, :class:`MarkIncident`, :class:`End`, …). One queue keeps them all in
order; only frames and sound count against its limit, so the state machine never blocks on
a stalled card — frames are dropped instead, and recording resumes at the next keyframe in a
new segment. What the writer has to tell the state machine (a recording stored, a storage
failure) goes back through ``report``.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable

from firmware import clock
from firmware.hardware import AudioBlock, EncodedFrame
from firmware.store import Mark, Recording

log = logging.getLogger("firmware.recorder")


# -- what the writer is sent ---------------------------------------------------------------------

@dataclass(frozen=True)
class Video:
    frame: EncodedFrame
    discontinuity: bool  # frames were lost before this keyframe: it starts a new segment


@dataclass(frozen=True)
class Audio:
    block: AudioBlock


@dataclass(frozen=True)
class Begin:
    recording: Recording


@dataclass(frozen=True)
class MarkIncident:
    recording: Recording
    mark: Mark


@dataclass(frozen=True)
class AudioEnabled:
    """From the next segment on, segments have sound (or not)."""

    enabled: bool


@dataclass(frozen=True)
class End:
    until_us: int
    reason: str
    audio_over: bool  # no more sound will come: the last segment need not wait for it


@dataclass(frozen=True)
class Flush:
    """Finish what is complete now, without waiting for sound that will not come."""


@dataclass(frozen=True)
class Quit:
    pass


def set_end(rec: Recording, end_us: int, reason: str) -> None:
    rec.ended_us = end_us
    rec.ended_at = clock.iso(clock.wall_at(end_us))
    rec.ended_wall_us = clock.wall_us_at(end_us)
    rec.end_reason = reason


class MediaWriter:
    """Owns the segmenter and the store's write side. ``report(event)`` puts an event on the
    state machine's queue: ``("stored", id)``, ``("store_problem", text)``,
    ``("storage_failed", text)``."""

    def __init__(self, store, segmenter, *, limit: int, report: Callable[[tuple], None]):
        self.store = store
        self.segmenter = segmenter
        self._limit = limit
        self._report = report
        self._queue: queue.Queue = queue.Queue()
        self.need_keyframe = True  # the next frame through must be a keyframe (a new segment)
        self.overflowed = False  # frames were dropped since the state machine last looked
        self.frames_dropped = 0
        self._thread = threading.Thread(target=self._loop, name="media", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, message) -> None:
        self._queue.put(message)

    def stop(self, timeout: float) -> None:
        self._queue.put(Quit())
        self._thread.join(timeout)

    # -- capture threads, through the gate -----------------------------------------------------
    def video(self, frame: EncodedFrame) -> None:
        if self.need_keyframe and not frame.keyframe:
            self.frames_dropped += self.overflowed
            return
        if self._queue.qsize() >= self._limit:
            # The store is stalled: drop, and resume at the next keyframe in a new segment.
            self.frames_dropped += 1
            self.overflowed = True
            self.need_keyframe = True
            return
        self._queue.put(Video(frame, self.need_keyframe))
        self.need_keyframe = False

    def audio(self, block: AudioBlock) -> None:
        if self._queue.qsize() >= self._limit:
            self.overflowed = True
            return
        self._queue.put(Audio(block))

    # -- the media thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        seg = self.segmenter
        recording: Recording | None = None
        ending = False
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                item = None
            try:
                if item is None:
                    seg.tick()
                elif isinstance(item, Video):
                    if item.discontinuity and not ending:
                        seg.cut()  # frames were lost: close what we have; the keyframe starts anew
                    seg.video(item.frame)
                elif isinstance(item, Audio):
                    seg.audio(item.block)
                elif isinstance(item, Begin):
                    recording, ending = item.recording, False
                    self.store.begin(recording)
                    seg.begin(recording)
                elif isinstance(item, MarkIncident):
                    item.recording.marks.append(item.mark)
                    try:
                        self.store.add_mark(item.recording.id, item.mark)
                    except Exception as exc:  # the mark is lost, not the footage: say so, keep recording
                        log.exception("could not store an incident mark")
                        self._report(("store_problem", f"storage: an incident mark could not be saved ({exc})"))
                elif isinstance(item, AudioEnabled):
                    seg.set_audio(item.enabled)
                elif isinstance(item, End):
                    ending = True
                    seg.end(item.until_us, wait_for_audio=not item.audio_over)
                    if recording is not None:
                        set_end(recording, item.until_us, item.reason)
                elif isinstance(item, Flush):
                    seg.flush()
                elif isinstance(item, Quit):
                    seg.flush()
                    if recording is not None:
                        self._finish(recording, reason=recording.end_reason or "stopped by shutdown")
                    return
                if ending and recording is not None and not seg.busy:
                    self._finish(recording)
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
                        self._finish(recording, reason=f"storage failure: {exc}")
                    except Exception:
                        pass
                recording, ending = None, False
                self._report(("storage_failed", str(exc)))

    def _finish(self, rec: Recording, reason: str | None = None) -> None:
        if rec.ended_us is None or reason:
            set_end(rec, rec.ended_us or clock.boottime_us(), reason or "stopped")
        self.store.end(rec)
        self._report(("stored", rec.id))
