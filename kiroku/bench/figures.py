"""The figures ``kiroku bench`` reports, how they are summarised and printed, and the
process measurements several stages share."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    spread: list[float] = field(default_factory=list)
    note: str = ""


def median(samples: list[float]) -> tuple[float, list[float]]:
    return statistics.median(samples), [min(samples), max(samples)]


def machine() -> dict:
    return {
        "platform": platform.platform(), "machine": platform.machine(), "python": sys.version.split()[0],
        "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def not_available(name: str, why: str) -> Figure:
    return Figure(name, None, "", note=f"not available: {why}")


def vm_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_hwm_mb(pid: int) -> float:
    return vm_mb(pid, "VmHWM")


def vm_rss_mb(pid: int) -> float:
    return vm_mb(pid, "VmRSS")


def print_figures(figures: list[Figure]) -> None:
    print(f"{'figure':<48} {'value':>12} {'baseline':>10} {'ratio':>7}  target")
    for f in figures:
        if f.value is None:
            print(f"{f.name:<48} {'—':>12}  {f.note}")
            continue
        value = f"{f.value:g} {f.unit}".strip()
        baseline = "" if f.baseline is None else f"{f.baseline:g}"
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}×"
        verdict = "" if f.met is None else (" ✓" if f.met else " ✗")
        print(f"{f.name:<48} {value:>12} {baseline:>10} {ratio:>7}  {f.target or ''}{verdict}")
