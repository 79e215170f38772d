"""The index: queries on a synthetic kiroku.db of growing size."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

from kiroku.bench.figures import Figure, median


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
        typical, spread = median(samples)
        latencies[size] = typical
        figures.append(Figure(f"time-range query at {size:,} segments", round(typical, 3), "ms", None, None,
                              "≤ 5 ms at 10⁶" if size >= 10**6 else None,
                              (typical <= 5) if size >= 10**6 else None, [round(x, 3) for x in spread],
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
