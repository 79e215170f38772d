"""A call's two sides as one stereo track, sealed into the vault as record class ``call``.

Left is the external party, right is the city: a listener hears who said what, and a
transcriber can take one side alone. The track runs from the call's origin (its answer,
or its first early media) to its end, sample for sample: a lost packet is silence of its
own length, so the recording is exactly as long as the call.

Audio is AAC in fragmented MP4 — the container family of footage, so the same player,
export and ``age``/``ffprobe`` checks serve calls — cut into segments of a fixed length,
each sealed as it is written: a power cut loses at most the segment being written.

Audio is encoded once both sides are known to be complete up to it: the tracker hands on
a packet once it is older than the jitter window, so everything before ``now - 2 ×
window`` is final. A segment is committed when it is full, or when the call ends.

The call's row is written as the dialog changes and again after every sealed segment, each
time with the dialog (``Call.snapshot``) in the same transaction: the row's packet counts are
as durable as the audio, and a recorder that stops mid-call (``call_suspended``: what it heard
is sealed first) or dies takes the call up again when it starts (``resume``), appending to the
same recording after a gap of silence that the row states.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
from datetime import datetime
from fractions import Fraction

import numpy as np

from firmware import clock
from firmware.calls import rtp
from firmware.calls.call import CITY, EXTERNAL, Call
# the same file layout as footage (priming trimmed by an edit list)
from firmware.media.mp4 import MOVFLAGS, close_quietly
from firmware.store import Recording, SegmentInfo, StoreError

log = logging.getLogger(__name__)

RATE = rtp.RATE
_FRAME = 1024  # AAC-LC's frame
_BATCH = 64  # calls that never rang, written together
_UNRUNG_MAX = 10_000  # calls that never rang waiting to be written while the index refuses
_CATCH_UP = 30 * RATE // _FRAME * _FRAME  # at most this much of a call encoded in one tick


def _who(call: Call) -> str:
    """How messages name a call: its recording's id (a Call-ID may carry numbers and addresses)."""
    track = call.state
    return track.rec.id if track is not None else "(not yet recorded)"


def _wall_us(ts: float) -> int:
    return round(ts * 1e6)


def _boot_us(wall_us: int) -> int:
    """The boottime of a capture time (kernel timestamps are wall clock)."""
    return clock.boottime_us() - (time.time_ns() // 1000 - wall_us)


def _iso(wall_us: int) -> str:
    return clock.iso(datetime.fromtimestamp(wall_us / 1e6).astimezone())


class _Track:
    """One call's audio on its way to the vault."""

    def __init__(self, rec: Recording):
        self.rec = rec
        self.buf = np.zeros((2, 0), dtype=np.int16)
        self.base = 0  # sample position of buf[:, 0]
        self.seq = 0
        self.segment = None  # (sealed file, container, stream, first sample, samples written)
        self.written = 0  # samples handed to segments
        self.failed = ""
        self.begun = False  # its recording is in the index
        self.kept = ""  # the dialog as last kept (less its last activity): kept again when it changes


class CallWriter:
    """The tracker's sink: recordings, segments and the index row of each call."""

    def __init__(self, vault, *, device: str, segment_seconds: float = 10.0, window: float = 0.5,
                 bitrate: int = 32_000, on_stored=None):
        self.vault = vault
        self.device = device
        self.segment_samples = max(_FRAME, int(segment_seconds * RATE) // _FRAME * _FRAME)
        self.window = window
        self.bitrate = bitrate
        self.on_stored = on_stored
        self._ids: set[str] = set()
        self._unrung: list[tuple[Call, dict, Recording]] = []
        self.calls_stored = 0
        self.errors: list[str] = []

    # -- the tracker's sink ----------------------------------------------------------
    def call_began(self, call: Call) -> None:
        wall = _wall_us(call.invited)
        rec = Recording(id=self._new_id(wall), device=self.device, mode="call", started_at=_iso(wall),
                        started_us=_boot_us(wall), started_wall_us=wall, started_by="call-recorder",
                        clock_synchronised=clock.clock_synchronised(), record_class="call")
        call.state = _Track(rec)  # written once the call rings, is answered or is heard (_keep)

    def _alive(self, call: Call) -> bool:
        """Whether a call is more than an INVITE: it rang, was answered or carried audio. Until
        then nothing is written (a flood of INVITEs costs no writes while it lasts)."""
        return call.ringing is not None or call.answered is not None or call.origin is not None

    def call_changed(self, call: Call) -> None:
        """A SIP message reached the call: its row and dialog are kept if what they say changed
        (an answer, a hold, new media) — a power cut mid-call leaves an answered call answered."""
        track: _Track = call.state
        if track is not None and not track.failed and self._alive(call):
            self._keep(call, track, only_if_changed=True)

    def call_suspended(self, call: Call) -> None:
        """The recorder is stopping mid-call: everything heard is sealed, and the dialog kept
        for the next start (the call is not ended)."""
        track: _Track = call.state
        if track is None or track.failed or not self._alive(call):
            return  # one that never rang is not taken up (docs/calls.md): nothing to write
        if call.origin is not None and not call.resumed:
            self._write(call, track, track.base + track.buf.shape[1])
            self._finish_segment(call, track)
        self._keep(call, track)

    def resume(self, call: Call, rec: Recording, next_seq: int, samples: int, why: str = "recorder_restart") -> None:
        """Take up a call left in progress (``Vault.call_dialogs``): its recording goes on after
        the ``samples`` its sealed segments hold; what lies between is a gap, stated in its row
        and in the audit log, and silence of its length in the track."""
        track = _Track(rec)
        track.seq, track.written, track.base = next_seq, samples, samples
        track.begun = True
        call.state = track
        self._ids.add(rec.id)
        stored_until = call.origin + samples / RATE if call.origin is not None else call.last_activity
        if not call.gaps or call.gaps[-1][1] is not None:
            call.gaps.append([stored_until, None, why])
        # else: the run before it also stopped before it heard the call again: the same gap goes on
        try:
            self.vault.audit("call-recorder", "call.resumed", subject=rec.id, detail={
                "from": _iso(_wall_us(stored_until)), "why": why, "segments": next_seq})
        except (StoreError, OSError, sqlite3.Error) as exc:
            self._error(f"call {_who(call)}: cannot log that it goes on: {exc}")
        self._keep(call, track)

    def _keep(self, call: Call, track: _Track, *, only_if_changed: bool = False) -> None:
        dialog = call.snapshot()
        key = json.dumps({k: v for k, v in dialog.items() if k != "last_activity"}, sort_keys=True)
        if only_if_changed and key == track.kept:
            return
        begin = None if track.begun else track.rec
        try:
            self.vault.index_call(call_row(call, track.rec.id), begin=begin, dialog=dialog)
        except (StoreError, OSError, sqlite3.Error) as exc:
            if begin is not None:
                track.failed = str(exc)
            self._error(f"call {_who(call)}: cannot {'begin its recording' if begin else 'keep its state'}: {exc}")
            return
        track.begun, track.kept = True, key

    def call_audio(self, call: Call, side: str, position: int, pcm: np.ndarray) -> None:
        track: _Track = call.state
        if track is None or track.failed:
            return
        ch = 0 if side == EXTERNAL else 1
        start = position - track.base
        if start < 0:  # before what is already written: too late to place
            pcm = pcm[-start:]
            start = 0
            if not len(pcm):
                return
        end = start + len(pcm)
        if end > track.buf.shape[1]:
            grown = np.zeros((2, end), dtype=np.int16)
            grown[:, :track.buf.shape[1]] = track.buf
            track.buf = grown
        track.buf[ch, start:end] = pcm

    def call_tick(self, call: Call, now: float) -> None:
        track: _Track = call.state
        if track is None or track.failed:
            return
        if call.origin is None or call.resumed:
            return  # taken up after a restart and not heard since: it may have ended meanwhile, so no silence yet
        final = int((now - 2 * self.window - call.origin) * RATE)
        frames = (final - track.base) // _FRAME * _FRAME  # encoded as it becomes final: the end costs little
        frames = min(frames, _CATCH_UP)  # a gap's silence a little at a time: the work thread keeps up with the rest
        if frames > 0:
            self._write(call, track, track.base + frames)

    def call_ended(self, call: Call) -> None:
        track: _Track = call.state
        if track is None:
            return
        if not track.failed and call.origin is not None:
            total = max(0, round((call.ended - call.origin) * RATE))
            self._write(call, track, total)
            self._finish_segment(call, track)
        rec = track.rec
        rec.ended_wall_us = _wall_us(call.ended)
        rec.ended_at = _iso(rec.ended_wall_us)
        rec.end_reason = call.end_reason
        if not track.begun and not track.failed:
            # never rang: written with the others that ended so since the last tick, in one go
            self._unrung.append((call, call_row(call, rec.id), rec))
            if len(self._unrung) >= _BATCH:
                self.flush()
            return
        try:
            self.vault.index_call(call_row(call, rec.id), ended=rec)
        except (StoreError, OSError, sqlite3.Error) as exc:
            self._error(f"call {_who(call)}: cannot index its end: {exc}")
            return
        self._stored(call, rec)

    def call_not_recorded(self, when: float, direction: str) -> None:
        """A call on a line that is not recorded (Art. 3): only that it happened, for the report."""
        try:
            self.vault.audit("call-recorder", "call.not_recorded",
                             detail={"at": _iso(_wall_us(when)), "direction": direction})
        except (StoreError, OSError, sqlite3.Error) as exc:
            self._error(f"a call on a line not recorded: cannot count it: {exc}")

    def flush(self) -> None:
        """Write the calls that ended without ringing (the tracker calls this every tick)."""
        if not self._unrung:
            return
        batch, self._unrung = self._unrung, []
        try:
            self.vault.index_calls([(row, rec) for _, row, rec in batch])
        except (StoreError, OSError, sqlite3.Error) as exc:
            self._error(f"{len(batch)} calls that never rang: cannot index them yet: {exc}")
            self._unrung = (batch + self._unrung)[-_UNRUNG_MAX:]  # the next tick tries again
            return
        for call, _, rec in batch:
            self._stored(call, rec)

    def _stored(self, call: Call, rec: Recording) -> None:
        self.calls_stored += 1
        if self.on_stored:
            self.on_stored(call, rec)

    # -- writing ---------------------------------------------------------------------
    def _write(self, call: Call, track: _Track, upto: int) -> None:
        """Hand samples [written, upto) to segments; what no packet filled is silence."""
        while track.written < upto and not track.failed:
            if track.segment is None:
                self._open_segment(call, track)
                if track.failed:
                    return
            _file, _container, _stream, first, n = track.segment
            room = self.segment_samples - n
            take = min(room, upto - track.written)
            lo = track.written - track.base
            chunk = track.buf[:, lo:lo + take]
            if chunk.shape[1] < take:
                chunk = np.concatenate([chunk, np.zeros((2, take - chunk.shape[1]), dtype=np.int16)], axis=1)
            self._encode(call, track, chunk)
            track.written += take
            if track.segment is not None and track.segment[4] >= self.segment_samples:
                self._finish_segment(call, track)
        drop = track.written - track.base
        if drop > 0:
            track.buf = track.buf[:, drop:] if drop < track.buf.shape[1] else np.zeros((2, 0), dtype=np.int16)
            track.base = track.written

    def _open_segment(self, call: Call, track: _Track) -> None:
        import av

        if not track.begun:
            self._keep(call, track)  # its recording and row first
            if track.failed:
                return

        start_wall = _wall_us(call.origin) + track.written * 1_000_000 // RATE
        try:
            sealed = self.vault.open_segment(track.rec, track.seq, _boot_us(start_wall))
        except (StoreError, OSError, sqlite3.Error) as exc:
            track.failed = str(exc)
            self._error(f"call {_who(call)}: cannot open segment {track.seq}: {exc}")
            return
        container = av.open(sealed, "w", format="mp4", options={"movflags": MOVFLAGS})
        stream = container.add_stream("aac", rate=RATE)
        stream.codec_context.layout = "stereo"
        stream.codec_context.bit_rate = self.bitrate
        # ffmpeg's default AAC coder ("twoloop") costs ~25 ms of CPU per call-second here, "fast"
        # ~6 ms, at no loss a listener to a telephone line could hear: it sets how many calls a
        # core can take (kiroku bench).
        # And the band: ffmpeg picks a low-pass for the bitrate (about 3.3 kHz at 32 kb/s a channel),
        # which cut the top of G.711's voice band by 40 dB and kept nothing of G.722's 4–7 kHz. The
        # whole of what the timeline holds (RATE / 2) is kept instead.
        stream.codec_context.options = {"aac_coder": "fast", "cutoff": str(RATE // 2)}
        stream.time_base = Fraction(1, RATE)
        track.segment = [sealed, container, stream, track.written, 0]

    def _encode(self, call: Call, track: _Track, chunk: np.ndarray) -> None:
        import av

        sealed, container, stream, first, n = track.segment
        try:
            for at in range(0, chunk.shape[1], _FRAME):
                part = np.ascontiguousarray(chunk[:, at:at + _FRAME].T).reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(part, format="s16", layout="stereo")
                frame.sample_rate = RATE
                frame.pts = n + at
                frame.time_base = Fraction(1, RATE)
                container.mux(stream.encode(frame))
        except (StoreError, OSError, sqlite3.Error, av.FFmpegError) as exc:
            self._abandon(call, track, exc)
            return
        track.segment[4] = n + chunk.shape[1]

    def _finish_segment(self, call: Call, track: _Track) -> None:
        if track.segment is None:
            return
        import av

        sealed, container, stream, first, n = track.segment
        track.segment = None
        try:
            container.mux(stream.encode(None))
            container.close()
        except (StoreError, OSError, sqlite3.Error, av.FFmpegError) as exc:
            track.segment = [sealed, container, stream, first, n]
            self._abandon(call, track, exc)
            return
        start_wall = _wall_us(call.origin) + first * 1_000_000 // RATE
        end_wall = _wall_us(call.origin) + (first + n) * 1_000_000 // RATE
        info = SegmentInfo(recording_id=track.rec.id, seq=track.seq, start_us=_boot_us(start_wall),
                           end_us=_boot_us(end_wall), start_wall_us=start_wall, end_wall_us=end_wall,
                           started_at=_iso(start_wall), ended_at=_iso(end_wall),
                           clock_synchronised=track.rec.clock_synchronised, video_frames=0, audio_samples=n,
                           has_audio=True)
        try:
            sealed.commit(info)
        except (StoreError, OSError, sqlite3.Error) as exc:
            track.failed = str(exc)
            self._error(f"call {_who(call)}: segment {track.seq} not stored: {exc}")
            return
        track.seq += 1
        if call.ended is None:
            self._keep(call, track)  # its packet counts, as far as its sealed audio goes

    def _abandon(self, call: Call, track: _Track, exc: Exception) -> None:
        sealed, container, *_ = track.segment
        track.segment = None
        close_quietly(container)
        sealed.abort()
        track.failed = str(exc)
        self._error(f"call {_who(call)}: segment {track.seq} failed: {exc}")

    # -- the rest --------------------------------------------------------------------
    def _new_id(self, wall_us: int) -> str:
        ms = wall_us // 1000
        while True:
            dt = datetime.fromtimestamp(ms / 1000).astimezone()
            rid = dt.strftime("%Y%m%d-%H%M%S-") + f"{ms % 1000:03d}"
            if rid not in self._ids and self.vault.recording(rid) is None:
                break
            ms += 1  # two calls in the same millisecond: the ids stay in time order
        self._ids.add(rid)
        if len(self._ids) > 4096:
            self._ids = set(sorted(self._ids)[-1024:])
        return rid

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.errors.append(message)
        del self.errors[:-20]


def call_row(call: Call, recording_id: str) -> dict:
    """The index row of a call, as ``calls`` stores it."""
    ext, city = call.external, call.city
    loss = call.loss()

    def us(ts):
        return None if ts is None else _wall_us(ts)

    return {
        "recording_id": recording_id, "call_id": call.call_id[:200], "direction": call.direction,
        "trunk": call.trunk, "transport": call.transport,
        "external_raw": ext.raw[:64], "external_e164": ext.e164, "city_raw": city.raw[:64], "city_e164": city.e164,
        "withheld": int(call.caller.withheld),
        "prefix_184": int(ext.prefix_184 or city.prefix_184), "prefix_186": int(ext.prefix_186 or city.prefix_186),
        "outside_line": int(ext.outside_line or city.outside_line),
        "invited_wall_us": us(call.invited), "ringing_wall_us": us(call.ringing),
        "answered_wall_us": us(call.answered), "ended_wall_us": us(call.ended), "audio_wall_us": us(call.origin),
        "ring_ms": None if call.ring_seconds is None else round(call.ring_seconds * 1000),
        "talk_ms": round(call.talk_seconds * 1000) if call.ended is not None else None,
        "disposition": call.disposition or None, "sip_status": call.sip_status or None,
        "end_reason": call.end_reason or None, "ended_by": call.ended_by or None,
        "holds": json.dumps([[us(a), us(b)] for a, b in call.holds]),
        "codecs": ",".join(call.codecs()),
        "packets_received": loss["received"], "packets_lost": loss["lost"],
        "packets_duplicate": loss["duplicates"], "packets_late": loss["late"], "loss_percent": loss["loss_percent"],
        "gaps": json.dumps([[us(a), us(b), why] for a, b, why in call.gaps]),
        "external_heard": call.hearing(EXTERNAL), "city_heard": call.hearing(CITY),
        "packets_undecodable": sum(call.side_counts(s)["undecodable"] for s in (EXTERNAL, CITY)),
        "packets_encrypted": sum(call.side_counts(s)["encrypted"] for s in (EXTERNAL, CITY)),
        "sdp_errors": call.sdp_errors, "reached": call.reached,
    }


def decode_stereo(plaintext_segments: list[bytes]) -> np.ndarray:
    """A call's plaintext segments back to (2, n) float PCM at :data:`RATE`: for tests and
    the benchmark, which check what a listener would hear."""
    import av

    parts = []
    for data in plaintext_segments:
        with av.open(io.BytesIO(data)) as c:
            for frame in c.decode(audio=0):
                parts.append(frame.to_ndarray().reshape(2, -1) if frame.format.is_planar
                             else frame.to_ndarray().reshape(-1, 2).T)
    return np.concatenate(parts, axis=1) if parts else np.zeros((2, 0))
