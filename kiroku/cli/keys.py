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
    passphrase = password(args.password_file) if args.password_file else None
    if args.manager:
        refusal = _manager_refused(Path(args.data), args.manager, passphrase)
        if refusal:
            return fail(refusal, 2)
    try:
        lock = lock_data_dir(Path(args.data))
    except DataDirError as exc:
        return fail(str(exc))
    try:
        result = init(Path(args.data), device=args.device or config.device.id, recovery_out=args.recovery_key_out,
                      recovery_qr_out=args.recovery_qr_out, manager=args.manager, passphrase=passphrase,
                      work_factor=args.work_factor)
        if args.manager:
            _manager_account(Path(args.data), args.manager, args.display_name or args.manager, args.section,
                             passphrase)
    except (SetupError, ValueError, FileExistsError) as exc:
        return fail(str(exc), 2)
    finally:
        os.close(lock)
    print(f"kiroku is set up in {args.data}.\n"
          f"  Recovery key written to {args.recovery_key_out}: print it, keep it in a safe, delete the file.\n"
          f"  Its public key: {result['recovery_recipient']}\n"
          f"  The device's verifier key (for checking its audit log): {result['verifier_key']}")
    if args.manager:
        print(f"  Manager {args.manager!r} can log in to the web UI and unlock footage with their passphrase.")
    return 0


def _manager_refused(data: Path, name: str, passphrase: str) -> str | None:
    """Why the first manager cannot be made (checked before anything is)."""
    from domain import accounts, people
    from webui.db import database, migrate

    if not people.USERNAME.fullmatch(name):
        return f"--manager {name!r}: a name is 1–32 of a-z, 0-9, _ and -, starting with a letter or digit"
    if accounts.password_problem(passphrase):
        return f"--password-file: the passphrase needs at least {accounts.MIN_PASSWORD} characters"
    if (data / "web" / "web.db").exists():
        db = database(data)
        try:
            migrate(db.conn)
            if people.anyone(db):
                return (f"the web UI in {data} already has people: add the manager there (管理 → 職員) or with "
                        "`kiroku keys add-manager`, not with init")
        finally:
            db.close()
    return None


def _manager_account(data: Path, name: str, display_name: str, section: str, passphrase: str) -> None:
    """The first manager's account in the web UI, as its first-run page makes it: they log in
    with the same passphrase that unlocks their key."""
    from domain import accounts
    from webui import setup_code
    from webui.db import database, migrate

    db = database(data)
    try:
        migrate(db.conn)
        accounts.create_first_manager(db, username=name, display_name=display_name, section=section,
                                      password=passphrase)
    finally:
        db.close()
    setup_code.remove(data)  # the first-run page is closed: nothing left to guess

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
