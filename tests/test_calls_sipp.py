"""Real calls, placed by SIPp between a "carrier" and a "PBX" on loopback, captured live by
the call recorder from ``lo`` exactly as it captures a mirror port: what the index says
and what a listener hears."""

from __future__ import annotations

import json
import os
import random
import threading

import pytest

from firmware.calls.capture import LiveCapture
from firmware.calls.recorder import CallRecorder
from tests import sipp
from tests.calls_helpers import RATE, audio, calls, peak_hz, rms, window
from tests.conftest import small_config

pytestmark = [
    pytest.mark.skipif(not sipp.available(), reason="sipp is not installed (tools/system-packages test installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs CAP_NET_RAW (CI runs as root)"),
    # one live capture on lo at a time: with make test's several workers, these run on one
    pytest.mark.xdist_group("capture-on-lo"),
]


@pytest.fixture
def config():
    return small_config(calls={"segment_seconds": 2.0})


@pytest.fixture
def ports():
    """A SIP and a media port range of this test's own, so no other test's packet is in it."""
    base = random.Random(os.getpid() ^ id(object())).randrange(20000, 28000, 100)
    return base, base + 10000


@pytest.fixture
def live(vault, config, ports):
    """The call recorder on lo, the carrier's SIP address as its trunk."""
    sip_port, _ = ports
    rec = CallRecorder(vault, config, trunk=f"{sipp.CARRIER_IP}:{sip_port}", interface="lo",
                       source=LiveCapture("lo", sip_port=sip_port)).start()
    yield rec
    rec.close()


def place(tmp_path, ports, live, *pairs_args, inbound=True, tcp=False):
    """Place the calls (concurrently when there are several) and wait until all are stored."""
    sip_port, media_port = ports
    pairs = [sipp.Pair(tmp_path, call, inbound=inbound, sip_port=sip_port, media_port=media_port, index=i,
                       tones=tones, tcp=tcp) for i, (call, tones) in enumerate(pairs_args)]
    errors = []

    def run(p):
        try:
            p.run()
        except Exception as exc:  # reported below, with the test's own failure
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    deadline = threading.Event()
    for _ in range(100):  # the jitter window and the last segment: well under a second
        if live.writer.calls_stored >= len(pairs) and not live.tracker.calls:
            break
        deadline.wait(0.05)
    live.close()
    assert live.status()["dropped"] == {"kernel": 0, "queue": 0}
    got = calls(live.store)
    for p in pairs:  # each call's row with what SIPp says it sent, and when
        wire = p.wire()
        if wire.call_id in got:
            got[wire.call_id]["wire"] = wire
    return got


# The recorder's times are held against the wire's, as SIPp stamped its messages: on a loaded
# machine SIPp's own pauses run long, and a recorder that is right must not fail for that.
ON_TIME = 0.05


def answered(row) -> float:
    return row["wire"].at("SIP/2.0 200", "1 INVITE")


def talk(row) -> float:
    return row["wire"].at("BYE", "10 BYE") - answered(row)


def only(rows: dict) -> dict:
    assert len(rows) == 1, rows
    return next(iter(rows.values()))


@pytest.mark.parametrize("inbound", [True, False], ids=["inbound", "outbound"])
def test_an_answered_call_has_its_numbers_times_and_both_voices(tmp_path, vault, recovery, ports, live, inbound):
    row = only(place(tmp_path, ports, live, (sipp.Call(ring_ms=800, talk_ms=3000), (440.0, 1000.0)),
                     inbound=inbound))
    assert row["direction"] == ("inbound" if inbound else "outbound")
    external, city = ("0422123456", "0586280000") if inbound else ("0586280000", "0422123456")
    assert row["external_raw"] == external and row["city_raw"] == city
    assert row["disposition"] == "answered" and row["codecs"] == "PCMU"
    assert row["ring_s"] == pytest.approx(answered(row) - row["wire"].at("INVITE", "1 INVITE"), abs=ON_TIME)
    assert row["talk_s"] == pytest.approx(talk(row), abs=ON_TIME)
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(row["talk_s"], abs=0.1)
    # the carrier's side plays 440 Hz, the PBX's 1000 Hz: the external party is always left
    left, right = window(pcm, 0.3, 2.7)
    assert peak_hz(left) == pytest.approx(440, abs=5) and peak_hz(right) == pytest.approx(1000, abs=5)
    assert row["packets_lost"] == 0


def test_sip_over_tcp(tmp_path, vault, recovery, ports, live):
    row = only(place(tmp_path, ports, live, (sipp.Call(talk_ms=2000), (440.0, 1000.0)), tcp=True))
    assert row["transport"] == "tcp" and row["disposition"] == "answered"
    assert row["talk_s"] == pytest.approx(talk(row), abs=ON_TIME)
    left, right = window(audio(vault, recovery, row["recording_id"]), 0.3, 1.7)
    assert peak_hz(left) == pytest.approx(440, abs=5) and peak_hz(right) == pytest.approx(1000, abs=5)


def test_a_busy_line_and_a_cancelled_call_are_indexed(tmp_path, vault, ports, live):
    got = place(tmp_path, ports, live, (sipp.Call(outcome="busy"), (440.0, 1000.0)),
                (sipp.Call(outcome="cancelled", ring_ms=1500, caller="0312345678"), (440.0, 1000.0)))
    by_caller = {r["external_raw"]: r for r in got.values()}
    busy, cancelled = by_caller["0422123456"], by_caller["0312345678"]
    assert (busy["disposition"], busy["sip_status"], busy["segments"]) == ("busy", 486, 0)
    assert cancelled["disposition"] == "cancelled" and cancelled["ring_s"] == pytest.approx(
        cancelled["wire"].at("SIP/2.0 487", "1 INVITE") - cancelled["wire"].at("INVITE", "1 INVITE"), abs=ON_TIME)
    assert cancelled["external_e164"] == "+81312345678" and cancelled["external_display"] == "03-1234-5678"


def test_an_anonymous_caller_is_withheld(tmp_path, vault, ports, live):
    row = only(place(tmp_path, ports, live, (sipp.Call(anonymous=True), (440.0, 1000.0))))
    assert row["withheld"] == 1 and row["external_display"] == "非通知" and row["external_e164"] == ""


def test_hold_and_resume(tmp_path, vault, recovery, ports, live):
    call = sipp.Call(talk_ms=4500, hold_ms=(1000, 1500))  # the city (the caller, outbound) holds
    row = only(place(tmp_path, ports, live, (call, (440.0, 1000.0)), inbound=False))
    raw = live.store.db.execute("SELECT holds FROM calls").fetchone()[0]
    (start, end), = json.loads(raw)
    held, resumed = row["wire"].at("INVITE", "2 INVITE"), row["wire"].at("INVITE", "3 INVITE")
    assert start / 1e6 == pytest.approx(held, abs=ON_TIME) and end / 1e6 == pytest.approx(resumed, abs=ON_TIME)
    assert row["talk_s"] == pytest.approx(talk(row), abs=ON_TIME)
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(row["talk_s"], abs=0.1)


def test_early_media_is_heard_before_the_answer(tmp_path, vault, recovery, ports, live):
    row = only(place(tmp_path, ports, live, (sipp.Call(early_media=True, ring_ms=1500), (440.0, 1000.0))))
    early = (row["answered_wall_us"] - row["audio_wall_us"]) / 1e6
    # Heard from its first packet: after the 183 that announced it (SIPp sends the media a moment
    # later, more on a loaded machine), and most of the 1.5 s before the answer.
    announced = answered(row) - row["wire"].at("SIP/2.0 183", "1 INVITE")
    assert 0.5 <= early <= announced + 0.1, f"{early:.2f} s of early media; the 183 came {announced:.2f} s before"
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(early + row["talk_s"], abs=0.1)
    ringing = window(pcm, 0.2, early - 0.1)
    assert peak_hz(ringing[1]) == pytest.approx(1000, abs=5)  # the city's early media (an announcement)
    assert rms(ringing[0]) < 0.01  # the caller sends nothing before the answer


def test_a_payload_type_other_than_the_sdps_is_decoded_by_what_it_is(tmp_path, vault, recovery, ports, live):
    row = only(place(tmp_path, ports, live, (sipp.Call(sdp_pt=0, rtp_pt=8), (440.0, 1000.0))))
    assert row["codecs"] == "PCMA"
    left, right = window(audio(vault, recovery, row["recording_id"]), 0.3, 2.7)
    assert peak_hz(left) == pytest.approx(440, abs=5) and peak_hz(right) == pytest.approx(1000, abs=5)


def test_many_concurrent_calls_each_keep_their_own_voices(tmp_path, vault, recovery, ports, live):
    n = 12
    args = [(sipp.Call(caller=f"0422{100000 + i}", talk_ms=4000), (300.0 + 60 * i, 1500.0 + 80 * i))
            for i in range(n)]
    got = place(tmp_path, ports, live, *args)
    assert len(got) == n
    rows = sorted(got.values(), key=lambda r: r["external_raw"])
    assert max(r["answered_wall_us"] for r in rows) < min(r["ended_wall_us"] for r in rows)  # all at once
    for i, row in enumerate(rows):
        assert row["talk_s"] == pytest.approx(talk(row), abs=ON_TIME)
        left, right = window(audio(vault, recovery, row["recording_id"]), 0.3, 3.7)
        assert peak_hz(left) == pytest.approx(300 + 60 * i, abs=5), row["external_raw"]
        assert peak_hz(right) == pytest.approx(1500 + 80 * i, abs=5), row["external_raw"]


@pytest.mark.parametrize("tags, ip6_options", [([], None), ([0x8100], None), ([0x88A8, 0x8100], None),
                                               ([0x8100, 0x8100], None), ([], (0, 60)), ([0x88A8, 0x8100], (0, 60))],
                         ids=["untagged", "802.1Q", "802.1ad QinQ", "double 802.1Q", "IPv6 with options",
                              "IPv6 with options, QinQ"])
def test_sip_on_a_tagged_mirror_port_passes_the_kernel_filter(ports, tags, ip6_options):
    """Frames sent on lo through the real kernel: it takes an outer VLAN tag off before the
    capture's filter runs, and a second (QinQ) tag is left for the filter and the decoder
    to look past, as are IPv6's hop-by-hop and destination options."""
    import socket
    import struct

    from firmware.calls import net

    sip_port, _ = ports
    payload = f"OPTIONS sip:x@192.0.2.1 SIP/2.0\r\nCall-ID: tag-{len(tags)}-{sip_port}\r\n\r\n".encode()
    frame = net.udp_frame("192.0.2.1", sip_port, "127.0.0.1", sip_port, payload) if ip6_options is None else \
        net.udp6_frame("2001:db8::1", sip_port, "::1", sip_port, payload, options=ip6_options)
    for i, tpid in enumerate(reversed(tags)):  # the innermost tag first
        inner = frame[12:14]
        frame = frame[:12] + struct.pack("!HH", tpid, 10 + i) + inner + frame[14:]
    # TCP off the SIP port (a file transfer on the mirrored link): the filter's to drop it
    udp = net.udp_frame("192.0.2.1", sip_port + 1, "127.0.0.1", sip_port + 1, b"not SIP")
    other = bytearray(udp[:14] + udp[14:34] + struct.pack("!HHIIBBHHH", sip_port + 1, sip_port + 1, 1, 0, 0x50,
                                                            0x18, 65535, 0, 0) + b"not SIP")
    other[14 + 9] = 6  # TCP
    struct.pack_into("!H", other, 14 + 2, len(other) - 14)
    with LiveCapture("lo", sip_port=sip_port, promiscuous=False) as capture, \
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as out:
        out.bind(("lo", 0))
        out.send(bytes(other[:12]) + frame[12:12 + 4 * len(tags)] + bytes(other[12:]))  # the same tags
        out.send(frame)
        decoder, got = net.Decoder(), []
        for _, data in capture.frames():
            if not data:
                break  # 0.2 s of quiet
            got += decoder.frame(0.0, data)
    assert [d.payload for d in got if d.dport in (sip_port, sip_port + 1)] == [payload], \
        "the SIP frame is captured once, and TCP off the SIP port is filtered out"
