"""Storing: footage through the segmenter into the vault, next to FFmpeg doing the same."""

from __future__ import annotations

import time
from pathlib import Path

from kiroku.bench.figures import Figure, median


def footage(work: Path, seconds: int):
    """Pre-encoded 1080p30 H.264 at about 4 Mbit/s, with its sound as PCM, and the same as an
    MP4 (H.264 + AAC) for ffmpeg. Encoding happens here, before anything is measured."""
    from fractions import Fraction

    import av

    from firmware.hardware.media import AudioBlock, EncodedFrame
    from firmware.hardware.synth import Picture, Tone

    fps, w, h = 30, 1920, 1080
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 1_000_000)
    enc.framerate = fps
    enc.gop_size = fps
    enc.bit_rate = 4_000_000
    enc.options = {"preset": "ultrafast", "tune": "zerolatency",
                   "x264-params": f"scenecut=0:repeat-headers=1:keyint={fps}:min-keyint={fps}"}
    enc.open()
    picture = Picture(w, h)
    from datetime import datetime

    base = 10_000_000_000
    frames = []
    for i in range(seconds * fps):
        t = base + i * 1_000_000 // fps
        frame = av.VideoFrame.from_ndarray(picture.render(t, datetime.now(), i), format="yuv420p")
        frame.pts = t
        frames += [EncodedFrame(bytes(p), bool(p.is_keyframe), int(p.pts)) for p in enc.encode(frame)]
    frames += [EncodedFrame(bytes(p), bool(p.is_keyframe), int(p.pts)) for p in enc.encode(None)]
    tone = Tone(48000, 1)
    blocks = [AudioBlock(tone.render(base + n * 1024 * 1_000_000 // 48000, 1024),
                         base + n * 1024 * 1_000_000 // 48000, 48000) for n in range(seconds * 48000 // 1024)]
    # The same footage as an MP4 file (the input an NVR's ffmpeg would copy from).
    mp4 = work / "footage.mp4"
    with av.open(str(mp4), "w", format="mp4") as out:
        import io

        from firmware.media.mp4 import add_template_stream, set_remux_time_base

        probe = av.open(io.BytesIO(frames[0].data), format="h264")
        vs = add_template_stream(out, probe.streams.video[0])
        probe.close()
        set_remux_time_base(vs, Fraction(1, 1_000_000))
        aus = out.add_stream("aac", rate=48000)
        aus.codec_context.layout = "mono"
        for f in frames:
            p = av.Packet(f.data)
            p.stream, p.time_base, p.pts, p.dts, p.is_keyframe = vs, Fraction(1, 1_000_000), f.time_us - base, \
                f.time_us - base, f.keyframe
            out.mux(p)
        for b in blocks:
            af = av.AudioFrame.from_ndarray(b.samples.reshape(1, -1), format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, (b.time_us - base) * 48000 // 1_000_000, Fraction(1, 48000)
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    return frames, blocks, mp4


def record_footage(vault, segmenter, rec, frames, blocks) -> None:
    """One recording through segmenter → sealer → index, frames and sound interleaved in
    capture order, as the recorder's media queue hands them over."""
    vault.begin(rec)
    segmenter.begin(rec)
    a = 0
    for frame in frames:
        while a < len(blocks) and blocks[a].time_us <= frame.time_us:
            segmenter.audio(blocks[a])
            a += 1
        segmenter.video(frame)
    for block in blocks[a:]:
        segmenter.audio(block)
    segmenter.end()
    segmenter.flush()


def bench_storing(work: Path, seconds: int, runs: int) -> list[Figure]:
    import resource
    import subprocess

    from firmware.hardware.media import AudioFormat, VideoFormat
    from firmware.media.segmenter import Segmenter
    from firmware.store import Recording
    from firmware.vault import Vault, age
    from firmware.vault.keys import KeyStore

    frames, blocks, mp4 = footage(work, seconds)
    ours, ffmpeg, bytes_out = [], [], 0
    for run_no in range(runs):
        data = work / f"store-{run_no}"
        KeyStore(data).initialise("bench", age.X25519Identity.generate().recipient)
        vault = Vault(data, device="bench")
        segmenter = Segmenter(vault, video=VideoFormat(1920, 1080, 30), audio=AudioFormat(48000, 1),
                              segment_us=4_000_000, now=lambda: frames[-1].time_us)
        rec = Recording(id=f"bench-{run_no}", device="bench", mode="on_demand", started_at="2026-01-01T00:00:00+09:00",
                        started_us=frames[0].time_us, started_wall_us=0, started_by="bench", clock_synchronised=True)
        started = time.process_time()
        record_footage(vault, segmenter, rec, frames, blocks)
        ours.append(time.process_time() - started)
        bytes_out = sum(p.stat().st_size for p in data.rglob("*.age"))
        vault.close()

        out = work / f"ffmpeg-{run_no}"
        out.mkdir()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(mp4), "-map", "0", "-c", "copy",
                        "-f", "segment", "-segment_time", "4", "-segment_format", "mp4", "-reset_timestamps", "1",
                        str(out / "%05d.mp4")], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        ffmpeg.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    # How much of it is encoding the microphone's sound (the baseline copies sound already encoded).
    from fractions import Fraction

    import av

    aac = []
    for _ in range(runs):
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = 48000, "mono", "fltp", 64_000
        ctx.time_base = Fraction(1, 48000)
        ctx.open()
        started = time.process_time()
        for b in blocks:
            af = av.AudioFrame.from_ndarray(b.samples.reshape(1, -1), format="s16", layout="mono")
            af.sample_rate, af.pts = 48000, (b.time_us - blocks[0].time_us) * 48000 // 1_000_000
            ctx.encode(af)
        ctx.encode(None)
        aac.append(time.process_time() - started)
    per_minute = 60 / seconds
    o, spread = median([x * per_minute for x in ours])
    audio, _ = median([x * per_minute for x in aac])
    f, _ = median([x * per_minute for x in ffmpeg])
    return [Figure("storing cost: CPU per minute of 1080p30", round(o, 3), "CPU s", round(f, 3), round(o / f, 2),
                   "≤ 1.0× ffmpeg -c copy -f segment", o / f <= 1.0, [round(x, 3) for x in spread],
                   f"segmenter + AAC encoding of the microphone's PCM + age sealing + SHA-256 + fsync + index, "
                   f"fed {seconds} s of pre-encoded 4 Mbit/s H.264 ({bytes_out / seconds * 8 / 1e6:.1f} Mbit/s sealed); "
                   "baseline copies already-encoded AAC"),
            Figure("storing cost without encoding the sound", round(o - audio, 3), "CPU s", round(f, 3),
                   round((o - audio) / f, 2), note=f"the above minus AAC-encoding the same PCM alone "
                                                   f"({audio:.3f} CPU s per minute)")]
