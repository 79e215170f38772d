"""Shared by the call recorder's tests: captures written as pcap, calls read back as a listener would."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from firmware.calls import index, net, rtp, synth
from firmware.calls.recorder import CallRecorder, PcapSource
from firmware.calls.render import decode_stereo

RATE = rtp.RATE


def write_pcap(path: Path, packets: list) -> Path:
    with net.PcapWriter(path) as w:
        for i, (ts, src, sport, dst, dport, payload) in enumerate(packets):
            w.write(ts, net.udp_frame(src, sport, dst, dport, payload, ident=i))
    return path


def capture_of(scripts: list[synth.Script]) -> list:
    return sorted((p for s in scripts for p in synth.packets(s)), key=lambda p: p[0])


def replay(vault, config, pcap: Path, *, trunk: str = "192.0.2.1") -> CallRecorder:
    """The pcap through the same path as a live capture, to the end."""
    rec = CallRecorder(vault, config, trunk=trunk, source=PcapSource(pcap)).start()
    assert rec.drain(120), "the replay did not finish"
    rec.close()
    return rec


def calls(vault, **kw) -> dict[str, dict]:
    """The index, by SIP Call-ID."""
    return {r["call_id"]: r for r in index.search(vault.db, **kw)}


def audio(vault, identity, recording_id: str) -> np.ndarray:
    segs = vault.segments(recording_id)
    return decode_stereo([vault.open_segment_plaintext(s, identity) for s in segs])


def peak_hz(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    if not len(x) or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=float) ** 2))) if len(x) else 0.0


def window(pcm: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    return pcm[..., int(start_s * RATE):int(end_s * RATE)]


def impair(packets: list, *, drop: float = 0.0, reorder: float = 0.0, duplicate: float = 0.0,
           seed: int = 7) -> tuple[list, dict]:
    """Edit a capture the way a lossy network would: RTP only (SIP is retransmitted in real
    life). Returns the edited capture and how many packets of each kind were touched."""
    rnd = random.Random(seed)
    out, touched = [], {"dropped": 0, "reordered": 0, "duplicated": 0}
    ends = {}  # a stream's first and last packet are kept: a loss is only knowable between two packets
    for i, p in enumerate(packets):
        if p[5][:1] == b"\x80":
            ends.setdefault((p[3], p[4]), [i, i])[1] = i
    keep = {i for pair in ends.values() for i in pair}
    for i, p in enumerate(packets):
        is_rtp = p[5][:1] == b"\x80"
        if is_rtp and i not in keep and rnd.random() < drop:
            touched["dropped"] += 1
            continue
        if is_rtp and rnd.random() < reorder:  # arrives 40–100 ms late, behind later packets
            p = (p[0] + rnd.uniform(0.04, 0.1), *p[1:])
            touched["reordered"] += 1
        out.append(p)
        if is_rtp and rnd.random() < duplicate:
            out.append((p[0] + 0.001, *p[1:]))
            touched["duplicated"] += 1
    return sorted(out, key=lambda q: q[0]), touched
