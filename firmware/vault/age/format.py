"""The age format's building blocks (age-encryption.org/v1): its constants, the header's
base64, the HKDF every key derivation uses, stanzas, and wrapping a file key."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from firmware.vault.age.errors import HeaderError

VERSION_LINE = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024
TAG = 16
FILE_KEY_SIZE = 16
MAX_LINE = 16 * 1024
MAX_SCRYPT_WORK_FACTOR = 22  # 4 GiB of memory; the spec asks for a limit
_ZERO_NONCE = bytes(12)
B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")



def b64encode(data: bytes) -> str:
    """Standard base64 without padding (the header's encoding)."""
    return base64.b64encode(data).decode().rstrip("=")


def b64decode(text: bytes | str, error=HeaderError) -> bytes:
    """Strict, canonical, unpadded base64; anything else is ``error``."""
    raw = text.encode() if isinstance(text, str) else text
    if not B64_CHARS.fullmatch(raw) or len(raw) % 4 == 1:
        raise error("invalid base64")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise error("invalid base64") from None
    if b64encode(data).encode() != raw:
        raise error("non-canonical base64")
    return data


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)



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


def wrap(key: bytes, file_key: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)


def unwrap(key: bytes, body: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None
