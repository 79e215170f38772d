"""Encrypting and decrypting a stream in the age format: the header and its MAC, then the
payload in 64 KiB chunks (ChaCha20-Poly1305, STREAM nonces); and reading ASCII armor.

``Writer`` streams in push mode (the muxer writes, each full chunk is sealed at once);
``decrypt_chunks`` yields a chunk only once its tag has been checked.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import os
import re
from typing import BinaryIO, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from firmware.vault.age.errors import ArmorError, HeaderError, HeaderMacError, NoIdentityMatched, PayloadError
from firmware.vault.age.format import (
    B64_CHARS,
    CHUNK,
    FILE_KEY_SIZE,
    MAX_LINE,
    TAG,
    VERSION_LINE,
    Stanza,
    b64decode,
    b64encode,
    hkdf,
)


def _header(recipients: Iterable, file_key: bytes) -> bytes:
    stanzas = [r.wrap(file_key) for r in recipients]
    if not stanzas:
        raise ValueError("at least one recipient is needed")
    if any(s.args[0] == "scrypt" for s in stanzas) and len(stanzas) > 1:
        raise ValueError("a passphrase must be the only recipient")
    head = VERSION_LINE + b"".join(s.encode() for s in stanzas) + b"---"
    mac = hmac.new(hkdf(file_key, b"", b"header"), head, "sha256").digest()
    return head + b" " + b64encode(mac).encode() + b"\n"


class Writer:
    """Encrypts a stream pushed into it with ``write``; ``close`` writes the final chunk.

    Ciphertext goes to ``out`` (anything with ``write``) as soon as each 64 KiB chunk is
    complete, so memory stays at one chunk whatever the file's size.
    """

    def __init__(self, out, recipients: Iterable):
        self._out = out
        file_key = os.urandom(FILE_KEY_SIZE)
        nonce = os.urandom(16)
        out.write(_header(recipients, file_key))
        out.write(nonce)
        self._aead = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False

    def write(self, data) -> int:
        self._buffer += data
        # Keep at least one byte back: only close() knows which chunk is the last.
        while len(self._buffer) > CHUNK:
            self._seal(bytes(self._buffer[:CHUNK]), final=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _seal(self, chunk: bytes, final: bool) -> None:
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")
        self._out.write(self._aead.encrypt(nonce, chunk, None))
        self._counter += 1

    def flush(self) -> None:
        """Nothing held back can be written early: only ``close`` knows the last chunk."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._seal(bytes(self._buffer), final=True)
            self._buffer.clear()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()


def encrypt(plaintext: bytes, recipients: Iterable) -> bytes:
    out = io.BytesIO()
    with Writer(out, recipients) as w:
        w.write(plaintext)
    return out.getvalue()



def _read_line(src: BinaryIO) -> bytes:
    line = src.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        raise HeaderError("header ends early" if len(line) < MAX_LINE else "header line too long")
    return line


def parse_header(src: BinaryIO) -> tuple[list[Stanza], bytes, bytes]:
    """(stanzas, header bytes up to and including ``---``, MAC) from the start of ``src``."""
    first = src.readline(MAX_LINE)
    if first != VERSION_LINE:
        raise HeaderError("not an age-encryption.org/v1 file")
    head = bytearray(first)
    stanzas: list[Stanza] = []
    while True:
        line = _read_line(src)
        if line.startswith(b"-> "):
            head += line
            args = line[3:-1].split(b" ")
            if not args or any(not a or any(c < 0x21 or c > 0x7E for c in a) for a in args):
                raise HeaderError("malformed stanza arguments")
            body = bytearray()
            while True:
                body_line = _read_line(src)
                head += body_line
                text = body_line[:-1]
                if len(text) > 64 or not B64_CHARS.fullmatch(text):
                    raise HeaderError("malformed stanza body line")
                body += text
                if len(text) < 64:
                    break
            stanzas.append(Stanza(tuple(a.decode() for a in args), b64decode(bytes(body))))
        elif line.startswith(b"---"):
            if not stanzas:
                raise HeaderError("no recipient stanzas")
            if not line.startswith(b"--- ") or len(line) != 4 + 43 + 1:
                raise HeaderError("malformed header MAC line")
            head += b"---"
            return stanzas, bytes(head), b64decode(line[4:-1])
        else:
            raise HeaderError("unexpected line in the header")


def _file_key(src: BinaryIO, identities) -> bytes:
    stanzas, head, mac = parse_header(src)
    if any(s.args[0] == "scrypt" for s in stanzas) and len(stanzas) != 1:
        raise HeaderError("an scrypt stanza must be alone in the header")
    for identity in identities:
        file_key = identity.unwrap(stanzas)
        if file_key is not None:
            break
    else:
        raise NoIdentityMatched("no identity matched any of the file's recipients")
    expected = hmac.new(hkdf(file_key, b"", b"header"), head, "sha256").digest()
    if not hmac.compare_digest(expected, mac):
        raise HeaderMacError("the header's MAC does not verify")
    return file_key


def _read_exactly(src: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = src.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def decrypt_chunks(src: BinaryIO, identities, *, armored: bool | None = None) -> Iterator[bytes]:
    """The plaintext, one authenticated chunk at a time.

    Raises as soon as anything is wrong. A chunk is yielded only after its tag verified,
    but a file cut short is only known at its end: callers that must not release a
    truncated file (exports, playback) collect everything before passing it on.
    ``armored``: None to detect ASCII armor, True to require it, False to refuse it.
    """
    if armored:
        src = io.BytesIO(dearmor(src.read()))
    elif armored is None:
        src = _dearmor(src)
    file_key = _file_key(src, identities)
    nonce = _read_exactly(src, 16)
    if len(nonce) != 16:
        raise HeaderError("the payload nonce is missing")
    aead = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
    counter = 0

    def open_chunk(data: bytes, final: bool) -> bytes:
        chunk_nonce = counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")
        try:
            return aead.decrypt(chunk_nonce, data, None)
        except InvalidTag:
            raise PayloadError(f"chunk {counter} does not authenticate (altered, truncated or extended)") from None

    chunk = _read_exactly(src, CHUNK + TAG)
    if not chunk:
        raise PayloadError("the payload has no chunks")
    while True:
        if len(chunk) < CHUNK + TAG:  # a short chunk can only be the final one
            if len(chunk) < TAG:
                raise PayloadError("the last chunk is shorter than its tag")
            plain = open_chunk(chunk, final=True)
            if not plain and counter > 0:
                raise PayloadError("the final chunk is empty")
            yield plain
            return
        # A full chunk is usually followed by more; if it does not open as such, it may be
        # a full final chunk (a payload that is an exact multiple of 64 KiB).
        try:
            plain = open_chunk(chunk, final=False)
        except PayloadError:
            plain = open_chunk(chunk, final=True)
            yield plain
            if src.read(1):
                raise PayloadError("data after the final chunk") from None
            return
        yield plain
        counter += 1
        chunk = _read_exactly(src, CHUNK + TAG)
        if not chunk:
            raise PayloadError("the file ends without a final chunk")


def decrypt(data: bytes, identities) -> bytes:
    return b"".join(decrypt_chunks(io.BytesIO(data), identities))



_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
_END = b"-----END AGE ENCRYPTED FILE-----"
_WHITESPACE = b" \t\r\n"


def _dearmor(src: BinaryIO) -> BinaryIO:
    """``src`` itself for a binary file; the decoded bytes for an armored one (strict PEM)."""
    peek = src.read(len(VERSION_LINE))
    # Armor may be preceded by whitespace; look past a bounded amount of it.
    while peek and not peek.strip(_WHITESPACE) and len(peek) < 4096:
        more = src.read(len(VERSION_LINE))
        if not more:
            break
        peek += more
    start = peek.lstrip(_WHITESPACE)
    if not start or not _BEGIN.startswith(start[: len(_BEGIN)]):
        return _Prefixed(peek, src)
    return io.BytesIO(dearmor(peek + src.read()))


def dearmor(data: bytes) -> bytes:
    text = data.strip(_WHITESPACE)
    lines = text.split(b"\n")
    if any(line.endswith(b"\r") for line in lines[:-1]) or text.endswith(b"\r"):
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if len(lines) < 2 or lines[0] != _BEGIN or lines[-1] != _END:
        raise ArmorError("not a strict AGE ENCRYPTED FILE armor")
    body = lines[1:-1]
    for i, line in enumerate(body):
        last = i == len(body) - 1
        if not line or len(line) > 64 or (not last and len(line) != 64):
            raise ArmorError("armor lines must be 64 columns, the last one shorter")
        if not re.fullmatch(rb"[A-Za-z0-9+/]+={0,2}", line) or (b"=" in line and not last):
            raise ArmorError("invalid character in the armor")
    joined = b"".join(body)
    if len(joined) % 4:
        raise ArmorError("armor base64 is not padded")
    try:
        decoded = base64.b64decode(joined, validate=True)
    except binascii.Error:
        raise ArmorError("invalid base64 in the armor") from None
    if base64.b64encode(decoded) != joined:
        raise ArmorError("non-canonical base64 in the armor")
    return decoded


class _Prefixed:
    """A stream with some already-read bytes put back in front."""

    def __init__(self, prefix: bytes, rest: BinaryIO):
        self._prefix = prefix
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n is None or n < 0:
                out, self._prefix = self._prefix + self._rest.read(), b""
                return out
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            if len(out) < n:
                out += self._rest.read(n - len(out))
            return out
        return self._rest.read(n)

    def readline(self, limit: int = -1) -> bytes:
        if self._prefix:
            idx = self._prefix.find(b"\n")
            if idx != -1 and (limit < 0 or idx < limit):
                out, self._prefix = self._prefix[: idx + 1], self._prefix[idx + 1:]
                return out
            if limit >= 0 and len(self._prefix) >= limit:
                out, self._prefix = self._prefix[:limit], self._prefix[limit:]
                return out
            out, self._prefix = self._prefix, b""
            return out + self._rest.readline(-1 if limit < 0 else limit - len(out))
        return self._rest.readline(limit)
