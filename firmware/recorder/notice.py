"""Art. 4(2), all of it: a system that runs only when needed tells the person before it records.

Here that is one invariant — **nothing captured while the sign is not lit is ever stored** —
and the steps that lead to it:

- the notice starts by lighting the sign (and playing the announcement, if there is one);
- recording may begin only once the lamp has been *proven* lit (its read-back) for
  ``notice.delay`` seconds, and the announcement has finished;
- a lamp that does not light within ``health.sign_confirm`` is a fault, and nothing is recorded;
- the gate (:class:`NoticeGate`) admits a frame or a sample only if it was captured after the
  notice and while the sign had been lit continuously since; a sign found dark, even for a
  moment, shuts it for good;
- while idle, a read-back that reports the lamp lit though the sign is off is a fault too.

On-demand mode deliberately keeps no pre-roll: a buffer of the seconds before the press
would be recording before the notice.
"""

from __future__ import annotations

from firmware import clock
from firmware.hardware import AudioBlock, DeviceUnavailable, EncodedFrame


class NoticeGate:
    """The only door between capture and storage.

    A frame or sample passes only if the gate is open, its capture time lies in
    ``[from, until)``, and the sign has been lit continuously since before it was
    captured (``sign.lit_since_us``). The moment the sign is found dark — by the
    read-back's edge, or by a frame that arrives while it is dark — the gate shuts for
    good (until the state machine opens it again after a new, proven notice), so a lamp
    that flickers off and on never lets a frame captured in the dark through, however
    late the encoder delivers it.
    """

    def __init__(self, sign, *, on_video, on_audio, on_sign_lost):
        self._sign = sign
        self._on_video = on_video
        self._on_audio = on_audio
        self._on_sign_lost = on_sign_lost
        self._open = False
        self._from_us = 0
        self._until_us: int | None = None
        self.shut_at_us: int | None = None  # when the sign was last found dark
        self.frames_refused = 0
        sign.on_dark = self.sign_went_dark

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self, from_us: int) -> None:
        self._from_us, self._until_us, self.shut_at_us = from_us, None, None
        self._open = True

    def close(self, until_us: int) -> None:
        """Admit only what was captured before ``until_us`` (frames still in flight)."""
        self._until_us = until_us

    def shut(self) -> None:
        self._open = False

    def sign_went_dark(self) -> None:
        if self._open:
            self._open = False
            self.shut_at_us = clock.boottime_us()
            self._on_sign_lost()

    def _admits(self, time_us: int) -> bool:
        if not self._open or time_us < self._from_us:
            return False
        if self._until_us is not None and time_us >= self._until_us:
            return False
        lit_since = self._sign.lit_since_us
        if lit_since is None or lit_since > self._from_us:
            # Dark now, or dark at some moment since the notice: nothing more passes.
            self.sign_went_dark()
            return False
        return True

    def video(self, frame: EncodedFrame) -> None:
        if self._admits(frame.time_us):
            self._on_video(frame)
        else:
            self.frames_refused += 1

    def audio(self, block: AudioBlock) -> None:
        if not self._admits(max(block.time_us, self._from_us)):
            return
        # Trim the samples that fall outside [from, until).
        rate = block.samplerate
        lo = max(0, -(-(self._from_us - block.time_us) * rate // 1_000_000))
        hi = block.frames
        if self._until_us is not None:
            hi = min(hi, max(0, -(-(self._until_us - block.time_us) * rate // 1_000_000)))
        if hi <= lo:
            return
        if lo or hi < block.frames:
            block = AudioBlock(block.samples[lo:hi], block.time_us + lo * 1_000_000 // rate, rate)
        self._on_audio(block)


class Notice:
    """The notice before a recording, and the sign's checks around it. ``fault(device,
    message, blocking=…)`` is how it tells the state machine what went wrong."""

    def __init__(self, hardware, *, fault, on_video, on_audio, on_sign_lost):
        self.hw = hardware
        self.sign = hardware.sign
        self._fault = fault
        self.gate = NoticeGate(hardware.sign, on_video=on_video, on_audio=on_audio, on_sign_lost=on_sign_lost)
        self.sign_on_us: int | None = None  # when the sign was told to light
        self._delay_us = 0
        self._announcement_until_us = 0

    def light(self, now: int) -> None:
        """The notice begins: the sign is told to light."""
        self.sign.on()
        self.sign_on_us = now

    def announce(self, now: int, delay: float) -> float:
        """Start the announcement, if there is one; returns how long it lasts. The notice
        counts from when the lamp is proven lit, and lasts the announcement too."""
        announcement = 0.0
        if self.hw.announcement is not None and self.hw.speaker is not None:
            try:
                announcement = self.hw.speaker.play(*self.hw.announcement)
            except DeviceUnavailable as exc:
                self._fault("speaker", exc.one_line(), blocking=False)
        self._delay_us = round(delay * 1e6)
        self._announcement_until_us = now + round(announcement * 1e6)
        return announcement

    def roll_on(self) -> None:
        """A continuous recording rolls straight on: the sign never went out, nothing to wait for."""
        self._delay_us = self._announcement_until_us = 0

    def given(self, now: int, sign_confirm: float) -> bool | None:
        """Whether the notice has been given: ``True`` once the lamp has been proven lit for the
        delay and the announcement is over, ``None`` while it is not yet, ``False`` when the
        lamp did not light in time (a blocking fault, said here)."""
        lit = self.sign.lit_since_us
        if lit is None:
            if now - (self.sign_on_us or now) > sign_confirm * 1e6:
                self._fault("sign", "sign: the lamp did not light — check the lamp and its wiring", blocking=True)
                return False
            return None
        if now >= max(lit + self._delay_us, self._announcement_until_us):
            return True
        return None

    def check_idle(self, faults: dict, clear) -> None:
        """While idle: a read-back that says lit while the sign is off is miswired."""
        sign = self.sign
        if not sign.has_readback:
            return
        if sign.is_lit and not sign.is_commanded:
            self._fault("sign", "sign: the read-back reports the lamp lit while the sign is off — "
                                "check the optocoupler wiring", blocking=False)
        elif "sign" in faults and not faults["sign"].blocking and not sign.is_lit:
            clear("sign")

    def check_recording(self) -> None:
        """While recording: a dark lamp shuts the gate, even when no frame comes to notice it."""
        if self.sign.lit_since_us is None:
            self.gate.sign_went_dark()

    def put_out(self) -> None:
        self.sign.off()

    def over(self) -> None:
        """The notice is no longer running (the sign may stay lit in continuous mode)."""
        self.sign_on_us = None
