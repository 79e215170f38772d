"""A call as the tracker knows it: its dialog (parties, tags, answer, holds), where each side
sends its audio, what was heard of each side and why not (``hearing``), and — so that it
outlives its recorder — the snapshot kept with its row (``snapshot``, ``restore``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from firmware.calls import numbers, rtp

EXTERNAL, CITY = "external", "city"
_COUNTS = ("received", "duplicates", "late", "lost", "reordered")


@dataclass
class Call:
    call_id: str
    direction: str  # inbound (the external party called) or outbound
    trunk: str
    caller: numbers.Number
    callee: numbers.Number
    caller_tag: str
    invited: float  # capture times, seconds since the epoch
    dialog_tag: str = ""  # the callee's tag in the first 2xx: the dialog that was answered
    reached: str = ""  # the Request-URI's user when it was not the number dialled (an extension, an account)
    transport: str = "udp"
    ringing: float | None = None
    answered: float | None = None
    ended: float | None = None
    origin: float | None = None  # where the audio starts: answer or the first media, whichever is first
    disposition: str = ""
    sip_status: int = 0
    end_reason: str = ""
    ended_by: str = ""  # external, city, or '' (a timeout, a failure)
    holds: list[list[float | None]] = field(default_factory=list)  # [start, end] capture times
    # The last hold or resume offered by a re-INVITE or an UPDATE, while a refusal could still
    # take it back: (CSeq number, method, offering side, held, when offered)
    offered_hold: tuple[int, str, str, bool, float] | None = None
    cancelled: bool = False
    responded: bool = False  # a response to the INVITE was seen (one nobody answers ends at Timer B)
    invite_last: float = 0.0  # the INVITE's last retransmission seen
    last_activity: float = 0.0
    media: dict[tuple[str, int], str] = field(default_factory=dict)  # SDP address -> listening side
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    streams: dict[str, rtp.Stream] = field(default_factory=dict)  # speaking side -> its stream
    decoders: dict[str, rtp.Decoder] = field(default_factory=dict)
    sdp_codecs: set[str] = field(default_factory=set)
    state: object = None  # the sink's own per-call state
    # Before a restart of the recorder: the packets counted, the codecs heard; the stretches not
    # heard ([from, to, why], capture times; ``to`` None until the recorder hears again).
    prior: dict[str, int] = field(default_factory=dict)
    heard: set[str] = field(default_factory=set)
    gaps: list[list] = field(default_factory=list)
    resumed: bool = False  # taken up after a restart, and nothing heard of it since
    # What can be heard, and why not (Call.hearing): the listening sides whose SDP said SRTP, and
    # those that gave a media address at all; SDP bodies that could not be read; each speaking
    # side's packets not decoded because they were encrypted, and its counts before a restart.
    srtp: dict[str, str] = field(default_factory=dict)  # side -> "savp" or "crypto", as its latest SDP says
    addressed: set[str] = field(default_factory=set)
    sdp_errors: int = 0
    encrypted_packets: dict[str, int] = field(default_factory=dict)
    prior_sides: dict[str, dict[str, int]] = field(default_factory=dict)

    _KEPT = ("call_id", "direction", "trunk", "caller_tag", "invited", "dialog_tag", "transport", "ringing",
             "answered", "origin", "disposition", "sip_status", "holds", "offered_hold", "cancelled", "last_activity",
             "gaps", "sdp_errors", "reached", "responded", "invite_last")

    def snapshot(self) -> dict:
        """What a recorder starting again needs to go on with this call (JSON)."""
        out = {k: getattr(self, k) for k in self._KEPT}
        out["caller"], out["callee"] = asdict(self.caller), asdict(self.callee)
        out["media"] = [[host, port, side] for (host, port), side in self.media.items()]
        out["rtpmap"] = {str(pt): list(v) for pt, v in self.rtpmap.items()}
        out["sdp_codecs"] = sorted(self.sdp_codecs)
        out["heard"] = self.codecs()
        out["counts"] = {k: v for k, v in self.loss().items() if k in _COUNTS}
        out["srtp"], out["addressed"] = dict(self.srtp), sorted(self.addressed)
        out["sides"] = {side: self.side_counts(side) for side in (EXTERNAL, CITY)}
        return out

    @classmethod
    def restore(cls, kept: dict) -> "Call":
        """The call a snapshot describes, as the tracker takes it up again."""
        call = cls(**{k: kept[k] for k in cls._KEPT if k in kept and k != "gaps"} | {
            "caller": numbers.Number(**kept["caller"]), "callee": numbers.Number(**kept["callee"])})
        if call.offered_hold is not None:
            call.offered_hold = tuple(call.offered_hold)
        call.media = {(host, port): side for host, port, side in kept["media"]}
        call.rtpmap = {int(pt): tuple(v) for pt, v in kept["rtpmap"].items()}
        call.sdp_codecs, call.heard = set(kept["sdp_codecs"]), set(kept["heard"])
        call.prior = dict(kept["counts"])
        call.gaps = [list(g) for g in kept["gaps"]]
        call.srtp, call.addressed = dict(kept["srtp"]), set(kept["addressed"])
        call.prior_sides = {side: dict(c) for side, c in kept["sides"].items()}
        return call

    def encrypted(self) -> bool:
        """Whether the media is SRTP as negotiated: a side offered or answered the SAVP profile
        (which the other must match), or both sides sent keys (``a=crypto``) over plain AVP — an
        offer of optional SRTP whose answer has no keys is plain RTP."""
        said = list(self.srtp.values())
        return "savp" in said or (len(said) == 2 and all(v == "crypto" for v in said))

    def side_counts(self, side: str) -> dict[str, int]:
        """One speaking side's packets: decoded to sound, not decodable, not decoded (SRTP)."""
        prior = self.prior_sides.get(side, {})
        decoder = self.decoders.get(side)
        return {"decoded": prior.get("decoded", 0) + (decoder.decoded if decoder else 0),
                "undecodable": prior.get("undecodable", 0) + (decoder.undecodable if decoder else 0),
                "encrypted": prior.get("encrypted", 0) + self.encrypted_packets.get(side, 0)}

    def hearing(self, side: str) -> str | None:
        """What was heard of a side (``firmware.regulation.Hearing``), or None when there was
        nothing to hear (neither answered nor early media)."""
        if self.answered is None and self.origin is None:
            return None
        counts, listener = self.side_counts(side), self.other(side)
        if counts["encrypted"] or (self.encrypted() and not counts["decoded"]):
            return "encrypted"
        if counts["decoded"]:
            return "heard"
        if counts["undecodable"]:
            return "undecodable"
        if listener not in self.addressed:
            return "no_media_address"  # the side it was spoken to never said where its audio goes
        return "silent"

    @property
    def external(self) -> numbers.Number:
        return self.caller if self.direction == "inbound" else self.callee

    @property
    def city(self) -> numbers.Number:
        return self.callee if self.direction == "inbound" else self.caller

    def side_of_caller(self) -> str:
        return EXTERNAL if self.direction == "inbound" else CITY

    def other(self, side: str) -> str:
        return CITY if side == EXTERNAL else EXTERNAL

    @property
    def ring_seconds(self) -> float | None:
        until = self.answered if self.answered is not None else self.ended
        start = self.invited
        return None if until is None else max(0.0, until - start)

    @property
    def talk_seconds(self) -> float:
        if self.answered is None or self.ended is None:
            return 0.0
        return max(0.0, self.ended - self.answered)

    @property
    def on_hold(self) -> bool:
        return bool(self.holds) and self.holds[-1][1] is None

    def loss(self) -> dict:
        """Packet counts over both directions (and before a restart), for the index and the page."""
        total = rtp.StreamStats(**{k: int(self.prior.get(k, 0)) for k in _COUNTS})
        for s in self.streams.values():
            for k in _COUNTS:
                setattr(total, k, getattr(total, k) + getattr(s.stats, k))
        expected = total.received + total.lost
        return {"received": total.received, "lost": total.lost, "duplicates": total.duplicates,
                "late": total.late, "reordered": total.reordered,
                "loss_percent": round(100.0 * total.lost / expected, 2) if expected else 0.0}

    def codecs(self) -> list[str]:
        used = set(self.heard)
        for d in self.decoders.values():
            used |= d.codecs
        return sorted(used or self.sdp_codecs)
