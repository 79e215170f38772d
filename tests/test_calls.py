"""The call recorder on replayed captures: what a manager finds in the index, and what a
listener hears — each side on its own channel, for exactly as long as the call lasted."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest

from firmware.calls import net, numbers, rtp, sip, synth
from firmware.calls.recorder import CallRecorder
from firmware.vault import Vault
from tests.calls_helpers import RATE, audio, calls, capture_of, impair, peak_hz, replay, rms, window, write_pcap
from tests.conftest import small_config


@pytest.fixture
def config():
    return small_config(calls={"segment_seconds": 2.0})


def _call(i=0, **kw) -> synth.Script:
    ext, city = synth.trunk_pair(i)
    kw.setdefault("start", 1_800_000_000.0 + i * 0.37)
    return synth.Script(f"call-{i}@trunk.example", kw.pop("direction", "inbound"), ext, city, **kw)


def _record(tmp_path, vault, config, scripts, **impairments):
    packets = capture_of(scripts)
    touched = {}
    if impairments:
        packets, touched = impair(packets, **impairments)
    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", packets))
    return calls(vault), touched


# -- the codecs and the wire formats ---------------------------------------------------------
@pytest.mark.parametrize("name, table", [("pcm_mulaw", rtp.ULAW), ("pcm_alaw", rtp.ALAW)])
def test_g711_tables_decode_every_code_as_ffmpeg_does(name, table):
    import av

    ctx = av.CodecContext.create(name, "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    ctx.open()
    reference = np.concatenate([f.to_ndarray().reshape(-1) for f in ctx.decode(av.Packet(bytes(range(256))))])
    assert np.array_equal(table, reference.astype(np.int16))


def test_g722_is_decoded_through_pyav():
    import av

    enc = av.CodecContext.create("g722", "w")
    enc.sample_rate, enc.layout, enc.format = 16000, "mono", "s16"
    enc.open()
    t = np.arange(16000) / 16000
    pcm = (8000 * np.sin(2 * np.pi * 1200 * t)).astype(np.int16)
    payloads = []
    for at in range(0, len(pcm), 320):
        frame = av.AudioFrame.from_ndarray(pcm[at:at + 320].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, at
        payloads += [bytes(p) for p in enc.encode(frame)]
    dec = rtp.Decoder()
    out = np.concatenate([x for x in (dec.decode(9, p) for p in payloads) if x is not None])
    assert dec.codecs == {"G722"}
    assert abs(peak_hz(out[4000:12000]) - 1200) < 10


def _level_db(x: np.ndarray, freq: float, level: float = 8000 / 32768) -> float:
    """A tone's level in ``x`` (float PCM at RATE) against ``level``, the input's peak, in dB:
    the spectrum's peak near ``freq`` through a Hann window (which sums to half its length)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    near = (freqs > freq - 20) & (freqs < freq + 20)
    return 20 * np.log10(spectrum[near].max() / (len(x) / 4) / level)


@pytest.mark.parametrize("pt, high", [(0, 3400.0), (8, 3400.0), (9, 7000.0)], ids=["PCMU", "PCMA", "G722"])
def test_the_whole_voice_band_of_each_codec_is_kept(tmp_path, vault, config, recovery, pt, high):
    """Near the top of what each codec carries (G.711: 300–3400 Hz; G.722: 50–7000 Hz), and low
    in it, a tone is stored within 3 dB of what was sent."""
    ext, city = synth.trunk_pair(0)
    ext.tone, city.tone = high, 300.0
    script = synth.Script("band@trunk.example", "inbound", ext, city, start=1_800_000_000.0, talk=3.0, pt=pt)
    got, _ = _record(tmp_path, vault, config, [script])
    row = got[script.call_id]
    assert row["codecs"] == {0: "PCMU", 8: "PCMA", 9: "G722"}[pt]
    left, right = window(audio(vault, recovery, row["recording_id"]), 0.5, 2.5)
    assert _level_db(left, high) > -3.0, f"{high:.0f} Hz (the external side) came out {_level_db(left, high):.1f} dB"
    assert _level_db(right, 300.0) > -3.0, f"300 Hz (the city's side) came out {_level_db(right, 300.0):.1f} dB"


def test_sip_compact_and_folded_headers_are_understood():
    msg = sip.parse(b"INVITE sip:0586280000@pbx SIP/2.0\r\ni: abc@host\r\nf: <sip:0422123456@carrier>;tag=x1\r\n"
                    b"t: <sip:0586280000@pbx>\r\nv: SIP/2.0/UDP carrier\r\nCSeq: 1\r\n INVITE\r\nc: application/sdp\r\n"
                    b"l: 0\r\n\r\n")
    assert (msg.call_id, msg.from_tag, msg.to_tag, msg.cseq) == ("abc@host", "x1", "", (1, "INVITE"))
    assert sip.user_of(msg.header("from")) == "0422123456"


def test_sip_over_tcp_is_framed_by_content_length():
    body = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"
    common = b"Call-ID: t1\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:1@b>\r\nVia: SIP/2.0/TCP a\r\n"
    one = b"INVITE sip:1@b SIP/2.0\r\n" + common + b"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n" \
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    two = b"BYE sip:1@b SIP/2.0\r\n" + common + b"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    framer = sip.StreamFramer()
    stream = one + two
    got = framer.feed(stream[:30]) + framer.feed(stream[30:len(one) - 5]) + framer.feed(stream[len(one) - 5:])
    assert got == [one, two]
    assert sip.parse(got[0]).sdp.audio.port == 4000


def test_a_fragmented_invite_is_reassembled():
    payload = b"X" * 3000
    whole = net.udp_frame("192.0.2.1", 5060, "198.51.100.10", 5060, payload, ident=77)
    ip = whole[14:]
    body = ip[20:]
    frames = []
    for off in range(0, len(body), 1480):
        chunk = body[off:off + 1480]
        more = 0x2000 if off + 1480 < len(body) else 0
        hdr = bytearray(ip[:20])
        struct.pack_into("!H", hdr, 2, 20 + len(chunk))
        struct.pack_into("!H", hdr, 6, more | off // 8)
        frames.append(whole[:14] + bytes(hdr) + chunk)
    dec = net.Decoder()
    got = [d for f in reversed(frames) for d in dec.frame(1.0, f)]  # out of order, as it can arrive
    assert len(got) == 1 and got[0].payload == payload and got[0].dport == 5060


def test_sip_over_ipv6_is_read_past_its_option_headers():
    frame = net.udp6_frame("2001:db8::1", 5060, "2001:db8::2", 5060, b"INVITE", options=(0, 60))
    got = net.Decoder().frame(1.0, frame)
    assert [(d.src, d.dport, d.payload) for d in got] == [("2001:db8::1", 5060, b"INVITE")]


def test_numbers_keep_e164_and_raw_digits_and_show_area_codes_honestly():
    musashino = numbers.parse("0422123456")
    assert musashino.e164 == "+81422123456"
    assert musashino.display == "0422123456"  # not 042-212-3456: the area code is 0422
    assert numbers.parse("+819012345678").display == "090-1234-5678"
    assert numbers.parse("0120123456").display == "0120-123-456"
    withheld = numbers.parse("1840422123456")
    assert withheld.prefix_184 and withheld.withheld and withheld.e164 == "+81422123456"
    outside = numbers.parse("00422123456", outside_line_prefix="0")
    assert outside.outside_line and outside.e164 == "+81422123456"
    assert numbers.parse("110").e164 == "" and numbers.parse("110").display == "110"
    assert numbers.parse("anonymous").display == "非通知"
    for typed in ("0422-12-3456", "０４２２１２３４５６", "+81 422 12 3456", "(0422) 12-3456"):
        assert numbers.search_key(typed) == "422123456", typed


# -- calls, replayed ---------------------------------------------------------------------------
def test_inbound_and_outbound_calls_are_indexed_with_their_numbers_and_times(tmp_path, vault, config, recovery):
    got, _ = _record(tmp_path, vault, config, [_call(0, talk=3.0, ring=1.5),
                                               _call(1, direction="outbound", talk=2.0, ring=0.8)])
    inbound, outbound = got["call-0@trunk.example"], got["call-1@trunk.example"]
    assert inbound["direction"] == "inbound" and outbound["direction"] == "outbound"
    assert inbound["external_e164"] == "+81422123456" and inbound["city_e164"] == "+81586280000"
    assert outbound["external_e164"] == "+81422123457" and outbound["city_e164"] == "+81586280001"
    assert inbound["disposition"] == outbound["disposition"] == "answered"
    assert inbound["talk_s"] == pytest.approx(3.0, abs=0.1) and inbound["ring_s"] == pytest.approx(1.5, abs=0.1)
    assert outbound["talk_s"] == pytest.approx(2.0, abs=0.1)
    assert inbound["codecs"] == "PCMU" and inbound["packets_lost"] == 0
    assert inbound["invited_at"] == datetime.fromtimestamp(1_800_000_000).astimezone().isoformat(timespec="seconds")
    rec = vault.recording(inbound["recording_id"])
    assert rec["record_class"] == "call" and rec["end_reason"] == "bye"


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_each_side_is_heard_on_its_own_channel_for_the_whole_call(tmp_path, vault, config, recovery, direction):
    script = _call(0, direction=direction, talk=5.0)
    script.external.tone, script.city.tone = 440.0, 1000.0
    got, _ = _record(tmp_path, vault, config, [script])
    row = got[script.call_id]
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(row["talk_s"], abs=0.1)  # segments of 2 s, joined: 5 s
    left, right = window(pcm, 0.5, 4.5)
    assert peak_hz(left) == pytest.approx(440, abs=5)  # the external party
    assert peak_hz(right) == pytest.approx(1000, abs=5)  # the city
    assert len(vault.segments(row["recording_id"])) == 3


def test_busy_unanswered_and_cancelled_calls_are_indexed_without_audio(tmp_path, vault, config):
    got, _ = _record(tmp_path, vault, config, [_call(0, outcome="busy"), _call(1, outcome="no_answer", ring=4.0),
                                               _call(2, outcome="cancelled", ring=2.5)])
    busy, unanswered, cancelled = (got[f"call-{i}@trunk.example"] for i in range(3))
    assert (busy["disposition"], busy["sip_status"]) == ("busy", 486)
    assert unanswered["disposition"] == "no_answer" and unanswered["ring_s"] == pytest.approx(4.0, abs=0.1)
    assert cancelled["disposition"] == "cancelled" and cancelled["ring_s"] == pytest.approx(2.5, abs=0.1)
    assert all(r["talk_s"] == 0 and r["segments"] == 0 for r in (busy, unanswered, cancelled))


def test_an_anonymous_caller_is_shown_as_withheld(tmp_path, vault, config):
    got, _ = _record(tmp_path, vault, config, [_call(0, anonymous=True)])
    row = got["call-0@trunk.example"]
    assert row["withheld"] == 1 and row["external_e164"] == "" and row["external_display"] == "非通知"


def test_hold_and_resume_are_recorded_and_the_held_side_is_silent(tmp_path, vault, config, recovery):
    script = _call(0, talk=6.0, hold=(2.0, 2.0))
    got, _ = _record(tmp_path, vault, config, [script])
    row = got[script.call_id]
    raw = json.loads(vault.db.execute("SELECT holds FROM calls WHERE call_id = ?", (script.call_id,)).fetchone()[0])
    assert len(raw) == 1
    answered = row["answered_wall_us"]
    assert (raw[0][0] - answered) / 1e6 == pytest.approx(2.0, abs=0.05)
    assert (raw[0][1] - raw[0][0]) / 1e6 == pytest.approx(2.0, abs=0.05)
    assert row["packets_lost"] == 0  # a pause in sending is not a loss
    pcm = audio(vault, recovery, row["recording_id"])
    assert rms(window(pcm[0], 2.3, 3.8)) < 0.01  # the external party on hold: silence
    assert peak_hz(window(pcm[0], 4.3, 5.8)) == pytest.approx(440, abs=5)  # back after the resume
    assert pcm.shape[1] / RATE == pytest.approx(6.0, abs=0.1)


def test_early_media_is_kept_before_the_answer(tmp_path, vault, config, recovery):
    script = _call(0, early_media=True, ring=2.0, talk=3.0)
    got, _ = _record(tmp_path, vault, config, [script])
    row = got[script.call_id]
    assert (row["answered_wall_us"] - row["audio_wall_us"]) / 1e6 == pytest.approx(1.94, abs=0.05)
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(4.94, abs=0.1)
    assert peak_hz(window(pcm[1], 0.2, 1.7)) == pytest.approx(1000, abs=5)  # the city's side, before answering
    assert row["talk_s"] == pytest.approx(3.0, abs=0.05)


def test_a_payload_type_other_than_the_sdp_is_decoded_as_what_it_is(tmp_path, vault, config, recovery):
    script = _call(0, pt=8, sdp_pt=0, talk=3.0)  # the SDP agreed µ-law, the peers send A-law
    got, _ = _record(tmp_path, vault, config, [script])
    row = got[script.call_id]
    assert row["codecs"] == "PCMA"
    left, right = window(audio(vault, recovery, row["recording_id"]), 0.5, 2.5)
    assert peak_hz(left) == pytest.approx(440, abs=5) and peak_hz(right) == pytest.approx(1000, abs=5)
    # decoded as µ-law the same bytes would be loud noise; as A-law they are the tone at its level
    assert rms(left) == pytest.approx(8000 / 32768 / np.sqrt(2), rel=0.15)


def test_many_concurrent_calls_do_not_mix(tmp_path, vault, config, recovery):
    scripts = []
    for i in range(24):
        s = _call(i, direction="inbound" if i % 2 else "outbound", talk=3.0, start=1_800_000_000.0 + i * 0.05)
        s.external.tone, s.city.tone = 300.0 + 50 * i, 2500.0 + 40 * i
        scripts.append(s)
    got, _ = _record(tmp_path, vault, config, scripts)
    assert len(got) == 24
    for s in scripts:
        row = got[s.call_id]
        left, right = window(audio(vault, recovery, row["recording_id"]), 0.5, 2.5)
        assert peak_hz(left) == pytest.approx(s.external.tone, abs=5), s.call_id
        assert peak_hz(right) == pytest.approx(s.city.tone, abs=5), s.call_id


def test_lost_reordered_and_duplicated_packets_are_reported_and_the_duration_is_unchanged(
        tmp_path, vault, config, recovery):
    script = _call(0, talk=8.0)
    got, touched = _record(tmp_path, vault, config, [script], drop=0.05, reorder=0.05, duplicate=0.05)
    assert touched["dropped"] > 10 and touched["reordered"] > 10 and touched["duplicated"] > 10
    row = got[script.call_id]
    assert row["packets_lost"] == touched["dropped"]
    assert row["packets_duplicate"] == touched["duplicated"]
    assert row["loss_percent"] == pytest.approx(100 * touched["dropped"] / (2 * 8.0 / 0.02 - 2), abs=0.5)
    assert row["talk_s"] == pytest.approx(8.0, abs=0.05)
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(8.0, abs=0.1)
    left, right = window(pcm, 0.5, 7.5)
    assert peak_hz(left) == pytest.approx(440, abs=5) and peak_hz(right) == pytest.approx(1000, abs=5)


def test_calls_are_sealed_as_record_class_call_and_open_with_the_age_tool(tmp_path, vault, config, recovery):
    if not shutil.which("age"):
        pytest.skip("the age tool is not installed (tools/system-packages test installs it)")
    got, _ = _record(tmp_path, vault, config, [_call(0, talk=2.0)])
    seg = vault.segments(got["call-0@trunk.example"]["recording_id"])[0]
    assert seg.record_class == "call" and seg.path.startswith("segments/call/")
    ident = tmp_path / "recovery.txt"
    ident.write_text(str(recovery) + "\n")
    day = tmp_path / "day.txt"
    subprocess.run(["age", "-d", "-i", ident, "-o", day, vault.data_dir / "keys" / "day" / "call" /
                    f"{seg.key_day}.age"], check=True)
    plain = subprocess.run(["age", "-d", "-i", day, vault.data_dir / seg.path], check=True, capture_output=True).stdout
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-"], input=plain,
                                      capture_output=True, check=True).stdout)["streams"][0]
    assert (probe["codec_name"], probe["channels"], probe["sample_rate"]) == ("aac", 2, "16000")


def test_calls_list_finds_a_call_by_any_way_of_writing_its_number(tmp_path, data_dir, vault, config):
    _record(tmp_path, vault, config, [_call(0), _call(5, direction="outbound")])
    vault.close()

    def listing(*args):
        out = subprocess.run([sys.executable, "-m", "kiroku", "calls", "--data", str(data_dir), "list", "--json",
                              *args], capture_output=True, text=True, check=True).stdout
        return [r["call_id"] for r in json.loads(out)]

    assert sorted(listing()) == ["call-0@trunk.example", "call-5@trunk.example"]
    assert listing("--number", "０４２２-１２-３４５６") == ["call-0@trunk.example"]
    assert listing("--number", "+81 422 123 461") == ["call-5@trunk.example"]
    assert listing("--direction", "outbound") == ["call-5@trunk.example"]
    text = subprocess.run([sys.executable, "-m", "kiroku", "calls", "--data", str(data_dir), "list"],
                          capture_output=True, text=True, check=True).stdout
    assert "0422123456" in text and "answered" in text


class _Packets:
    """A capture of these packets (capture time, then UDP), replayed in its own time."""

    def __init__(self, packets):
        self.packets = packets

    def frames(self):
        return ((p[0], net.udp_frame(*p[1:])) for p in self.packets)

    def close(self):
        pass


def _run(vault, config, packets) -> None:
    """A run of the call recorder over these packets, stopped at their end as systemd stops it."""
    rec = CallRecorder(vault, config, trunk="192.0.2.1", source=_Packets(packets)).start()
    assert rec.drain(120), "the recorder did not take the packets in"
    rec.close()


def _rtp(packets) -> int:
    return sum(1 for p in packets if 5060 not in (p[2], p[4]))  # (time, src, sport, dst, dport, payload)


def _raw(vault, script, column: str):
    return json.loads(vault.db.execute(f"SELECT {column} FROM calls WHERE call_id = ?",
                                       (script.call_id,)).fetchone()[0])


def _goes_on(vault, recovery, script, stopped_at: float, first_packets, rest):
    """The call after its recorder came back: one call, one recording, the whole of its time,
    the gap stated and silent, both sides heard on either side of it."""
    answered = script.start + script.ring
    rows = calls(vault)
    assert list(rows) == [script.call_id], "the same call, not a second one"
    row = rows[script.call_id]
    assert row["disposition"] == "answered" and row["end_reason"] == "bye", row
    assert row["talk_s"] == pytest.approx(script.talk, abs=0.1), "its talk time runs to the BYE"
    gaps = _raw(vault, script, "gaps")
    assert len(gaps) == 1 and gaps[0][2] == "recorder_restart", gaps
    assert row["gaps"][0]["why"] == "recorder_restart" and row["gaps"][0]["from"], "listed for people too"
    gap_from, gap_to = (gaps[0][0] / 1e6 - answered, gaps[0][1] / 1e6 - answered)
    assert stopped_at - 2.5 <= gap_from <= stopped_at + 0.1 and gap_to == pytest.approx(12.0, abs=0.1), gaps
    assert len(row["holds"]) == 1, "the hold after the restart is in the row"
    assert row["packets_received"] >= _rtp(rest), "counts from before the restart are kept, not started again"
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(script.talk, abs=0.15), "the track keeps the call's time"
    assert rms(window(pcm, gap_from + 0.3, gap_to - 0.3)) < 0.01, "not heard: silence, not made up"
    assert peak_hz(window(pcm[0], 12.5, 14.5)) == pytest.approx(440, abs=5)
    assert peak_hz(window(pcm[1], 12.5, 14.5)) == pytest.approx(1000, abs=5)
    assert peak_hz(window(pcm[0], 25.0, 27.0)) == pytest.approx(440, abs=5), "the end of the call is recorded"
    resumed = [e for e in vault.audit_log.entries(vault.db) if e["action"] == "call.resumed"]
    assert [e["subject"] for e in resumed] == [row["recording_id"]]
    return row


def test_a_call_goes_on_as_the_same_call_after_its_recorder_is_stopped_mid_call(vault, config, recovery):
    script = _call(0, talk=30.0, hold=(16.0, 4.0))
    packets = capture_of([script])
    answered = script.start + script.ring
    first = [p for p in packets if p[0] < answered + 10.0]
    rest = [p for p in packets if p[0] >= answered + 12.0]  # two seconds go by while it restarts
    _run(vault, config, first)  # stopped (SIGTERM): what it heard is sealed, the call kept
    row = calls(vault)[script.call_id]
    assert row["ended_wall_us"] is None and row["disposition"] == "answered", "still in progress"
    assert row["packets_received"] == _rtp(first), "the counts are kept with the audio"
    _run(vault, config, rest)
    row = _goes_on(vault, recovery, script, 10.0, first, rest)
    assert row["packets_received"] == _rtp(first) + _rtp(rest)


def test_a_call_goes_on_after_its_recorder_dies_mid_call(tmp_path, data_dir, vault, config, recovery):
    script = _call(0, talk=30.0, hold=(16.0, 4.0))
    packets = capture_of([script])
    answered = script.start + script.ring
    first = [p for p in packets if p[0] < answered + 10.0]
    rest = [p for p in packets if p[0] >= answered + 12.0]
    vault.close()
    # The recorder runs in a process of its own, which dies mid-call: nothing of it is closed,
    # ended or finalised (left to this process's garbage collector instead, its half-written
    # MP4 would be finished, which a power cut never does; and PyAV before 17 crashes there).
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            rec = CallRecorder(Vault.open(data_dir, config), config, trunk="192.0.2.1", source=_Packets(first)).start()
            status = 0 if rec.drain(60) else 3
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the recorder did not take the call in"
    again = Vault.open(data_dir, config)
    try:
        findings = again.recover()
        assert not any(f.kind == "unfinished" for f in findings), "the call is not closed: it goes on"
        row = calls(again)[script.call_id]
        assert row["ended_wall_us"] is None and row["disposition"] == "answered"
        # the counts as far as the sealed audio goes (2 s segments: 4 of them, 50 packets a side a second)
        assert row["packets_received"] >= 0.6 * _rtp(first), row["packets_received"]
        _run(again, config, rest)
        _goes_on(again, recovery, script, 10.0, first, rest)
    finally:
        again.close()


def test_a_resumed_call_nothing_more_is_heard_of_ended_where_it_was_last_heard(vault, config, recovery):
    # another call, 40 s long, a minute later: the recorder hears the trunk, not this call
    script, later = _call(0, talk=30.0), _call(1, talk=40.0, start=1_800_000_000.0 + 60)
    answered = script.start + script.ring
    first = [p for p in capture_of([script]) if p[0] < answered + 10.0]
    _run(vault, config, first)
    _run(vault, config, capture_of([later]))  # its BYE came while the recorder was away
    row = calls(vault)[script.call_id]
    assert row["end_reason"] == "recorder_stopped" and row["disposition"] == "answered"
    assert row["talk_s"] == pytest.approx(10.0, abs=0.1), "it ends where it was last heard"
    assert _raw(vault, script, "gaps") == [], "no gap past its end"
    assert calls(vault)[later.call_id]["end_reason"] == "bye"
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(10.0, abs=0.2), "no silence stored for the time it was away"


def test_a_call_answered_while_its_recorder_was_away_is_answered_not_cancelled(vault, config):
    script = _call(0, talk=10.0, ring=2.0)
    packets = capture_of([script])
    answered = script.start + script.ring
    _run(vault, config, [p for p in packets if p[0] < answered - 0.5])  # stopped while it rang
    _run(vault, config, [p for p in packets if p[0] >= answered + 2.0])  # back after the 200 OK and the ACK
    row = calls(vault)[script.call_id]
    assert row["disposition"] == "answered" and row["end_reason"] == "bye", row
    assert row["talk_s"] == pytest.approx(8.0, abs=0.2), "talk counted from when it was heard again, at the latest"


def test_two_restarts_in_a_row_leave_one_gap(vault, config):
    script = _call(0, talk=30.0)
    packets = capture_of([script])
    answered = script.start + script.ring
    _run(vault, config, [p for p in packets if p[0] < answered + 10.0])
    _run(vault, config, [])  # started and stopped again before it heard anything
    _run(vault, config, [p for p in packets if p[0] >= answered + 14.0])
    gaps = _raw(vault, script, "gaps")
    assert len(gaps) == 1 and (gaps[0][1] - gaps[0][0]) / 1e6 == pytest.approx(4.0, abs=0.2), gaps


def test_calls_that_never_rang_are_not_kept_over_a_stop_and_an_unreadable_one_is_closed(vault, config):
    invite = next(p for p in capture_of([_call(0)]) if p[5].startswith(b"INVITE"))
    _run(vault, config, [invite])  # nothing responded before the recorder stopped
    assert vault.db.execute("SELECT count(*) FROM call_dialogs").fetchone()[0] == 0
    assert vault.db.execute("SELECT count(*) FROM recordings").fetchone()[0] == 0, "no writes for it"

    script = _call(1, talk=30.0)
    _run(vault, config, [p for p in capture_of([script]) if p[0] < script.start + script.ring + 5.0])
    rid = calls(vault)[script.call_id]["recording_id"]
    vault.db.execute("UPDATE call_dialogs SET state = '{\"broken\": 1}' WHERE recording_id = ?", (rid,))
    _run(vault, config, [])
    row = calls(vault)[script.call_id]
    assert row["ended_wall_us"] is not None and row["end_reason"] == "recorder_stopped", "closed, not left open"
    assert vault.db.execute("SELECT count(*) FROM call_dialogs").fetchone()[0] == 0


def _with_crypto_in_the_offer(p):
    """The INVITE's SDP offers optional SRTP: RTP/AVP with a=crypto keys (the answer has none)."""
    if not p[5].startswith(b"INVITE"):
        return p
    head, _, body = p[5].partition(b"\r\n\r\n")
    body = body.replace(b"a=ptime:20\r\n", b"a=ptime:20\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDQUJD\r\n")
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
    return (*p[:5], head + b"\r\n\r\n" + body)


def test_an_offer_of_optional_srtp_answered_without_keys_is_plain_rtp_and_heard(tmp_path, vault, config, recovery):
    script = _call(0, talk=3.0)
    replay(vault, config, write_pcap(tmp_path / "t.pcap", [_with_crypto_in_the_offer(p) for p in capture_of([script])]))
    external, city, row = _sides(vault, script)
    assert (external, city) == ("heard", "heard") and row["packets_encrypted"] == 0
    pcm = audio(vault, recovery, row["recording_id"])
    assert peak_hz(pcm[0]) == pytest.approx(440, abs=5) and peak_hz(pcm[1]) == pytest.approx(1000, abs=5)


# -- what was not heard is written down (issue 27, item 3) -------------------------------------
def _sides(vault, script) -> tuple:
    row = calls(vault)[script.call_id]
    return row["external_heard"], row["city_heard"], row


def test_a_side_that_sends_nothing_is_written_down_as_silent_and_counted_in_the_report(
        tmp_path, data_dir, vault, config):
    from firmware.documents import report

    script = _call(0, talk=4.0)
    packets = [p for p in capture_of([script]) if (p[1], p[2]) != script.city.media]  # the city's phone is mute
    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", packets))
    external, city, row = _sides(vault, script)
    assert (external, city) == ("heard", "silent")
    assert row["doubts"] == [{"side": "city", "why": "silent"}] and row["packets_lost"] == 0
    figures = report.device_figures(data_dir, 2026, "pbx")  # 2027-01-15 is in fiscal 2026
    assert figures.calls_not_heard["silent"] == 1 and figures.calls_not_heard["encrypted"] == 0
    text = subprocess.run([sys.executable, "-m", "kiroku", "calls", "--data", str(data_dir), "list"],
                          capture_output=True, text=True, check=True).stdout
    assert "city side silent" in text


def test_a_payload_type_nothing_maps_is_undecodable_and_stored_as_silence_not_noise(tmp_path, vault, config,
                                                                                     recovery):
    script = _call(0, talk=4.0, pt=96, sdp_pt=0)  # RTP says 96; the SDP maps only 0 (and 101)
    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", capture_of([script])))
    external, city, row = _sides(vault, script)
    assert (external, city) == ("undecodable", "undecodable")
    assert row["packets_undecodable"] == _rtp(capture_of([script]))
    assert rms(audio(vault, recovery, row["recording_id"])) < 0.01


def test_srtp_is_written_down_as_encrypted_and_its_ciphertext_is_never_stored_as_a_voice(tmp_path, vault, config,
                                                                                        recovery):
    script = _call(0, talk=4.0, srtp=True)
    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", capture_of([script])))
    external, city, row = _sides(vault, script)
    assert (external, city) == ("encrypted", "encrypted")
    assert row["packets_encrypted"] == _rtp(capture_of([script])) and row["packets_received"] == 0
    pcm = audio(vault, recovery, row["recording_id"])
    assert pcm.shape[1] / RATE == pytest.approx(4.0, abs=0.1) and rms(pcm) < 0.01, "silence, not white noise"


def test_an_sdp_that_cannot_be_read_leaves_the_side_it_addressed_without_a_media_address(tmp_path, vault, config):
    script = _call(0, talk=4.0)  # inbound: the external party calls, the city answers

    def unreadable(p):
        head, sep, body = p[5].partition(b"\r\n\r\n")
        if head.startswith(b"SIP/2.0 200") and b"CSeq: 1 INVITE" in head and body:
            return (*p[:5], head + sep + b"#" * len(body))  # the answer's SDP, mangled (same length)
        return p

    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", [unreadable(p) for p in capture_of([script])]))
    external, city, row = _sides(vault, script)
    # The city never said where its audio goes, so what the external party said is not heard.
    assert (external, city) == ("no_media_address", "heard") and row["sdp_errors"] == 1


# -- hygiene: strict where RFC 3261 is, and a flood bounded (issue 27, item 5) ---------------
def _invite_of(script):
    return next(p for p in capture_of([script]) if p[5].startswith(b"INVITE"))


@pytest.mark.parametrize("edit", [
    lambda b: b[:60],  # cut inside the Call-ID
    lambda b: b[:b.index(b"\r\n\r\n")],  # the header block never ends
    lambda b: b[:-20],  # the body shorter than its Content-Length
    lambda b: re.sub(rb"Content-Length: \d+", b"Content-Length: -5", b),
    lambda b: re.sub(rb"Content-Length: \d+", b"Content-Length: 12x", b),
    lambda b: re.sub(rb"Content-Length: (\d+)", rb"Content-Length: \1\r\nContent-Length: 7", b),
    lambda b: re.sub(rb"CSeq: 1 INVITE", b"CSeq: 1 BYE", b),
    lambda b: re.sub(rb"Via: [^\r]*\r\n", b"", b),
], ids=["cut Call-ID", "no end of headers", "short body", "negative length", "bad length", "two lengths",
        "CSeq method differs", "no Via"])
def test_a_malformed_invite_makes_no_call(tmp_path, vault, config, edit):
    script = _call(0, talk=2.0)
    packets = [(*p[:5], edit(p[5])) if p[5].startswith(b"INVITE") else p for p in capture_of([script])]
    rec = replay(vault, config, write_pcap(tmp_path / "trunk.pcap", packets))
    assert calls(vault) == {}, "no row for a message that is not one"
    assert rec.tracker.counters.sip_errors >= 1


def test_a_tagless_200_from_the_callers_side_answers_nothing(tmp_path, vault, config):
    script = _call(0, talk=2.0)
    invite = _invite_of(script)
    bare = re.sub(rb"^INVITE [^\r]*", b"SIP/2.0 200 OK", invite[5])  # same headers, To without a tag
    rec = CallRecorder(vault, config, trunk="192.0.2.1",
                       source=_Packets([invite, (invite[0] + 0.5, *invite[1:5], bare),
                                        (invite[0] + 40.0, *invite[1:5], b"keep-alive")])).start()
    assert rec.drain(60)
    rec.close()
    row = calls(vault)[script.call_id]
    assert row["answered_wall_us"] is None and row["disposition"] == "failed" and row["end_reason"] == "no_response"
    assert row["talk_s"] == 0


def test_a_flood_of_invites_is_bounded_counted_and_a_fault_and_calls_after_it_are_recorded(tmp_path, vault, config):
    from firmware.calls.tracker import MAX_UNANSWERED

    invite = _invite_of(_call(0))
    flood = [(invite[0] + i * 0.005, *invite[1:5], invite[5].replace(b"call-0@trunk", b"flood-%d@trunk" % i))
             for i in range(MAX_UNANSWERED + 500)]  # 1,500 INVITEs in 7.5 s, nothing answers any
    later = _call(1, talk=2.0, start=invite[0] + 60.0)
    rec = CallRecorder(vault, config, trunk="192.0.2.1", source=_Packets(flood + capture_of([later]))).start()
    assert rec.drain(120)
    rec.watch()
    rec.close()
    got = calls(vault, limit=5000)
    assert rec.tracker.counters.refused == 500, "beyond the bound: counted, not held"
    flooded = [r for cid, r in got.items() if cid.startswith("flood-")]
    assert len(flooded) == MAX_UNANSWERED and {r["end_reason"] for r in flooded} == {"no_response"}
    assert got[later.call_id]["disposition"] == "answered", "the trunk is recorded again once it has passed"
    assert "flood" in rec.faults and "500" in rec.faults["flood"]["message"]


# -- Art. 3: the manager decides which telephones are recorded (issue 27, item 6) -------------
def test_a_call_on_a_line_the_manager_excludes_leaves_no_audio_no_numbers_only_a_count(
        tmp_path, data_dir, vault, config):
    from firmware.documents import report, signage

    consultation, other = _call(0, talk=2.0), _call(1, talk=2.0, start=1_800_000_010.0)  # city 0586280000 / …01
    excluding = config.replace(calls={"excluded_lines": "０５８６-２８-００００"})  # typed any way
    replay(vault, excluding, write_pcap(tmp_path / "trunk.pcap", capture_of([consultation, other])))
    assert list(calls(vault)) == [other.call_id], "no row for the excluded line's call"
    assert vault.db.execute("SELECT count(*) FROM recordings").fetchone()[0] == 1
    counted = [e for e in vault.audit_log.entries(vault.db) if e["action"] == "call.not_recorded"]
    assert len(counted) == 1 and counted[0]["detail"]["direction"] == "inbound"
    assert not any(n in json.dumps(counted[0]) for n in ("0586", "586280000", "0422", "422123456")), "no numbers"
    assert report.device_figures(data_dir, 2026, "pbx").calls_not_recorded == 1
    notice = signage.call_lines(excluding.replace(device={"kind": "calls"}))
    assert "録音しません：０５８６-２８-００００" in notice


def test_only_the_lines_listed_are_recorded_an_extension_among_them_and_a_change_applies_at_once(
        tmp_path, data_dir, vault, config):
    from firmware.calls.recorder import PcapSource

    listed = _call(0, talk=2.0)
    by_extension = _call(1, talk=2.0, start=1_800_000_010.0)
    unlisted = _call(2, talk=2.0, start=1_800_000_020.0)

    def to_extension(p):  # the carrier sends call 1 to the PBX's extension 201, the number dialled in To
        if p[5].startswith(b"INVITE sip:0586280001@"):
            return (*p[:5], p[5].replace(b"INVITE sip:0586280001@", b"INVITE sip:201@", 1))
        return p

    packets = [to_extension(p) for p in capture_of([listed, by_extension, unlisted])]
    (data_dir / "kiroku.toml").write_text('[calls]\nrecorded_lines = "0586-28-0000, 201"\n')
    rec = CallRecorder(vault, config, trunk="192.0.2.1", source=PcapSource(write_pcap(tmp_path / "t.pcap", packets)))
    rec.reload()  # as the settings page does after writing the file
    rec.start()
    assert rec.drain(60)
    rec.close()
    assert sorted(calls(vault)) == sorted([listed.call_id, by_extension.call_id])
    assert rec.tracker.counters.not_recorded == 1


def test_no_sip_in_office_hours_is_a_fault_and_clears_when_calls_return(vault, config):
    rec = CallRecorder(vault, config.replace(calls={"silence_minutes": 30}), trunk="192.0.2.1:5060",
                       source=type("Src", (), {"frames": lambda self: iter(()), "close": lambda self: None})())
    monday_10 = datetime(2026, 11, 30, 10, 0).timestamp()
    saturday_10 = datetime(2026, 11, 28, 10, 0).timestamp()
    rec._started = saturday_10 - 3600
    rec.watch(saturday_10)  # an hour without SIP on a Saturday: no calls expected, no fault
    assert not rec.faults
    rec.watch(monday_10)
    assert "trunk_silent" in rec.faults and "mirror port" in rec.faults["trunk_silent"]["message"]
    assert rec.status()["state"] == "fault"
    rec.tracker.counters.last_sip = monday_10 - 60
    rec.watch(monday_10)
    assert not rec.faults
    actions = [r[0] for r in vault.db.execute("SELECT action FROM audit WHERE actor = 'call-recorder'")]
    assert actions == ["fault.raised", "fault.cleared"]


def _off_tone(x: np.ndarray, freq: float) -> float:
    """How far a few milliseconds of sound are from one steady tone, as a fraction of its level."""
    t = np.arange(len(x)) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.sqrt(np.mean((x - basis @ coef) ** 2)) / (np.hypot(*coef) / np.sqrt(2)))


def test_a_call_is_exported_for_a_third_party_as_a_signed_package_of_its_approved_range(
        tmp_path, data_dir, vault, config, recovery, capsys, monkeypatch):
    import zipfile

    from kiroku.cli import main
    from firmware.calls.render import decode_stereo

    script = _call(0, talk=6.0)
    got, _ = _record(tmp_path, vault, config, [script])
    row = got[script.call_id]
    key = tmp_path / "recovery.txt"
    key.write_text(str(recovery) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    base = ["export", "--data", str(data_dir), "--recovery-key", str(key), "--recording", row["recording_id"],
            "--ground", "4", "--recipient", "北警察署 生活安全課", "--reference", "北署生第7号", "--out", str(out)]
    assert main([*base, "--start", "2", "--end", "4.5", "--mute", "3-3.5"]) == 0
    package = next(out.glob("*.zip"))
    assert main(["verify", str(package)]) == 0
    assert "aac" in capsys.readouterr().out
    with zipfile.ZipFile(package) as z:
        name = next(n for n in z.namelist() if n.endswith("/clip.mp4"))
        manifest = json.loads(z.read(name.replace("clip.mp4", "manifest.json")))
        pcm = decode_stereo([z.read(name)])
    assert manifest["clip"]["cut"] == "sound only" and manifest["clip"]["duration_s"] == pytest.approx(2.5, abs=0.1)
    assert pcm.shape[1] / RATE == pytest.approx(2.5, abs=0.1)
    assert peak_hz(window(pcm[0], 0.1, 0.9)) == pytest.approx(440, abs=5)
    assert peak_hz(window(pcm[1], 0.1, 0.9)) == pytest.approx(1000, abs=5)
    assert rms(window(pcm, 1.1, 1.4)) < 0.01  # 3–3.5 s of the recording, muted on both sides
    # Unredacted, across both of the range's segment boundaries (1.98 s and 3.97 s): the sound as it was, once.
    # A segment's start is read from two clocks a moment apart, so it can be a little off: 2 µs (the AAC frame
    # that primes a segment's encoder then looked newer than the last one copied, and the export failed) or
    # 3 ms (a thread paused between the two reads: placed by it, 48 samples were dropped or silenced).
    from firmware.export import Plan

    t0 = Plan.t0
    monkeypatch.setattr(Plan, "t0", lambda plan, seg: t0(plan, seg) + {1: 2e-6, 2: 0.003}.get(seg.seq, 0.0))
    assert main([*base, "--start", "0.5", "--end", "5.5"]) == 0
    monkeypatch.undo()
    package = max(out.glob("*.zip"), key=lambda p: p.stat().st_mtime_ns)
    with zipfile.ZipFile(package) as z:
        pcm = decode_stereo([z.read(next(n for n in z.namelist() if n.endswith("/clip.mp4")))])
    assert pcm.shape[1] / RATE == pytest.approx(5.0, abs=0.07)
    for side, freq in ((0, 440), (1, 1000)):
        worst = max(_off_tone(window(pcm[side], at, at + 0.01), freq) for at in np.arange(0.1, 4.8, 0.005))
        assert worst < 0.3, f"side {side}: the tone breaks (a gap, or sound dropped) by {worst:.2f} of its level"
    assert main([*base, "--start", "1", "--end", "2", "--blur-faces"]) == 2
    assert "sound only" in capsys.readouterr().err
    # a second export into the same folder within the same second gets a name of its own
    monkeypatch.setattr("kiroku.cli.export._stamp", lambda: "20270115-170000")
    again = [*base, "--start", "2", "--end", "4.5", "--mute", "3-3.5"]
    assert main(again) == 0 and main(again) == 0
    names = {p.name for p in out.glob(f"{row['recording_id']}-20270115-170000*.zip")}
    assert names == {f"{row['recording_id']}-20270115-170000.zip", f"{row['recording_id']}-20270115-170000-2.zip"}


class _Sink:
    def __init__(self):
        self.ended = []

    def call_began(self, call):
        pass

    call_changed = call_suspended = call_began

    def flush(self):
        pass

    def call_audio(self, call, side, position, pcm):
        pass

    def call_tick(self, call, now):
        pass

    def call_ended(self, call):
        self.ended.append(call)


def _sip(ts, src, dst, text):
    return net.Datagram(ts, src, 5060, dst, 5060, net.UDP, text.replace("\n", "\r\n").encode())


_INVITE = """INVITE sip:0586280000@198.51.100.10 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1
From: "Trunk" <sip:0312345678@192.0.2.1>;tag=a1
To: <sip:0586280000@198.51.100.10>
Call-ID: pai@x
CSeq: {cseq} INVITE
{extra}Content-Length: 0

"""


def _final(status, cseq, method="INVITE"):
    return (f"SIP/2.0 {status}\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\n"
            f"From: <sip:0312345678@192.0.2.1>;tag=a1\nTo: <sip:0586280000@198.51.100.10>;tag=b2\n"
            f"Call-ID: pai@x\nCSeq: {cseq} {method}\nContent-Length: 0\n\n")


@pytest.mark.parametrize("extra, number, withheld", [
    ("P-Asserted-Identity: <tel:+81312340000>\nRemote-Party-ID: <sip:0399999999@c>;party=calling\n", "+81312340000",
     False),
    # A caller who withheld their number (非通知) has none stored, though the network carried it
    # (docs/calls.md, "Numbers"): the city's own phone did not show it either.
    ("Remote-Party-ID: \"X\" <sip:0399999999@c>;party=calling;privacy=full\n", "", True),
    ("Privacy: id\nP-Asserted-Identity: <tel:+81312340000>\n", "", True),
])
def test_the_callers_identity_is_taken_from_pai_then_rpid_then_from(extra, number, withheld):
    from firmware.calls.tracker import Tracker

    sink = _Sink()
    t = Tracker(sink, trunk_host="192.0.2.1")
    t.datagram(_sip(1.0, "192.0.2.1", "198.51.100.10", _INVITE.format(cseq=1, extra=extra)))
    t.datagram(_sip(2.0, "198.51.100.10", "192.0.2.1", _final("486 Busy Here", 1)))
    call, = sink.ended
    assert call.caller.e164 == number and call.caller.withheld is withheld and call.disposition == "busy"
    if withheld:
        assert call.caller.raw == "" and call.caller.digits == "", "nothing of the number is kept"


def test_a_withheld_callers_number_is_shown_nowhere_and_found_by_no_search(tmp_path, data_dir, vault, config):
    script = _call(0, talk=2.0, anonymous=True)

    def with_identity(p):  # the carrier passes the number on in P-Asserted-Identity all the same
        if p[5].startswith(b"INVITE") and b"Privacy: id" in p[5]:
            pai = b"Privacy: id\r\nP-Asserted-Identity: <tel:+81422123456>\r\n"
            return (*p[:5], p[5].replace(b"Privacy: id\r\n", pai))
        return p

    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", [with_identity(p) for p in capture_of([script])]))
    row = calls(vault)[script.call_id]
    assert row["withheld"] == 1 and row["external_display"] == "非通知"
    assert (row["external_e164"], row["external_raw"]) == ("", ""), "not stored"
    assert calls(vault, number="0422-12-3456") == {}, "nor found by it"
    # a row kept from before this rule, with the number: still shown as 非通知 and found by no search
    vault.db.execute("UPDATE calls SET external_e164 = '+81422123456', external_raw = '0422123456'")
    assert calls(vault, number="0422-12-3456") == {}
    assert calls(vault)[script.call_id]["external_display"] == "非通知"


def test_an_outbound_call_is_outbound_when_the_pbx_shares_the_trunks_address(tmp_path, vault, config, recovery):
    # An SBC on the PBX's host: both signal from 192.0.2.1, the carrier's side on port 5060.
    carrier = synth.Party("0312345678", ("192.0.2.1", 5060), ("192.0.2.1", 40000), 440.0)
    pbx = synth.Party("0586280000", ("192.0.2.1", 5070), ("192.0.2.1", 20000), 1000.0)
    inbound = synth.Script("in@shared", "inbound", carrier, pbx, talk=2.0)
    outbound = synth.Script("out@shared", "outbound", synth.Party("0312345679", ("192.0.2.1", 5060),
                                                                 ("192.0.2.1", 40002), 440.0),
                            synth.Party("0586280001", ("192.0.2.1", 5070), ("192.0.2.1", 20002), 1000.0),
                            start=1_800_000_010.0, talk=2.0)
    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", capture_of([inbound, outbound])),
           trunk="192.0.2.1:5060")
    got = calls(vault)
    assert got["in@shared"]["direction"] == "inbound" and got["in@shared"]["external_e164"] == "+81312345678"
    row = got["out@shared"]
    assert row["direction"] == "outbound", "decided by the trunk's port, not by the address alone"
    assert (row["external_e164"], row["city_e164"]) == ("+81312345679", "+81586280001")
    pcm = audio(vault, recovery, row["recording_id"])
    assert peak_hz(pcm[0]) == pytest.approx(440, abs=5) and peak_hz(pcm[1]) == pytest.approx(1000, abs=5), \
        "left is the external party, right the city"


def test_a_call_to_an_extension_keeps_the_number_dialled_as_the_citys(tmp_path, vault, config):
    script = _call(0, talk=2.0)

    def to_extension(p):  # the carrier sends it to the PBX's extension 201; To has the number dialled
        if p[5].startswith(b"INVITE sip:0586280000@"):
            return (*p[:5], p[5].replace(b"INVITE sip:0586280000@", b"INVITE sip:201@", 1))
        return p

    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", [to_extension(p) for p in capture_of([script])]))
    row = calls(vault)[script.call_id]
    assert row["city_e164"] == "+81586280000" and row["reached"] == "201"


def test_an_authentication_challenge_is_not_the_end_of_the_call():
    from firmware.calls.tracker import Tracker

    sink = _Sink()
    t = Tracker(sink, trunk_host="198.51.100.10")  # outbound: the carrier challenges the PBX's INVITE
    t.datagram(_sip(1.0, "192.0.2.1", "198.51.100.10", _INVITE.format(cseq=1, extra="")))
    t.datagram(_sip(1.1, "198.51.100.10", "192.0.2.1", _final("407 Proxy Authentication Required", 1)))
    assert not sink.ended
    t.datagram(_sip(1.2, "192.0.2.1", "198.51.100.10", _INVITE.format(cseq=2, extra="Proxy-Authorization: x\n")))
    t.datagram(_sip(3.0, "198.51.100.10", "192.0.2.1", _final("200 OK", 2)))
    t.datagram(_sip(9.0, "192.0.2.1", "198.51.100.10",
                    _INVITE.format(cseq=3, extra="").replace("INVITE sip", "BYE sip").replace("3 INVITE", "3 BYE")
                    .replace("To: <sip:0586280000@198.51.100.10>", "To: <sip:0586280000@198.51.100.10>;tag=b2")))
    call, = sink.ended
    assert call.disposition == "answered" and call.talk_seconds == pytest.approx(6.0)
    assert call.ring_seconds == pytest.approx(2.0)


def test_a_forked_calls_second_answer_and_its_bye_do_not_end_the_answered_call():
    from firmware.calls.tracker import Tracker

    sink = _Sink()
    t = Tracker(sink, trunk_host="192.0.2.1")
    t.datagram(_sip(1.0, "192.0.2.1", "198.51.100.10", _INVITE.format(cseq=1, extra="")))
    t.datagram(_sip(2.0, "198.51.100.10", "192.0.2.1", _final("200 OK", 1)))  # fork B answers (tag b2)
    late = _final("200 OK", 1).replace("tag=b2", "tag=b9")  # fork C answers too, a moment later
    t.datagram(_sip(2.05, "198.51.100.10", "192.0.2.1", late))
    bye = _INVITE.format(cseq=2, extra="").replace("INVITE sip", "BYE sip").replace("2 INVITE", "2 BYE")
    t.datagram(_sip(2.1, "192.0.2.1", "198.51.100.10",  # the caller hangs fork C up at once (RFC 3261 13.2.2.4)
                    bye.replace("<sip:0586280000@198.51.100.10>\n", "<sip:0586280000@198.51.100.10>;tag=b9\n")))
    assert not sink.ended, "the late fork's BYE ended the answered call"
    t.datagram(_sip(7.0, "192.0.2.1", "198.51.100.10",
                    bye.replace("<sip:0586280000@198.51.100.10>\n", "<sip:0586280000@198.51.100.10>;tag=b2\n")))
    call, = sink.ended
    assert call.talk_seconds == pytest.approx(5.0)


def test_a_sequence_jump_with_the_same_ssrc_starts_a_new_run_and_loses_nothing():
    dec = rtp.Decoder()
    stream = rtp.Stream(0.0, dec, window=0.1)
    payload = synth.encode_g711(synth.tone(440, 0, 160), 0)
    seqs = list(range(65500, 65536)) + list(range(0, 20)) + list(range(40000, 40050))  # a wrap, then a jump
    for i, seq in enumerate(seqs):
        stream.push(rtp.Packet(i * 0.02, seq, i * 160, 0x1234, 0, False, payload))
    released = list(stream.flush())
    assert len(released) == len(seqs)  # every packet heard, none dropped as "late"
    assert stream.stats.lost == 0 and stream.stats.late == 0
    positions = [pos for pos, _ in released]
    assert positions == sorted(positions) and positions[-1] == pytest.approx((len(seqs) - 1) * 320, abs=320)


def test_the_outside_line_digit_is_taken_off_only_where_a_number_follows_it():
    assert numbers.parse("0112345678", outside_line_prefix="0").e164 == "+81112345678"  # Sapporo, not 0 + 112…
    assert numbers.parse("0120123456", outside_line_prefix="0").e164 == "+81120123456"
    assert numbers.parse("00120123456", outside_line_prefix="0").outside_line
    assert numbers.parse("0110", outside_line_prefix="0").digits == "110"
    assert numbers.parse("90422123456", outside_line_prefix="9").e164 == "+81422123456"


def test_tcp_retransmissions_over_held_segments_deliver_each_byte_once():
    stream = net._TcpStream(1000)
    assert stream.take(1100, b"B" * 100) == b""  # ahead: held
    # a retransmission overlapping half of what is held: its bytes, then the held segment's new tail
    assert stream.take(1000, b"A" * 150) == b"A" * 150 + b"B" * 50
    assert not stream.held and stream.next == 1200  # nothing stale left behind to cut a message later
    assert stream.take(1150, b"B" * 60) == b"B" * 10  # another retransmission: only what is new
    assert stream.take(1210, b"C" * 10) == b"C" * 10 and stream.next == 1220


def test_a_content_length_no_sip_message_has_resynchronises_the_stream():
    framer = sip.StreamFramer()
    assert framer.feed(b"INVITE sip:x SIP/2.0\r\nContent-Length: 999999999\r\n\r\n" + b"x" * 1000) == []
    bye = b"BYE sip:1@b SIP/2.0\r\nCall-ID: t1\r\nContent-Length: 0\r\n\r\n"
    assert framer.feed(bye) == [bye] or framer.feed(b"") == [bye]


def test_a_carrier_signalling_from_a_second_address_is_still_the_trunk():
    from firmware.calls.recorder import parse_trunk
    from firmware.calls.tracker import Tracker

    hosts, port = parse_trunk("192.0.2.9:5060,192.0.2.1:5060")
    sink = _Sink()
    t = Tracker(sink, trunk_host=hosts, trunk_port=port)
    t.datagram(_sip(1.0, "192.0.2.1", "198.51.100.10", _INVITE.format(cseq=1, extra="")))
    t.datagram(_sip(2.0, "198.51.100.10", "192.0.2.1", _final("486 Busy Here", 1)))
    call, = sink.ended
    assert call.direction == "inbound"
    with pytest.raises(ValueError, match="same SIP port"):
        parse_trunk("192.0.2.9:5060,192.0.2.1:5080")


def _tracked(packets: list) -> list:
    """The calls a tracker ends, fed a capture packet by packet as the recorder feeds it."""
    from firmware.calls.tracker import Tracker

    sink = _Sink()
    t = Tracker(sink, trunk_host="192.0.2.1", setup_timeout=30.0)
    for ts, src, sport, dst, dport, payload in packets:
        t.datagram(net.Datagram(ts, src, sport, dst, dport, net.UDP, payload))
        t.tick(ts)
    t.tick(packets[-1][0] + 60.0)  # long enough for every timeout
    return sink.ended


def _sip_line(packet) -> str:
    return packet[5].split(b"\r\n", 1)[0].decode(errors="replace")


def _cseq(packet) -> str:
    return next(line for line in packet[5].decode(errors="replace").split("\r\n") if line.startswith("CSeq:"))


def _replace_answer(packets: list, cseq: str, status: str | None) -> list:
    """The capture with the 200 OK to the request of ``cseq`` (say "2 INVITE") answered
    ``status`` instead (a refusal, "488 Not Acceptable Here"), or not captured at all (None)."""
    out, found = [], False
    for p in packets:
        if _sip_line(p).startswith("SIP/2.0 200") and _cseq(p) == f"CSeq: {cseq}":
            found = True
            if status is None:
                continue
            head = p[5].split(b"\r\n\r\n", 1)[0].replace(b"SIP/2.0 200 OK", f"SIP/2.0 {status}".encode())
            head = head.replace(b"Content-Type: application/sdp\r\n", b"")
            head = head.rsplit(b"Content-Length:", 1)[0] + b"Content-Length: 0"
            p = (*p[:5], head + b"\r\n\r\n")
        out.append(p)
    assert found, f"the capture has no 200 OK to {cseq}"
    return out


def test_a_refused_hold_is_not_recorded_as_a_hold():
    script = _call(0, talk=6.0, hold=(2.0, 2.0))
    call, = _tracked(_replace_answer(synth.packets(script), "2 INVITE", "488 Not Acceptable Here"))
    assert call.disposition == "answered" and call.holds == [], "the external party was never on hold"


def test_a_refused_resume_leaves_the_call_on_hold_until_it_ends():
    script = _call(0, talk=6.0, hold=(2.0, 2.0))
    call, = _tracked(_replace_answer(synth.packets(script), "3 INVITE", "491 Request Pending"))
    (start, end), = call.holds
    assert start - call.answered == pytest.approx(2.0, abs=0.05) and end == call.ended


def _as_update(packets: list) -> list:
    """The capture with its hold and resume made by UPDATE instead of re-INVITE (no ACK)."""
    out = []
    for p in packets:
        cseq = _cseq(p) if p[5].startswith((b"INVITE", b"ACK", b"SIP/2.0")) else ""
        if cseq in ("CSeq: 2 ACK", "CSeq: 3 ACK"):
            continue
        if cseq in ("CSeq: 2 INVITE", "CSeq: 3 INVITE"):
            p = (*p[:5], p[5].replace(b"INVITE sip:", b"UPDATE sip:").replace(b" INVITE\r\n", b" UPDATE\r\n"))
        out.append(p)
    return out


@pytest.mark.parametrize("method", ["re-INVITE", "UPDATE"])
def test_a_hold_whose_answer_the_capture_missed_is_still_recorded(method):
    script = _call(0, talk=6.0, hold=(2.0, 2.0))
    packets = synth.packets(script) if method == "re-INVITE" else _as_update(synth.packets(script))
    assert method == "re-INVITE" or any(p[5].startswith(b"UPDATE") for p in packets)
    call, = _tracked(_replace_answer(packets, f"2 {method[-6:]}", None))
    (start, end), = call.holds
    assert start - call.answered == pytest.approx(2.0, abs=0.05) and end - start == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("method", ["re-INVITE", "UPDATE"])
def test_a_refused_hold_by_either_method_is_not_recorded(method):
    script = _call(0, talk=6.0, hold=(2.0, 2.0))
    packets = synth.packets(script) if method == "re-INVITE" else _as_update(synth.packets(script))
    call, = _tracked(_replace_answer(packets, f"2 {method[-6:]}", "488 Not Acceptable Here"))
    assert call.holds == []


def test_a_cancelled_call_whose_487_the_capture_missed_is_still_cancelled():
    script = _call(0, outcome="cancelled", ring=2.5)
    packets = [p for p in synth.packets(script) if not _sip_line(p).startswith("SIP/2.0 487")]
    assert len(packets) < len(synth.packets(script))
    call, = _tracked(packets)
    assert call.disposition == "cancelled", "a call the caller gave up on was indexed as failed"


def test_overlapping_fragments_are_dropped_as_the_receiving_host_drops_them():
    payload = b"X" * 3000
    whole = net.udp_frame("192.0.2.1", 5060, "198.51.100.10", 5060, payload, ident=77)
    ip, body = whole[14:34], whole[34:]

    def fragment(off: int, chunk: bytes, more: bool) -> bytes:
        hdr = bytearray(ip)
        struct.pack_into("!H", hdr, 2, 20 + len(chunk))
        struct.pack_into("!H", hdr, 6, (0x2000 if more else 0) | off // 8)
        return whole[:14] + bytes(hdr) + chunk

    first, last = fragment(0, body[:1480], True), fragment(1480, body[1480:], False)
    dec = net.Decoder()
    # A piece that overlaps another rewrites bytes the far end never read (Linux drops the datagram).
    assert dec.frame(1.0, first) + dec.frame(1.0, fragment(1472, b"Y" * 16, True)) + dec.frame(1.0, last) == []
    # A flood of pieces, each overlapping the one before, holds nothing.
    dec = net.Decoder()
    for off in range(0, 60000, 8):
        assert dec.frame(2.0, fragment(off, b"Y" * 1480, True)) == []
    held = sum(len(piece) for f in dec._fragments.values() for piece in f.parts.values())
    assert held <= 1480, f"{held} bytes held for a datagram that cannot be put together"
    # The datagram sent again, a piece of it copied twice by the mirror, arrives once, whole;
    # a piece lying wholly inside one already here is a duplicate, whatever its bytes.
    dec = net.Decoder()
    got = [d for f in (last, first, first, fragment(8, b"Y" * 800, True)) for d in dec.frame(3.0, f)]
    assert len(got) == 1 and got[0].payload == payload
    # A second last piece with another end, or data past the end, drops it.
    for pieces in ((last, fragment(1480, body[1480:-8], False), first),
                   (last, fragment(3008, b"Y" * 8, True), first)):
        dec = net.Decoder()
        assert [d for f in pieces for d in dec.frame(4.0, f)] == []
