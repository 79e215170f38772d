"""The appliance's configuration: validated once, immutable, every field defaulted and bounded.

The file is TOML (``kiroku.toml`` in the data folder, or ``--config``). Unknown keys are
refused with their location, so a typo never silently leaves a default in force. The
shipped, commented ``default-config.toml`` holds exactly the defaults below (a test
checks that).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.regulation import RecordClass


class ConfigError(ValueError):
    """The configuration file is unreadable or holds a value outside its bounds."""


def _f(default, *, lo=None, hi=None, choices=None, pattern=None, doc=""):
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "pattern": pattern, "doc": doc})


@dataclass(frozen=True)
class DeviceConfig:
    id: str = _f("counter-1", pattern=r"[a-z0-9][a-z0-9-]{0,31}", doc="short name of this counter")
    location: str = _f("", doc="where the device is mounted, as the public notice names it")
    mode: str = _f("on_demand", choices=("on_demand", "continuous"))
    kind: str = _f("counter", choices=("counter", "calls"),
                   doc='"counter": a camera at a counter (kiroku recorder); '
                       '"calls": the call recorder on the PBX trunk')


@dataclass(frozen=True)
class PublicConfig:
    """What the counter sign and the public notice say (Art. 4(1)); ``kiroku notice`` prints them."""
    city: str = _f("一宮市", doc="the city, as the notice names it")
    purpose: str = _f("行政サービスの質を確保し、職員に対する不当な圧力を排除するため",
                      doc="why the counter is recorded (Art. 1), as the notice states it")
    manager: str = _f("財務部資産経営課長", doc="the manager's title (Art. 5(1)), whom the public may ask")
    contact: str = _f("", doc="the manager's telephone or mail address, printed on the sign")
    url: str = _f("", pattern=r"(https://\S{1,200})?", doc="the city's notice page: the sign's QR code points there")


@dataclass(frozen=True)
class NoticeConfig:
    delay: float = _f(2.0, lo=0.5, hi=30.0, doc="seconds the sign is lit before anything is stored")
    announcement: str = _f("", doc='"" for none, "chime", or the path of a WAV file')


@dataclass(frozen=True)
class RecordingConfig:
    segment_seconds: float = _f(4.0, lo=1.0, hi=30.0)
    max_minutes: float = _f(120.0, lo=0.0, hi=1440.0, doc="stop an on-demand recording after this long; 0 = never")


@dataclass(frozen=True)
class CameraConfig:
    width: int = _f(1280, lo=160, hi=1920)
    height: int = _f(720, lo=120, hi=1080)
    framerate: float = _f(30.0, lo=5.0, hi=60.0)
    bitrate: int = _f(4_000_000, lo=100_000, hi=20_000_000)
    keyframe_interval: float = _f(1.0, lo=0.2, hi=4.0)


@dataclass(frozen=True)
class MicrophoneConfig:
    enabled: bool = _f(True)
    samplerate: int = _f(48000, choices=(16000, 32000, 44100, 48000))
    channels: int = _f(1, lo=1, hi=2)
    device: str = _f("", doc="PortAudio device name or index; empty = the default input")
    simulated_wav: str = _f("", doc="simulated hardware only: a WAV file to loop instead of the test tone")


@dataclass(frozen=True)
class GpioConfig:
    button: str = _f("GPIO17", pattern=r"GPIO\d{1,2}")
    sign: str = _f("GPIO27", pattern=r"GPIO\d{1,2}")
    sign_readback: str = _f("GPIO22", pattern=r"(GPIO\d{1,2})?", doc='optocoupler across the lamp; "" if not fitted')
    sign_active_high: bool = _f(True)
    status_light: str = _f("GPIO23", pattern=r"GPIO\d{1,2}")


@dataclass(frozen=True)
class ButtonConfig:
    long_press: float = _f(2.0, lo=0.5, hi=10.0)
    debounce: float = _f(0.05, lo=0.0, hi=0.5)


@dataclass(frozen=True)
class HealthConfig:
    camera_stall: float = _f(3.0, lo=0.5, hi=30.0, doc="seconds without a frame before the camera is restarted")
    microphone_stall: float = _f(2.0, lo=0.5, hi=30.0)
    sign_confirm: float = _f(0.5, lo=0.05, hi=5.0, doc="seconds for the read-back to confirm the lamp is lit")
    restart_attempts: int = _f(3, lo=0, hi=10)
    camera_stop_timeout: float = _f(5.0, lo=0.5, hi=60.0, doc="a camera that takes longer to stop is hung")


@dataclass(frozen=True)
class RetentionConfig:
    # Art. 6(2): footage at least 3 months, calls at least 1 year. Upward only.
    footage_min_days: int = _f(90, lo=90, hi=3650)
    call_min_days: int = _f(365, lo=365, hi=3650)
    footage_max_days: int = _f(0, lo=0, hi=3650, doc="erase footage older than this even with space left; 0 = no limit")
    call_max_days: int = _f(0, lo=0, hi=3650)
    capacity_mb: int = _f(0, lo=0, hi=10_000_000, doc="space the vault may use; 0 = the whole data partition")
    reserve_mb: int = _f(256, lo=16, hi=100_000, doc="always left free for the database and the system")
    high_water: float = _f(0.90, lo=0.5, hi=0.99, doc="start overwriting above this share of the capacity")
    low_water: float = _f(0.85, lo=0.4, hi=0.98, doc="overwrite down to this share")
    warn_margin_days: int = _f(14, lo=0, hi=365)
    hours_per_day: float = _f(2.0, lo=0.1, hi=24.0, doc="expected recording hours a day, until there is history")
    require_clock_sync: bool = _f(True, doc="never overwrite while the wall clock is not synchronised")


@dataclass(frozen=True)
class CallsConfig:
    """The call recorder (``kiroku call-recorder``): the PBX trunk's mirror port."""

    interface: str = _f("", pattern=r"([A-Za-z0-9._-]{1,15})?", doc="the capture interface wired to the mirror port")
    trunk: str = _f("", pattern=r"(\[?[0-9A-Za-z.:-]{1,253}\]?(:\d{1,5})?)?"
                              r"(,\[?[0-9A-Za-z.:-]{1,253}\]?(:\d{1,5})?)*",
                    doc="the carrier side's SIP address, HOST or HOST:PORT, several comma-separated: calls from"
                        " it are inbound")
    outside_line_prefix: str = _f("", pattern=r"[0-9]?", doc="the PBX's outside-line digit, if it reaches the trunk")
    segment_seconds: float = _f(10.0, lo=2.0, hi=60.0, doc="a power cut loses at most this much of a call")
    bitrate: int = _f(32_000, lo=24_000, hi=128_000, doc="AAC, both sides together: 14.4 MB an hour at 32 kbit/s")
    jitter_window: float = _f(0.5, lo=0.1, hi=3.0, doc="seconds a late RTP packet is still put in its place")
    office_hours: str = _f("08:30-17:15", pattern=r"(\d\d:\d\d-\d\d:\d\d)?",
                           doc='when the trunk is expected to carry calls; "" turns the silence watchdog off')
    office_days: str = _f("mon,tue,wed,thu,fri", pattern=r"((mon|tue|wed|thu|fri|sat|sun),?)*")
    silence_minutes: int = _f(60, lo=5, hi=1440, doc="no SIP on the trunk this long in office hours is a fault")
    idle_timeout: int = _f(900, lo=60, hi=86400, doc="an answered call with no SIP or RTP this long has ended")
    # Art. 3: the manager decides which telephones are recorded (firmware/calls/numbers.py Lines).
    recorded_lines: str = _f("", pattern=r"[0-9０-９+＋()（）\- ,、]{0,2000}",
                             doc='the city\'s numbers whose calls are recorded, comma-separated; "" records every'
                                 " line but those excluded")
    excluded_lines: str = _f("", pattern=r"[0-9０-９+＋()（）\- ,、]{0,2000}",
                             doc="the city's numbers never recorded (a consultation line), comma-separated: a call on"
                                 " one leaves no audio and no numbers, only a count")


@dataclass(frozen=True)
class WebConfig:
    host: str = _f("127.0.0.1")
    port: int = _f(8080, lo=1, hi=65535)
    hostnames: str = _f("", doc="other names the admin page is reached by, comma-separated")


@dataclass(frozen=True)
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    notice: NoticeConfig = field(default_factory=NoticeConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    button: ButtonConfig = field(default_factory=ButtonConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    public: PublicConfig = field(default_factory=PublicConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    web: WebConfig = field(default_factory=WebConfig)

    @property
    def record_class(self) -> str:
        """What this device records: footage at a counter, calls on the PBX's device."""
        return "call" if self.device.kind == "calls" else "footage"

    @property
    def bytes_per_second(self) -> float:
        """What one second of recording takes, before there is history to measure it."""
        return self.calls.bitrate / 8 if self.device.kind == "calls" else (self.camera.bitrate + 128_000) / 8

    def reloaded(self, new: "Config") -> tuple["Config", list[str]]:
        """What a running recorder takes of ``new`` at once, and the sections that wait for a
        restart. The notice delay, recording and retention are safe to change at any moment:
        they are read afresh at the next notice, segment, tick or sweep."""
        applied = dataclasses.replace(self, notice=dataclasses.replace(self.notice, delay=new.notice.delay),
                                      recording=new.recording, retention=new.retention)
        pending = [name for name in ("device", "camera", "microphone", "gpio", "button", "health", "web")
                   if getattr(new, name) != getattr(self, name)]
        if new.notice.announcement != self.notice.announcement:
            pending.append("notice.announcement")
        return applied, pending

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some fields changed, validated like a file: ``replace(camera={"width": 640})``."""
        merged = {s.name: dict(dataclasses.asdict(getattr(self, s.name))) for s in dataclasses.fields(self)}
        for name, values in sections.items():
            if name not in merged:
                raise ConfigError(f"unknown section [{name}]")
            merged[name].update(values)
        return from_dict(merged, source="<override>")


def _check(value: Any, f: dataclasses.Field, where: str) -> Any:
    expected = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float, "bool": bool}[f.type]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {value!r}")
    if expected is float and value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}: {value!r} is not a number")
    meta = f.metadata
    if meta.get("lo") is not None and value < meta["lo"] or meta.get("hi") is not None and value > meta["hi"]:
        raise ConfigError(f"{where}: {value!r} is outside {meta['lo']}…{meta['hi']}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        raise ConfigError(f"{where}: {value!r} does not match {meta['pattern']}")
    return value


setting = _f  # a bounded, documented field of a configuration section (the hub's configuration uses it too)


def sections_from_dict(root: type, data: dict[str, Any], *, source: str) -> Any:
    """``root`` (a dataclass of section dataclasses, like :class:`Config`) from a parsed TOML
    file: unknown sections and keys refused with their location, every value checked
    against its field's type and bounds."""
    sections = {}
    known = {s.name: s for s in dataclasses.fields(root)}
    for name, values in data.items():
        if name not in known:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(known)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        cls = known[name].default_factory  # type: ignore[misc]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"{source}: unknown key {name}.{key} (known: {', '.join(fields)})")
            kwargs[key] = _check(value, fields[key], f"{source}: {name}.{key}")
        sections[name] = cls(**kwargs)
    return root(**sections)


def from_dict(data: dict[str, Any], *, source: str = "<config>") -> Config:
    config = sections_from_dict(Config, data, source=source)
    if config.camera.width % 2 or config.camera.height % 2:
        raise ConfigError(f"{source}: camera.width and camera.height must be even")
    if config.recording.segment_seconds < config.camera.keyframe_interval:
        raise ConfigError(f"{source}: recording.segment_seconds must be at least camera.keyframe_interval")
    r = config.retention
    for cls in RecordClass:
        low, high = getattr(r, f"{cls}_min_days"), getattr(r, f"{cls}_max_days")
        if high and high < low:
            raise ConfigError(f"{source}: retention.{cls}_max_days must be 0 or at least {cls}_min_days ({low})")
    if r.low_water >= r.high_water:
        raise ConfigError(f"{source}: retention.low_water must be below retention.high_water")
    return config


def load(path: Path | str | None) -> Config:
    """The configuration in ``path``; the defaults when ``path`` is None."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return from_dict(data, source=str(path))


DEFAULT_FILE = Path(__file__).with_name("default-config.toml")
