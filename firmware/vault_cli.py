"""``kiroku init``, ``kiroku vault``, ``kiroku audit`` and ``kiroku keys``.

Commands that change the vault take the recorder's lock: they run only while the
recorder is stopped (the recorder is the vault's only writer), and say so otherwise.
Reading commands work any time.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import closing, contextmanager
from pathlib import Path

from firmware import paths


def _out(args, obj, text: str) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2) if getattr(args, "json", False) else text)


def _fail(message: str, code: int = 1) -> int:
    print(f"kiroku: {message}", file=sys.stderr)
    return code


def _password(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise SystemExit(_fail(f"cannot read a passphrase from {path} ({exc})", 2)) from None


def _config(args):
    from firmware.config import ConfigError, load

    try:
        return load(paths.config_file(args.data, getattr(args, "config", None)))
    except ConfigError as exc:
        raise SystemExit(_fail(f"configuration: {exc}", 2)) from None


@contextmanager
def _writer(args):
    """The vault opened for writing, with the recorder's lock held."""
    from firmware.daemon import DataDirError, lock_data_dir
    from firmware.vault import Vault

    try:
        lock = lock_data_dir(Path(args.data))
    except DataDirError as exc:
        raise SystemExit(_fail(f"{exc} — stop it first, or use `kiroku ctl` for what it can do while running")) from None
    vault = Vault.open(args.data, _config(args))
    try:
        yield vault
    finally:
        vault.close()
        os.close(lock)


def _reader(args):
    from firmware.vault import Vault

    if not (Path(args.data) / "kiroku.db").exists():
        raise SystemExit(_fail(f"no vault in {args.data} (no kiroku.db) — check --data", 2))
    return Vault.open(args.data, _config(args), readonly=True)


def main(args) -> int:
    return {"init": _init, "vault": _vault, "audit": _audit, "keys": _keys}[args.command](args)


# -- init -------------------------------------------------------------------------------------

def _init(args) -> int:
    from firmware.daemon import DataDirError, lock_data_dir
    from firmware.vault.setup import SetupError, init

    if args.manager and not args.password_file:
        return _fail("--manager needs --password-file", 2)
    config = _config(args)
    try:
        lock = lock_data_dir(Path(args.data))
    except DataDirError as exc:
        return _fail(str(exc))
    try:
        result = init(Path(args.data), device=args.device or config.device.id, recovery_out=args.recovery_key_out,
                      recovery_qr_out=args.recovery_qr_out, manager=args.manager,
                      passphrase=_password(args.password_file) if args.password_file else None,
                      work_factor=args.work_factor)
    except (SetupError, ValueError, FileExistsError) as exc:
        return _fail(str(exc), 2)
    finally:
        os.close(lock)
    print(f"kiroku is set up in {args.data}.\n"
          f"  Recovery key written to {args.recovery_key_out}: print it, keep it in a safe, delete the file.\n"
          f"  Its public key: {result['recovery_recipient']}\n"
          f"  The device's verifier key (for checking its audit log): {result['verifier_key']}")
    if args.manager:
        print(f"  Manager {args.manager!r} can unlock footage with their passphrase.")
    return 0


# -- vault ------------------------------------------------------------------------------------

def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _vault(args) -> int:
    if args.action == "check":
        return _vault_check(args)
    vault = _reader(args)
    try:
        if args.action == "status":
            config = _config(args)
            st = vault.status(bitrate_guess=config.bytes_per_second, own_class=config.record_class)
            lines = [f"capacity   {_mb(st['capacity'])}, used {_mb(st['used'])}, free {_mb(st['free'])}"]
            for cls, c in st["classes"].items():
                proj = "—" if c["projected_days"] is None else f"{c['projected_days']:.0f} days"
                warn = "  ⚠ BELOW the minimum plus margin" if c["warning"] else ""
                lines.append(f"{cls:<10} {c['segments']} segments, {_mb(c['bytes'])}, oldest {c['oldest'] or '—'}; "
                             f"projected retention {proj} (minimum {c['min_days']}){warn}")
            last = st["last_overwrite"]
            lines.append(f"holds      {st['holds']} open")
            lines.append("overwrite  " + (f"last {last['at']}: {last['segments']} segments, {_mb(last['bytes'])}"
                                          if last else "never"))
            if not st["clock_synchronised"]:
                lines.append("clock      NOT synchronised: nothing is overwritten until it is")
            _out(args, st, "\n".join(lines))
        elif args.action == "list":
            recs = vault.recordings()
            text = "\n".join(
                f"{r['id']}  {r['started_at']}  {r['segments']:>4} seg  {_mb(r['bytes']):>9}"
                f"{'  marks:' + str(r['marks']) if r['marks'] else ''}{'  HELD' if r['held'] else ''}"
                f"  {r['end_reason'] or 'recording'}" for r in recs) or "no recordings"
            _out(args, recs, text)
        elif args.action == "holds":
            holds = vault.holds()
            text = "\n".join(f"#{h['id']}  {h['reason']:<10} {h['recording_id'] or 'time range'}  since {h['created_at']}"
                             f" by {h['created_by']}" for h in holds) or "no open holds"
            _out(args, holds, text)
    finally:
        vault.close()
    return 0


def _vault_check(args) -> int:
    with _writer(args) if args.repair else closing(_reader(args)) as vault:
        findings = vault.check(repair=args.repair)
    problems = [f for f in findings if not f.fixed]
    obj = {"clean": not findings, "findings": [f.__dict__ for f in findings]}
    if not findings:
        _out(args, obj, "the vault is consistent: every indexed segment is on disk, whole, with its day key")
    else:
        _out(args, obj, "\n".join(f"{'fixed ' if f.fixed else ''}{f.kind:<10} {f.path}: {f.detail}" for f in findings))
    return 1 if problems else 0


# -- audit ------------------------------------------------------------------------------------

def _audit(args) -> int:
    from firmware.vault.audit import AuditError, check_consistency, check_inclusion, verify_note

    if args.action == "check-proof":
        try:
            bundle = json.loads(args.proof.read_text())
            vkey = args.vkey.read_text().strip()
            if "entry" in bundle:
                entry = check_inclusion(bundle, vkey)
                print(f"entry {entry['seq']} ({entry['action']} by {entry['actor']} at {entry['at']}) "
                      f"is in the log of {bundle['tree_size']} entries signed by the device")
            else:
                if not args.old_checkpoint:
                    return _fail("a consistency proof needs --old-checkpoint", 2)
                check_consistency(args.old_checkpoint.read_text(), bundle, vkey)
                print(f"the log of {bundle['new_size']} entries extends the one of {bundle['old_size']}: it only grew")
        except (AuditError, OSError, ValueError, KeyError) as exc:
            return _fail(f"the proof does NOT hold: {exc}")
        return 0
    vault = _reader(args)
    log = vault.audit_log
    try:
        if args.action == "verify":
            checkpoint = None
            if args.checkpoint:
                try:
                    checkpoint = verify_note(args.checkpoint.read_text(), (vault.keys.root / "device.vkey").read_text())
                except (AuditError, OSError) as exc:
                    return _fail(f"the checkpoint in {args.checkpoint} does not verify: {exc}")
            try:
                result = log.verify(vault.db, checkpoint)
            except AuditError as exc:
                _out(args, {"ok": False, "error": str(exc)}, f"the audit log does NOT verify: {exc}")
                return 1
            extra = f", and contains the {checkpoint.size} entries of the given checkpoint" if checkpoint else ""
            _out(args, {"ok": True, **result},
                 f"the audit log verifies: {result['entries']} entries, every checkpoint signed by this device{extra}")
        elif args.action == "checkpoint":
            print(log.latest_checkpoint(vault.db), end="")
        elif args.action == "log":
            entries = log.entries(vault.db, actor=args.actor, subject=args.subject, limit=args.limit)
            _out(args, entries, "\n".join(
                f"{e['seq']:>6}  {e['at']}  {e['actor']:<14} {e['action']:<20} {e['subject']}"
                f"{'  purpose: ' + e['purpose'] if e['purpose'] else ''}" for e in entries))
        elif args.action == "prove":
            bundle = log.inclusion(vault.db, args.entry) if args.entry is not None else \
                log.consistency(vault.db, args.since_size)
            print(json.dumps(bundle, ensure_ascii=False, indent=2))
    except AuditError as exc:
        return _fail(str(exc))
    finally:
        vault.close()
    return 0


# -- keys -------------------------------------------------------------------------------------

def opener(keys, recovery_key: Path | None, manager: str | None, password_file: Path | None, missing: str):
    """The identity that opens day keys: the recovery key from its file, or a manager's key
    unwrapped with their passphrase; ``None`` if neither is given. Exits with a message
    naming the problem."""
    from firmware.vault import age
    from firmware.vault.keys import WrongPassphrase

    try:
        if recovery_key:
            text = next(line for line in recovery_key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
            return age.X25519Identity.parse(text)
        if manager:
            if not password_file:
                raise SystemExit(_fail(missing, 2))
            return keys.unlock_manager(manager, _password(password_file))
    except WrongPassphrase as exc:  # before OSError: it is a PermissionError
        raise SystemExit(_fail(str(exc))) from None
    except (OSError, StopIteration, ValueError) as exc:
        raise SystemExit(_fail(f"cannot read the recovery key from {recovery_key} ({exc})", 2)) from None
    return None


def _keys(args) -> int:
    from firmware.vault import age
    from firmware.vault.keys import KeyStore

    keys = KeyStore(Path(args.data))
    if args.action == "list":
        print("managers: " + (", ".join(keys.managers()) or "none"))
        for cls in ("footage", "call"):
            days = keys.day_keys(cls)
            if days:
                print(f"{cls} day keys: {len(days)} ({days[0]} … {days[-1]})")
        return 0
    unlock = opener(keys, args.recovery_key, args.unlock_manager, args.unlock_password_file,
                    "--unlock-manager needs --unlock-password-file")
    with _writer(args) as vault:
        try:
            keys.add_manager(args.name, _password(args.password_file), unlock=unlock, work_factor=args.work_factor)
        except (ValueError, FileExistsError, PermissionError) as exc:
            return _fail(str(exc), 2)
        except age.NoIdentityMatched:
            return _fail("that key does not open the existing day keys")
        vault.audit(args.unlock_manager or ("recovery key" if args.recovery_key else "setup"), "user.add",
                    subject=args.name, detail={"role": "manager", "day_keys_reencrypted": len(keys.day_keys("footage"))
                                               + len(keys.day_keys("call"))})
    print(f"manager {args.name!r} added; every existing day key now opens with their key too")
    return 0
