"""From captured frames to what SIP and RTP need: UDP payloads and in-order TCP bytes.

Ethernet (with 802.1Q tags), IPv4 with its fragments reassembled (a large INVITE with its
SDP often exceeds the MTU), IPv6, UDP and TCP. Parsing is plain ``struct`` on the hot
path: a G.711 call is 100 packets a second and one core must keep up with many.

Also the classic pcap file format, read and written, for captures replayed through the
same path (tests, and a recorder asked to keep what it saw for diagnosis).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from firmware.calls.errors import PcapError

UDP, TCP = 17, 6
_ETH_IP4, _ETH_IP6, _ETH_VLAN, _ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
_IP6_OPTIONS = (0, 43, 60)  # IPv6 extension headers that only carry options: hop-by-hop, routing, destination
_IP6_MAX_HEADERS = 8
_FRAG_TIMEOUT = 30.0
_FRAG_MAX_PENDING = 512
# A SIP message or an RTP packet is cut into a handful of pieces on any real link (IPv6's
# minimum MTU is 1280): more than this are a flood, dropped before it costs memory or time.
_FRAG_MAX_PIECES = 128
_TCP_MAX_GAP = 256 * 1024  # out-of-order bytes held per stream before it is resynchronised


@dataclass(slots=True)
class Datagram:
    """One UDP payload, or the next in-order bytes of one direction of a TCP stream."""

    ts: float  # capture time, seconds since the Unix epoch
    src: str
    sport: int
    dst: str
    dport: int
    proto: int
    payload: bytes


def _ip4(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def _ip6(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


class Decoder:
    """Feeds on frames, yields :class:`Datagram` s; keeps fragment and TCP stream state."""

    def __init__(self):
        self._fragments: dict[tuple, _Fragments] = {}
        self._streams: dict[tuple, _TcpStream] = {}
        self.frames = 0
        self.undecodable = 0

    def frame(self, ts: float, data: bytes) -> list[Datagram]:
        """An Ethernet frame as captured."""
        self.frames += 1
        if len(data) < 14:
            self.undecodable += 1
            return []
        ethertype = (data[12] << 8) | data[13]
        off = 14
        while ethertype in (_ETH_VLAN, _ETH_QINQ) and len(data) >= off + 4:
            ethertype = (data[off + 2] << 8) | data[off + 3]
            off += 4
        if ethertype == _ETH_IP4:
            return self.ip4(ts, data, off)
        if ethertype == _ETH_IP6:
            return self.ip6(ts, data, off)
        return []

    def ip4(self, ts: float, data: bytes, off: int = 0) -> list[Datagram]:
        if len(data) < off + 20 or data[off] >> 4 != 4:
            self.undecodable += 1
            return []
        ihl = (data[off] & 0x0F) * 4
        total = (data[off + 2] << 8) | data[off + 3]
        end = min(len(data), off + total)
        proto = data[off + 9]
        src, dst = _ip4(data[off + 12:off + 16]), _ip4(data[off + 16:off + 20])
        flags_frag = (data[off + 6] << 8) | data[off + 7]
        body = data[off + ihl:end]
        if flags_frag & 0x3FFF:  # more fragments, or an offset: part of a larger datagram
            key = (src, dst, data[off + 4:off + 6], proto)
            body = self._reassemble(ts, key, (flags_frag & 0x1FFF) * 8, bool(flags_frag & 0x2000), body)
            if body is None:
                return []
        return self._transport(ts, src, dst, proto, body)

    def ip6(self, ts: float, data: bytes, off: int = 0) -> list[Datagram]:
        if len(data) < off + 40 or data[off] >> 4 != 6:
            self.undecodable += 1
            return []
        length = (data[off + 4] << 8) | data[off + 5]
        proto = data[off + 6]
        src, dst = _ip6(data[off + 8:off + 24]), _ip6(data[off + 24:off + 40])
        body = data[off + 40:off + 40 + length]
        for _ in range(_IP6_MAX_HEADERS):
            if proto in _IP6_OPTIONS and len(body) >= 8:  # hop-by-hop, routing, destination options
                proto, body = body[0], body[(body[1] + 1) * 8:]
            elif proto == 44 and len(body) >= 8:  # the fragment header
                proto, frag = body[0], struct.unpack_from("!HI", body, 2)
                key = (src, dst, frag[1], proto)
                body = self._reassemble(ts, key, frag[0] & 0xFFF8, bool(frag[0] & 1), body[8:])
                if body is None:
                    return []
            else:
                break
        return self._transport(ts, src, dst, proto, body)

    def _transport(self, ts: float, src: str, dst: str, proto: int, body: bytes) -> list[Datagram]:
        if proto == UDP:
            if len(body) < 8:
                self.undecodable += 1
                return []
            sport, dport, length = struct.unpack_from("!HHH", body)
            return [Datagram(ts, src, sport, dst, dport, UDP, body[8:length] if length >= 8 else body[8:])]
        if proto == TCP:
            if len(body) < 20:
                self.undecodable += 1
                return []
            sport, dport, seq = struct.unpack_from("!HHI", body)
            hdr = (body[12] >> 4) * 4
            flags = body[13]
            key = (src, sport, dst, dport)
            stream = self._streams.get(key)
            if flags & 0x05:  # FIN or RST: the stream is over (what it held is delivered first)
                out = stream.take(seq, body[hdr:]) if stream is not None else b""
                self._streams.pop(key, None)
                if flags & 0x04:  # RST: the connection is gone both ways
                    self._streams.pop((dst, dport, src, sport), None)
                return [Datagram(ts, src, sport, dst, dport, TCP, out)] if out else []
            if stream is None:
                stream = self._streams[key] = _TcpStream(seq + 1 if flags & 0x02 else seq)
            elif flags & 0x02:
                stream.reset(seq + 1)
            out = stream.take(seq, body[hdr:])
            return [Datagram(ts, src, sport, dst, dport, TCP, out)] if out else []
        return []

    def _reassemble(self, ts: float, key: tuple, offset: int, more: bool, body: bytes) -> bytes | None:
        pending = self._fragments.get(key)
        if pending is None:
            if len(self._fragments) >= _FRAG_MAX_PENDING:
                self.expire(ts, force=True)
            pending = self._fragments[key] = _Fragments(ts)
        whole = pending.add(offset, more, body)
        if whole is not None or pending.dropped:
            del self._fragments[key]
        return whole

    def expire(self, now: float, *, force: bool = False) -> None:
        """Forget fragments that never completed (their datagram is lost; RTP reports the gap)."""
        for key in [k for k, f in self._fragments.items() if force or now - f.first > _FRAG_TIMEOUT]:
            del self._fragments[key]


class _Fragments:
    __slots__ = ("first", "parts", "total", "held", "dropped")

    def __init__(self, first: float):
        self.first = first
        self.parts: dict[int, bytes] = {}
        self.total: int | None = None
        self.held = 0  # bytes in parts
        self.dropped = False

    def add(self, offset: int, more: bool, body: bytes) -> bytes | None:
        """The datagram once every piece is in, judged as the receiving host's Linux judges
        it (inet_frag_queue_insert; RFC 5722 for IPv6): a piece lying wholly inside data
        already here is a duplicate and ignored; one that overlaps it partly, a second last
        piece with another end, or data past the last piece's end drop the whole datagram.
        What is recorded is what the far end could have read, and a flood holds nothing."""
        end = offset + len(body)
        if not body:
            return None
        if (end > 65535 or (not more and self.total is not None and end != self.total)
                or (not more and any(off + len(piece) > end for off, piece in self.parts.items()))
                or (more and self.total is not None and end > self.total)):
            self.dropped = True  # the ends disagree: checked first, as Linux does
            return None
        if any(a <= offset and end <= b for a, b in self._runs()):
            return None  # a duplicate (the mirror's copy, a retransmission)
        if len(self.parts) >= _FRAG_MAX_PIECES or any(
                off < end and offset < off + len(piece) for off, piece in self.parts.items()):
            self.dropped = True
            return None
        self.parts[offset] = body
        self.held += len(body)
        if not more:
            self.total = end
        if self.total is None or self.held < self.total:
            return None  # not all there yet
        # The pieces here never overlap and none reaches past the end (both refused above), so
        # as many bytes as the total are the whole datagram, with no hole left to look for.
        return b"".join(self.parts[off] for off in sorted(self.parts))

    def _runs(self) -> list[tuple[int, int]]:
        """The spans of data already here, adjacent pieces joined."""
        runs: list[list[int]] = []
        for off in sorted(self.parts):
            end = off + len(self.parts[off])
            if runs and off <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([off, end])
        return [(a, b) for a, b in runs]


class _TcpStream:
    """One direction of a TCP connection: bytes handed on in order, each exactly once."""

    __slots__ = ("next", "held")

    def __init__(self, next_seq: int):
        self.next = next_seq
        self.held: dict[int, bytes] = {}

    def reset(self, next_seq: int) -> None:
        self.next, self.held = next_seq, {}

    def take(self, seq: int, data: bytes) -> bytes:
        if not data:
            return b""
        delta = (seq - self.next) & 0xFFFFFFFF
        if delta >= 0x80000000:  # starts before what was delivered: keep only the new tail
            skip = (self.next - seq) & 0xFFFFFFFF
            if skip >= len(data):
                return b""
            data, seq = data[skip:], self.next
            delta = 0
        if delta:
            self.held[seq] = data
            if sum(len(d) for d in self.held.values()) > _TCP_MAX_GAP:  # the gap will not be filled
                seq = min(self.held, key=lambda s: (s - self.next) & 0xFFFFFFFF)
                self.next = seq
            else:
                return b""
        else:
            self.held[seq] = data
        out = bytearray()
        while True:
            while self.next in self.held:
                chunk = self.held.pop(self.next)
                out += chunk
                self.next = (self.next + len(chunk)) & 0xFFFFFFFF
            # Held segments that a retransmission has overtaken: keep only their new tail.
            behind = [q for q in self.held if (q - self.next) & 0xFFFFFFFF >= 0x80000000]
            if not behind:
                return bytes(out)
            for q in behind:
                data, skip = self.held.pop(q), (self.next - q) & 0xFFFFFFFF
                if skip < len(data):
                    self.held.setdefault(self.next, data[skip:])


# -- pcap files (https://www.tcpdump.org/manpages/pcap-savefile.5.html) ------------------
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
_MAGIC_US, _MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D


def read_pcap(path: Path | str) -> Iterator[tuple[float, bytes]]:
    """Yields (capture time, Ethernet frame); raw-IP and Linux-cooked captures are given an
    Ethernet header so that one decoder serves them all. A truncated last record ends the
    file quietly, as a capture cut by a power loss does."""
    with open(path, "rb") as f:
        yield from _records(f, str(path))


def _records(f: BinaryIO, name: str) -> Iterator[tuple[float, bytes]]:
    head = f.read(24)
    if len(head) < 24:
        raise PcapError(f"{name}: too short to be a pcap file")
    for endian in ("<", ">"):
        magic = struct.unpack(endian + "I", head[:4])[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        hint = " (pcapng: convert it with `editcap -F pcap`)" if head[:4] == b"\x0a\x0d\x0d\x0a" else ""
        raise PcapError(f"{name}: not a pcap file{hint}")
    scale = 1e-9 if magic == _MAGIC_NS else 1e-6
    linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL):
        raise PcapError(f"{name}: link type {linktype} is not Ethernet, raw IP or Linux cooked")
    rec = struct.Struct(endian + "IIII")
    while True:
        hdr = f.read(16)
        if len(hdr) < 16:
            return
        sec, frac, caplen, _orig = rec.unpack(hdr)
        data = f.read(caplen)
        if len(data) < caplen:
            return
        ts = sec + frac * scale
        if linktype == LINKTYPE_RAW and data:
            kind = _ETH_IP6 if data[0] >> 4 == 6 else _ETH_IP4
            data = bytes(12) + kind.to_bytes(2, "big") + data
        elif linktype == LINKTYPE_LINUX_SLL:
            data = bytes(12) + data[14:16] + data[16:]
        yield ts, data


class PcapWriter:
    """Frames appended to a pcap file (nanosecond timestamps, Ethernet)."""

    def __init__(self, path: Path | str, snaplen: int = 65535):
        self._f = open(path, "wb")
        self._f.write(struct.pack("<IHHiIII", _MAGIC_NS, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, ts: float, frame: bytes) -> None:
        ns = round(ts * 1e9)
        self._f.write(struct.pack("<IIII", ns // 1_000_000_000, ns % 1_000_000_000, len(frame), len(frame)))
        self._f.write(frame)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, *, ident: int = 0) -> bytes:
    """An Ethernet/IPv4/UDP frame (checksum left zero, as UDP over IPv4 allows): for tests and
    for editing captures."""
    ip_len = 20 + 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, ident & 0xFFFF, 0, 64, UDP, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return bytes(12) + b"\x08\x00" + ip + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def udp6_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, *, options: tuple[int, ...] = ()) -> bytes:
    """An Ethernet/IPv6/UDP frame, after an empty extension header of each type in
    ``options`` (0 hop-by-hop, 60 destination options), in order: for tests. Its UDP
    checksum is left zero, which a receiving host would refuse; a capture reads it."""
    kinds = (*options, UDP)
    ext = b"".join(bytes([kinds[i + 1], 0, 1, 4, 0, 0, 0, 0]) for i in range(len(options)))  # PadN
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(udp), kinds[0], 64,
                     ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)
    return bytes(12) + b"\x86\xdd" + ip + ext + udp
