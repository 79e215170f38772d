"""Plays scripted calls onto loopback in real time: the benchmark's simulated trunk.

``python -m firmware.calls.loadgen --calls N --seconds S --sip-port P --media-port M``
sends N overlapping G.711 calls — set up 20 a second, then all in progress together for S
seconds; SIP and RTP both ways, 50 packets a second per side — from the "carrier"
127.0.0.2 and the "PBX" 127.0.0.3, each from its own bound UDP socket, so what the
capture sees is what a mirror port shows. It prints one JSON line when done: packets sent
and how late the sender fell behind its schedule (a late sender would make the capture
look better than it is).
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import time

from firmware.calls import synth

CARRIER, PBX = "127.0.0.2", "127.0.0.3"
SETUP_INTERVAL = 0.05


def scripts(calls: int, seconds: float, *, sip_port: int, media_port: int, start: float) -> list[synth.Script]:
    out = []
    for i in range(calls):
        ext = synth.Party(f"0422{100000 + i:06d}"[:10], (CARRIER, sip_port), (CARRIER, media_port + 2 * i),
                          300.0 + (i % 40) * 50)
        city = synth.Party(f"0586{200000 + i:06d}"[:10], (PBX, sip_port + 1), (PBX, media_port + 20000 + 2 * i), 1000.0)
        # Calls set up 20 a second (a burst a real trunk never sees is not what is measured),
        # and every call lasts until ``seconds`` after the last one was answered: all overlap.
        ramp = calls * SETUP_INTERVAL
        out.append(synth.Script(f"load-{i}@{CARRIER}", "inbound" if i % 2 else "outbound", ext, city,
                                start=start + i * SETUP_INTERVAL, ring=0.2, talk=seconds + ramp - i * SETUP_INTERVAL))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware.calls.loadgen")
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--sip-port", type=int, default=25060)
    p.add_argument("--media-port", type=int, default=30000)
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.calls + 64)), hard))
    base = 1_000_000.0
    plan = sorted((p for s in scripts(args.calls, args.seconds, sip_port=args.sip_port, media_port=args.media_port,
                                      start=base) for p in synth.packets(s)), key=lambda p: p[0])
    socks: dict[tuple[str, int], socket.socket] = {}
    for _, src, sport, *_rest in plan:
        if (src, sport) not in socks:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src, sport))
            socks[(src, sport)] = s
    print(json.dumps({"ready": True, "packets": len(plan)}), flush=True)
    t0 = time.monotonic() + 0.2
    worst = 0.0
    sent = 0
    for ts, src, sport, dst, dport, payload in plan:
        due = t0 + (ts - base)
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            worst = max(worst, now - due)
        try:
            socks[(src, sport)].sendto(payload, (dst, dport))
            sent += 1
        except OSError:
            pass  # ECONNREFUSED from an earlier ICMP: nothing listens there, and nothing needs to
    print(json.dumps({"sent": sent, "max_late_ms": round(worst * 1000, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
