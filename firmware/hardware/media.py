"""The tiny media interface every capture device speaks.

A camera hands :class:`EncodedFrame` objects to a callable, a microphone hands
:class:`AudioBlock` objects to another; everything downstream (the notice gate, the
segmenter, the store) is a wrapper around those two calls. All times are CLOCK_BOOTTIME
microseconds (see ``firmware.clock``), which is what libcamera stamps frames with.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Callable

import numpy as np


def boottime_us() -> int:
    """Now, on the media timebase: CLOCK_BOOTTIME in µs, what libcamera stamps frames with."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000


def wall_at(boot_us: int) -> datetime:
    """The wall-clock time (local, aware) at which the boottime instant ``boot_us`` happened."""
    wall_s = (time.time_ns() / 1000 - (boottime_us() - boot_us)) / 1e6
    return datetime.fromtimestamp(wall_s, tz=timezone.utc).astimezone()


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One H.264 access unit in Annex B form, as the encoder produced it."""

    data: bytes
    keyframe: bool
    time_us: int  # capture time of the frame (sensor timestamp)


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """Consecutive PCM samples (int16, shape frames × channels) from the microphone."""

    samples: np.ndarray
    time_us: int  # capture time of the first sample
    samplerate: int

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_us(self) -> int:
        return self.time_us + round(self.frames * 1_000_000 / self.samplerate)


@dataclass(frozen=True, slots=True)
class VideoFormat:
    width: int
    height: int
    framerate: float

    @property
    def frame_us(self) -> int:
        return round(1_000_000 / self.framerate)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    samplerate: int
    channels: int


VideoSink = Callable[[EncodedFrame], None]
AudioSink = Callable[[AudioBlock], None]
