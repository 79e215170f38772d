"""Fake sensors: the picture and the sound the simulated camera and microphone capture.

The picture is a moving pattern with the wall-clock time burned in, for people, and a
strip of blocks encoding the frame's capture time, for tests: decoding a stored frame's
strip tells when that frame was captured, independently of any metadata kiroku wrote.
The sound is a quiet tone with noise and a short loud tick at every whole second of the
capture clock, so the audio's timing can be read back the same way.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

# 5×7 glyphs for the burned-in clock, one string per row ("#" = lit).
_GLYPHS = {
    "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    "3": ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
    "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    "6": ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    "9": [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
    "-": [".....", ".....", ".....", "#####", ".....", ".....", "....."],
    ":": [".....", "..#..", "..#..", ".....", "..#..", "..#..", "....."],
    ".": [".....", ".....", ".....", ".....", ".....", ".##..", ".##.."],
    " ": [".....", ".....", ".....", ".....", ".....", ".....", "....."],
}
_GLYPH_BITMAPS = {
    ch: np.array([[c == "#" for c in row] for row in rows], dtype=bool) for ch, rows in _GLYPHS.items()
}

BARCODE_BITS = 48  # capture time in µs: 2**48 µs is almost nine years of uptime
_CHECK_BITS = 8
_STRIP_BITS = BARCODE_BITS + _CHECK_BITS
_BLACK, _WHITE = 16, 235  # video-range luma


def _checksum(value: int) -> int:
    return sum((value >> shift) & 0xFF for shift in range(0, BARCODE_BITS, 8)) & 0xFF


def _block_size(width: int) -> int:
    return max(4, width // (_STRIP_BITS + 8))


class Picture:
    """Draws YUV 4:2:0 frames of a given size; reuses its buffers between frames."""

    def __init__(self, width: int, height: int):
        if width % 2 or height % 2:
            raise ValueError("width and height must be even")
        self.width, self.height = width, height
        self._yuv = np.empty((height * 3 // 2, width), dtype=np.uint8)
        ramp = (np.arange(width * 2) * 255 // (width * 2)).astype(np.uint8)
        self._ramp = np.concatenate([ramp, ramp[::-1]])
        self._scale = max(2, height // 90)
        self._visitor = _visitor(height * 2 // 5)

    def _draw_visitor(self, y: np.ndarray) -> None:
        """A citizen at the counter: a schematic face at the left, what redaction must hide."""
        mask, shade = self._visitor
        size = mask.shape[0]
        top, left = max(0, (self.height - size) // 2), max(0, self.width // 6 - size // 2)
        region = y[top:top + size, left:left + size]
        h, w = region.shape
        region[mask[:h, :w]] = shade[:h, :w][mask[:h, :w]]

    def render(self, time_us: int, wall: datetime, index: int) -> np.ndarray:
        """The frame captured at ``time_us`` (boottime µs), showing ``wall`` as text."""
        h, w = self.height, self.width
        y = self._yuv[:h]
        shift = (index * 6) % len(self._ramp)
        row = np.roll(self._ramp, -shift)[:w]
        y[:] = row[None, :]
        # A box bouncing across the frame, so motion is obvious even in a thumbnail.
        box = h // 4
        span = max(1, w - box)
        x0 = (index * 8) % (2 * span)
        x0 = x0 if x0 < span else 2 * span - x0
        y[h // 3 : h // 3 + box, x0 : x0 + box] = 220
        self._draw_visitor(y)
        self._text(wall.strftime("%Y-%m-%d %H:%M:%S.") + f"{wall.microsecond // 1000:03d}", y)
        self._barcode(time_us, y)
        self._yuv[h:] = 128  # neutral chroma: a grey-scale picture
        return self._yuv

    def _text(self, text: str, y: np.ndarray) -> None:
        s = self._scale
        x, top = s * 2, s * 2
        pad = s
        y[top - pad : top + 7 * s + pad, x - pad : min(self.width, x + len(text) * 6 * s + pad)] = _BLACK
        for ch in text:
            bitmap = _GLYPH_BITMAPS.get(ch, _GLYPH_BITMAPS[" "])
            big = np.kron(bitmap, np.ones((s, s), dtype=bool))
            region = y[top : top + big.shape[0], x : x + big.shape[1]]
            if region.shape != big.shape:
                break
            region[big] = _WHITE
            x += 6 * s

    def _barcode(self, value: int, y: np.ndarray) -> None:
        b = _block_size(self.width)
        word = (value & ((1 << BARCODE_BITS) - 1)) << _CHECK_BITS | _checksum(value)
        top = self.height - 3 * b
        x0 = b * 4
        y[top - b : top + 2 * b, x0 - b : x0 + (_STRIP_BITS + 1) * b] = _BLACK
        for i in range(_STRIP_BITS):
            if (word >> (_STRIP_BITS - 1 - i)) & 1:
                y[top : top + b, x0 + i * b : x0 + (i + 1) * b] = _WHITE


def read_capture_time(luma: np.ndarray) -> int | None:
    """The capture time (boottime µs) encoded in a decoded frame's luma plane, or None."""
    height, width = luma.shape
    b = _block_size(width)
    top = height - 3 * b
    x0 = b * 4
    word = 0
    for i in range(_STRIP_BITS):
        cell = luma[top + b // 4 : top + b - b // 4, x0 + i * b + b // 4 : x0 + (i + 1) * b - b // 4]
        word = (word << 1) | int(cell.mean() > 128)
    value, check = word >> _CHECK_BITS, word & 0xFF
    return value if _checksum(value) == check else None


class Tone:
    """PCM for the simulated microphone: a 440 Hz tone with noise, ticking every second.

    Samples are a pure function of their capture time, so the same instant always sounds
    the same whichever block it falls in.
    """

    TICK_HZ = 1000
    TICK_US = 40_000

    def __init__(self, samplerate: int, channels: int):
        self.samplerate = samplerate
        self.channels = channels

    def render(self, first_sample_us: int, frames: int) -> np.ndarray:
        t_us = first_sample_us + np.arange(frames, dtype=np.int64) * 1_000_000 // self.samplerate
        t = t_us / 1e6
        # Noise from a multiplicative hash of the instant, so it too depends only on time.
        noise = ((t_us * 2654435761) % 65536) / 32768.0 - 1.0
        signal = 0.03 * np.sin(2 * np.pi * 440 * t) + 0.01 * noise
        ticking = (t_us % 1_000_000) < self.TICK_US
        signal = np.where(ticking, 0.5 * np.sin(2 * np.pi * self.TICK_HZ * t), signal)
        pcm = np.clip(signal * 32767, -32768, 32767).astype(np.int16)
        return np.repeat(pcm[:, None], self.channels, axis=1)


def tick_onsets(pcm: np.ndarray, samplerate: int) -> list[float]:
    """Positions (seconds from the first sample) where a :class:`Tone` tick begins.

    A loudness threshold finds each tick to within a few samples; how a codec smears the
    attack moves that by as many again. The tick's own tone then places it exactly: its
    phase is zero where it begins, and a codec keeps a steady tone's phase. Only a tick
    whose beginning was heard counts: one already under way when the sound starts, or
    heard only after a gap or a muted span cut its beginning off (shorter than a tick,
    and not cut by the end of the sound), has no beginning here to place."""
    mono = pcm.astype(np.float32).reshape(len(pcm), -1).mean(axis=1) / 32768
    window = max(1, samplerate // 1000)  # 1 ms envelope
    envelope = np.convolve(np.abs(mono), np.ones(window) / window, mode="same")
    loud = envelope > 0.15
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1  # not the first sample: no beginning heard
    # Keep one onset per tick: ignore re-crossings inside the 40 ms burst.
    kept: list[int] = []
    for n in onsets:
        if not kept or n - kept[-1] > samplerate // 10:
            kept.append(int(n))
    length = samplerate * Tone.TICK_US // 1_000_000
    period = samplerate / Tone.TICK_HZ
    omega = 2 * np.pi / period
    edge = samplerate * 2 // 1000  # clear of the attack and the end
    found = []
    for n in kept:
        heard = np.flatnonzero(loud[n:n + length + length // 2])
        end = n + int(heard[-1]) + 1  # the burst's last loud sample (a dip inside it does not end it)
        if end - n < length * 4 // 5 and end < len(mono) - window:
            continue  # the tail of a tick whose beginning was cut off
        lo, hi = n + edge, min(n + length, end) - edge
        if hi - lo < 2 * window:
            found.append(float(n))  # too little of it to fit: the threshold's position
            continue
        k = np.arange(lo, hi)
        # the tick is sin(omega * (k - k0)): fit a*sin(omega k) + b*cos(omega k), and k0 = -phase / omega
        basis = np.stack([np.sin(omega * k), np.cos(omega * k)], axis=1)
        (a, b), *_ = np.linalg.lstsq(basis, mono[lo:hi], rcond=None)
        k0 = -np.arctan2(b, a) / omega
        found.append(float(k0 + round((n - k0) / period) * period))  # the zero crossing nearest the threshold's
    return [k / samplerate for k in found]


def _visitor(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A face drawn with ellipses (skin, hair, brows, eyes, nose, mouth) in a size×size
    square: which pixels it covers, and their luma. Frontal-face detectors find it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    shade = np.zeros((size, size), np.uint8)
    mask = np.zeros((size, size), bool)

    def ellipse(cx, cy, rx, ry, value, upper_half=False):
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        if upper_half:
            inside &= yy <= cy
        mask[inside] = True
        shade[inside] = value

    s = size / 1.2  # the face's height
    ellipse(c, c, s * 0.42, s * 0.55, 200)  # skin
    ellipse(c, c - s * 0.5, s * 0.45, s * 0.2, 30, upper_half=True)  # hair
    for side in (-1, 1):
        ellipse(c + side * s * 0.18, c - s * 0.215, s * 0.1, s * 0.018, 60)  # brow
        ellipse(c + side * s * 0.17, c - s * 0.1, s * 0.09, s * 0.045, 40)  # eye
    ellipse(c - s * 0.02, c + s * 0.04, s * 0.015, s * 0.08, 150)  # nose
    ellipse(c, c + s * 0.25, s * 0.14, s * 0.04, 90)  # mouth
    return mask, shade
