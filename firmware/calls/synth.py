"""A simulated trunk: the SIP and RTP packets of scripted calls, as a mirror port shows them.

Used by the tests (written to pcap files, impaired, replayed) and by the benchmark (sent
over loopback to the live capture). The packets are ordinary SIP and RTP: nothing in the
recorder knows or cares that they were generated.

Each side speaks a steady tone of its own frequency, so a listener — or a test — can tell
on which channel each side ended up, and where audio is missing.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from firmware.calls.rtp import ALAW, ULAW

_PT_NAMES = {0: "PCMU", 8: "PCMA", 9: "G722"}


def _encoder(table: np.ndarray) -> np.ndarray:
    """int16 → code, the nearest code for every 16-bit value (a 64 K table, built once)."""
    order = np.argsort(table, kind="stable")
    values = table[order].astype(np.int32)
    x = np.arange(-32768, 32768, dtype=np.int32)
    i = np.clip(np.searchsorted(values, x), 1, 255)
    lower = np.where(np.abs(x - values[i - 1]) <= np.abs(values[i] - x), i - 1, i)
    return order[lower].astype(np.uint8)


_ENCODE: dict[int, np.ndarray] = {}


def encode_g711(pcm: np.ndarray, pt: int) -> bytes:
    if pt not in _ENCODE:
        _ENCODE[pt] = _encoder(ULAW if pt == 0 else ALAW)
    return _ENCODE[pt][pcm.astype(np.int32) + 32768].tobytes()


class G722:
    """A G.722 encoder (PyAV's), 16 kHz mono in, one payload per call."""

    def __init__(self):
        import av

        self._ctx = av.CodecContext.create("g722", "w")
        self._ctx.sample_rate, self._ctx.layout, self._ctx.format = 16000, "mono", "s16"
        self._ctx.open()
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        import av

        frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, self._pts
        self._pts += len(pcm)
        return b"".join(bytes(p) for p in self._ctx.encode(frame))


def tone(freq: float, start_sample: int, n: int, rate: int = 8000, level: float = 8000) -> np.ndarray:
    t = (np.arange(start_sample, start_sample + n)) / rate
    return (level * np.sin(2 * math.pi * freq * t)).astype(np.int16)


@dataclass
class Party:
    number: str
    sip: tuple[str, int]
    media: tuple[str, int]
    tone: float
    tag: str = ""


@dataclass
class Script:
    """One call, as it happens on the trunk. Times are seconds from ``start``."""

    call_id: str
    direction: str  # inbound: the carrier's side calls the city
    external: Party
    city: Party
    start: float = 1_800_000_000.0
    ring: float = 1.0
    talk: float = 3.0
    outcome: str = "answered"  # answered, busy, no_answer, cancelled
    early_media: bool = False
    hold: tuple[float, float] | None = None  # (from, length) into the talk, put on hold by the city
    pt: int = 0  # what RTP carries
    sdp_pt: int | None = None  # what the SDP offers (default: pt)
    anonymous: bool = False
    srtp: bool = False  # RTP/SAVP with SDES keys: payloads are ciphertext (random bytes here)
    ptime: float = 0.02
    packets: list = field(default_factory=list)

    @property
    def caller(self) -> Party:
        return self.external if self.direction == "inbound" else self.city

    @property
    def callee(self) -> Party:
        return self.city if self.direction == "inbound" else self.external


def _sdp(party: Party, pt: int, direction: str = "sendrecv", session: int = 1, srtp: bool = False) -> bytes:
    ip, port = party.media
    name = _PT_NAMES.get(pt, "PCMU")
    proto, crypto = ("RTP/SAVP", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "QUJD" * 10 + "\r\n") if srtp \
        else ("RTP/AVP", "")
    return (f"v=0\r\no=- {session} {session} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} {proto} {pt} 101\r\na=rtpmap:{pt} {name}/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n{crypto}a={direction}\r\n").encode()


class _Dialog:
    def __init__(self, s: Script):
        self.s = s
        s.caller.tag = s.caller.tag or f"c{abs(hash(s.call_id)) % 10**8}"
        s.callee.tag = s.callee.tag or f"e{abs(hash(s.call_id)) % 10**8}"
        self.cseq = 1

    def _from(self, party: Party) -> tuple[str, str]:
        """The user and host a From header names: an anonymous caller hides both (RFC 3323)."""
        if self.s.anonymous and party is self.s.caller:
            return "anonymous", "anonymous.invalid"
        return party.number, party.sip[0]

    def _uri(self, p: Party) -> str:
        return f"sip:{p.number}@{p.sip[0]}"

    def request(self, method: str, sender: Party, receiver: Party, *, cseq: int, body: bytes = b"",
                with_to_tag: bool = True, extra: str = "") -> bytes:
        s = self.s
        frm, to = (s.caller, s.callee) if sender is s.caller else (s.callee, s.caller)
        from_user, from_host = self._from(frm)
        to_tag = f";tag={to.tag}" if with_to_tag else ""
        head = (f"{method} {self._uri(receiver)} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {sender.sip[0]}:{sender.sip[1]};branch=z9hG4bK{method}{cseq}\r\n"
                f"From: <sip:{from_user}@{from_host}>;tag={frm.tag}\r\n"
                f"To: <sip:{to.number}@{to.sip[0]}>{to_tag}\r\n"
                f"Call-ID: {s.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}")
        return self._finish(head, body)

    def response(self, status: int, reason: str, method: str, cseq: int, *, sender: Party, body: bytes = b"",
                 to_tag: bool = True) -> bytes:
        s = self.s
        req_from = s.caller if sender is s.callee else s.callee
        from_user, from_host = self._from(req_from)
        tag = f";tag={sender.tag}" if to_tag else ""
        head = (f"SIP/2.0 {status} {reason}\r\n"
                f"Via: SIP/2.0/UDP {req_from.sip[0]}:{req_from.sip[1]};branch=z9hG4bK{method}{cseq}\r\n"
                f"From: <sip:{from_user}@{from_host}>;tag={req_from.tag}\r\n"
                f"To: <sip:{sender.number}@{sender.sip[0]}>{tag}\r\n"
                f"Call-ID: {s.call_id}\r\nCSeq: {cseq} {method}\r\n")
        return self._finish(head, body)

    @staticmethod
    def _finish(head: str, body: bytes) -> bytes:
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (head + ctype + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def packets(s: Script) -> list[tuple[float, str, int, str, int, bytes]]:
    """The call's packets: (time, source, source port, destination, destination port, payload)."""
    out: list = []
    d = _Dialog(s)
    caller, callee = s.caller, s.callee
    sdp_pt = s.pt if s.sdp_pt is None else s.sdp_pt
    t = s.start

    def sip(at: float, sender: Party, receiver: Party, data: bytes) -> None:
        out.append((at, sender.sip[0], sender.sip[1], receiver.sip[0], receiver.sip[1], data))

    extra = "Privacy: id\r\n" if s.anonymous else ""
    sip(t, caller, callee, d.request("INVITE", caller, callee, cseq=1, body=_sdp(caller, sdp_pt, srtp=s.srtp),
                                     with_to_tag=False, extra=extra))
    sip(t + 0.01, callee, caller, d.response(100, "Trying", "INVITE", 1, sender=callee, to_tag=False))
    if s.early_media:
        sip(t + 0.05, callee, caller, d.response(183, "Session Progress", "INVITE", 1, sender=callee,
                                                 body=_sdp(callee, sdp_pt, srtp=s.srtp)))
        _rtp(out, callee, caller, s, t + 0.06, t + s.ring, ssrc=0x1111, seq0=100)  # ringback from the callee
    else:
        sip(t + 0.05, callee, caller, d.response(180, "Ringing", "INVITE", 1, sender=callee))
    t_ans = t + s.ring
    refusal = {"busy": (486, "Busy Here"), "no_answer": (480, "Temporarily Unavailable")}.get(s.outcome)
    if refusal:
        sip(t_ans, callee, caller, d.response(*refusal, "INVITE", 1, sender=callee))
        sip(t_ans + 0.01, caller, callee, d.request("ACK", caller, callee, cseq=1))
        return sorted(out, key=lambda p: p[0])
    if s.outcome == "cancelled":
        sip(t_ans, caller, callee, d.request("CANCEL", caller, callee, cseq=1, with_to_tag=False))
        sip(t_ans + 0.01, callee, caller, d.response(200, "OK", "CANCEL", 1, sender=callee))
        sip(t_ans + 0.02, callee, caller, d.response(487, "Request Terminated", "INVITE", 1, sender=callee))
        sip(t_ans + 0.03, caller, callee, d.request("ACK", caller, callee, cseq=1))
        return sorted(out, key=lambda p: p[0])
    sip(t_ans, callee, caller, d.response(200, "OK", "INVITE", 1, sender=callee,
                                          body=_sdp(callee, sdp_pt, srtp=s.srtp)))
    sip(t_ans + 0.01, caller, callee, d.request("ACK", caller, callee, cseq=1))
    t_end = t_ans + s.talk
    spans = [(t_ans + 0.02, t_end)]
    city = s.city
    if s.hold:
        h0, hlen = t_ans + s.hold[0], t_ans + s.hold[0] + s.hold[1]
        other = s.external
        cseq = 2
        sip(h0, city, other, d.request("INVITE", city, other, cseq=cseq,
                                       body=_sdp(city, sdp_pt, "sendonly", 2, srtp=s.srtp)))
        sip(h0 + 0.01, other, city, d.response(200, "OK", "INVITE", cseq, sender=other,
                                               body=_sdp(other, sdp_pt, "recvonly", 2, srtp=s.srtp)))
        sip(h0 + 0.02, city, other, d.request("ACK", city, other, cseq=cseq))
        sip(hlen, city, other, d.request("INVITE", city, other, cseq=cseq + 1,
                                         body=_sdp(city, sdp_pt, "sendrecv", 3, srtp=s.srtp)))
        sip(hlen + 0.01, other, city, d.response(200, "OK", "INVITE", cseq + 1, sender=other,
                                                 body=_sdp(other, sdp_pt, "sendrecv", 3, srtp=s.srtp)))
        sip(hlen + 0.02, city, other, d.request("ACK", city, other, cseq=cseq + 1))
        spans = [(t_ans + 0.02, h0), (hlen + 0.02, t_end)]
    seq = 1000
    for a, b in spans:  # the external party is silent (and sends nothing) while held
        seq = _rtp(out, s.external, s.city, s, a, b, ssrc=0x2222, seq0=seq)
    _rtp(out, s.city, s.external, s, t_ans + 0.02, t_end, ssrc=0x3333, seq0=5000)
    sip(t_end, caller, callee, d.request("BYE", caller, callee, cseq=10))
    sip(t_end + 0.01, callee, caller, d.response(200, "OK", "BYE", 10, sender=callee))
    return sorted(out, key=lambda p: p[0])


def _rtp(out: list, sender: Party, receiver: Party, s: Script, t0: float, t1: float, *, ssrc: int, seq0: int) -> int:
    """Packets every ptime from t0 to t1, their payload the sender's tone, sample-continuous
    from the call's start (so a gap in the rendered audio is visible as a phase jump).
    Sequence numbers count the packets sent, timestamps the time passed (RFC 3550): after
    a pause the first keeps counting and the second jumps. Returns the next sequence number."""
    n = round(s.ptime * 8000)
    k0 = round((t0 - s.start) / s.ptime)
    count = int(round((t1 - t0) / s.ptime))
    wideband = G722() if s.pt == 9 else None  # one encoder per stream: ADPCM carries its state on
    for i in range(count):
        k = k0 + i
        if wideband is not None:  # 16 kHz audio, though RTP's clock for G.722 counts 8 kHz (RFC 3551)
            payload = wideband.encode(tone(sender.tone, 2 * k * n, 2 * n, rate=16000))
        else:
            payload = encode_g711(tone(sender.tone, k * n, n), s.pt if s.pt in (0, 8) else 0)
        if s.srtp:  # what an SRTP packet carries: ciphertext and a 10-byte tag, noise to any decoder
            payload = (hashlib.sha256(b"%d/%d" % (ssrc, k)).digest() * 8)[:len(payload) + 10]
        header = bytes([0x80, s.pt & 0x7F]) + ((seq0 + i) & 0xFFFF).to_bytes(2, "big") + \
            ((k * n) & 0xFFFFFFFF).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
        out.append((s.start + k * s.ptime, sender.media[0], sender.media[1], receiver.media[0], receiver.media[1],
                    header + payload))
    return seq0 + count


def trunk_pair(i: int = 0, *, carrier: str = "192.0.2.1", pbx: str = "198.51.100.10") -> tuple[Party, Party]:
    """An external party behind the carrier and a city extension behind the PBX, call ``i``'s
    media on its own ports."""
    ext = Party(f"0422{123456 + i:06d}"[:10], (carrier, 5060), (carrier, 40000 + 2 * i), 440.0)
    city = Party(f"0586{280000 + i:06d}"[:10], (pbx, 5060), (pbx, 20000 + 2 * i), 1000.0)
    return ext, city
