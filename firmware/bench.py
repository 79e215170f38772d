"""``kiroku bench``: what each stage costs, measured next to its baseline in the same run.

These machines are noisy: absolute times drift, ratios measured side by side hold. Every
figure is the median of several runs, with the spread (min–max) beside it. A stage that
does not exist yet is reported as "not available", never estimated.

JSON (``--json FILE``): ``{"machine": {...}, "figures": [{"name", "value", "unit",
"baseline", "ratio", "target", "met", "spread", "note"}, ...]}``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
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


def _median(samples: list[float]) -> tuple[float, list[float]]:
    return statistics.median(samples), [min(samples), max(samples)]


def _machine() -> dict:
    return {
        "platform": platform.platform(), "machine": platform.machine(), "python": sys.version.split()[0],
        "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- sealing ----------------------------------------------------------------------------------

def bench_sealing(workdir: Path, megabytes: int, runs: int) -> list[Figure]:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from firmware.vault import age

    data = os.urandom(megabytes * 2**20)
    recipient = age.X25519Identity.generate().recipient
    chunk = age.CHUNK

    class Null:
        def write(self, b):
            return len(b)

    def seal_memory():
        w = age.Writer(Null(), [recipient])
        view = memoryview(data)
        for i in range(0, len(data), 188 * 1024):  # about what the muxer writes at a time
            w.write(view[i:i + 188 * 1024])
        w.close()

    def raw_aead():
        aead = ChaCha20Poly1305(os.urandom(32))
        view = memoryview(data)
        for n, i in enumerate(range(0, len(data), chunk)):
            aead.encrypt(n.to_bytes(12, "big"), bytes(view[i:i + chunk]), None)

    def sealed_to_disk(path: Path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

        class Out:
            def write(self, b):
                return os.write(fd, b)

        w = age.Writer(Out(), [recipient])
        view = memoryview(data)
        for i in range(0, len(data), 188 * 1024):
            w.write(view[i:i + 188 * 1024])
        w.close()
        os.fdatasync(fd)
        os.close(fd)

    def plain_to_disk(path: Path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        view = memoryview(data)
        for i in range(0, len(data), chunk):
            os.write(fd, view[i:i + chunk])
        os.fdatasync(fd)
        os.close(fd)

    def rate(fn, *args) -> float:
        started = time.perf_counter()
        fn(*args)
        return megabytes / (time.perf_counter() - started)

    seal, aead, disk_sealed, disk_plain = [], [], [], []
    target = workdir / "bench.age"
    for _ in range(runs):
        seal.append(rate(seal_memory))
        aead.append(rate(raw_aead))
        disk_sealed.append(rate(sealed_to_disk, target))
        disk_plain.append(rate(plain_to_disk, target))
    target.unlink(missing_ok=True)
    s, s_spread = _median(seal)
    a, _ = _median(aead)
    ds, ds_spread = _median(disk_sealed)
    dp, _ = _median(disk_plain)
    return [
        Figure("sealing throughput (age, in memory)", round(s, 1), "MB/s", round(a, 1), round(s / a, 3),
               "≥ 0.8× raw ChaCha20-Poly1305", s / a >= 0.8, [round(x, 1) for x in s_spread],
               f"baseline: the same library's raw AEAD on the same {megabytes} MiB in 64 KiB chunks"),
        Figure("sealed writing to the data folder (fdatasync)", round(ds, 1), "MB/s", round(dp, 1), round(ds / dp, 3),
               "≥ 0.9× plain fdatasync'd sequential write", ds / dp >= 0.9, [round(x, 1) for x in ds_spread],
               f"baseline: writing the same {megabytes} MiB unsealed to the same folder"),
    ]


# -- the index --------------------------------------------------------------------------------

def _synthetic_index(path: Path, count: int) -> sqlite3.Connection:
    """A real index (the vault's schema) holding ``count`` 4-second segments of footage."""
    from firmware.vault.vault import connect, migrate

    conn = connect(path.parent) if path.name == "kiroku.db" else None
    assert conn is not None
    migrate(conn)
    start = 1_700_000_000_000_000
    per_recording = 150  # 10-minute recordings
    conn.execute("BEGIN")
    recordings = (count + per_recording - 1) // per_recording
    conn.executemany(
        "INSERT INTO recordings (id, device, record_class, mode, started_wall_us, started_at, started_by,"
        " clock_synchronised) VALUES (?, 'counter-1', 'footage', 'on_demand', ?, '', 'bench', 1)",
        ((f"r{i:08d}", start + i * per_recording * 4_000_000) for i in range(recordings)))
    conn.executemany(
        "INSERT INTO segments (recording_id, seq, record_class, key_day, path, start_wall_us, end_wall_us,"
        " start_mono_us, end_mono_us, boot_id, clock_synchronised, has_audio, video_frames, audio_samples, size,"
        " sha256) VALUES (?, ?, 'footage', '2026-01-01', ?, ?, ?, 0, 0, 'b', 1, 1, 120, 192000, 2000000, '')",
        ((f"r{i // per_recording:08d}", i % per_recording, f"s/{i}", start + i * 4_000_000,
          start + (i + 1) * 4_000_000) for i in range(count)))
    conn.execute("COMMIT")
    return conn


def bench_index(workdir: Path, sizes: list[int], queries: int) -> list[Figure]:
    from firmware.vault.vault import Vault

    figures = []
    latencies = {}
    for size in sizes:
        folder = workdir / f"index-{size}"
        folder.mkdir()
        conn = _synthetic_index(folder / "kiroku.db", size)
        conn.close()
        vault = Vault(folder)
        start = 1_700_000_000_000_000
        span = size * 4_000_000
        samples = []
        import random

        rng = random.Random(size)
        for _ in range(queries):
            t0 = start + rng.randrange(span)
            began = time.perf_counter()
            found = vault.segments_between(t0, t0 + 600_000_000)  # ten minutes of footage
            samples.append((time.perf_counter() - began) * 1000)
            assert found
        began = time.perf_counter()
        with vault.transaction() as c:
            vault._erasable(c, 0, record_class=None, older_than={"footage": start + span}, limit=200)
        sweep_ms = (time.perf_counter() - began) * 1000
        vault.close()
        median, spread = _median(samples)
        latencies[size] = median
        figures.append(Figure(f"time-range query at {size:,} segments", round(median, 3), "ms", None, None,
                              "≤ 5 ms at 10⁶" if size >= 10**6 else None,
                              (median <= 5) if size >= 10**6 else None, [round(x, 3) for x in spread],
                              "a ten-minute window (150 segments) at a random place"))
        figures.append(Figure(f"retention sweep selection at {size:,} segments", round(sweep_ms, 2), "ms",
                              note="the oldest 200 erasable segments, holds checked"))
    if len(latencies) >= 2:
        small, large = min(latencies), max(latencies)
        exponent = math.log(latencies[large] / latencies[small]) / math.log(large / small)
        figures.append(Figure("time-range query growth exponent", round(exponent, 3), "",
                              target="≈ 0 (logarithmic or better)", met=exponent < 0.15,
                              note=f"slope of log(latency) over log(size) from {small:,} to {large:,}"))
    return figures


def not_available(name: str, why: str) -> Figure:
    return Figure(name, None, "", note=f"not available: {why}")


def run(*, quick: bool, json_path: Path | None) -> int:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="kiroku-bench-") as tmp:
        work = Path(tmp)
        figures += bench_sealing(work, 16 if quick else 64, 3 if quick else 5)
        figures += bench_index(work, [10**4, 10**5] if quick else [10**4, 10**5, 10**6], 50 if quick else 200)
    figures += [
        not_available("storing cost vs ffmpeg -f segment", "not measured yet (issue 6)"),
        not_available("export vs ffmpeg -c copy", "exports do not exist yet (issue 5)"),
        not_available("button → sign latency", "not measured yet (issue 6)"),
        not_available("playback time to first frame", "viewing sessions do not exist yet (issue 4)"),
        not_available("recorder and web peak memory", "not measured yet (issue 6)"),
    ]
    _print(figures)
    if json_path:
        json_path.write_text(json.dumps({"machine": _machine(), "figures": [asdict(f) for f in figures]},
                                        ensure_ascii=False, indent=2))
    return 0


def _print(figures: list[Figure]) -> None:
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
