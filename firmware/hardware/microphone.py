"""The microphone: delivers PCM blocks, stamped with the capture time of their first sample.

Audio time is anchored once to the media timebase and then counted in samples, because
the sound card's clock is steadier than any timestamp the driver reports (PortAudio's ALSA
timestamps are wall-clock time and jump with NTP). When the count drifts more than
``REANCHOR_US`` from what the driver reports, it is re-anchored and the event counted.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np

from firmware.hardware.errors import DeviceUnavailable
from firmware.hardware.media import AudioBlock, AudioFormat, AudioSink, boottime_us

REANCHOR_US = 20_000


class AudioClock:
    """Turns "this many frames arrived, the first captured ``age`` µs ago" into block times."""

    def __init__(self, samplerate: int):
        self.samplerate = samplerate
        self._anchor_us: int | None = None
        self._count = 0
        self.reanchors = 0

    def reset(self) -> None:
        self._anchor_us = None
        self._count = 0

    def stamp(self, measured_us: int, frames: int) -> int:
        """The capture time of a block whose first sample the driver places at ``measured_us``."""
        if self._anchor_us is None:
            self._anchor_us, self._count = measured_us, 0
        expected = self._anchor_us + self._count * 1_000_000 // self.samplerate
        if abs(expected - measured_us) > REANCHOR_US:
            self.reanchors += 1
            self._anchor_us, self._count = measured_us, 0
            expected = measured_us
        self._count += frames
        return expected


class Microphone(ABC):
    """A microphone that, while started, hands every block of samples to its sink."""

    device = "microphone"
    backend = "?"

    def __init__(self, fmt: AudioFormat, *, blocksize: int = 1024):
        self.format = fmt
        self.blocksize = blocksize
        self._running = False
        self.overflows = 0

    @property
    def is_running(self) -> bool:
        return self._running

    @abstractmethod
    def start(self, sink: AudioSink) -> None:
        """Start capturing; raises :class:`DeviceUnavailable` with a one-line reason."""

    @abstractmethod
    def stop(self) -> None:
        ...

    def reset(self) -> None:  # noqa: B027 — a no-op unless a backend has something to forget
        """Forget what the sound system knew of the device before a restart (if it must)."""

    def close(self) -> None:
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SimulatedMicrophone(Microphone):
    """Generated PCM (a :class:`~firmware.hardware.synth.Tone`, or a WAV file looped),
    delivered in blocks at the pace a sound card would, through the same clock anchoring
    as a real one."""

    backend = "simulated"

    def __init__(self, fmt: AudioFormat, *, blocksize: int = 1024, wav_path: str | None = None, clock=None):
        super().__init__(fmt, blocksize=blocksize)
        self._clock = clock or boottime_us
        self._wav = _load_wav(wav_path, fmt) if wav_path else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unplugged = False
        self._stalled = False
        self.audio_clock = AudioClock(fmt.samplerate)

    def unplug(self) -> None:
        self._unplugged = True

    def stall(self) -> None:
        """Stop delivering until restarted (a USB audio device that wedges)."""
        self._stalled = True

    def replug(self) -> None:
        self._unplugged = False

    def start(self, sink: AudioSink) -> None:
        if self._running:
            raise RuntimeError("microphone already started")
        if self._unplugged:
            raise DeviceUnavailable("microphone", "not connected", "plug the simulated microphone back in (virtual counter)")
        self._stop.clear()
        self._stalled = False
        self.audio_clock.reset()
        self._thread = threading.Thread(target=self._run, args=(sink,), name="sim-microphone", daemon=True)
        self._running = True
        self._thread.start()

    def stop(self) -> None:
        if not self._running:
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)
        self._running = False

    def _run(self, sink: AudioSink) -> None:
        from firmware.hardware.synth import Tone

        rate, n = self.format.samplerate, self.blocksize
        tone = Tone(rate, self.format.channels)
        start = self._clock()
        done = 0  # frames handed over so far
        position = 0  # read position in the WAV loop
        while True:
            # A sound card calls back once a block has been captured.
            due = start + (done + n) * 1_000_000 // rate
            wait = (due - self._clock()) / 1e6
            if wait > 0 and self._stop.wait(wait):
                return
            if self._stop.is_set() or self._unplugged:
                return  # an unplugged card simply stops calling back
            if self._stalled:
                done += n
                continue
            first_us = start + done * 1_000_000 // rate
            if self._wav is not None:
                idx = (position + np.arange(n)) % len(self._wav)
                pcm = self._wav[idx]
                position = (position + n) % len(self._wav)
            else:
                pcm = tone.render(first_us, n)
            sink(AudioBlock(pcm, self.audio_clock.stamp(first_us, n), rate))
            done += n


def _load_wav(path: str, fmt: AudioFormat) -> np.ndarray:
    import wave

    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2 or w.getframerate() != fmt.samplerate:
                raise DeviceUnavailable(
                    "microphone",
                    f"{path} is not 16-bit PCM at {fmt.samplerate} Hz",
                    f"convert it: ffmpeg -i IN -ar {fmt.samplerate} -c:a pcm_s16le OUT.wav",
                )
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
    except (OSError, EOFError, wave.Error) as exc:
        raise DeviceUnavailable("microphone", f"cannot read {path} ({exc})", "give a readable WAV file") from None
    if len(data) == 0:
        raise DeviceUnavailable("microphone", f"{path} holds no samples", "give a WAV file with sound in it")
    if data.shape[1] != fmt.channels:
        data = np.repeat(data[:, :1], fmt.channels, axis=1)
    return np.ascontiguousarray(data, dtype=np.int16)
