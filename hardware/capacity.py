"""Capacity sizing: how many days of footage an SD card holds, against the 90-day minimum.

    python hardware/capacity.py            # the Markdown table hardware/README.md shows

The figures come from the firmware's own defaults (firmware/default-config.toml), so the
table changes when they do: the camera's bitrate, the microphone's AAC, the segment
container's overhead, the reserve, and the high-water mark above which the vault
overwrites the oldest expired footage.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware.config import Config  # noqa: E402

GB = 10**9  # cards are sold in decimal gigabytes
CARDS_GB = (64, 128, 256, 512, 1000, 2000)  # SD cards; 1 and 2 TB: an SSD (NVMe on a Pi 5, USB 3 on a Pi 4)
SUGGESTED_BITRATE = 1_500_000  # 720p of a counter (a still scene, faces at 1–2 m) stays legible at this rate
HOURS_PER_DAY = (1, 2, 4, 8, 12)
SYSTEM_GB = 7.0  # boot (0.5 GB) + root (6 GB: image-build/rpi-image-gen/config) + rounding
AUDIO_BITS = 64_000  # AAC, mono speech (firmware/media/segmenter.py)
CONTAINER_OVERHEAD = 0.02  # fragmented-MP4 boxes and age's 16 bytes per 64 KiB, measured on stored segments


def bytes_per_second(config: Config) -> float:
    bits = config.camera.bitrate + (AUDIO_BITS if config.microphone.enabled else 0)
    return bits / 8 * (1 + CONTAINER_OVERHEAD)


def days(card_gb: float, hours_per_day: float, config: Config) -> float:
    r = config.retention
    usable = (card_gb - SYSTEM_GB) * GB - r.reserve_mb * 10**6
    return usable * r.high_water / (bytes_per_second(config) * hours_per_day * 3600)


def table(config: Config | None = None) -> str:
    config = config or Config()
    minimum = config.retention.footage_min_days
    rate = bytes_per_second(config)
    lines = [
        f"Days of footage at {config.camera.width}×{config.camera.height}, {config.camera.bitrate / 1e6:g} Mbit/s "
        f"video + {AUDIO_BITS // 1000} kbit/s audio (≈ {rate * 3600 / GB:.2f} GB per recorded hour), "
        f"after {SYSTEM_GB:g} GB for the system, a {config.retention.reserve_mb} MB reserve and overwriting "
        f"from {config.retention.high_water:.0%} full. **Bold**: at least the {minimum}-day minimum (Art. 6(2)); "
        "— : less, so the vault would refuse to overwrite too-young footage and stop recording.",
        "",
        "| card | " + " | ".join(f"{h} h/day" for h in HOURS_PER_DAY) + " |",
        "|---|" + "---|" * len(HOURS_PER_DAY),
    ]
    for card in CARDS_GB:
        cells = []
        for h in HOURS_PER_DAY:
            d = days(card, h, config)
            cells.append(f"**{d:.0f}**" if d >= minimum else f"— ({d:.0f})")
        name = f"{card // 1000} TB SSD" if card >= 1000 else f"{card} GB"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables() -> str:
    """The default bitrate, and the suggested lower one (``[camera] bitrate`` in kiroku.toml)."""
    default = Config()
    lower = default.replace(camera={"bitrate": SUGGESTED_BITRATE})
    return table(default) + "\n" + table(lower)


if __name__ == "__main__":
    print(tables(), end="")
