"""RTP (RFC 3550): packets, their codecs, and one jitter buffer per media stream.

Decoding follows each packet's own payload type, not the SDP's promise: peers send what
they send. G.711 µ-law and A-law go through 256-entry lookup tables (bit-exact with
ITU-T G.711; Python 3.13 removed ``audioop``); G.722 and the rest go through PyAV's
decoders, one per stream, since they carry state from packet to packet.

A stream orders its packets by extended sequence number, drops duplicates, and places
each on the call's timeline by its RTP timestamp — anchored to the capture time of the
first packet of each run (a new SSRC, or a timestamp jump against the wall clock, starts
a new run) — so a lost packet leaves silence of exactly its length, and a late packet is
still put where it belongs as long as it is inside the window.
"""

from __future__ import annotations

import heapq
import logging
import struct
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

RATE = 16_000  # the rendered timeline: wide enough for G.722 and Opus's wideband
MAX_DROPOUT, MAX_MISORDER = 3000, 100  # RFC 3550 A.1: beyond these a sequence number is a jump
_HDR = struct.Struct("!BBHII")


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW = _ulaw_table()
ALAW = _alaw_table()

# Static payload types (RFC 3551), and names for dynamic ones the SDP maps.
STATIC = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
          18: ("G729", 8000)}
_AV_DECODERS = {"G722": ("g722", 16000), "G729": ("g729", 8000), "GSM": ("gsm", 8000), "OPUS": ("libopus", 48000),
                "G723": ("g723_1", 8000), "AMR": ("amrnb", 8000), "AMR-WB": ("amrwb", 16000)}
_IGNORED = {"TELEPHONE-EVENT", "CN", "RED", "COMFORT-NOISE"}


@dataclass(slots=True)
class Packet:
    ts: float  # capture time
    seq: int
    timestamp: int
    ssrc: int
    pt: int
    marker: bool
    payload: bytes


def parse(data: bytes, ts: float) -> Packet | None:
    """An RTP packet, or None for anything else (RTCP, STUN, noise on the port)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    b0, b1, seq, timestamp, ssrc = _HDR.unpack_from(data)
    pt = b1 & 0x7F
    if 72 <= pt <= 76:  # RTCP on the same port (RFC 5761)
        return None
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if len(data) < off + 4:
            return None
        off += 4 + 4 * struct.unpack_from("!H", data, off + 2)[0]
    end = len(data)
    if b0 & 0x20 and end > off:  # padding
        end -= data[-1]
    if end < off:
        return None
    return Packet(ts, seq, timestamp, ssrc, pt, bool(b1 & 0x80), data[off:end])


def _interpolator(taps: int = 81, beta: float = 7.0, cutoff: float = 3950.0) -> np.ndarray:
    """A windowed-sinc low-pass at :data:`RATE` for 8 → 16 kHz: flat (±0.1 dB) to 3.6 kHz, the
    images above 4.4 kHz −70 dB down. Linear interpolation, before, lost 3 dB at the top of the
    voice band and left its images audible. Odd length: a delay of 40 output samples, exactly
    20 input samples (2.5 ms, the same for every call and both sides)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff / RATE * n) * np.kaiser(taps, beta)
    return h * (2.0 / h.sum())  # zero-stuffing halves the level: a gain of 2 gives it back


_FIR = _interpolator()


class Upsampler:
    """8 kHz → 16 kHz, continuous across packets (it keeps the filter's history)."""

    def __init__(self):
        self._history = np.zeros(len(_FIR) - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        stuffed = np.zeros(2 * len(x))
        stuffed[0::2] = x
        both = np.concatenate((self._history, stuffed))
        self._history = both[len(both) - (len(_FIR) - 1):]
        out = np.convolve(both, _FIR, mode="valid")
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


class Decoder:
    """Payloads of one stream → 16 kHz mono int16, by payload type."""

    def __init__(self, rtpmap: dict[int, tuple[str, int]] | None = None):
        self.rtpmap = dict(rtpmap or {})
        self._av: dict[str, object] = {}
        self._upsample = Upsampler()
        self.codecs: set[str] = set()
        self.undecodable = 0  # packets of a codec not known here, or that its decoder refused
        self.decoded = 0  # packets that gave sound

    def codec(self, pt: int) -> tuple[str, int]:
        return self.rtpmap.get(pt) or STATIC.get(pt) or ("", 8000)

    def decode(self, pt: int, payload: bytes) -> np.ndarray | None:
        """PCM at :data:`RATE`, or None when this payload carries no audio (DTMF events,
        comfort noise) or cannot be decoded (then the caller fills silence)."""
        name, _clock = self.codec(pt)
        if name in _IGNORED or not payload:
            return None
        if name == "PCMU" or name == "PCMA":
            self.codecs.add(name)
            pcm = (ULAW if name == "PCMU" else ALAW)[np.frombuffer(payload, dtype=np.uint8)]
            self.decoded += 1
            return self._upsample(pcm)
        spec = _AV_DECODERS.get(name)
        if spec is None:
            self.undecodable += 1
            return None
        try:
            pcm = self._decode_av(name, spec, payload)
        except Exception as exc:  # a codec library's error: this packet is silence, the call goes on
            if self.undecodable == 0:
                log.warning("cannot decode %s: %s", name, exc)
            self.undecodable += 1
            return None
        self.codecs.add(name)
        self.decoded += pcm is not None
        return pcm

    def _decode_av(self, name: str, spec: tuple[str, int], payload: bytes) -> np.ndarray | None:
        import av

        ctx = self._av.get(name)
        if ctx is None:
            ctx = av.CodecContext.create(spec[0], "r")
            ctx.sample_rate = spec[1]
            ctx.layout = "mono"
            ctx.open()
            self._av[name] = ctx
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        chunks = []
        for frame in ctx.decode(av.Packet(payload)):
            for out in self._resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        if not chunks:
            return None
        return np.concatenate(chunks).astype(np.int16)


@dataclass
class StreamStats:
    received: int = 0  # unique packets placed
    duplicates: int = 0
    late: int = 0  # arrived after their place was already rendered
    lost: int = 0  # sequence numbers never seen
    reordered: int = 0


class Stream:
    """One direction of media, keyed by where it is sent (the listener's SDP address).

    ``push`` takes packets as they arrive; ``release(until)`` yields ``(position, pcm)`` for
    every packet older than the window, in sequence order, position in samples of
    :data:`RATE` from the call's origin. ``flush()`` releases the rest at the end.
    """

    def __init__(self, origin: float, decoder: Decoder, *, window: float = 0.5):
        self.origin = origin
        self.decoder = decoder
        self.window = window
        self.stats = StreamStats()
        self._heap: list[tuple[int, int, Packet]] = []
        self._seen: set[int] = set()
        self._max_ext: int | None = None
        self._released: int | None = None  # highest extended sequence number handed on
        self._ssrc: int | None = None
        self._anchor: tuple[int, int, int] | None = None  # (timestamp, position, clock rate)
        self._order = 0
        self._pending: list[tuple[int, np.ndarray]] = []
        self._probation: Packet | None = None

    def _candidate(self, seq: int) -> int:
        """The extended sequence number nearest the highest seen (RFC 3550 A.1)."""
        base = self._max_ext & ~0xFFFF
        cand = base | seq
        if cand - self._max_ext > 0x8000:
            cand -= 0x10000
        elif self._max_ext - cand > 0x8000:
            cand += 0x10000
        return cand

    def push(self, pkt: Packet) -> None:
        if self._ssrc is not None and pkt.ssrc != self._ssrc:
            self._restart()  # a new source (re-INVITE, transfer): its sequence space is its own
        self._ssrc = pkt.ssrc
        if self._max_ext is None:
            self._max_ext = pkt.seq
        ext = self._candidate(pkt.seq)
        if not -MAX_MISORDER <= ext - self._max_ext <= MAX_DROPOUT:
            # A jump with the same SSRC (an SBC or a transcoder changing over): believed once
            # two packets in a row follow it (RFC 3550 A.1's probation), then a new run.
            probe, self._probation = self._probation, pkt
            if probe is None or pkt.seq != (probe.seq + 1) & 0xFFFF:
                return
            self._probation = None
            self._restart()
            self._max_ext = probe.seq
            self._push(probe, probe.seq)
            ext = self._candidate(pkt.seq)
        elif self._probation is not None:
            self._probation = None  # a stray packet, not a new run
            self.stats.late += 1
        self._push(pkt, ext)

    def _push(self, pkt: Packet, ext: int) -> None:
        if ext > self._max_ext:
            self._max_ext = ext
        if ext in self._seen:
            self.stats.duplicates += 1
            return
        if self._released is not None and ext <= self._released:
            self.stats.late += 1
            return
        if ext < self._max_ext:
            self.stats.reordered += 1
        self._seen.add(ext)
        self._order += 1
        heapq.heappush(self._heap, (ext, self._order, pkt))

    def _restart(self) -> None:
        # What the old source still holds is handed on first, so the two never interleave.
        self._pending.extend(self._drain())
        self._probation = None
        self._max_ext = None
        self._released = None
        self._seen.clear()
        self._anchor = None

    def release(self, now: float):
        """Packets that arrived more than the window before ``now``, in order."""
        if self._pending:
            out, self._pending = self._pending, []
            yield from out
        while self._heap and now - self._heap[0][2].ts >= self.window:
            yield from self._emit(heapq.heappop(self._heap))

    def flush(self):
        if self._pending:
            out, self._pending = self._pending, []
            yield from out
        yield from self._drain()

    def _drain(self):
        while self._heap:
            yield from self._emit(heapq.heappop(self._heap))

    def _emit(self, item):
        ext, _, pkt = item
        self._seen.discard(ext)
        if self._released is not None and ext > self._released + 1:
            self.stats.lost += ext - self._released - 1
        self._released = ext if self._released is None else max(self._released, ext)
        self.stats.received += 1
        pos = self._place(pkt)
        pcm = self.decoder.decode(pkt.pt, pkt.payload)
        if pcm is not None:
            yield pos, pcm

    def _place(self, pkt: Packet) -> int:
        _name, clock = self.decoder.codec(pkt.pt)
        by_arrival = round((pkt.ts - self.origin) * RATE)
        if self._anchor is not None and self._anchor[2] == clock:
            ts0, pos0, _ = self._anchor
            delta = (pkt.timestamp - ts0) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            pos = pos0 + delta * RATE // clock
            # Timestamps that disagree with the wall clock by more than a second: the sender
            # jumped (after a hold, a codec change); start a new run where the packet arrived.
            if abs(pos - by_arrival) <= RATE:
                return pos
        self._anchor = (pkt.timestamp, by_arrival, clock)
        return by_arrival
