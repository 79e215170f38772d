"""``kiroku audit``: verify the log, print its signed checkpoint or entries, prove an entry or
that the log only grew, and check such a proof offline with the device's verifier key."""

from __future__ import annotations

import json

from kiroku.cli.common import fail, out, reader


def audit(args) -> int:
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
                    return fail("a consistency proof needs --old-checkpoint", 2)
                check_consistency(args.old_checkpoint.read_text(), bundle, vkey)
                print(f"the log of {bundle['new_size']} entries extends the one of {bundle['old_size']}: it only grew")
        except (AuditError, OSError, ValueError, KeyError) as exc:
            return fail(f"the proof does NOT hold: {exc}")
        return 0
    vault = reader(args)
    log = vault.audit_log
    try:
        if args.action == "verify":
            checkpoint = None
            if args.checkpoint:
                try:
                    checkpoint = verify_note(args.checkpoint.read_text(), (vault.keys.root / "device.vkey").read_text())
                except (AuditError, OSError) as exc:
                    return fail(f"the checkpoint in {args.checkpoint} does not verify: {exc}")
            try:
                result = log.verify(vault.db, checkpoint)
            except AuditError as exc:
                out(args, {"ok": False, "error": str(exc)}, f"the audit log does NOT verify: {exc}")
                return 1
            extra = f", and contains the {checkpoint.size} entries of the given checkpoint" if checkpoint else ""
            out(args, {"ok": True, **result},
                 f"the audit log verifies: {result['entries']} entries, every checkpoint signed by this device{extra}")
        elif args.action == "checkpoint":
            print(log.latest_checkpoint(vault.db), end="")
        elif args.action == "log":
            entries = log.entries(vault.db, actor=args.actor, subject=args.subject, limit=args.limit)
            out(args, entries, "\n".join(
                f"{e['seq']:>6}  {e['at']}  {e['actor']:<14} {e['action']:<20} {e['subject']}"
                f"{'  purpose: ' + e['purpose'] if e['purpose'] else ''}" for e in entries))
        elif args.action == "prove":
            bundle = log.inclusion(vault.db, args.entry) if args.entry is not None else \
                log.consistency(vault.db, args.since_size)
            print(json.dumps(bundle, ensure_ascii=False, indent=2))
    except AuditError as exc:
        return fail(str(exc))
    finally:
        vault.close()
    return 0
