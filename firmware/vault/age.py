"""The age file format (age-encryption.org/v1, c2sp.org/age) on ``cryptography``'s primitives.

Why not pyrage, the maintained binding of rage? DESIGN.md §4 allows the format written on
``cryptography`` when pyrage is far from the raw AEAD's cost (it is: ~0.25× here, see
NOTES.md) and when it passes the official test vectors and round-trips with the ``age``
tool both ways. This module does both (``tests/test_age.py``); it also streams in push
mode (the muxer writes, we encrypt chunk by chunk), which pyrage's pull API cannot, and
it refuses the two malformed headers pyrage accepts.

Only what the appliance needs is here: X25519 recipients and identities (footage, day
keys, the recovery key), scrypt passphrases (the managers' wrapped identities), and
reading ASCII armor. Post-quantum (``mlkem768x25519``) identities are not supported:
Debian's ``age`` 1.1.1, the tool a police lab runs, cannot use them either.

Nothing here is invented: every step is the spec's, in the spec's words.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from firmware.vault import bech32

VERSION_LINE = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024
TAG = 16
FILE_KEY_SIZE = 16
MAX_LINE = 16 * 1024
MAX_SCRYPT_WORK_FACTOR = 22  # 4 GiB of memory; the spec asks for a limit
_ZERO_NONCE = bytes(12)
_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_WORK_FACTOR = re.compile(r"[1-9][0-9]*")


class AgeError(Exception):
    """An age file could not be read or written."""


class HeaderError(AgeError, ValueError):
    """The header is malformed."""


class ArmorError(AgeError, ValueError):
    """The ASCII armor is malformed."""


class NoIdentityMatched(AgeError):
    """None of the given identities can open this file."""


class HeaderMacError(AgeError):
    """The header's MAC does not verify: the header was altered."""


class PayloadError(AgeError):
    """The payload is truncated or altered; what was released before is authentic."""


class UnsupportedIdentity(AgeError, ValueError):
    """An identity type this implementation does not read (e.g. post-quantum)."""


# -- encodings ----------------------------------------------------------------------------

def b64encode(data: bytes) -> str:
    """Standard base64 without padding (the header's encoding)."""
    return base64.b64encode(data).decode().rstrip("=")


def b64decode(text: bytes | str, error=HeaderError) -> bytes:
    """Strict, canonical, unpadded base64; anything else is ``error``."""
    raw = text.encode() if isinstance(text, str) else text
    if not _B64_CHARS.fullmatch(raw) or len(raw) % 4 == 1:
        raise error("invalid base64")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise error("invalid base64") from None
    if b64encode(data).encode() != raw:
        raise error("non-canonical base64")
    return data


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


# -- stanzas, recipients, identities ---------------------------------------------------------

@dataclass(frozen=True)
class Stanza:
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        body = b64encode(self.body)
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        if not lines or len(lines[-1]) == 64:
            lines.append("")  # the body always ends with a short line
        return ("-> " + " ".join(self.args) + "\n" + "".join(line + "\n" for line in lines)).encode()


def _wrap(key: bytes, file_key: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)


def _unwrap(key: bytes, body: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


_X25519_INFO = b"age-encryption.org/v1/X25519"


class X25519Recipient:
    """``age1…``: a public key files are encrypted to."""

    def __init__(self, public: bytes):
        if len(public) != 32:
            raise ValueError("an X25519 recipient is 32 bytes")
        self.public = public

    @classmethod
    def parse(cls, text: str) -> "X25519Recipient":
        try:
            hrp, data = bech32.decode(text.strip())
        except ValueError as exc:
            raise ValueError(f"not an age recipient: {exc}") from None
        if hrp != "age" or text.strip() != text.strip().lower():
            raise ValueError("not an age X25519 recipient (expected age1…)")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode("age", self.public)

    def __eq__(self, other) -> bool:
        return isinstance(other, X25519Recipient) and other.public == self.public

    def __hash__(self) -> int:
        return hash(self.public)

    def wrap(self, file_key: bytes) -> Stanza:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public))
        key = _hkdf(shared, share + self.public, _X25519_INFO)
        return Stanza(("X25519", b64encode(share)), _wrap(key, file_key))


class X25519Identity:
    """``AGE-SECRET-KEY-1…``: the private key that opens files encrypted to its recipient."""

    def __init__(self, secret: bytes):
        if len(secret) != 32:
            raise ValueError("an X25519 identity is 32 bytes")
        self._key = X25519PrivateKey.from_private_bytes(secret)
        self._secret = secret

    @classmethod
    def generate(cls) -> "X25519Identity":
        return cls(os.urandom(32))

    @classmethod
    def parse(cls, text: str) -> "X25519Identity":
        text = text.strip()
        if text.upper().startswith("AGE-SECRET-KEY-PQ-"):
            raise UnsupportedIdentity("post-quantum (AGE-SECRET-KEY-PQ-) identities are not supported")
        try:
            hrp, data = bech32.decode(text)
        except ValueError as exc:
            raise ValueError(f"not an age identity: {exc}") from None
        if hrp != "age-secret-key-" or text != text.upper():
            raise ValueError("not an age X25519 identity (expected AGE-SECRET-KEY-1…)")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode("age-secret-key-", self._secret).upper()

    @property
    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def unwrap(self, stanzas: list[Stanza]) -> bytes | None:
        ours = self.recipient.public
        for stanza in stanzas:
            if stanza.args[0] != "X25519":
                continue
            if len(stanza.args) != 2:
                raise HeaderError("X25519 stanza with the wrong number of arguments")
            share = b64decode(stanza.args[1])
            if len(share) != 32:
                raise HeaderError("X25519 share is not 32 bytes")
            if len(stanza.body) != 32:
                raise HeaderError("X25519 stanza body is not 32 bytes")
            try:
                shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:  # cryptography refuses the all-zero shared secret
                raise HeaderError("X25519 share is a low-order point") from None
            if shared == bytes(32):
                raise HeaderError("X25519 shared secret is zero")
            file_key = _unwrap(_hkdf(shared, share + ours, _X25519_INFO), stanza.body)
            if file_key is not None:
                return file_key
        return None


def scrypt_key(passphrase: bytes, salt: bytes, log_n: int) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(passphrase, salt=b"age-encryption.org/v1/scrypt" + salt, n=n, r=8, p=1,
                          dklen=32, maxmem=n * 8 * 128 * 2 + (1 << 20))


class Passphrase:
    """The scrypt recipient and identity: a passphrase wraps the file key."""

    def __init__(self, passphrase: str | bytes, *, work_factor: int = 18,
                 max_work_factor: int = MAX_SCRYPT_WORK_FACTOR):
        self._passphrase = passphrase.encode() if isinstance(passphrase, str) else passphrase
        self.work_factor = work_factor
        self.max_work_factor = max_work_factor

    def wrap(self, file_key: bytes) -> Stanza:
        salt = os.urandom(16)
        key = scrypt_key(self._passphrase, salt, self.work_factor)
        return Stanza(("scrypt", b64encode(salt), str(self.work_factor)), _wrap(key, file_key))

    def unwrap(self, stanzas: list[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.args[0] != "scrypt":
                continue
            if len(stanza.args) != 3:
                raise HeaderError("scrypt stanza with the wrong number of arguments")
            salt = b64decode(stanza.args[1])
            if len(salt) != 16:
                raise HeaderError("scrypt salt is not 16 bytes")
            if not _WORK_FACTOR.fullmatch(stanza.args[2]):
                raise HeaderError("scrypt work factor is not a plain decimal number")
            log_n = int(stanza.args[2])
            if log_n > self.max_work_factor:
                raise HeaderError(f"scrypt work factor {log_n} is above the limit of {self.max_work_factor}")
            if len(stanza.body) != 32:
                raise HeaderError("scrypt stanza body is not 32 bytes")
            file_key = _unwrap(scrypt_key(self._passphrase, salt, log_n), stanza.body)
            if file_key is not None:
                return file_key
        return None


def calibrate_work_factor(target_seconds: float = 1.0, lo: int = 15, hi: int = 20) -> int:
    """The scrypt work factor that takes about ``target_seconds`` on this machine.

    Run on the device itself: a reader refuses costs far above what it can afford, so a
    key wrapped on a fast laptop might not open on the Pi (NOTES.md).
    """
    import time

    probe = 14
    started = time.perf_counter()
    scrypt_key(b"calibration", bytes(16), probe)
    seconds = max(time.perf_counter() - started, 1e-6)
    log_n = probe
    while log_n < hi and seconds * 2 <= target_seconds:
        seconds *= 2
        log_n += 1
    return max(lo, min(hi, log_n))


# -- writing ------------------------------------------------------------------------------

def _header(recipients: Iterable, file_key: bytes) -> bytes:
    stanzas = [r.wrap(file_key) for r in recipients]
    if not stanzas:
        raise ValueError("at least one recipient is needed")
    if any(s.args[0] == "scrypt" for s in stanzas) and len(stanzas) > 1:
        raise ValueError("a passphrase must be the only recipient")
    head = VERSION_LINE + b"".join(s.encode() for s in stanzas) + b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), head, "sha256").digest()
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
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
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


# -- reading ------------------------------------------------------------------------------

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
                if len(text) > 64 or not _B64_CHARS.fullmatch(text):
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
    expected = hmac.new(_hkdf(file_key, b"", b"header"), head, "sha256").digest()
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
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
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


# -- ASCII armor ----------------------------------------------------------------------------

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
