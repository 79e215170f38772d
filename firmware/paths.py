"""Where a device's data lives: the data partition on a Pi, a local folder elsewhere."""

from __future__ import annotations

import os
import stat
import sys
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


def enter_shared_data_dir(data_dir: Path) -> str | None:
    """Make a command run by hand write into the data folder as the services do.

    On the appliance the folder belongs to the recorder's user and is shared with the web
    UI's through its group: set-group-ID, and both units run with ``UMask=0007``. A command
    run as root there would leave files neither service may change (a root-owned day key,
    a key folder the web UI cannot write in), so it is refused with what to run instead.
    Anyone else gets the units' umask, so what the command makes stays usable by the group.
    Returns the refusal, or None. A folder that is not shared this way is left alone.
    """
    try:
        st = os.stat(data_dir)
    except OSError:
        return None
    if not st.st_mode & stat.S_ISGID:
        return None
    if os.geteuid() == 0 and st.st_uid != 0:
        try:
            import pwd

            owner = pwd.getpwuid(st.st_uid).pw_name
        except (ImportError, KeyError):
            owner = str(st.st_uid)
        kiroku = Path(sys.executable).parent / "kiroku"  # the venv's: sudo's PATH does not have it
        command = kiroku if kiroku.exists() else "kiroku"
        return (f"{data_dir} belongs to {owner} and is shared with the web UI: do not run kiroku on it as root, "
                f"or the files it makes are unusable to the services; run it as that user: "
                f"sudo -u {owner} {command} …")
    os.umask(0o007)
    return None
