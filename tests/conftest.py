from __future__ import annotations

import sys
from pathlib import Path

import pytest

from firmware.config import Config
from firmware.hardware import open_hardware
from firmware.recorder import Recorder
from firmware.store import FolderStore

DOUBLES = Path(__file__).parent / "doubles"


def small_config(**sections) -> Config:
    """A configuration that records quickly on a 2-core machine: small frames, short segments."""
    base = {
        "camera": {"width": 640, "height": 360, "framerate": 15.0, "bitrate": 600_000, "keyframe_interval": 1.0},
        "notice": {"delay": 0.5},
        "recording": {"segment_seconds": 2.0},
        "button": {"long_press": 1.0, "debounce": 0.05},
        "health": {"camera_stall": 1.0, "microphone_stall": 1.0, "sign_confirm": 0.2, "camera_stop_timeout": 2.0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return Config().replace(**base)


@pytest.fixture
def config() -> Config:
    return small_config()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def hardware(config):
    hw = open_hardware(config, simulate=True)
    yield hw
    hw.close()


@pytest.fixture
def store(data_dir) -> FolderStore:
    return FolderStore(data_dir)


@pytest.fixture
def recorder(hardware, config, store, data_dir):
    rec = Recorder(hardware, config, store, data_dir=data_dir).start()
    yield rec
    rec.close()


@pytest.fixture
def picamera2_double(monkeypatch):
    """The picamera2 test double on sys.path, reset; removed again afterwards."""
    monkeypatch.syspath_prepend(str(DOUBLES))
    for name in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        monkeypatch.delitem(sys.modules, name)
    import picamera2

    picamera2.reset()
    yield picamera2
    for cam in picamera2.instances:
        if cam.started:
            picamera2.hang_on_stop = False
            cam.stop()
    for name in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        sys.modules.pop(name, None)


@pytest.fixture
def sounddevice_double(monkeypatch):
    monkeypatch.syspath_prepend(str(DOUBLES))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    import sounddevice

    sounddevice.reset()
    yield sounddevice
    for stream in sounddevice.streams:
        stream.close()
    sys.modules.pop("sounddevice", None)
