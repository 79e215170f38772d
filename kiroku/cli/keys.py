"""``kiroku init`` and ``kiroku keys``: first-run set-up (device keys, the recovery key, the
first manager) and managers' keys. Both change the key store, so they take the recorder's
lock and run only while the recorder is stopped."""

from __future__ import annotations

import os
from pathlib import Path

from firmware.regulation import RecordClass
from kiroku.cli.common import fail, opener, password, read_config, writer


def init(args) -> int:
    from firmware.daemon import DataDirError, lock_data_dir
    from firmware.vault.setup import SetupError, init

    if args.manager and not args.password_file:
        return fail("--manager needs --password-file", 2)
    config = read_config(args)
    try:
        lock = lock_data_dir(Path(args.data))
    except DataDirError as exc:
        return fail(str(exc))
    try:
        result = init(Path(args.data), device=args.device or config.device.id, recovery_out=args.recovery_key_out,
                      recovery_qr_out=args.recovery_qr_out, manager=args.manager,
                      passphrase=password(args.password_file) if args.password_file else None,
                      work_factor=args.work_factor)
    except (SetupError, ValueError, FileExistsError) as exc:
        return fail(str(exc), 2)
    finally:
        os.close(lock)
    print(f"kiroku is set up in {args.data}.\n"
          f"  Recovery key written to {args.recovery_key_out}: print it, keep it in a safe, delete the file.\n"
          f"  Its public key: {result['recovery_recipient']}\n"
          f"  The device's verifier key (for checking its audit log): {result['verifier_key']}")
    if args.manager:
        print(f"  Manager {args.manager!r} can unlock footage with their passphrase.")
    return 0


def keys(args) -> int:
    from firmware.vault import age
    from firmware.vault.keys import KeyStore

    keys = KeyStore(Path(args.data))
    if args.action == "list":
        print("managers: " + (", ".join(keys.managers()) or "none"))
        for cls in RecordClass:
            days = keys.day_keys(cls)
            if days:
                print(f"{cls} day keys: {len(days)} ({days[0]} … {days[-1]})")
        return 0
    unlock = opener(keys, args.recovery_key, args.unlock_manager, args.unlock_password_file,
                    "--unlock-manager needs --unlock-password-file")
    with writer(args) as vault:
        try:
            keys.add_manager(args.name, password(args.password_file), unlock=unlock, work_factor=args.work_factor)
        except (ValueError, FileExistsError, PermissionError) as exc:
            return fail(str(exc), 2)
        except age.NoIdentityMatched:
            return fail("that key does not open the existing day keys")
        vault.audit(args.unlock_manager or ("recovery key" if args.recovery_key else "setup"), "user.add",
                    subject=args.name, detail={"role": "manager", "day_keys_reencrypted": len(keys.day_keys("footage"))
                                               + len(keys.day_keys("call"))})
    print(f"manager {args.name!r} added; every existing day key now opens with their key too")
    return 0
