"""``kiroku bench``: what each stage costs, measured next to its baseline in the same run.

These machines are noisy: absolute times drift, ratios measured side by side hold. Every
figure is the median of several runs, with the spread (min–max) beside it. A stage that
does not exist yet is reported as "not available", never estimated.

JSON (``--json FILE``): ``{"machine": {...}, "figures": [{"name", "value", "unit",
"baseline", "ratio", "target", "met", "spread", "note"}, ...]}``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from kiroku.bench.calls import bench_calls
from kiroku.bench.export import bench_export
from kiroku.bench.figures import Figure, machine, print_figures
from kiroku.bench.hub import bench_hub
from kiroku.bench.index import bench_index
from kiroku.bench.locker import bench_locker
from kiroku.bench.recorder import bench_latency, bench_recorder_memory_and_playback
from kiroku.bench.sealing import bench_sealing
from kiroku.bench.storing import bench_storing


def run(*, quick: bool, json_path: Path | None) -> int:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="kiroku-bench-") as tmp:
        work = Path(tmp)
        figures += bench_storing(work, 10 if quick else 30, 1 if quick else 3)
        figures += bench_sealing(work, 16 if quick else 64, 3 if quick else 5)
        figures += bench_locker(work, 4 if quick else 32, 1 if quick else 3)
        figures += bench_index(work, [10**4, 10**5] if quick else [10**4, 10**5, 10**6], 50 if quick else 200)
        figures += bench_latency(work, 8 if quick else 30)
        figures += bench_recorder_memory_and_playback(work, 8 if quick else 20)
        figures += bench_export(work, 1 if quick else 10, 1 if quick else 3)
        figures += bench_calls(work, [10, 25] if quick else [25, 50, 75, 100, 150, 200], 4 if quick else 8)
        figures += bench_hub(work, [20] if quick else [100, 200, 350, 500, 750, 1000, 1500, 2000],
                             warmup=2 if quick else 10, window=6 if quick else 30)
    print_figures(figures)
    if json_path:
        json_path.write_text(json.dumps({"machine": machine(), "figures": [asdict(f) for f in figures]},
                                        ensure_ascii=False, indent=2))
    return 0
