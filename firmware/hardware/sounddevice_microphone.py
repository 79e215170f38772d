"""A USB or I2S microphone through sounddevice (PortAudio).

sounddevice needs the PortAudio shared library; without it the import itself raises
``OSError``, and with no sound card opening a stream raises ``PortAudioError``. Both
become one line that names the microphone and what to check. The callback copies the
block and stamps it; it never blocks (PortAudio calls it on its real-time thread).
"""

from __future__ import annotations

from firmware.hardware.errors import DeviceMissing, DeviceUnavailable
from firmware.hardware.media import AudioBlock, AudioFormat, AudioSink, boottime_us
from firmware.hardware.microphone import AudioClock, Microphone

_CHECK = "check that the microphone is plugged in and that `arecord -l` lists it (I2S: the overlay in config.txt)"


def _import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # PortAudio's shared library is missing
        raise DeviceUnavailable("microphone", f"PortAudio is not installed ({exc})", "apt install libportaudio2") from None
    except ImportError as exc:
        raise DeviceUnavailable("microphone", f"sounddevice is not installed ({exc})", "pip install sounddevice") from None
    return sounddevice


def rescan(sd=None) -> None:
    """Make PortAudio enumerate the sound cards again (see ``SoundDeviceMicrophone.reset``)."""
    sd = sd or _import_sounddevice()
    terminate = getattr(sd, "_terminate", None)
    initialize = getattr(sd, "_initialize", None)
    if terminate is not None and initialize is not None:
        terminate()
        initialize()


class SoundDeviceMicrophone(Microphone):
    backend = "sounddevice"

    def __init__(self, fmt: AudioFormat, *, blocksize: int = 1024, device: str | int | None = None):
        super().__init__(fmt, blocksize=blocksize)
        self._sd = _import_sounddevice()
        if isinstance(device, str) and device.isdigit():
            device = int(device)  # an index; sounddevice would take "1" as part of a name
        self._device = device if device not in ("", None) else None
        self._stream = None
        self.audio_clock = AudioClock(fmt.samplerate)
        self.statuses: list[str] = []
        info = self._find_device()
        self.name = str(info.get("name", "?")) if isinstance(info, dict) else "?"

    def _find_device(self):
        try:
            return self._sd.query_devices(self._device, "input")
        except (self._sd.PortAudioError, ValueError) as exc:
            what = "no audio input device found" if self._device is None else f"input device {self._device!r} not found"
            raise DeviceMissing("microphone", f"{what} ({exc})", _CHECK) from None

    def start(self, sink: AudioSink) -> None:
        if self._running:
            raise RuntimeError("microphone already started")
        self._find_device()  # a card that went away says so, rather than "could not start"
        self.audio_clock.reset()
        rate = self.format.samplerate

        def callback(indata, frames, time, status):
            now = boottime_us()
            if status:
                self.overflows += bool(status.input_overflow)
                self.statuses.append(str(status))
            adc = getattr(time, "inputBufferAdcTime", 0.0)
            current = getattr(time, "currentTime", 0.0)
            if adc and current:
                measured = now - round((current - adc) * 1e6)
            else:  # some host APIs leave the timestamps at zero
                measured = now - frames * 1_000_000 // rate
            sink(AudioBlock(indata.copy(), self.audio_clock.stamp(measured, frames), rate))

        try:
            stream = self._sd.InputStream(
                samplerate=rate,
                blocksize=self.blocksize,
                device=self._device,
                channels=self.format.channels,
                dtype="int16",
                callback=callback,
            )
            stream.start()
        except (self._sd.PortAudioError, ValueError) as exc:
            raise DeviceUnavailable("microphone", f"could not start ({exc})", _CHECK) from None
        self._stream = stream
        self._running = True

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        self._running = False
        if stream is not None:
            try:
                stream.abort()
            finally:
                stream.close()

    def reset(self) -> None:
        """Make PortAudio look for sound cards again (after one vanished or came back).

        PortAudio enumerates devices once, when it is initialised; sounddevice exposes no
        public way to redo that, so this uses its ``_terminate``/``_initialize`` pair
        (stable since 2015). Any other stream, e.g. an announcement playing, is ended.
        """
        rescan(self._sd)

    @property
    def is_active(self) -> bool:
        """False once PortAudio ended the stream on its own (the device went away)."""
        stream = self._stream
        return bool(stream is not None and stream.active)
