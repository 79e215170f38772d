"""The age file format (age-encryption.org/v1, c2sp.org/age) on ``cryptography``'s primitives.

Why not pyrage, the maintained binding of rage? DESIGN.md §4 allows the format written on
``cryptography`` when pyrage is far from the raw AEAD's cost (it is: ~0.25× here, see
NOTES.md) and when it passes the official test vectors and round-trips with the ``age``
tool both ways. This module does both (``tests/test_age.py``); it also streams in push
mode (the muxer writes, we encrypt chunk by chunk), which pyrage's pull API cannot, and
it refuses the two malformed headers pyrage accepts.

    format      constants, the header's base64, HKDF, stanzas, wrapping a file key
    recipients  X25519 recipients and identities, scrypt passphrases
    stream      the header and the chunked payload, writing and reading; ASCII armor
    errors      AgeError and its kinds

Only what the appliance needs is here: X25519 recipients and identities (footage, day
keys, the recovery key), scrypt passphrases (the managers' wrapped identities), and
reading ASCII armor. Post-quantum (``mlkem768x25519``) identities are not supported:
Debian's ``age`` 1.1.1, the tool a police lab runs, cannot use them either.

Nothing here is invented: every step is the spec's, in the spec's words.
"""

from firmware.vault.age.errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HeaderMacError,
    NoIdentityMatched,
    PayloadError,
    UnsupportedIdentity,
)
from firmware.vault.age.format import CHUNK, VERSION_LINE, Stanza, b64decode, b64encode
from firmware.vault.age.recipients import Passphrase, X25519Identity, X25519Recipient, calibrate_work_factor, scrypt_key
from firmware.vault.age.stream import Writer, dearmor, decrypt, decrypt_chunks, encrypt, parse_header

__all__ = ["CHUNK", "VERSION_LINE", "AgeError", "ArmorError", "HeaderError", "HeaderMacError", "NoIdentityMatched",
           "Passphrase", "PayloadError", "Stanza", "UnsupportedIdentity", "Writer", "X25519Identity", "X25519Recipient",
           "b64decode", "b64encode", "calibrate_work_factor", "dearmor", "decrypt", "decrypt_chunks", "encrypt",
           "parse_header", "scrypt_key"]
