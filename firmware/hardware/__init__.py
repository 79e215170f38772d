"""The devices at the counter, each behind one small interface with a real and a simulated
backend: camera, microphone, sign, record button, status light, speaker.

``open_hardware(config, simulate=...)`` is the only place that chooses a backend.
This package imports nothing else of kiroku's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from gpiozero.exc import PinFactoryFallback

from firmware.hardware.camera import Camera, SimulatedCamera
from firmware.hardware.errors import DeviceFailed, DeviceMissing, DeviceUnavailable, HardwareError
from firmware.hardware.gpio import ButtonEvent, LightPattern, RecordButton, Sign, StatusLight
from firmware.hardware.late import LateCamera, LateMicrophone
from firmware.hardware.media import AudioBlock, AudioFormat, EncodedFrame, VideoFormat
from firmware.hardware.microphone import Microphone, SimulatedMicrophone
from firmware.hardware.speaker import SimulatedSpeaker, Speaker, chime, load_announcement

__all__ = [
    "AudioBlock", "AudioFormat", "ButtonEvent", "Camera", "DeviceFailed", "DeviceMissing", "DeviceUnavailable",
    "EncodedFrame",
    "Hardware", "HardwareError", "LightPattern", "Microphone", "RecordButton", "Sign", "Simulator", "Speaker",
    "StatusLight", "VideoFormat", "open_hardware",
]


class Simulator:
    """The hands of the virtual counter: the fake sensors' controls, nothing more.

    Pressing drives the button's mock pin low, exactly as the physical button pulls the
    GPIO to ground; everything after that is the real code path.
    """

    ACTIONS = (
        "press", "release", "camera_unplug", "camera_replug", "camera_stall", "camera_hang",
        "microphone_unplug", "microphone_replug", "microphone_stall", "lamp_fail", "lamp_repair", "lamp_flicker",
    )

    def __init__(self, *, button_pin, lamp, camera: SimulatedCamera, microphone: SimulatedMicrophone | None):
        self._button_pin = button_pin
        self._lamp = lamp
        self._camera = camera
        self._microphone = microphone

    # The mock pins, for tests that check what the hardware did on its own record.
    @property
    def button_pin(self):
        return self._button_pin

    @property
    def sign_pin(self):
        return self._lamp.pin

    @property
    def sign_readback_pin(self):
        return self._lamp.pin.input_pin

    def act(self, action: str) -> None:
        if action not in self.ACTIONS:
            raise ValueError(f"unknown simulator action {action!r} (one of {', '.join(self.ACTIONS)})")
        if action.startswith("microphone") and self._microphone is None:
            raise ValueError("the microphone is disabled in the configuration")
        getattr(self, action)()

    def press(self) -> None:
        self._button_pin.drive_low()

    def release(self) -> None:
        self._button_pin.drive_high()

    def camera_unplug(self) -> None:
        self._camera.unplug()

    def camera_replug(self) -> None:
        self._camera.replug()

    def camera_stall(self) -> None:
        self._camera.stall()

    def camera_hang(self) -> None:
        self._camera.hang()

    def microphone_unplug(self) -> None:
        self._microphone.unplug()

    def microphone_replug(self) -> None:
        self._microphone.replug()

    def microphone_stall(self) -> None:
        self._microphone.stall()

    def lamp_fail(self) -> None:
        self._lamp.fail()

    def lamp_repair(self) -> None:
        self._lamp.repair()

    def lamp_flicker(self) -> None:
        """Dark for 50 ms, then lit again: a loose contact."""
        self._lamp.flicker(0.05)


@dataclass
class Hardware:
    """The opened devices of one counter."""

    camera: Camera
    microphone: Microphone | None
    sign: Sign
    button: RecordButton
    status_light: StatusLight
    speaker: Speaker | None
    announcement: tuple | None = None  # (samples, samplerate) played at the start of the notice
    simulator: Simulator | None = None

    @property
    def simulated(self) -> bool:
        return self.simulator is not None

    def close(self) -> None:
        for device in (self.button, self.camera, self.microphone, self.speaker, self.status_light, self.sign):
            if device is not None:
                try:
                    device.close()
                except Exception:  # closing must go on for the other devices
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_hardware(config, *, simulate: bool) -> Hardware:
    """Open every device ``config`` names, on simulated or real backends.

    A real camera or microphone that is not connected becomes a :class:`LateCamera` or
    :class:`LateMicrophone` (the recorder shows the fault and keeps looking). Raises
    :class:`DeviceUnavailable` naming the first other device that is missing, or a library
    that is not installed; whatever was opened before it is closed again.
    """
    opened: list = []

    def keep(device):
        opened.append(device)
        return device

    cam, mic, gpio = config.camera, config.microphone, config.gpio
    video = VideoFormat(cam.width, cam.height, cam.framerate)
    audio = AudioFormat(mic.samplerate, mic.channels)
    readback = gpio.sign_readback or None
    try:
        if simulate:
            from firmware.hardware.gpio import simulated_pin_factory

            factory, lamp = simulated_pin_factory(sign=gpio.sign, readback=readback, status_light=gpio.status_light)
            camera = keep(SimulatedCamera(video, bitrate=cam.bitrate, keyframe_interval=cam.keyframe_interval))
            microphone = keep(SimulatedMicrophone(audio, wav_path=mic.simulated_wav or None)) if mic.enabled else None
            speaker = keep(SimulatedSpeaker())
        else:
            from firmware.hardware.picamera2_camera import PiCamera
            from firmware.hardware.sounddevice_microphone import SoundDeviceMicrophone
            from firmware.hardware.sounddevice_microphone import rescan as rescan_sound_cards
            from firmware.hardware.speaker import SoundDeviceSpeaker

            factory, lamp = None, None  # gpiozero's default: lgpio on a Pi
            def pi_camera():
                return PiCamera(video, bitrate=cam.bitrate, keyframe_interval=cam.keyframe_interval)

            try:
                camera = keep(pi_camera())
            except DeviceMissing as missing:  # the library is there, the camera is not: a fault to show
                camera = keep(LateCamera(pi_camera, missing, video, bitrate=cam.bitrate,
                                         keyframe_interval=cam.keyframe_interval))
            microphone = None
            if mic.enabled:
                def sound_card():
                    return SoundDeviceMicrophone(audio, device=mic.device or None)

                try:
                    microphone = keep(sound_card())
                except DeviceMissing as missing:  # PortAudio works, the microphone is not there
                    microphone = keep(LateMicrophone(sound_card, missing, audio, rescan=rescan_sound_cards))
            speaker = keep(SoundDeviceSpeaker()) if config.notice.announcement else None
        announcement = None
        if config.notice.announcement == "chime":
            announcement = (chime(), 48000)
        elif config.notice.announcement:
            announcement = load_announcement(config.notice.announcement)
        with warnings.catch_warnings():
            # gpiozero warns about each pin library it falls back from; the error says what matters.
            warnings.simplefilter("ignore", PinFactoryFallback)
            sign = keep(Sign(gpio.sign, readback=readback, active_high=gpio.sign_active_high, pin_factory=factory))
            light = keep(StatusLight(gpio.status_light, pin_factory=factory))
            button = keep(RecordButton(gpio.button, hold_time=config.button.long_press,
                                       debounce=config.button.debounce, pin_factory=factory))
    except BaseException:
        for device in reversed(opened):
            try:
                device.close()
            except Exception:
                pass
        raise
    simulator = None
    if simulate:
        simulator = Simulator(button_pin=button.pin, lamp=lamp, camera=camera, microphone=microphone)
    return Hardware(camera=camera, microphone=microphone, sign=sign, button=button, status_light=light,
                    speaker=speaker, announcement=announcement, simulator=simulator)
