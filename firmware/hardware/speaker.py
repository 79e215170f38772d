"""The speaker for the optional spoken announcement before recording starts (Art. 4(2)).

``play`` returns at once with the announcement's length, so the recorder can keep the
notice phase at least that long; playback itself runs on the audio system's thread.
"""

from __future__ import annotations

import threading
import wave

import numpy as np

from firmware.hardware.errors import DeviceUnavailable
from firmware.hardware.media import boottime_us


def load_announcement(path: str) -> tuple[np.ndarray, int]:
    """A WAV file as (int16 samples × channels, samplerate), or a clear error."""
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2:
                raise DeviceUnavailable("speaker", f"{path} is not 16-bit PCM", "convert it: ffmpeg -i IN -c:a pcm_s16le OUT.wav")
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
            return data.copy(), w.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise DeviceUnavailable("speaker", f"cannot read the announcement {path} ({exc})", "set notice.announcement to a WAV file") from None


def chime(samplerate: int = 48000) -> np.ndarray:
    """A two-tone chime (ピンポン), used when no announcement file is configured."""
    t = np.arange(int(0.45 * samplerate)) / samplerate
    tone = np.concatenate([np.sin(2 * np.pi * 880 * t), np.sin(2 * np.pi * 698.5 * t)])
    envelope = np.exp(-np.concatenate([t, t]) * 5)
    return (tone * envelope * 0.4 * 32767).astype(np.int16)[:, None]


class Speaker:
    device = "speaker"
    backend = "?"

    def play(self, samples: np.ndarray, samplerate: int) -> float:
        """Start playing; returns the duration in seconds."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SimulatedSpeaker(Speaker):
    """Keeps a log of what was played and when, as a listener at the counter would notice."""

    backend = "simulated"

    def __init__(self, clock=None):
        self._clock = clock or boottime_us
        self.played: list[tuple[int, float]] = []  # (start boottime µs, seconds)
        self._lock = threading.Lock()

    def play(self, samples: np.ndarray, samplerate: int) -> float:
        duration = len(samples) / samplerate
        with self._lock:
            self.played.append((self._clock(), duration))
        return duration


class SoundDeviceSpeaker(Speaker):
    backend = "sounddevice"

    def __init__(self, device: str | int | None = None):
        try:
            import sounddevice
        except OSError as exc:
            raise DeviceUnavailable("speaker", f"PortAudio is not installed ({exc})", "apt install libportaudio2") from None
        self._sd = sounddevice
        self._device = device if device not in ("", None) else None
        try:
            sounddevice.query_devices(self._device, "output")
        except (sounddevice.PortAudioError, ValueError) as exc:
            raise DeviceUnavailable(
                "speaker", f"no audio output device ({exc})", "check the speaker, or set notice.announcement = \"\""
            ) from None

    def play(self, samples: np.ndarray, samplerate: int) -> float:
        try:
            self._sd.play(samples, samplerate, device=self._device)
        except self._sd.PortAudioError as exc:
            raise DeviceUnavailable("speaker", f"could not play ({exc})", "check the speaker") from None
        return len(samples) / samplerate
