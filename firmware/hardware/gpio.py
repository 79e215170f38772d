"""The GPIO devices: the 「録画中」 sign, the record button and the status light.

Each is a thin layer over gpiozero and takes an injectable ``pin_factory``: the real
board uses gpiozero's default (lgpio on a Pi), the simulated one gpiozero's own
``MockFactory`` with the sign's lamp wired to its read-back input, so the virtual counter
drives the very pins and callbacks the physical button would.
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from typing import Callable

from firmware.hardware.errors import DeviceUnavailable
from firmware.hardware.media import boottime_us


def _gpio_error(device: str, pin, exc: Exception) -> DeviceUnavailable:
    from gpiozero.exc import BadPinFactory

    if isinstance(exc, BadPinFactory):
        return DeviceUnavailable(
            device, "no GPIO pin library found", "on a Raspberry Pi install python3-lgpio; elsewhere run with --simulate"
        )
    return DeviceUnavailable(device, f"pin {pin} is not usable ({exc})", "check the pin map in the config file")


class Sign:
    """The illuminated 「録画中」 sign on a GPIO output.

    With a ``readback`` input (an optocoupler across the lamp) the sign reports what the
    lamp really does; without one it reports what the output was told to do.
    ``lit_since_us`` is when the lamp last came on (media timebase), None while dark: a
    frame captured before it was captured in the dark. ``on_dark`` is called the moment
    the read-back drops while the sign is commanded on (on gpiozero's thread).
    """

    device = "sign"

    def __init__(self, pin, *, readback=None, active_high: bool = True, pin_factory=None):
        from gpiozero import DigitalInputDevice, DigitalOutputDevice

        try:
            self._out = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        except Exception as exc:
            raise _gpio_error("sign", pin, exc) from None
        self._readback = None
        self._lit_since: int | None = None
        self.on_dark: Callable[[], None] | None = None
        if readback is not None:
            try:
                self._readback = DigitalInputDevice(readback, pull_up=False, pin_factory=pin_factory)
            except Exception as exc:
                self._out.close()
                raise _gpio_error("sign read-back", readback, exc) from None
            self._readback.when_activated = self._lamp_lit
            self._readback.when_deactivated = self._lamp_dark

    def on(self) -> None:
        self._out.on()
        if self._readback is None or (self._readback.is_active and self._lit_since is None):
            self._lit_since = boottime_us()

    def off(self) -> None:
        self._lit_since = None
        self._out.off()

    def _lamp_lit(self) -> None:
        self._lit_since = boottime_us()

    def _lamp_dark(self) -> None:
        self._lit_since = None
        if self._out.is_active and self.on_dark is not None:
            self.on_dark()

    @property
    def is_commanded(self) -> bool:
        return bool(self._out.value)

    @property
    def is_lit(self) -> bool:
        if self._readback is not None:
            return bool(self._readback.is_active)
        return bool(self._out.is_active)

    @property
    def lit_since_us(self) -> int | None:
        since = self._lit_since
        return since if since is not None and self.is_lit else None

    @property
    def has_readback(self) -> bool:
        return self._readback is not None

    def close(self) -> None:
        for dev in (self._readback, self._out):
            if dev is not None:
                try:
                    dev.off() if dev is self._out else None
                finally:
                    dev.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ButtonEvent(Enum):
    PRESSED = "pressed"  # the press edge (debounced)
    RELEASED = "released"  # released before the long-press time
    HELD = "held"  # still pressed after the long-press time


class RecordButton:
    """The physical record button (to ground, with the Pi's pull-up).

    Reports debounced changes to one callback: PRESSED at the press, then either HELD
    (at ``hold_time``) or RELEASED. An edge that comes within ``debounce`` of the last
    accepted one is contact chatter: the pin is read again when the window closes, so
    a real release inside the window is never lost. gpiozero's own ``bounce_time`` is
    not used (its mock ignores it, so the behaviour could not be tested). Callbacks run
    on gpiozero's or a timer's thread and must only hand the event on.
    """

    device = "button"

    def __init__(self, pin, *, on_event: Callable[[ButtonEvent], None] | None = None, hold_time: float = 2.0,
                 debounce: float = 0.05, pin_factory=None):
        from gpiozero import Button

        try:
            self._button = Button(pin, pull_up=True, pin_factory=pin_factory)
        except Exception as exc:
            raise _gpio_error("button", pin, exc) from None
        self.on_event = on_event
        self._debounce = debounce
        self._hold_time = hold_time
        self._lock = threading.Lock()
        self._pressed = False
        self._held = False
        self._last_edge = -1e9
        self._settle_timer: threading.Timer | None = None
        self._hold_timer: threading.Timer | None = None
        self._button.when_pressed = self._edge
        self._button.when_released = self._edge

    @property
    def is_pressed(self) -> bool:
        return self._pressed

    @property
    def pin(self):
        return self._button.pin

    def _emit(self, event: ButtonEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _edge(self) -> None:
        with self._lock:
            wait = self._last_edge + self._debounce - time.monotonic()
            if wait > 0:
                if self._settle_timer is None:
                    self._settle_timer = _timer(wait, self._settle)
                return
        self._settle()

    def _settle(self) -> None:
        event = None
        with self._lock:
            self._settle_timer = None
            pressed = bool(self._button.is_pressed)
            if pressed == self._pressed:
                return
            self._pressed, self._last_edge = pressed, time.monotonic()
            if pressed:
                self._held = False
                self._hold_timer = _timer(self._hold_time, self._hold_elapsed)
                event = ButtonEvent.PRESSED
            else:
                if self._hold_timer is not None:
                    self._hold_timer.cancel()
                if not self._held:
                    event = ButtonEvent.RELEASED
        if event is not None:
            self._emit(event)

    def _hold_elapsed(self) -> None:
        with self._lock:
            if not self._pressed:
                return
            self._held = True
        self._emit(ButtonEvent.HELD)

    def close(self) -> None:
        for timer in (self._settle_timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._button.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _timer(seconds: float, fn) -> threading.Timer:
    timer = threading.Timer(seconds, fn)
    timer.daemon = True
    timer.start()
    return timer


class LightPattern(Enum):
    """What the status light says to the clerk at a glance."""

    OFF = "off"
    READY = "ready"  # dim and steady: powered, idle
    NOTICE = "notice"  # fast blink: the sign is on, recording is about to start
    RECORDING = "recording"  # fully on
    DEGRADED = "degraded"  # on with short gaps: recording, but a device has a fault
    FAULT = "fault"  # slow blink: not able to record


class StatusLight:
    """A PWM-driven LED showing the recorder's state as a :class:`LightPattern`."""

    device = "status light"

    def __init__(self, pin, *, pin_factory=None):
        from gpiozero import PWMLED

        try:
            self._led = PWMLED(pin, pin_factory=pin_factory)
        except Exception as exc:
            raise _gpio_error("status light", pin, exc) from None
        self.pattern = LightPattern.OFF

    def show(self, pattern: LightPattern) -> None:
        if pattern == self.pattern:
            return
        self.pattern = pattern
        led = self._led
        if pattern is LightPattern.OFF:
            led.off()
        elif pattern is LightPattern.READY:
            led.value = 0.15
        elif pattern is LightPattern.NOTICE:
            led.blink(on_time=0.1, off_time=0.1)
        elif pattern is LightPattern.RECORDING:
            led.on()
        elif pattern is LightPattern.DEGRADED:
            led.blink(on_time=0.9, off_time=0.1)
        elif pattern is LightPattern.FAULT:
            led.blink(on_time=0.5, off_time=0.5)

    @property
    def value(self) -> float:
        return float(self._led.value)

    def close(self) -> None:
        self._led.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def simulated_pin_factory(*, sign, readback, status_light):
    """gpiozero's MockFactory with the simulated sign lamp wired to its read-back input.

    Returns ``(factory, lamp)``: ``lamp.fail()`` and ``lamp.repair()`` break and mend the
    bulb, which is what the read-back then reports.
    """
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    # Every pin is a PWM-capable mock: the status light needs PWM, and MockFactory refuses
    # a pin whose class differs from its default.
    factory = MockFactory(pin_class=MockPWMPin)

    class LampPin(MockPWMPin):
        """The sign's output pin; its lamp drives the optocoupler on the read-back pin."""

        def __init__(self, factory, info, input_pin=None):
            super().__init__(factory, info)
            self.input_pin = input_pin
            self.lamp_ok = True
            self.light_delay = 0.0  # a lamp (or relay) that takes a moment to light
            self._timer = None

        def _change_state(self, value):
            changed = super()._change_state(value)
            self.sync()
            return changed

        def sync(self):
            if self.input_pin is None:
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._state and self.lamp_ok:
                if self.light_delay:
                    self._timer = _timer(self.light_delay, self._light)
                else:
                    self.input_pin.drive_high()
            else:
                self.input_pin.drive_low()

        def _light(self):
            if self._state and self.lamp_ok:
                self.input_pin.drive_high()

    class Lamp:
        def __init__(self, pin):
            self.pin = pin

        def fail(self):
            self.pin.lamp_ok = False
            self.pin.sync()

        def repair(self):
            self.pin.lamp_ok = True
            self.pin.sync()

        def flicker(self, seconds: float):
            """The lamp goes dark for a moment and comes back (a loose contact)."""
            self.fail()
            _timer(seconds, self.repair)

    input_pin = factory.pin(readback) if readback is not None else None
    lamp_pin = factory.pin(sign, pin_class=LampPin, input_pin=input_pin)
    return factory, Lamp(lamp_pin)
