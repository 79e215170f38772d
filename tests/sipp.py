"""Real calls for the call recorder's tests, placed by SIPp (Debian's sip-tester) on loopback.

The carrier and the PBX are two SIPp instances on two loopback addresses; the recorder
captures ``lo`` live, the way it captures a mirror port. Scenarios are written per test
from the templates below (SIPp does not substitute its ``-key`` values inside ``exec``
attributes), and each side streams its own tone from a raw G.711 file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from firmware.calls import synth

CARRIER_IP, PBX_IP = "127.0.0.2", "127.0.0.3"
_NAMES = {0: "PCMU", 8: "PCMA"}


def _listening(port: int, tcp: bool) -> bool:
    """Whether a socket is bound to ``port`` (listening, for TCP): /proc/net, no probe sent."""
    table, state = ("/proc/net/tcp", "0A") if tcp else ("/proc/net/udp", "07")
    with open(table) as f:
        next(f)
        return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == state for line in f)


def available() -> bool:
    return shutil.which("sipp") is not None


def tone_file(path: Path, freq: float, pt: int, seconds: float = 20.0) -> Path:
    """A raw µ-law (pt 0) or A-law (pt 8) file that SIPp's rtp_stream plays."""
    pcm = synth.tone(freq, 0, int(seconds * 8000))
    path.write_bytes(synth.encode_g711(pcm, pt))
    return path


def _sdp(pt: int, direction: str = "sendrecv") -> str:
    return (f"v=0\no=- 1 1 IN IP4 [media_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\n"
            f"m=audio [media_port] RTP/AVP {pt} 101\na=rtpmap:{pt} {_NAMES[pt]}/8000\n"
            f"a=rtpmap:101 telephone-event/8000\na={direction}\n")


def _send(lines: str, sdp: str = "", *, retrans: bool = False) -> str:
    ctype = "Content-Type: application/sdp\n" if sdp else ""
    attr = ' retrans="500"' if retrans else ""
    return f"<send{attr}><![CDATA[\n{lines.strip()}\n{ctype}Content-Length: [len]\n\n{sdp}]]></send>"


def _rtp(tone: Path, pt: int) -> str:
    return f'<nop><action><exec rtp_stream="{tone},-1,{pt}"/></action></nop>'


@dataclass
class Call:
    """What one SIPp pair does. The caller is the carrier for inbound calls, the PBX for outbound."""

    caller: str = "0422123456"
    callee: str = "0586280000"
    ring_ms: int = 800
    talk_ms: int = 3000
    outcome: str = "answered"  # answered, busy, cancelled
    early_media: bool = False
    hold_ms: tuple[int, int] | None = None  # the caller holds: after this long into the talk, for this long
    sdp_pt: int = 0
    rtp_pt: int = 0
    anonymous: bool = False


def uac(c: Call, tone: Path) -> str:
    frm = ('"Anonymous" <sip:anonymous@anonymous.invalid>' if c.anonymous
           else f"<sip:{c.caller}@[local_ip]:[local_port]>")
    privacy = "Privacy: id\n" if c.anonymous else ""
    line = "{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
    head = ("Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            f"From: {frm};tag=[pid]SIPpTag00[call_number]\n")
    to = "To: <sip:[service]@[remote_ip]:[remote_port]>"
    common = "Call-ID: [call_id]\nMax-Forwards: 70\nContact: <sip:[local_ip]:[local_port]>\n"
    dialog = head + to + "[peer_tag_param]\n" + common

    def request(method: str, cseq: int, *, in_dialog: bool = True, extra: str = "") -> str:
        return line.format(method=method) + (dialog if in_dialog else head + to + "\n" + common) + \
            f"CSeq: {cseq} {method}\n" + extra

    steps = [_send(request("INVITE", 1, in_dialog=False, extra=privacy), _sdp(c.sdp_pt), retrans=True),
             '<recv response="100" optional="true"/>']
    if c.outcome == "busy":
        steps += ['<recv response="180" optional="true"/>', '<recv response="486"/>', _send(request("ACK", 1))]
        return _scenario("uac", steps)
    if c.outcome == "cancelled":
        steps += ['<recv response="180"/>', f'<pause milliseconds="{c.ring_ms}"/>',
                  _send(request("CANCEL", 1, in_dialog=False)), '<recv response="200"/>', '<recv response="487"/>',
                  _send(request("ACK", 1))]
        return _scenario("uac", steps)
    steps += ['<recv response="180" optional="true"/>', '<recv response="183" optional="true"/>',
              '<recv response="200" rrs="true"/>', _send(request("ACK", 1)), _rtp(tone, c.rtp_pt)]
    if c.hold_ms:
        before, length = c.hold_ms
        for cseq, direction, pause, wait in ((2, "sendonly", before, length),
                                             (3, "sendrecv", 0, c.talk_ms - before - length)):
            steps += [f'<pause milliseconds="{pause}"/>',
                      _send(request("INVITE", cseq), _sdp(c.sdp_pt, direction), retrans=True),
                      '<recv response="200"/>', _send(request("ACK", cseq)), f'<pause milliseconds="{wait}"/>']
    else:
        steps.append(f'<pause milliseconds="{c.talk_ms}"/>')
    steps += [_send(request("BYE", 10), retrans=True), '<recv response="200" crlf="true"/>']
    return _scenario("uac", steps)


def uas(c: Call, tone: Path) -> str:
    reply = ("[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]SIPpTag01[call_number]\n[last_Call-ID:]\n"
             "[last_CSeq:]\nContact: <sip:[local_ip]:[local_port]>\n")

    def status(text: str, cseq: str = "") -> str:
        return f"SIP/2.0 {text}\n" + (reply.replace("[last_CSeq:]", cseq) if cseq else reply)

    steps = ['<recv request="INVITE" crlf="true"/>']
    if c.outcome == "busy":
        steps += [_send(status("486 Busy Here")), '<recv request="ACK"/>']
        return _scenario("uas", steps)
    steps.append(_send(status("100 Trying")))
    if c.early_media:
        steps += [_send(status("183 Session Progress"), _sdp(c.sdp_pt)), _rtp(tone, c.rtp_pt)]
    else:
        steps.append(_send(status("180 Ringing")))
    if c.outcome == "cancelled":
        steps += ['<recv request="CANCEL"/>', _send(status("200 OK")),
                  _send(status("487 Request Terminated", "CSeq: 1 INVITE")), '<recv request="ACK"/>']
        return _scenario("uas", steps)
    steps += [f'<pause milliseconds="{c.ring_ms}"/>', _send(status("200 OK"), _sdp(c.sdp_pt), retrans=True),
              '<recv request="ACK" crlf="true"/>']
    if not c.early_media:
        steps.append(_rtp(tone, c.rtp_pt))
    if c.hold_ms:
        for direction in ("recvonly", "sendrecv"):
            steps += ['<recv request="INVITE"/>', _send(status("200 OK"), _sdp(c.sdp_pt, direction)),
                      '<recv request="ACK"/>']
    steps += ['<recv request="BYE"/>', _send(status("200 OK")), '<pause milliseconds="200"/>']
    return _scenario("uas", steps)


def _scenario(name: str, steps: list[str]) -> str:
    body = "\n".join(steps)
    return f'<?xml version="1.0" encoding="UTF-8" ?>\n<scenario name="kiroku {name}">\n{body}\n</scenario>\n'


class Pair:
    """A UAS and a UAC placing one call. SIPp 3.6 gives every call of one instance the same
    media port, which no PBX does, so concurrent calls are concurrent pairs, each on its own
    SIP and media ports (``index``)."""

    def __init__(self, tmp: Path, call: Call, *, inbound: bool, sip_port: int, media_port: int, index: int = 0,
                 tones: tuple[float, float] = (440.0, 1000.0), timeout: float = 60.0, tcp: bool = False):
        self.tmp, self.call, self.timeout = tmp / f"pair-{index}", call, timeout
        self.transport = ["-t", "t1"] if tcp else []
        self.tmp.mkdir(parents=True, exist_ok=True)
        caller_ip, callee_ip = (CARRIER_IP, PBX_IP) if inbound else (PBX_IP, CARRIER_IP)
        carrier_tone = tone_file(self.tmp / "carrier.g711", tones[0], call.rtp_pt)
        pbx_tone = tone_file(self.tmp / "pbx.g711", tones[1], call.rtp_pt)
        caller_tone, callee_tone = (carrier_tone, pbx_tone) if inbound else (pbx_tone, carrier_tone)
        (self.tmp / "uac.xml").write_text(uac(call, caller_tone))
        (self.tmp / "uas.xml").write_text(uas(call, callee_tone))
        carrier_sip, pbx_sip = sip_port + 2 * index, sip_port + 2 * index + 1
        self.caller = (caller_ip, carrier_sip if inbound else pbx_sip, media_port + 4 * index)
        self.callee = (callee_ip, pbx_sip if inbound else carrier_sip, media_port + 4 * index + 2)

    def _wait_listening(self, port: int, proc: subprocess.Popen) -> None:
        """The caller connects at once over TCP: the callee must be listening first."""
        for _ in range(200):
            if _listening(port, bool(self.transport)) or proc.poll() is not None:
                return
            time.sleep(0.02)

    def run(self) -> None:
        ip, port, mport = self.callee
        uas_proc = subprocess.Popen(["sipp", "-sf", str(self.tmp / "uas.xml"), "-i", ip, "-p", str(port),
                                     "-mi", ip, "-mp", str(mport), "-nostdin", "-m", "1", *self.transport,
                                     "-trace_err", "-error_file", str(self.tmp / "uas.err"),
                                     "-trace_msg", "-message_file", str(self.tmp / "uas.msg")],
                                    cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_listening(port, uas_proc)
            ip2, port2, mport2 = self.caller
            result = subprocess.run(["sipp", f"{ip}:{port}", "-sf", str(self.tmp / "uac.xml"), "-i", ip2,
                                     "-p", str(port2), "-mi", ip2, "-mp", str(mport2), "-s", self.call.callee,
                                     "-m", "1", "-nostdin", *self.transport, "-timeout", f"{int(self.timeout)}s", "-timeout_error",
                                     "-trace_err", "-error_file", str(self.tmp / "uac.err"),
                                     "-trace_msg", "-message_file", str(self.tmp / "uac.msg")],
                                    cwd=self.tmp, capture_output=True, text=True, timeout=self.timeout + 30)
            if result.returncode != 0:
                err = (self.tmp / "uac.err").read_text() if (self.tmp / "uac.err").exists() else ""
                raise AssertionError(f"sipp (caller) failed, exit {result.returncode}: {err[-2000:]}")
        finally:
            try:
                uas_proc.wait(15)
            except subprocess.TimeoutExpired:
                uas_proc.kill()
                uas_proc.wait()

    def wire(self) -> Wire:
        """What the two SIPp instances sent, when, from their own message traces."""
        return Wire([*_sent(self.tmp / "uac.msg"), *_sent(self.tmp / "uas.msg")])


@dataclass
class Sent:
    at: float  # seconds since the epoch, as SIPp stamped the message when it sent it
    first_line: str  # "INVITE sip:…", "SIP/2.0 200 OK"
    cseq: str  # "1 INVITE"
    call_id: str


class Wire:
    """The messages of one call as they went out: the truth a test holds the recorder's times
    against, whatever the machine's load did to SIPp's own pauses."""

    def __init__(self, sent: list[Sent]):
        self.messages = sorted(sent, key=lambda m: m.at)
        self.call_id = self.messages[0].call_id if self.messages else ""

    def at(self, start: str, cseq: str) -> float:
        """When the first message whose first line starts with ``start`` and whose CSeq is ``cseq`` went out."""
        for m in self.messages:
            if m.first_line.startswith(start) and m.cseq == cseq:
                return m.at
        raise AssertionError(f"SIPp sent no {start!r} with CSeq {cseq!r}: {[m.first_line for m in self.messages]}")


_STAMP = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$")


def _sent(trace: Path) -> list[Sent]:
    """The messages a SIPp -trace_msg file says were sent (not received)."""
    out: list[Sent] = []
    blocks: list[tuple[str, list[str]]] = []
    for line in trace.read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if stamp:
            blocks.append((stamp.group(1), []))
        elif blocks:
            blocks[-1][1].append(line)
    for stamp, lines in blocks:
        if not lines or "message sent" not in lines[0]:
            continue
        body = [x for x in lines[1:] if x.strip()]
        header = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in body[1:]) if _}
        out.append(Sent(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp(), body[0] if body else "",
                        header.get("cseq", ""), header.get("call-id", "")))
    return out
