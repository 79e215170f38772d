"""A faithful test double of the parts of python-sounddevice kiroku uses (see README.md).

As in src/sounddevice.py: ``query_devices(device, kind)`` raises ``PortAudioError("Error
querying device -1")`` when there is no default device and ``ValueError`` for a name that
matches nothing; ``InputStream(...)`` calls ``callback(indata, frames, time, status)`` on
its own thread with an int16 array of shape (frames, channels), ``time`` carrying
``inputBufferAdcTime`` and ``currentTime`` on the stream's clock (whose origin is
unspecified — here wall-clock time, as PortAudio's ALSA back end uses), and ``status`` a
``CallbackFlags``.
"""

from __future__ import annotations

import threading
import time as _time
from types import SimpleNamespace

import numpy as np

# Test controls -------------------------------------------------------------------------
_USB_MIC = {"name": "USB PnP Sound Device: Audio (hw:1,0)", "index": 0, "hostapi": 0,
            "max_input_channels": 1, "max_output_channels": 0, "default_samplerate": 48000.0}
hardware = [dict(_USB_MIC)]  # what is plugged in right now
# What PortAudio enumerated when it was initialised: like the real library, the device list
# is a snapshot that only _terminate() + _initialize() refresh (python-sounddevice #125).
devices = [dict(_USB_MIC)]
adc_latency = 0.010  # seconds between capture of a block's first sample... and its callback, beyond the block
rate_error = 0.0  # the card's sample clock runs this fraction fast (0.01 = 1 % fast)
overflow_every = 0  # report input_overflow on every n-th callback
streams: list = []


def reset() -> None:
    global adc_latency, rate_error, overflow_every
    hardware[:] = [dict(_USB_MIC)]
    devices[:] = [dict(_USB_MIC)]
    adc_latency, rate_error, overflow_every = 0.010, 0.0, 0
    streams.clear()


def unplug_all() -> None:
    """The sound card goes away: running streams stop calling back, as PortAudio's ALSA
    back end does; the enumerated device list still shows it until re-initialisation."""
    hardware.clear()
    for stream in streams:
        stream._vanish()


def plug_in() -> None:
    hardware[:] = [dict(_USB_MIC)]


def _terminate() -> None:
    devices.clear()


def _initialize() -> None:
    devices[:] = [dict(d) for d in hardware]


class PortAudioError(Exception):
    pass


class CallbackFlags:
    def __init__(self, flags=0x0):
        self._flags = flags

    @property
    def input_overflow(self):
        return bool(self._flags & 2)

    def __bool__(self):
        return bool(self._flags)

    def __str__(self):
        return "input overflow" if self.input_overflow else ""


def query_devices(device=None, kind=None):
    if kind not in ("input", "output", None):
        raise ValueError(f"Invalid kind: {kind!r}")
    candidates = [d for d in devices if not kind or d[f"max_{kind}_channels"] > 0]
    if device is None:
        if not candidates:
            raise PortAudioError("Error querying device -1")
        return dict(candidates[0])
    if isinstance(device, int):
        for d in candidates:
            if d["index"] == device:
                return dict(d)
        raise PortAudioError(f"Error querying device {device}")
    matches = [d for d in candidates if str(device).lower() in d["name"].lower()]
    if not matches:
        raise ValueError(f"No {kind or 'input/output'} device matching {device!r}")
    return dict(matches[0])


class InputStream:
    def __init__(self, samplerate=None, blocksize=None, device=None, channels=None, dtype=None, latency=None,
                 extra_settings=None, callback=None, finished_callback=None, clip_off=None, dither_off=None,
                 never_drop_input=None, prime_output_buffers_using_stream_callback=None):
        info = query_devices(device, "input")  # the real one fails here too
        if channels and channels > info["max_input_channels"]:
            raise PortAudioError("Error opening InputStream: Invalid number of channels [PaErrorCode -9998]")
        self.samplerate = float(samplerate or info["default_samplerate"])
        self.blocksize = blocksize or 512
        self.channels = channels or 1
        self.dtype = dtype or "float32"
        self._callback = callback
        self._device_name = info["name"]
        self._thread = None
        self._stop = threading.Event()
        self._active = False
        self.closed = False
        streams.append(self)

    @property
    def active(self):
        return self._active

    @property
    def time(self):
        return _time.time()

    def start(self):
        if self.closed:
            raise PortAudioError("Error starting stream: Stream is closed")
        if not any(d["name"] == self._device_name for d in hardware):
            raise PortAudioError("Error starting stream: Unanticipated host error [PaErrorCode -9999]")
        self._stop.clear()
        self._active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        n = self.blocksize
        true_rate = self.samplerate * (1 + rate_error)
        start = _time.monotonic()
        done = 0
        calls = 0
        while not self._stop.is_set():
            due = start + (done + n) / true_rate + adc_latency
            delay = due - _time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._stop.is_set():
                break
            now_stream = self.time
            first_capture = start + done / true_rate
            adc = now_stream - (_time.monotonic() - first_capture)
            indata = np.zeros((n, self.channels), dtype=np.int16)
            indata[:, 0] = (np.arange(done, done + n) % 100).astype(np.int16)
            calls += 1
            flags = 2 if overflow_every and calls % overflow_every == 0 else 0
            self._callback(indata, n, SimpleNamespace(inputBufferAdcTime=adc, currentTime=now_stream,
                                                      outputBufferDacTime=0.0), CallbackFlags(flags))
            done += n
        self._active = False

    def _vanish(self):
        self._stop.set()

    def stop(self, ignore_errors=True):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._active = False

    def abort(self, ignore_errors=True):
        self.stop()

    def close(self, ignore_errors=True):
        self.stop()
        self.closed = True


def play(data, samplerate=None, mapping=None, blocking=False, loop=False, device=None, **kwargs):
    query_devices(device, "output")
