"""The package's manifest: what it holds and why it left, as ``manifest.json`` says it — the
bytes the device signs — and the small pieces every package names (its key's fingerprint,
its times, its name)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from firmware import __version__

FORMAT = "kiroku-export/1"
_US = 1_000_000


@dataclass(kw_only=True)
class Manifest:
    """``manifest.json``. The fields are written in this order; ``files`` is filled last, with
    the hashes of the other files (the cover sheet and README.txt are made before it)."""

    format: str = FORMAT
    software: str = f"kiroku {__version__}"
    device: dict  # id, key_sha256, log (the audit log's signer name)
    recording: dict  # id, started_at, mode, section
    approved_range: dict  # start_s, end_s, start, end
    clip: dict  # file, sha256, bytes, start_s, end_s, duration_s, start, end, cut, audio
    clock: dict  # synchronised, unsynchronised_segments
    original_segments: list  # per segment: seq, path, hashes, times, clock, boot
    redactions: dict
    provision: dict  # ground, article_9, ground_ja, basis_ja, recipient, request, approver, …
    exported_at: str
    files: dict = field(default_factory=dict)  # name → SHA-256, every file but the manifest's own

    def as_dict(self) -> dict:
        return asdict(self)

    def body(self) -> bytes:
        """The signed bytes."""
        return (json.dumps(self.as_dict(), ensure_ascii=False, indent=2) + "\n").encode()


def key_fingerprint(public) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo, in hex: what
    ``openssl pkey -pubin -in device-key.pem -outform DER | sha256sum`` prints."""
    from cryptography.hazmat.primitives import serialization

    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def iso(wall_us: int) -> str:
    from firmware import clock

    return clock.iso(datetime.fromtimestamp(wall_us / _US, tz=timezone.utc).astimezone())


def package_name(device: str, recording_id: str, when: float) -> str:
    stamp = datetime.fromtimestamp(when).strftime("%Y%m%d-%H%M%S")
    return f"kiroku-export-{device}-{recording_id}-{stamp}"


def pem(public) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
