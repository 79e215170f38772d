"""Sealing throughput: our age writer next to the raw AEAD and to the disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kiroku.bench.figures import Figure, median


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
    s, s_spread = median(seal)
    a, _ = median(aead)
    ds, ds_spread = median(disk_sealed)
    dp, _ = median(disk_plain)
    return [
        Figure("sealing throughput (age, in memory)", round(s, 1), "MB/s", round(a, 1), round(s / a, 3),
               "≥ 0.8× raw ChaCha20-Poly1305", s / a >= 0.8, [round(x, 1) for x in s_spread],
               f"baseline: the same library's raw AEAD on the same {megabytes} MiB in 64 KiB chunks"),
        Figure("sealed writing to the data folder (fdatasync)", round(ds, 1), "MB/s", round(dp, 1), round(ds / dp, 3),
               "≥ 0.9× plain fdatasync'd sequential write", ds / dp >= 0.9, [round(x, 1) for x in ds_spread],
               f"baseline: writing the same {megabytes} MiB unsealed to the same folder"),
    ]
