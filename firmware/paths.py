"""Where a device's data lives: the data partition on a Pi, a local folder elsewhere."""

from __future__ import annotations

from pathlib import Path

PI_DATA_DIR = Path("/var/lib/kiroku")


def is_raspberry_pi() -> bool:
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


def default_data_dir() -> Path:
    return PI_DATA_DIR if is_raspberry_pi() else Path("data")


def config_file(data_dir: Path, explicit: str | None) -> Path | None:
    """``--config`` if given, else ``<data>/kiroku.toml`` if it exists, else None (defaults)."""
    if explicit:
        return Path(explicit)
    candidate = Path(data_dir) / "kiroku.toml"
    return candidate if candidate.exists() else None
