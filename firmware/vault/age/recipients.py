"""Who a file is encrypted to and who opens it: X25519 recipients and identities (footage,
day keys, the recovery key) and scrypt passphrases (the managers' wrapped identities)."""

from __future__ import annotations

import hashlib
import os
import re

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from firmware.vault import bech32
from firmware.vault.age.errors import HeaderError, UnsupportedIdentity
from firmware.vault.age.format import MAX_SCRYPT_WORK_FACTOR, Stanza, b64decode, b64encode, hkdf, unwrap, wrap

_WORK_FACTOR = re.compile(r"[1-9][0-9]*")

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
        key = hkdf(shared, share + self.public, _X25519_INFO)
        return Stanza(("X25519", b64encode(share)), wrap(key, file_key))


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
            file_key = unwrap(hkdf(shared, share + ours, _X25519_INFO), stanza.body)
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
        return Stanza(("scrypt", b64encode(salt), str(self.work_factor)), wrap(key, file_key))

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
            file_key = unwrap(scrypt_key(self._passphrase, salt, log_n), stanza.body)
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
