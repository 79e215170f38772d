"""``kiroku verify PACKAGE``: check an export package offline and say plainly what holds.

It needs nothing from the device: the package carries the device's public key, the
signature and the hashes; the recipient compares the key's fingerprint with the one the
city publishes (or passes it with ``--key``). A package may be the ZIP, the folder it
unpacks to, or the ZIP sealed for transport (``.age``, with the passphrase).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from firmware.export.errors import PackageError
from firmware.export.manifest import key_fingerprint

_SIGNED_EXTRAS = {"manifest.json", "manifest.sig", "audit-proof.json"}


@dataclass
class Report:
    checks: list[tuple[str, str]] = field(default_factory=list)  # (ok | FAIL | note, text)
    manifest: dict | None = None

    def add(self, ok: bool | None, text: str) -> None:
        self.checks.append(("ok" if ok else "note" if ok is None else "FAIL", text))

    @property
    def valid(self) -> bool:
        return bool(self.checks) and not any(state == "FAIL" for state, _ in self.checks)


class _Files:
    """The package's files by name, from a ZIP or a folder."""

    def __init__(self, path: Path, passphrase: str | None):
        self._zip = None
        self._dir = None
        self._spool = None
        if path.is_dir():
            found = list(path.glob("manifest.json")) or list(path.glob("*/manifest.json"))
            if not found:
                raise PackageError(f"{path} holds no manifest.json: not an unpacked export package")
            self._dir = found[0].parent
            return
        try:
            with open(path, "rb") as f:
                head = f.read(32)
        except OSError as exc:
            raise PackageError(f"cannot read {path}: {exc.strerror}") from None
        source = path
        if head.startswith(b"age-encryption.org/") or head.startswith(b"-----BEGIN AGE"):
            source = self._unseal(path, passphrase)
        try:
            self._zip = zipfile.ZipFile(source)
        except zipfile.BadZipFile:
            raise PackageError(f"{path} is not a ZIP package (damaged or truncated?)") from None
        names = [n for n in self._zip.namelist() if n.endswith("manifest.json")]
        if not names:
            raise PackageError(f"{path} holds no manifest.json: not an export package")
        self._prefix = names[0][: -len("manifest.json")]

    def _unseal(self, path: Path, passphrase: str | None):
        from firmware.vault import age

        if passphrase is None:
            raise PackageError(f"{path} is sealed for transport: give the passphrase (--passphrase-file FILE), "
                               "or open it first with: age -d -o package.zip " + path.name)
        # In memory up to 256 MiB, beyond that in a private temporary file of this machine
        # (the recipient's): a package is not the device's footage.
        self._spool = tempfile.SpooledTemporaryFile(max_size=256 << 20)
        try:
            with open(path, "rb") as src:
                for chunk in age.decrypt_chunks(src, [age.Passphrase(passphrase)]):
                    self._spool.write(chunk)
        except age.NoIdentityMatched:
            raise PackageError("the passphrase does not open this package — check it with the sender") from None
        except age.AgeError as exc:
            raise PackageError(f"{path} is damaged or truncated: {exc}") from None
        self._spool.seek(0)
        return self._spool

    def names(self) -> set[str]:
        if self._dir is not None:
            return {p.relative_to(self._dir).as_posix() for p in self._dir.rglob("*") if p.is_file()}
        return {n[len(self._prefix):] for n in self._zip.namelist()
                if n.startswith(self._prefix) and not n.endswith("/")}

    def read(self, name: str) -> bytes:
        return self.open(name).read()

    def open(self, name: str):
        if self._dir is not None:
            return open(self._dir / name, "rb")
        return self._zip.open(self._prefix + name)

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with self.open(name) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


def verify(path: Path, *, passphrase: str | None = None, expected_key: str | None = None) -> Report:
    """Every check there is, each reported; a failed one does not hide the others."""
    try:
        return _verify(path, passphrase, expected_key)
    except (zipfile.BadZipFile, OSError) as exc:  # a small file whose bytes do not match their CRC
        report = Report()
        report.add(False, f"the package is damaged: {exc}")
        return report


def _verify(path: Path, passphrase: str | None, expected_key: str | None) -> Report:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    report = Report()
    try:
        files = _Files(Path(path), passphrase)
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{path}: {exc}") from None
    names = files.names()
    for needed in ("manifest.json", "manifest.sig", "device-key.pem"):
        if needed not in names:
            report.add(False, f"{needed} is missing: the package is incomplete")
    if not report.valid and report.checks:
        return report
    body = files.read("manifest.json")
    try:
        manifest = json.loads(body)
        report.manifest = manifest
    except ValueError:
        report.add(False, "manifest.json is not valid JSON (damaged)")
        manifest = {}
    # 1. the key and the signature
    try:
        public = serialization.load_pem_public_key(files.read("device-key.pem"))
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("not an Ed25519 key")
    except ValueError as exc:
        report.add(False, f"device-key.pem is not the device's Ed25519 public key ({exc})")
        return report
    fingerprint = key_fingerprint(public)
    device = manifest.get("device", {}) if isinstance(manifest, dict) else {}
    signer = signer_of(manifest)
    try:
        public.verify(files.read("manifest.sig"), body)
        report.add(True, f"manifest.json is signed by {signer}'s key in the package (SHA-256 {fingerprint})"
                   + (f"; the footage is device {device.get('id', '?')}'s, cut from the evidence locker"
                      if signer == HUB else ""))
    except InvalidSignature:
        report.add(False, "the signature does NOT match manifest.json: the manifest or the signature was changed")
    if device.get("key_sha256") not in (None, fingerprint):
        report.add(False, "the manifest names a different device key than device-key.pem")
    if expected_key:
        wanted = expected_key.lower().replace(":", "").strip()
        report.add(wanted == fingerprint, "the device key is the one you expected" if wanted == fingerprint else
                   f"the device key is NOT the one you expected ({wanted}); it is {fingerprint}")
    else:
        report.add(None, "compare the key's fingerprint with the one the city publishes for "
                         + ("its hub" if signer == HUB else f"device {device.get('id', '?')}")
                         + ", or pass it with --key (a forger could sign with a key of their own)")
    # 2. every file the manifest lists
    listed = manifest.get("files", {}) if isinstance(manifest, dict) else {}
    if not listed:
        report.add(False, "the manifest lists no files")
    for name, digest in sorted(listed.items()):
        if name not in names:
            report.add(False, f"{name} is missing")
            continue
        try:
            actual = files.sha256(name)
        except (zipfile.BadZipFile, OSError) as exc:
            report.add(False, f"{name} is damaged in the package ({exc}): changed or corrupted on the way")
            continue
        report.add(actual == digest, f"{name} is the file the manifest describes" if actual == digest else
                   f"{name} was CHANGED (SHA-256 {actual}, the manifest says {digest})")
    for name in sorted(names - set(listed) - _SIGNED_EXTRAS):
        report.add(None, f"{name} is not part of the signed package (added later; ignore it)")
    # 3. the device's audit log records this export
    if "audit-proof.json" in names and device.get("log"):
        report.add(*_check_proof(files.read("audit-proof.json"), device["log"], public, hashlib.sha256(body).hexdigest(),
                                 signer))
    else:
        report.add(None, "no audit-log proof in the package")
    # 4. what the clip is, in words
    if isinstance(manifest, dict) and "clip" in manifest and "clip.mp4" in names:
        report.add(*_describe_clip(files, manifest))
    return report


def _check_proof(data: bytes, origin: str, public, manifest_sha256: str, signer: str) -> tuple[bool, str]:
    from firmware.vault.audit import AuditError, check_inclusion
    from firmware.vault.signed_note import make_vkey

    try:
        bundle = json.loads(data)
        entry = check_inclusion(bundle, make_vkey(origin, public))
    except (AuditError, ValueError, KeyError, TypeError) as exc:
        return False, f"audit-proof.json does not hold: {exc}"
    if entry.get("action") != "export.create" or entry.get("detail", {}).get("manifest_sha256") != manifest_sha256:
        return False, "audit-proof.json proves an entry about something else than this manifest"
    return True, (f"the export is entry {entry['seq']} of {signer}'s audit log ({entry['at']}, by {entry['actor']});"
                  f" checkpoint of {bundle['tree_size']} entries signed by {signer}")


def _describe_clip(files: _Files, manifest: dict) -> tuple[bool | None, str]:
    import av

    clip = manifest["clip"]
    try:
        with files.open("clip.mp4") as f, av.open(f) as c:  # read in place, not copied into memory
            kinds = "+".join(s.codec_context.name for s in c.streams if s.type in ("video", "audio"))
            lead = c.streams.video[0] if c.streams.video else c.streams.audio[0]  # a call has sound only
            last = None
            for packet in c.demux(lead):
                if packet.pts is not None:
                    last = float((packet.pts + (packet.duration or 0)) * packet.time_base)
    except (av.error.FFmpegError, IndexError) as exc:
        return False, f"clip.mp4 does not open as video or sound ({exc})"
    clock = "synchronised clock" if manifest.get("clock", {}).get("synchronised") else \
        "clock NOT synchronised: treat the times as approximate"
    return None, (f"clip.mp4: {kinds}, {last or 0:.1f} s, {clip.get('start')} – {clip.get('end')} ({clock})")


HUB = "the city hub"
HUB_LOG = "kiroku/hub"  # hub.audit.ORIGIN: the log (and key) of a package the hub cut from its locker


def signer_of(manifest) -> str:
    """Who signed a package: its device, or the city hub (from the evidence locker)."""
    device = manifest.get("device", {}) if isinstance(manifest, dict) else {}
    return HUB if isinstance(device, dict) and device.get("log") == HUB_LOG else "the device"


def format_report(path, report: Report) -> str:
    marks = {"ok": "✔", "FAIL": "✘", "note": "·"}
    lines = [f"kiroku verify {path}"]
    lines += [f"  {marks[state]} {text}" for state, text in report.checks]
    failed = sum(state == "FAIL" for state, _ in report.checks)
    lines.append(f"the package is INTACT: it is what {signer_of(report.manifest)} exported" if report.valid else
                 f"the package does NOT verify: {failed} check(s) failed")
    return "\n".join(lines)
