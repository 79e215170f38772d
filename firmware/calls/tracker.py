"""Calls, from the trunk's SIP dialogs and the RTP their SDP sets up.

A dialog is known by its Call-ID. Who sent a message is decided by tags, never by
addresses (a carrier's SBC may signal from several): a request is sent by the party whose
tag is in From, a response by the party whose tag is in To, and the party whose tag was
in the first INVITE's From is the caller. The configured trunk address says which way the
call goes: an INVITE from the carrier is inbound (the external party calls the city), an
INVITE to it is outbound.

Every SDP a party sends says where that party wants its audio: RTP arriving there is the
*other* party speaking. Media is keyed by that address and port (not SSRC, which some
peers reuse in both directions) and decoded by each packet's payload type.

The tracker knows nothing of files: it tells its sink when a call begins, hands it each
side's decoded audio with its place on the call's timeline, tells it when what the dialog
says has changed (so that it is kept), and when the call ends, with everything the index needs.

A call outlives its recorder: when the recorder stops (or dies) mid-call, the dialog as it
was last kept (``Call.snapshot``) is taken up by the next run (``Tracker.resume``) as the same
call — the same tags, media addresses, codecs and packet counts — and what was not heard in
between is a gap (``Call.gaps``). A resumed call of which nothing more is heard within
``RESUME_GRACE`` ended while the recorder was away: it ends where it was last heard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from firmware.calls import numbers, rtp, sip
from firmware.calls.call import Call
from firmware.calls.net import TCP, UDP, Datagram

log = logging.getLogger(__name__)

_BUSY = {486, 600}
_NO_ANSWER = {408, 480}
_CHALLENGE = {401, 407}
_ENDED_MEMORY = 64.0  # seconds an ended Call-ID is remembered (retransmissions, 200 to BYE)
RESUME_GRACE = 30.0  # seconds a resumed call may stay silent before it is taken to have ended
NO_RESPONSE = 32.0  # seconds an INVITE nobody answered at all is a call (RFC 3261 Timer B: 64 × T1)
MAX_UNANSWERED = 1000  # calls waiting for an answer at once: what a flood of INVITEs can make the tracker hold


def _ref(call_id: str) -> str:
    """A Call-ID as logs name it: a short hash, since Call-IDs often carry numbers and addresses."""
    import hashlib

    return hashlib.sha256(call_id.encode()).hexdigest()[:10]


class Sink(Protocol):
    def call_began(self, call: "Call") -> None: ...
    def call_changed(self, call: "Call") -> None: ...
    def call_audio(self, call: "Call", side: str, position: int, pcm: np.ndarray) -> None: ...
    def call_tick(self, call: "Call", now: float) -> None: ...
    def call_suspended(self, call: "Call") -> None: ...
    def call_ended(self, call: "Call") -> None: ...
    def flush(self) -> None: ...  # every tick: what the sink holds back to write together
    def call_not_recorded(self, when: float, direction: str) -> None: ...  # a line Art. 3 leaves out


@dataclass
class Counters:
    sip_messages: int = 0
    sip_errors: int = 0
    rtp_packets: int = 0
    unmatched: int = 0  # UDP that was neither SIP nor a known media address
    last_sip: float = 0.0  # capture time of the newest SIP message on the trunk
    refused: int = 0  # INVITEs not tracked: MAX_UNANSWERED calls were already waiting for an answer
    not_recorded: int = 0  # calls on lines the manager does not record (Art. 3)


class Tracker:
    def __init__(self, sink: Sink, *, trunk_host: str, trunk_port: int = 5060, outside_line_prefix: str = "",
                 window: float = 0.5, idle_timeout: float = 900.0, setup_timeout: float = 300.0):
        self.sink = sink
        self.trunk_host = trunk_host
        self.trunk_hosts = frozenset(h for h in trunk_host.split(",") if h)  # a carrier may signal from several
        self.trunk_port = trunk_port
        self.outside_line_prefix = outside_line_prefix
        self.window = window
        self.idle_timeout = idle_timeout
        self.setup_timeout = setup_timeout
        self.lines = numbers.Lines()  # Art. 3: the lines recorded (the recorder sets it from its configuration)
        self.calls: dict[str, Call] = {}
        self._ended: dict[str, float] = {}
        self._pressed_at, self._waiting_now = -1e18, 0  # the flood bound's last count of calls waiting
        self._media: dict[tuple[str, int], tuple[Call, str]] = {}
        self._framers: dict[tuple, sip.StreamFramer] = {}
        self.counters = Counters()
        self.now = 0.0

    # -- input -----------------------------------------------------------------------
    def datagram(self, d: Datagram) -> None:
        if d.ts > self.now:
            self.now = d.ts
        if d.proto == UDP:
            hit = self._media.get((d.dst, d.dport))
            if hit is not None:
                self._rtp(hit[0], hit[1], d)
                return
            if d.sport == self.trunk_port or d.dport == self.trunk_port or sip.looks_like_sip(d.payload):
                self._sip_bytes(d.payload, d, "udp")
            else:
                self.counters.unmatched += 1
        elif d.proto == TCP:
            key = (d.src, d.sport, d.dst, d.dport)
            framer = self._framers.get(key)
            if framer is None:
                if not sip.looks_like_sip(d.payload):
                    return
                framer = self._framers[key] = sip.StreamFramer()
            for message in framer.feed(d.payload):
                self._sip_bytes(message, d, "tcp")

    def tick(self, now: float) -> None:
        """Hand on audio older than the jitter window; end calls that went silent."""
        if now > self.now:
            self.now = now
        now = self.now
        for call in list(self.calls.values()):
            if call.gaps and call.gaps[-1][1] is None and now > 0:
                call.gaps[-1][1] = max(now, call.gaps[-1][0])  # the recorder hears again from here
            for side, stream in call.streams.items():
                for pos, pcm in stream.release(now):
                    self.sink.call_audio(call, side, pos, pcm)
            self.sink.call_tick(call, now)
            idle = now - call.last_activity
            # A resumed call nothing more is heard of ended while the recorder was away.
            unheard = call.resumed and call.gaps and call.gaps[-1][1] is not None \
                and now - call.gaps[-1][1] > RESUME_GRACE
            why = "recorder_stopped" if call.resumed else "timeout"
            # (retransmissions of the INVITE that stopped early mean a response was missed: not this)
            if call.answered is None and not call.responded and idle > NO_RESPONSE \
                    and not 0 < call.invite_last - call.invited < NO_RESPONSE / 2:
                self._end(call, call.last_activity, "failed", "no_response")  # the INVITE's transaction timed out
            elif call.answered is None and (idle > self.setup_timeout or unheard):
                # a CANCEL whose 487 the capture missed still ends a cancelled call
                self._end(call, call.last_activity, "cancelled" if call.cancelled else "failed", why)
            elif call.answered is not None and (idle > self.idle_timeout or unheard):
                self._end(call, call.last_activity, call.disposition or "answered", why)
        while self._ended:  # oldest first (insertion order): only what has expired is looked at
            cid, at = next(iter(self._ended.items()))
            if now - at <= _ENDED_MEMORY:
                break
            del self._ended[cid]
        self.sink.flush()

    def resume(self, call: Call) -> None:
        """Take up a call a previous run of the recorder left in progress (``Call.restore``,
        its sink's state already made): its dialog and media addresses are known again."""
        call.resumed = True
        self.calls[call.call_id] = call
        for key, side in call.media.items():
            self._media[key] = (call, side)
        log.info("call %s: taken up again after the recorder restarted", _ref(call.call_id))

    def suspend(self) -> None:
        """The recorder is stopping and will start again: each call's audio so far is handed on
        and its dialog kept (``Sink.call_suspended``); nothing is ended."""
        for call in list(self.calls.values()):
            for side, stream in call.streams.items():
                for pos, pcm in stream.flush():
                    self.sink.call_audio(call, side, pos, pcm)
            self.sink.call_suspended(call)
        self.sink.flush()

    def close(self, now: float | None = None) -> None:
        """End every call in progress (the input has ended: a replayed capture): what was heard is kept."""
        for call in list(self.calls.values()):
            disposition = call.disposition or ("cancelled" if call.cancelled else "failed")
            self._end(call, now if now is not None else self.now, disposition, "recorder_stopped")
        self.sink.flush()

    # -- SIP -------------------------------------------------------------------------
    def _on_trunk(self, host: str) -> bool:
        return host in self.trunk_hosts

    def _sip_bytes(self, data: bytes, d: Datagram, transport: str) -> None:
        try:
            msg = sip.parse(data)
        except sip.SipError:
            self.counters.sip_errors += 1
            return
        if self._on_trunk(d.src) or self._on_trunk(d.dst):
            self.counters.last_sip = d.ts
        self.counters.sip_messages += 1
        cid = msg.call_id
        if not cid:
            return
        call = self.calls.get(cid)
        if call is None:
            if msg.method == "INVITE" and not msg.to_tag and cid not in self._ended:
                call = self._new_call(msg, d, transport)
            if call is None:
                return
        elif msg.method == "INVITE" and not msg.to_tag:
            call.invite_last = d.ts  # a retransmission: no provisional response reached the caller yet
        call.last_activity = d.ts
        call.resumed = False
        self._update(call, msg, d.ts)
        if call.ended is None:
            self.sink.call_changed(call)

    def _direction(self, d: Datagram) -> str | None:
        """Which way an INVITE goes: from the carrier (inbound) or to it (outbound). By address,
        and where the PBX shares the trunk's address (an SBC on the same host), by the trunk's
        SIP port: the side on it is the carrier's."""
        src, dst = self._on_trunk(d.src), self._on_trunk(d.dst)
        if src and dst:
            if d.sport == self.trunk_port != d.dport:
                return "inbound"
            if d.dport == self.trunk_port != d.sport:
                return "outbound"
            return None  # neither side on the trunk's port: a call between two of the host's own
        return "inbound" if src else "outbound" if dst else None

    def _new_call(self, msg: sip.Message, d: Datagram, transport: str) -> Call | None:
        direction = self._direction(d)
        if direction is None:
            return None  # not on the trunk: an internal call is not the call recorder's to keep
        if len(self.calls) >= MAX_UNANSWERED:
            if self.now - self._pressed_at >= 1.0:  # under a flood, at most once a second:
                self._pressed_at = self.now
                self.tick(self.now)  # those whose time is up end first
                self._waiting_now = self._waiting()
            if self._waiting_now >= MAX_UNANSWERED:
                self.counters.refused += 1  # a flood: counted, shown as a fault, not held
                self._ended[msg.call_id] = d.ts  # and its retransmissions refused without a second look
                return None
            self._waiting_now += 1
        privacy = msg.header("privacy").lower()
        identity = sip.first_value(msg.headers.get("p-asserted-identity", [])) \
            or sip.first_value(msg.headers.get("remote-party-id", [])) or msg.header("from")
        rpid = msg.header("remote-party-id").lower()
        withheld = "id" in privacy.replace(";", " ").split() or "header" in privacy \
            or "privacy=full" in rpid or "privacy=name" in rpid
        from_user = sip.user_of(msg.header("from"))
        if from_user.lower().startswith("anonymous") or "anonymous.invalid" in msg.header("from").lower():
            withheld = True
        if withheld and direction == "inbound":
            # The caller asked that the city not be shown their number (非通知): it is neither
            # stored nor shown, though a P-Asserted-Identity carries it (docs/calls.md, "Numbers").
            caller = numbers.Number("", "", "", True)
        else:
            caller = numbers.parse(sip.user_of(identity) or from_user, outside_line_prefix=self.outside_line_prefix,
                                   withheld=withheld)
        # The number dialled: the Request-URI's, unless it is an extension or a trunk account
        # ("201", "trunk1") and To carries a whole number — then To's, the R-URI's kept too.
        target = numbers.parse(sip.user_of("<" + msg.uri + ">"), outside_line_prefix=self.outside_line_prefix)
        dialled = numbers.parse(sip.user_of(msg.header("to")), outside_line_prefix=self.outside_line_prefix)
        callee, reached = target, ""
        if not target.raw or (not target.e164 and dialled.e164):
            callee, reached = dialled, target.raw
        if self.lines and not self.lines.records(callee if direction == "inbound" else caller, reached):
            # A line the manager does not record (Art. 3): no audio, no numbers, only a count.
            self.counters.not_recorded += 1
            self._ended[msg.call_id] = d.ts  # its retransmissions make no call either
            self.sink.call_not_recorded(d.ts, direction)
            return None
        trunk = f"{self.trunk_host}:{self.trunk_port}"
        call = Call(msg.call_id, direction, trunk, caller, callee, msg.from_tag, d.ts, transport=transport,
                    last_activity=d.ts, reached=reached[:64])
        self.calls[call.call_id] = call
        log.info("call %s: %s", _ref(call.call_id), direction)  # no numbers in the system log
        self.sink.call_began(call)
        return call

    def _waiting(self) -> int:
        return sum(c.answered is None for c in self.calls.values())

    def _sender(self, call: Call, msg: sip.Message) -> str:
        tag = msg.from_tag if msg.method else msg.to_tag
        is_caller = tag == call.caller_tag if tag else msg.method is not None  # untagged: 100 Trying
        side = call.side_of_caller()
        return side if is_caller else call.other(side)

    def _update(self, call: Call, msg: sip.Message, ts: float) -> None:
        other = msg.to_tag if msg.from_tag == call.caller_tag else msg.from_tag
        if call.dialog_tag and other and other != call.dialog_tag:
            # Another fork's dialog (RFC 3261 §13.2.2.4): its late 2xx is ACKed and BYE'd at
            # once, and neither that BYE nor its SDP is the answered call's.
            return
        sender = self._sender(call, msg)
        seq, cseq_method = msg.cseq
        sdp = msg.sdp
        if sdp is None and msg.body and "sdp" in msg.header("content-type").lower():
            call.sdp_errors += 1  # an SDP that cannot be read: where its sender's audio goes is not learned
        if sdp is not None:
            audio = self._sdp(call, sender, sdp)
            if audio is not None and msg.method in ("INVITE", "UPDATE") and call.answered is not None:
                self._hold_offered(call, (seq, msg.method, sender), audio, ts)
        if call.ended is not None:
            return
        if call.answered is None and call.gaps and msg.method in ("BYE", "INVITE") and msg.to_tag:
            # A request inside a confirmed dialog, of a call taken up after a restart: it was
            # answered while the recorder was away (at the latest when it heard again).
            call.answered = call.gaps[-1][1] or ts
            call.dialog_tag, call.disposition = other, "answered"
            self._set_origin(call, call.answered)
        if call.offered_hold is not None and msg.status is not None and msg.status >= 200:
            self._hold_answered(call, msg.status, seq, cseq_method, sender)
        if msg.method == "CANCEL":
            call.cancelled = True
            return
        if msg.method == "BYE":
            disposition = call.disposition or ("answered" if call.answered is not None else "cancelled")
            self._end(call, ts, disposition, "bye", ended_by=sender)
            return
        if msg.status is None or cseq_method != "INVITE":
            return
        status = msg.status
        if 200 <= status < 300 and not msg.to_tag:
            return  # a 2xx that makes no dialog (no To tag: RFC 3261 §12.1.1) answers nothing
        call.responded = True
        if 180 <= status < 200 and call.ringing is None:
            call.ringing = ts
        elif 200 <= status < 300 and call.answered is None:
            call.answered = ts
            call.dialog_tag = msg.to_tag
            call.disposition = "answered"
            call.sip_status = status
            self._set_origin(call, ts)
        elif status >= 300 and call.answered is None and status not in _CHALLENGE:
            call.sip_status = status
            if call.cancelled or status == 487:
                disposition = "cancelled" if call.cancelled else "no_answer"
            elif status in _BUSY:
                disposition = "busy"
            elif status in _NO_ANSWER:
                disposition = "no_answer"
            else:
                disposition = "failed"
            self._end(call, ts, disposition, f"sip_{status}")

    def _sdp(self, call: Call, sender: str, sdp: sip.Sdp) -> sip.Media | None:
        """Learn a message's codecs and media addresses; returns its audio description."""
        call.rtpmap.update(sdp.rtpmap)
        audio = sdp.audio
        if audio is None:
            return None
        for pt in audio.payload_types:
            name = (sdp.rtpmap.get(pt) or rtp.STATIC.get(pt) or ("",))[0]
            if name and name not in ("TELEPHONE-EVENT", "CN"):
                call.sdp_codecs.add(name)
                break
        for d in call.decoders.values():
            d.rtpmap.update(sdp.rtpmap)
        if audio.encrypted:  # what its latest SDP says (Call.encrypted decides from both sides')
            call.srtp[sender] = "savp" if "SAVP" in audio.proto.upper() else "crypto"
        else:
            call.srtp.pop(sender, None)
        if audio.address not in ("0.0.0.0", "::", ""):
            call.addressed.add(sender)
            key = (audio.address, audio.port)
            call.media[key] = sender
            self._media[key] = (call, sender)
        return audio

    # -- hold and resume: counted from the offer (a re-INVITE or an UPDATE), taken back when
    # the other side refuses it. An offer whose answer the capture missed still counts, as
    # the offer is all there is to go on.
    @staticmethod
    def _hold_offered(call: Call, offer: tuple[int, str, str], audio: sip.Media, ts: float) -> None:
        held = audio.direction in ("sendonly", "inactive") or audio.address in ("0.0.0.0", "::")
        if held and not call.on_hold:
            call.holds.append([ts, None])
            call.offered_hold = (*offer, True, ts)
        elif not held and call.on_hold and audio.direction in ("sendrecv", "recvonly"):
            call.holds[-1][1] = ts
            call.offered_hold = (*offer, False, ts)
        else:
            call.offered_hold = None  # a later offer: the earlier one's transaction is over

    @staticmethod
    def _hold_answered(call: Call, status: int, seq: int, method: str, sender: str) -> None:
        o_seq, o_method, o_side, held, offered = call.offered_hold
        if (seq, method) != (o_seq, o_method) or sender == o_side:
            return
        call.offered_hold = None
        if status < 300:
            return  # accepted
        # refused (a 488, a 491 on glare…): the call stays as it was
        if held and call.holds and call.holds[-1] == [offered, None]:
            call.holds.pop()
        elif not held and call.holds and call.holds[-1][1] == offered:
            call.holds[-1][1] = None

    # -- media -----------------------------------------------------------------------
    def _set_origin(self, call: Call, ts: float) -> None:
        if call.origin is None:
            call.origin = ts

    def _rtp(self, call: Call, listener: str, d: Datagram) -> None:
        pkt = rtp.parse(d.payload, d.ts)
        if pkt is None or call.ended is not None:
            return
        self.counters.rtp_packets += 1
        call.last_activity = d.ts
        call.resumed = False
        self._set_origin(call, d.ts)
        speaker = call.other(listener)
        if call.encrypted():  # SRTP: decoded as G.711 it would be white noise stored as a voice
            call.encrypted_packets[speaker] = call.encrypted_packets.get(speaker, 0) + 1
            return
        stream = call.streams.get(speaker)
        if stream is None:
            decoder = call.decoders[speaker] = rtp.Decoder(call.rtpmap)
            stream = call.streams[speaker] = rtp.Stream(call.origin, decoder, window=self.window)
        stream.push(pkt)

    # -- the end ---------------------------------------------------------------------
    def _end(self, call: Call, ts: float, disposition: str, reason: str, *, ended_by: str = "") -> None:
        call.ended = max(ts, call.invited)
        call.disposition = disposition
        call.end_reason = reason
        call.ended_by = ended_by
        if call.on_hold:
            call.holds[-1][1] = call.ended
        for gap in call.gaps:  # a gap ends where the call did, at the latest
            gap[1] = call.ended if gap[1] is None else min(gap[1], call.ended)
        call.gaps = [g for g in call.gaps if g[1] > g[0]]
        for side, stream in call.streams.items():
            for pos, pcm in stream.flush():
                self.sink.call_audio(call, side, pos, pcm)
        for key in list(call.media):
            if self._media.get(key, (None,))[0] is call:
                del self._media[key]
        self.calls.pop(call.call_id, None)
        self._ended[call.call_id] = self.now
        for key in [k for k in self._framers if not self._framers[k]._buf and len(self._framers) > 256]:
            del self._framers[key]
        log.info("call %s ended: %s (%s), talk %.1f s", _ref(call.call_id), disposition, reason, call.talk_seconds)
        self.sink.call_ended(call)
