"""Exports: cutting and sealing a package, next to FFmpeg cutting the same."""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

from kiroku.bench.figures import Figure, median
from kiroku.bench.storing import footage, record_footage


def bench_export(work: Path, minutes: float, runs: int) -> list[Figure]:
    """A clip of ``minutes`` exported from sealed footage (unseal + cut + package), next to
    ``ffmpeg -c copy`` cutting the same footage from a plaintext MP4."""
    import dataclasses
    import subprocess

    import av

    from firmware import export
    from firmware.hardware.media import AudioFormat, VideoFormat
    from firmware.media.segmenter import Segmenter
    from firmware.store import Recording
    from firmware.vault import Vault, age
    from firmware.vault.keys import KeyStore

    loop_s = 20
    frames, blocks, _mp4 = footage(work, loop_s)
    loops = math.ceil((minutes * 60 + 10) / loop_s)  # the clip, and a little either side of it
    span = loop_s * 1_000_000
    frames = [dataclasses.replace(f, time_us=f.time_us + n * span) for n in range(loops) for f in frames]
    blocks = [dataclasses.replace(b, time_us=b.time_us + n * span) for n in range(loops) for b in blocks]
    data = work / "export-vault"
    opener = age.X25519Identity.generate()
    keys = KeyStore(data)
    keys.initialise("bench", opener.recipient)
    vault = Vault(data, device="bench")
    segmenter = Segmenter(vault, video=VideoFormat(1920, 1080, 30), audio=AudioFormat(48000, 1),
                          segment_us=4_000_000, now=lambda: frames[-1].time_us)
    rec = Recording(id="bench-export", device="bench", mode="on_demand", started_at="2026-01-01T00:00:00+09:00",
                    started_us=frames[0].time_us, started_wall_us=1_767_193_200_000_000, started_by="bench",
                    clock_synchronised=True)
    record_footage(vault, segmenter, rec, frames, blocks)
    # The same footage in plaintext, one MP4, as an NVR would keep it (what ffmpeg cuts from).
    plain = work / "export-plain.mp4"
    with av.open(str(plain), "w", format="mp4") as out:
        streams, last = {}, {}
        for info in vault.segments("bench-export"):
            with av.open(io.BytesIO(vault.open_segment_plaintext(info, opener))) as inp:
                if not streams:
                    from firmware.media.mp4 import add_template_stream

                    streams = {s.index: add_template_stream(out, s) for s in inp.streams}
                offset = (info.start_us - frames[0].time_us) / 1e6
                for packet in inp.demux():
                    if packet.pts is None:
                        continue
                    shift = round(offset / packet.time_base)
                    packet.pts += shift
                    packet.dts += shift
                    if packet.dts <= last.get(packet.stream.index, -1):
                        continue  # sound past a segment's end is also at the next one's start
                    last[packet.stream.index] = packet.dts
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
    ours, theirs = [], []
    length = minutes * 60
    for run_no in range(runs):
        target = work / f"export-{run_no}.zip"
        started = time.perf_counter()
        with open(target, "wb") as f:
            plan = export.plan(vault, "bench-export", "5", str(5 + length))
            export.build(vault, plan, opener=opener, out=f, log_export=lambda detail: None,
                         provision=export.Provision("committee", "bench", "bench", "bench", reference="bench"))
            f.flush()
            os.fsync(f.fileno())
        ours.append(time.perf_counter() - started)
        target.unlink()
        clip = work / f"ffmpeg-{run_no}.mp4"
        started = time.perf_counter()
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-ss", "5", "-i", str(plain), "-t",
                        str(length), "-map", "0", "-c", "copy", str(clip)], check=True)
        with open(clip, "rb") as f:
            os.fsync(f.fileno())
        theirs.append(time.perf_counter() - started)
        clip.unlink()
    vault.close()
    o, spread = median(ours)
    f, _ = median(theirs)
    speed = f / o  # how fast we are, as a fraction of ffmpeg's speed
    return [Figure(f"export: {minutes:g}-minute clip, wall time", round(o, 2), "s", round(f, 2), round(speed, 2),
                   "≥ 0.7× the speed of ffmpeg -c copy on plaintext", speed >= 0.7, [round(x, 2) for x in spread],
                   "unseal every segment in memory + keyframe cut + manifest, signature, cover sheet PDF + ZIP, "
                   "fsynced; the baseline cuts the same footage from one plaintext MP4. ratio = ffmpeg time / ours")]
