"""The evidence locker: how fast a device copies sealed segments to the city's S3 store (the
device's own uploader, with presigned URLs as the hub sends them, to a real S3 server on this
machine) next to writing the same sealed files to its data folder."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from kiroku.bench.figures import Figure, median, not_available

SEGMENT = 256 * 1024  # about a 4 s segment at the default bitrate, sealed


def bench_locker(workdir: Path, megabytes: int, runs: int) -> list[Figure]:
    name = "evidence locker upload (device → S3, presigned PUT, TLS)"
    try:
        from firmware.uplink.locker import Copier
        from hub.locker import Bucket
        from kiroku.engines import EngineError
        from kiroku.engines.s3 import S3Store
    except ImportError as exc:
        return [not_available(name, f"{exc.name} is not installed (pip install -e '.[hub]')")]
    root = workdir / "locker"
    data = root / "data"
    count = max(1, megabytes * 2**20 // SEGMENT)
    paths = [f"segments/footage/2026-12-07/bench/{i:05d}.age" for i in range(count)]
    for p in paths:
        (data / p).parent.mkdir(parents=True, exist_ok=True)
        (data / p).write_bytes(os.urandom(SEGMENT))
    try:
        store = S3Store(root / "s3").start()
    except EngineError as exc:
        return [not_available(name, str(exc))]
    try:
        bucket = Bucket(store.endpoint, store.bucket, *store.hub_key, ca=str(store.ca))
        copier = Copier(data, root, store.ca)
        uploads, local = [], []
        for run in range(runs):
            wanted = [{"path": p, "kind": "segment", "sha256": hashlib.sha256((data / p).read_bytes()).hexdigest(),
                       "size": SEGMENT, "url": bucket.put_url(f"bench/{run}/{p}", 600), "expires": time.time() + 600}
                      for p in paths]
            started = time.perf_counter()
            for upload in wanted:
                if not copier.put(upload):
                    return [not_available(name, f"an upload failed: see {store.log}")]
            uploads.append(count * SEGMENT / 2**20 / (time.perf_counter() - started))
            started = time.perf_counter()
            for p in paths:  # the baseline: the same files written to the data folder, as the vault does
                fd = os.open(root / "copy.age", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(fd, (data / p).read_bytes())
                os.fdatasync(fd)
                os.close(fd)
            local.append(count * SEGMENT / 2**20 / (time.perf_counter() - started))
    finally:
        store.stop()
    up, spread = median(uploads)
    disk, _ = median(local)
    return [Figure(name, round(up, 1), "MB/s", round(disk, 1), round(up / disk, 3), None, None,
                   [round(x, 1) for x in spread],
                   f"{count} sealed segments of {SEGMENT // 1024} KiB one after another, each read, checked against"
                   " its SHA-256 and PUT; baseline: the same files written and fdatasync'd to the data folder"
                   " (the vault's sealed write). A recording's bitrate (0.5 MB/s at the default) is what it"
                   " must keep up with")]
