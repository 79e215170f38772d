"""``kiroku export`` and ``kiroku verify`` (DESIGN.md §6)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from kiroku.cli.common import fail, opener, password, reader, writer


def export(args) -> int:
    import av

    from firmware import export as ex
    from firmware.vault import age
    from firmware.vault.errors import DayKeyMissing, KeyStoreError

    if not args.recovery_key and not args.manager:
        return fail("the footage key is needed: give --recovery-key FILE, or --manager NAME --password-file FILE", 2)
    try:
        ground = ex.ground_name(args.ground)
        redactions = ex.Redactions(mute=[ex.parse_span(m) for m in args.mute],
                                   blur=[ex.Region.parse(b) for b in args.blur], faces=args.blur_faces)
    except ex.ExportError as exc:
        return fail(str(exc), 2)
    if not args.reference and ground != "urgent":
        return fail("--reference is needed: the written request's reference (only an urgent provision, "
                     "ground 5, may go before its paperwork — Art. 11(2))", 2)
    vault = reader(args)
    try:
        try:
            plan = ex.plan(vault, args.recording, args.start, args.end)
            plan.check(redactions)
        except ex.ExportError as exc:
            return fail(str(exc), 2)
        # where it goes, once what is asked is known to be possible: the first problem said is
        # the request's own
        out = _target(args)
        if isinstance(out, int):
            return out
        identity = opener(vault.keys, args.recovery_key, args.manager, args.password_file,
                          "--manager needs --password-file")
        actor = args.manager or "recovery key"
        provision = ex.Provision(ground=ground, recipient=args.recipient, approver=args.approver or actor,
                                 exporter=actor, reference=args.reference or "", request_date=args.request_date or "",
                                 number=args.number or "")
        seal = password(args.seal_passphrase_file) if args.seal_passphrase_file else None
        bar = _Progress(sys.stderr)
        partial = _partial(out)
        try:
            with open(partial, "xb") as f:
                result = ex.build(
                    vault, plan, opener=identity, provision=provision, out=f, redactions=redactions,
                    exact=args.exact, transport_passphrase=seal, progress=bar,
                    log_export=lambda detail: _log(args, actor, provision, detail),
                    proof=lambda seq: vault.audit_log.inclusion(vault.db, seq))
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, out)
        except (ex.ExportError, DayKeyMissing, KeyStoreError, age.AgeError, OSError, av.error.FFmpegError) as exc:
            partial.unlink(missing_ok=True)
            message = getattr(exc, "strerror", None) or str(exc)
            if isinstance(exc, age.NoIdentityMatched):
                message = "this key does not open the day key of that footage (a different device, or a manager " \
                          "added after it was recorded)"
            return fail(f"export failed, nothing was written: {message}")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            bar.done()
    finally:
        vault.close()
    m = result.manifest
    summary = {"package": str(out), "manifest_sha256": result.manifest_sha256, "audit_entry": result.audit_seq,
               "clip": m["clip"], "device_key_sha256": m["device"]["key_sha256"]}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(f"package written to {out}\n"
              f"  clip        {m['clip']['start']} – {m['clip']['end']} ({m['clip']['duration_s']:.1f} s, "
              f"{m['clip']['cut']})\n"
              f"  device key  SHA-256 {m['device']['key_sha256']} (the recipient checks this)\n"
              f"  audit log   entry {result.audit_seq}\n"
              + ("  sealed      with the passphrase: give it to the recipient by another channel\n" if seal else "")
              + ("  REVIEW the clip before it leaves: automatic face detection can miss a face\n"
                 if redactions.faces else ""))
    return 0


def _stamp() -> str:
    """When a package was made, to the second, for its default name."""
    return time.strftime("%Y%m%d-%H%M%S")


def _partial(out: Path) -> Path:
    """Where a package is written until it is whole."""
    return out.with_name(out.name + ".part")


def _target(args) -> Path | int:
    out = Path(args.out)
    if out.is_dir():
        # a name of its own: a second export within the same second gets -2, -3, …
        stem = f"{args.recording}-{_stamp()}"
        suffix = ".zip.age" if args.seal_passphrase_file else ".zip"
        names = (out / f"{stem}{f'-{n}' if n > 1 else ''}{suffix}" for n in range(1, 1000))
        out = next(name for name in names if not name.exists() and not _partial(name).exists())
    data = Path(args.data).resolve()
    if out.resolve().is_relative_to(data):
        return fail(f"{out} is inside the data folder: exported footage must not sit next to the vault "
                     "outside its retention — write it to the medium it leaves on", 2)
    if out.exists():
        return fail(f"{out} exists; kiroku never overwrites a package — choose another name", 2)
    if not out.parent.is_dir():
        return fail(f"{out.parent} is not a folder", 2)
    return out


def _log(args, actor: str, provision, detail: dict) -> int:
    """The export's audit entry: through the recorder when it runs (it is the log's only
    writer), else directly under its lock."""
    from firmware.control import ControlClient, ControlError, socket_path

    subject = provision.number or detail["recording"]
    try:
        reply = ControlClient(socket_path(args.data)).request(
            "audit", by=actor, action="export.create", subject=subject, purpose="provision", detail=detail)
        return reply["seq"]
    except ControlError as exc:
        if "not running" not in str(exc):
            raise OSError(f"the audit log could not be written: {exc}") from None
    with writer(args) as vault:
        return vault.audit(actor, "export.create", purpose="provision", subject=subject, detail=detail)


class _Progress:
    """A progress bar on a terminal; a line every quarter elsewhere."""

    def __init__(self, stream):
        self.stream = stream
        self.tty = stream.isatty()
        self._shown = -1

    def __call__(self, done: float, total: float) -> None:
        fraction = 0 if total <= 0 else max(0.0, min(1.0, done / total))
        if self.tty:
            step = int(fraction * 100)
            if step != self._shown:
                filled = int(fraction * 30)
                self.stream.write(f"\rexporting [{'#' * filled}{'.' * (30 - filled)}] {step:3d}%  "
                                  f"{done:6.1f} / {total:.1f} s")
                self.stream.flush()
        else:
            step = int(fraction * 4)
            if step != self._shown:
                self.stream.write(f"exporting: {step * 25}% ({done:.1f} / {total:.1f} s)\n")
        self._shown = step

    def done(self) -> None:
        if self.tty and self._shown >= 0:
            self.stream.write("\n")


def verify(args) -> int:
    from firmware.export.verify import PackageError, format_report
    from firmware.export.verify import verify as check

    key = None
    if args.key:
        key = args.key
        if Path(key).is_file():
            from cryptography.hazmat.primitives import serialization

            from firmware.export.manifest import key_fingerprint

            try:
                key = key_fingerprint(serialization.load_pem_public_key(Path(key).read_bytes()))
            except ValueError:
                return fail(f"{args.key} is not a PEM public key; give the file or its SHA-256 fingerprint", 2)
    passphrase = password(args.passphrase_file) if args.passphrase_file else None
    try:
        report = check(args.package, passphrase=passphrase, expected_key=key)
    except PackageError as exc:
        return fail(str(exc), 2)
    if args.json:
        print(json.dumps({"valid": report.valid, "checks": [{"state": s, "text": t} for s, t in report.checks]},
                         ensure_ascii=False, indent=2))
    else:
        print(format_report(args.package, report))
    return 0 if report.valid else 1

