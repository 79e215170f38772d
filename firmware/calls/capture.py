"""The live source: a raw AF_PACKET socket on the mirror port, filtered in the kernel — and,
on simulated hardware, :class:`SimulatedCapture`, a trunk whose calls are made up as they go.

The classic BPF program below runs in the kernel for every frame on the interface and
passes only what the tracker can use: IPv4/IPv6 UDP (SIP and RTP; RTP ports are chosen
per call, so every UDP port passes), TCP to or from the trunk's SIP port, and IP
fragments (a large INVITE). Frames this host sends itself are dropped there too, so on
loopback each packet is seen once. Without the kernel filter a busy mirror port costs
user-space time for every irrelevant frame and drops start (NOTES.md: 21 % at 150k/s).

The filter is attached before the socket is bound to the interface, so not one unfiltered
frame is queued. Kernel timestamps (SO_TIMESTAMPNS) give each frame its capture time;
the kernel's own drop counter (PACKET_STATISTICS) says whether the socket kept up.

Needs CAP_NET_RAW (the systemd unit grants only that); promiscuous mode on an interface
with no address is what a mirror port needs and is asked for per socket (no ip link).
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import socket
import struct
import threading
import time
from typing import Iterator

from firmware.calls.errors import CaptureError

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
_SKF_AD_PKTTYPE = -0x1000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
_PACKET_OUTGOING = 4
_SNAP = 65535

# BPF opcodes (linux/filter.h)
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS = 0x20, 0x28, 0x30
_LD_H_IND = 0x48
_LDX_B_MSH = 0xB1
_JEQ_K, _JSET_K = 0x15, 0x45
_RET_K = 0x06


def bpf_program(sip_port: int) -> list[tuple[int, int, int, int]]:
    """The kernel filter as (code, jt, jf, k) instructions; jumps are relative.

    It passes every UDP datagram (RTP's ports are only known from SIP), every IP fragment
    after the first, and TCP to or from the SIP port. The kernel takes a frame's outer VLAN
    tag off before the filter runs; a second tag (802.1ad QinQ on a provider's mirror) is
    looked past here, and a frame with a third is passed for the decoder to read."""
    a, r = "accept", "reject"

    def ip(base: int, label: str) -> list:  # the checks from the ethertype at 12 + base on
        return [
            ("j", (_JEQ_K, label + "ip6", None, 0x86DD)),
            ("j", (_JEQ_K, None, r, 0x0800)),
            ("l", (_LD_B_ABS, 0, 0, 23 + base)),  # IPv4 protocol
            ("j", (_JEQ_K, a, None, 17)),
            ("j", (_JEQ_K, None, r, 6)),
            ("l", (_LD_H_ABS, 0, 0, 20 + base)),  # flags and fragment offset
            ("j", (_JSET_K, a, None, 0x1FFF)),  # a later fragment: no TCP header to look at
            ("l", (_LDX_B_MSH, 0, 0, 14 + base)),  # X = IPv4 header length
            ("l", (_LD_H_IND, 0, 0, 14 + base)),  # TCP source port
            ("j", (_JEQ_K, a, None, sip_port)),
            ("l", (_LD_H_IND, 0, 0, 16 + base)),  # TCP destination port
            ("j", (_JEQ_K, a, r, sip_port)),
            (label + "ip6", None),
            ("l", (_LD_B_ABS, 0, 0, 20 + base)),  # IPv6 next header
            ("j", (_JEQ_K, a, None, 17)),
            ("j", (_JEQ_K, a, None, 44)),  # a fragment header
            ("j", (_JEQ_K, a, None, 0)),  # hop-by-hop, routing or destination options: the decoder walks them
            ("j", (_JEQ_K, a, None, 43)),
            ("j", (_JEQ_K, a, None, 60)),
            ("j", (_JEQ_K, None, r, 6)),
            ("l", (_LD_H_ABS, 0, 0, 54 + base)),
            ("j", (_JEQ_K, a, None, sip_port)),
            ("l", (_LD_H_ABS, 0, 0, 56 + base)),
            ("j", (_JEQ_K, a, r, sip_port)),
        ]

    prog: list = [
        ("l", (_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE & 0xFFFFFFFF)),
        ("j", (_JEQ_K, r, None, _PACKET_OUTGOING)),
        ("l", (_LD_H_ABS, 0, 0, 12)),
        ("j", (_JEQ_K, "tagged", None, 0x8100)),
        ("j", (_JEQ_K, "tagged", None, 0x88A8)),
        *ip(0, ""),
        ("tagged", None),
        ("l", (_LD_H_ABS, 0, 0, 16)),
        ("j", (_JEQ_K, a, None, 0x8100)),  # a third tag: passed, read by the decoder
        ("j", (_JEQ_K, a, None, 0x88A8)),
        *ip(4, "tagged-"),
        ("accept", None),
        ("l", (_RET_K, 0, 0, _SNAP)),
        ("reject", None),
        ("l", (_RET_K, 0, 0, 0)),
    ]
    labels, out, n = {}, [], 0
    for kind, ins in prog:
        if ins is None:
            labels[kind] = n
        else:
            n += 1
    n = 0
    for kind, ins in prog:
        if ins is None:
            continue
        code, jt, jf, k = ins
        if kind == "j":
            jt = 0 if jt is None else labels[jt] - n - 1
            jf = 0 if jf is None else labels[jf] - n - 1
        out.append((code, jt, jf, k))
        n += 1
    return out


class LiveCapture:
    """Frames from one interface: ``frames()`` yields (capture time, bytes) until closed."""

    live = True  # frames come as they happen: quiet time is measured by the wall clock

    def __init__(self, interface: str, *, sip_port: int = 5060, promiscuous: bool = True,
                 buffer_bytes: int = 32 * 2**20):
        self.interface = interface
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing queued yet
        except PermissionError:
            raise CaptureError(errno.EPERM, "capturing needs CAP_NET_RAW: run the kiroku-call-recorder service"
                                            " (it has that capability) or run as root") from None
        try:
            prog = bpf_program(sip_port)
            self._filter = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
            fprog = struct.pack("HL", len(prog), ctypes.addressof(self._filter))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            try:
                sock.bind((interface, ETH_P_ALL))
            except OSError as exc:
                raise CaptureError(exc.errno, f"interface {interface!r}: {exc.strerror} — check --interface"
                                              " (see `ip link`)") from None
            if promiscuous:
                index = socket.if_nametoindex(interface)
                mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.settimeout(0.2)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._closed = False
        self.received = 0
        self.kernel_drops = 0

    def frames(self) -> Iterator[tuple[float, bytes]]:
        """Frames as they arrive; yields (now, b"") every 0.2 s of quiet so callers can tick."""
        sock = self._sock
        anc = socket.CMSG_SPACE(16)
        while not self._closed:
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(_SNAP, anc)
            except socket.timeout:
                yield time.time(), b""
                continue
            except OSError as exc:
                if self._closed:
                    return
                if exc.errno == errno.ENETDOWN:
                    raise CaptureError(exc.errno, f"interface {self.interface} went down — check its cable") from None
                raise
            ts = None
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    ts = sec + nsec * 1e-9
            self.received += 1
            yield (ts if ts is not None else time.time()), data

    def stats(self) -> dict:
        """Frames received and dropped by the kernel since the last call (the kernel resets them)."""
        try:
            packets, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return {"packets": 0, "drops": 0}
        self.kernel_drops += drops
        return {"packets": packets, "drops": drops}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def interface_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


class SimulatedCapture:
    """The mirror port on simulated hardware (``kiroku call-recorder --simulate``, ``kiroku run``
    and ``kiroku city`` on a call recorder): what :class:`LiveCapture` would hand on while the
    city's phones are in use, made up as it goes by :mod:`firmware.calls.synth` — one call after
    another, inbound and outbound, some unanswered, each ringing and then talking for a while in
    G.711 both ways — as Ethernet frames, in real time. Everything after the capture (decoding,
    tracking, rendering, sealing, the index, the audit log) is the real path, as it is for a
    replayed pcap; no privilege is needed, since nothing is captured.

    ``every``: seconds from one call's end to the next one's start, on average; ``first_after``:
    before the first. ``SIP_HOST`` is the carrier's side: give it as the trunk."""

    live = True
    SIP_HOST = "192.0.2.1"
    QUIET_TICK = 0.2  # as LiveCapture: (now, b"") while nothing crosses the trunk

    def __init__(self, *, every: float = 40.0, first_after: float = 5.0, seed: int | None = None):
        self.every, self.first_after = every, first_after
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self.kernel_drops = 0
        self.calls = 0

    def _script(self, start: float):
        from firmware.calls import synth

        n, rng = self.calls, self._random
        external, city = synth.trunk_pair(n % 1000, carrier=self.SIP_HOST)
        # the first is answered, so that a city just started shows a call recorded within a minute
        outcome = "answered" if n == 0 else rng.choices(("answered", "no_answer", "busy"), weights=(8, 1, 1))[0]
        return synth.Script(f"sim-{n}-{int(start)}@{self.SIP_HOST}", "inbound" if n % 2 == 0 else "outbound",
                            external, city, start=start, ring=rng.uniform(1.0, 4.0),
                            talk=rng.uniform(8.0, 25.0), outcome=outcome)

    def _wait_until(self, when: float) -> Iterator[tuple[float, bytes]]:
        """Quiet ticks until ``when`` (or until closed)."""
        while not self._stop.is_set():
            left = when - time.time()
            if left <= 0:
                return
            if self._stop.wait(min(left, self.QUIET_TICK)):
                return
            yield time.time(), b""

    def frames(self) -> Iterator[tuple[float, bytes]]:
        from firmware.calls import net, synth

        next_call = time.time() + self.first_after
        ident = 0
        while not self._stop.is_set():
            yield from self._wait_until(next_call)
            script = self._script(time.time() + 0.05)
            self.calls += 1
            last = script.start
            for ts, src, sport, dst, dport, payload in synth.packets(script):
                yield from self._wait_until(ts)
                if self._stop.is_set():
                    return
                ident = (ident + 1) & 0xFFFF
                last = ts
                yield ts, net.udp_frame(src, sport, dst, dport, payload, ident=ident)
            next_call = last + self.every * self._random.uniform(0.5, 1.5)

    def close(self) -> None:
        self._stop.set()
