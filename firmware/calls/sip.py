"""SIP messages (RFC 3261) and their SDP bodies (RFC 4566), as a passive observer needs them.

Only what the call index needs is interpreted: the request or status line, Call-ID, CSeq,
From/To with their tags, the identity headers (P-Asserted-Identity, Remote-Party-ID,
Privacy) and the SDP's media addresses, payload types and direction. Compact header forms
(``i:``, ``f:``, ``t:``, ``l:`` …) and folded lines are understood. Over TCP, messages are
framed by their Content-Length (:class:`StreamFramer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from firmware.calls.errors import SipError

_COMPACT = {"i": "call-id", "f": "from", "t": "to", "l": "content-length", "c": "content-type", "m": "contact",
            "v": "via", "k": "supported", "s": "subject", "e": "content-encoding", "o": "event", "u": "allow-events",
            "r": "refer-to", "b": "referred-by", "x": "session-expires", "y": "identity"}
METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
                     "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"))
_MAX_MESSAGE = 64 * 1024


@dataclass(slots=True)
class Message:
    method: str | None  # a request's method, or None for a response
    status: int | None  # a response's status code
    uri: str  # a request's Request-URI; '' for a response
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str:
        values = self.headers.get(name)
        return values[0] if values else ""

    @property
    def call_id(self) -> str:
        return self.header("call-id").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        parts = self.header("cseq").split()
        try:
            return int(parts[0]), parts[1].upper()
        except (IndexError, ValueError):
            return 0, ""

    @property
    def from_tag(self) -> str:
        return tag(self.header("from"))

    @property
    def to_tag(self) -> str:
        return tag(self.header("to"))

    @property
    def sdp(self) -> "Sdp | None":
        if not self.body or "application/sdp" not in self.header("content-type").lower():
            return _multipart_sdp(self)
        return parse_sdp(self.body)


# A request without these is not a SIP request (RFC 3261 §8.1.1; Max-Forwards, also a MUST
# there, is tolerated: a recorder gains nothing by losing a call its PBX forgot it on); a
# response needs all but Via's being checked (§8.2.6.2 copies them).
_REQUIRED = ("call-id", "cseq", "from", "to", "via")
_CALL_ID = re.compile(r"[\w.!%*+`'~()<>:\\\"/\[\]?{}=-]+(?:@[\w.!%*+`'~()<>:\\\"/\[\]?{}=-]+)?")


def parse(data: bytes) -> Message:
    """One whole SIP message (a UDP payload, or one framed out of a TCP stream), or SipError:
    strict where RFC 3261 is — the header block must end (a datagram cut short is not a call),
    Call-ID, CSeq, From, To and Via must be there and well formed, a Content-Length must be a
    number the body holds (§18.3: a shorter body is an error, a longer one is cut) — and
    tolerant where it allows (bare LF line ends, compact and folded headers)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    if not sep:
        raise SipError("the header block does not end: a message cut short")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")  # a number or name is still readable; odd bytes stay odd
    lines = text.replace("\r\n", "\n").split("\n")
    first = lines[0].strip()
    method = status = None
    uri = ""
    if first.startswith("SIP/2.0 "):
        try:
            status = int(first.split(" ", 2)[1])
        except (IndexError, ValueError):
            raise SipError(f"bad status line {first[:60]!r}") from None
    else:
        parts = first.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or parts[0] not in METHODS:
            raise SipError(f"not a SIP start line: {first[:60]!r}")
        method, uri = parts[0], parts[1]
    headers: dict[str, list[str]] = {}
    last = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and last is not None:  # a folded continuation
            headers[last][-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        name = _COMPACT.get(name, name)
        # Comma-separated values of most headers are separate values; keep them whole here
        # (a display name may contain a comma) and split only where the index needs it.
        headers.setdefault(name, []).append(value.strip())
        last = name
    for name in _REQUIRED:
        if name == "via" and method is None:
            continue
        if not headers.get(name) or not headers[name][0]:
            raise SipError(f"no {name} header")
    call_id = headers["call-id"][0]
    if not _CALL_ID.fullmatch(call_id) or len(call_id) > 256:
        raise SipError(f"a malformed Call-ID {call_id[:40]!r}")
    cseq = headers["cseq"][0].split()
    if len(cseq) != 2 or not cseq[0].isdigit() or len(cseq[0]) > 10 or cseq[1].upper() not in METHODS \
            or (method is not None and cseq[1].upper() != method):
        raise SipError(f"a malformed CSeq {headers['cseq'][0][:40]!r}")
    lengths = {v.strip() for v in headers.get("content-length", [])}
    if lengths:
        if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
            raise SipError(f"a bad Content-Length {sorted(lengths)!r}")
        length = int(lengths.pop())
        if length > len(body):
            raise SipError(f"a body shorter ({len(body)} bytes) than its Content-Length ({length}): cut short")
        body = body[:length]
    return Message(method, status, uri, headers, body)


def looks_like_sip(data: bytes) -> bool:
    if data[:8] == b"SIP/2.0 ":
        return True
    space = data.find(b" ", 0, 12)
    return space > 0 and data[:space].decode("latin-1") in METHODS


_START = re.compile(rb"(?:" + b"|".join(m.encode() for m in sorted(METHODS)) + rb") \S+ SIP/2\.0\r\n|SIP/2\.0 \d{3} ")


class StreamFramer:
    """Splits one direction of a TCP stream into SIP messages by their Content-Length."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while True:
            while self._buf[:2] == b"\r\n":  # keep-alive CRLFs (RFC 5626)
                del self._buf[:2]
            if self._buf and not looks_like_sip(bytes(self._buf[:16])):
                m = _START.search(self._buf)  # lost sync: skip to the next start line
                if m is None:
                    del self._buf[:max(0, len(self._buf) - 64)]
                    return out
                del self._buf[:m.start()]
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_MESSAGE:
                    self._buf.clear()  # not SIP, or lost sync: start again at the next message
                return out
            head = bytes(self._buf[:end])
            m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head)
            length = int(m.group(1)) if m else 0
            if length > _MAX_MESSAGE:  # not a SIP body: lost sync, start again at the next message
                del self._buf[:end + 4]
                continue
            total = end + 4 + length
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


# -- header values -------------------------------------------------------------------
_TAG = re.compile(r";\s*tag=([^;>\s,]+)", re.I)
_URI = re.compile(r"<([^>]*)>")


def tag(value: str) -> str:
    # A tag is a header parameter, after the URI's closing '>' when there is one.
    tail = value[value.rfind(">") + 1:] if ">" in value else value
    m = _TAG.search(tail)
    return m.group(1) if m else ""


def uri_of(value: str) -> str:
    """The URI in a name-addr (``"Name" <sip:user@host>;tag=x``) or addr-spec."""
    m = _URI.search(value)
    if m:
        return m.group(1).strip()
    return value.split(";", 1)[0].strip()


def user_of(value: str) -> str:
    """The user part of a sip:, sips: or tel: URI in a header value: usually the number."""
    uri = uri_of(value)
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        return rest.split(";", 1)[0]
    if scheme not in ("sip", "sips"):
        return ""
    user = rest.split("@", 1)[0] if "@" in rest else ""
    return user.split(";", 1)[0]


def display_name(value: str) -> str:
    if "<" not in value:
        return ""
    return value[:value.index("<")].strip().strip('"')


def first_value(values: list[str]) -> str:
    """The first of comma-separated name-addr values (outside quotes and angle brackets)."""
    if not values:
        return ""
    text, depth, quoted = values[0], 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            return text[:i].strip()
    return text.strip()


# -- SDP -----------------------------------------------------------------------------
@dataclass(slots=True)
class Media:
    kind: str  # audio, video, image …
    address: str  # where this side wants to receive it
    port: int
    payload_types: list[int]
    direction: str  # sendrecv, sendonly, recvonly, inactive
    proto: str = "RTP/AVP"  # RTP/AVP; RTP/SAVP(F) or UDP/TLS/RTP/SAVP(F) is SRTP
    crypto: bool = False  # a=crypto (SDES keys for SRTP)

    @property
    def encrypted(self) -> bool:
        """SRTP: its payloads are ciphertext, which decoded as G.711 would be white noise."""
        return "SAVP" in self.proto.upper() or self.crypto


@dataclass(slots=True)
class Sdp:
    media: list[Media]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  # pt -> (encoding, clock rate)

    @property
    def audio(self) -> Media | None:
        return next((m for m in self.media if m.kind == "audio" and m.port), None)


def parse_sdp(body: bytes) -> Sdp | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")
    session_addr, session_dir, session_crypto = "", "sendrecv", False
    media: list[Media] = []
    rtpmap: dict[int, tuple[str, int]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        if kind == "c":
            parts = value.split()
            addr = parts[2].split("/", 1)[0] if len(parts) >= 3 else ""
            if media:
                media[-1].address = addr
            else:
                session_addr = addr
        elif kind == "m":
            parts = value.split()
            try:
                port = int(parts[1].split("/", 1)[0])
                pts = [int(p) for p in parts[3:] if p.isdigit()]
            except (IndexError, ValueError):
                continue
            media.append(Media(parts[0].lower(), session_addr, port, pts, session_dir,
                               parts[2] if len(parts) > 2 else "", session_crypto))
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                if media:
                    media[-1].direction = name
                else:
                    session_dir = name
                    for m in media:
                        m.direction = name
            elif name == "crypto":
                if media:
                    media[-1].crypto = True
                else:
                    session_crypto = True
            elif name == "rtpmap":
                try:
                    pt_text, enc = arg.split(None, 1)
                    codec = enc.split("/")
                    rtpmap[int(pt_text)] = (codec[0].upper(), int(codec[1]) if len(codec) > 1 else 8000)
                except (ValueError, IndexError):
                    continue
    if not media:
        return None
    return Sdp(media, rtpmap)


def _multipart_sdp(msg: Message) -> Sdp | None:
    ctype = msg.header("content-type")
    if not msg.body or "multipart/" not in ctype.lower():
        return None
    m = re.search(r'boundary="?([^";]+)"?', ctype, re.I)
    if not m:
        return None
    for part in msg.body.split(b"--" + m.group(1).encode()):
        head, _, body = part.partition(b"\r\n\r\n")
        if b"application/sdp" in head.lower():
            return parse_sdp(body)
    return None
