from __future__ import annotations

import sys
from pathlib import Path

import pytest

from firmware.config import Config
from firmware.hardware import open_hardware
from firmware.recorder import Recorder
from firmware.vault import Vault
from firmware.vault.age import X25519Identity
from firmware.vault.setup import init
from tests.helpers import Footage

DOUBLES = Path(__file__).parent / "doubles"
pytest_plugins = ["tests.engines"]  # the hub's real servers: PostgreSQL and Mosquitto, once per session


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """make test runs the suite on several pytest-xdist workers, --dist loadgroup: tests marked
    ``xdist_group`` share something (a live capture on lo) and must run on one worker, one after
    another. pytest-xdist says which group a test is in by adding it to the test's id, on each
    worker; where that silently stops working (pytest 9.2, pytest-xdist issue #1386) the tests
    would run side by side. Refuse that rather than let them fail by chance."""
    if not getattr(config.option, "loadgroup", False) or not hasattr(config, "workerinput"):
        return
    ungrouped = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if ungrouped:
        message = (f"pytest-xdist's --dist loadgroup does not group tests with pytest {pytest.__version__} (see "
                   f"pyproject.toml's test extra): {ungrouped[0]} would run beside the rest of its group")
        print(message, file=sys.__stderr__, flush=True)  # a worker's error alone never reaches the terminal
        raise pytest.UsageError(message)


# A test of a stalled or unplugged device asks for these, to be told within a second. The rest
# keep the product's thresholds (seconds): on a loaded machine a simulated camera can fall a
# second behind, and a test of what was recorded must not see the restart that would cause.
QUICK_STALLS = {"camera_stall": 1.0, "microphone_stall": 1.0}


def small_config(**sections) -> Config:
    """A configuration that records quickly on a 2-core machine: small frames, short segments."""
    base = {
        "camera": {"width": 640, "height": 360, "framerate": 15.0, "bitrate": 600_000, "keyframe_interval": 1.0},
        "notice": {"delay": 0.5},
        "recording": {"segment_seconds": 2.0},
        "button": {"long_press": 1.0, "debounce": 0.05},
        "health": {"sign_confirm": 0.2, "camera_stop_timeout": 2.0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return Config().replace(**base)


def config_toml(*, notice_delay: float = 0.5, segment_seconds: float = 2.0, extra: str = "") -> str:
    """The same small configuration as ``small_config``, as a recorder process reads it from a file."""
    return (f"[camera]\nwidth = 640\nheight = 360\nframerate = 15.0\nbitrate = 600000\n"
            f"[notice]\ndelay = {notice_delay}\n[recording]\nsegment_seconds = {segment_seconds}\n{extra}")


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


def set_up(data_dir: Path, *, manager: str | None = None, passphrase: str | None = None) -> X25519Identity:
    """`kiroku init` for tests; returns the recovery identity (read back from the file it wrote)."""
    out = data_dir.parent / f"{data_dir.name}-recovery.txt"
    init(data_dir, device="counter-1", recovery_out=out, manager=manager, passphrase=passphrase, work_factor=10)
    return recovery_identity(out)


def recovery_identity(path: Path) -> X25519Identity:
    return X25519Identity.parse(next(line for line in path.read_text().splitlines()
                                     if line.startswith("AGE-SECRET-KEY-")))


@pytest.fixture
def recovery(data_dir) -> X25519Identity:
    return set_up(data_dir)


@pytest.fixture
def vault(data_dir, config, recovery):
    v = Vault.open(data_dir, config)
    yield v
    v.close()


@pytest.fixture
def store(vault):
    """Kept for readability in tests: the recorder's store is the vault."""
    return vault


@pytest.fixture
def footage(vault, recovery) -> Footage:
    return Footage(vault, recovery)


@pytest.fixture
def recorder(hardware, config, vault):
    rec = Recorder(hardware, config, vault).start()
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

