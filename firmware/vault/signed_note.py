"""The signed-note format's keys (C2SP signed-note): a signer's key ID and its verifier key
``name+hexid+base64(0x01||key)``. Below both the key store, which writes the device's
verifier key at set-up, and the audit log, which signs and checks checkpoints with it."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware.vault.errors import AuditError


def key_id(name: str, public: bytes) -> bytes:
    """The signed-note key ID of an Ed25519 key: SHA-256(name || LF || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]


def make_vkey(name: str, public: Ed25519PublicKey) -> str:
    """The signed-note verifier key ``name+hexid+base64(0x01||key)`` for a signer."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    encoded = base64.b64encode(b"\x01" + raw).decode()
    return f"{name}+{key_id(name, raw).hex()}+{encoded}"


def parse_vkey(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """A signed-note verifier key ``name+hexid+base64(0x01||key)``."""
    try:
        name, hexid, b64 = vkey.strip().split("+", 2)  # the key (base64) may itself hold "+"
        raw = base64.b64decode(b64, validate=True)
    except ValueError:
        raise AuditError("not a verifier key (name+id+key)") from None
    if len(raw) != 33 or raw[0] != 1:
        raise AuditError("not an Ed25519 verifier key")
    if key_id(name, raw[1:]).hex() != hexid:
        raise AuditError("the verifier key's id does not match its key")
    return name, raw[1:], Ed25519PublicKey.from_public_bytes(raw[1:])
