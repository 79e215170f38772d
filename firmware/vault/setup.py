"""First-run set-up: the device's keys, the recovery key handed over once, the first manager.

No default password exists anywhere: until this has run, the recorder refuses to record.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from firmware.vault import age
from firmware.vault.errors import SetupError
from firmware.vault.keys import KeyStore


def write_recovery_key(identity: age.X25519Identity, path: Path) -> None:
    """The recovery identity in age-keygen's format, readable by `age -d -i FILE`.

    Never overwrites: an existing file may be another device's recovery key.
    """
    text = (f"# kiroku recovery key, created {datetime.now().astimezone().isoformat(timespec='seconds')}\n"
            f"# public key: {identity.recipient}\n"
            "# Print this, keep it in a safe, and delete the file. It opens every recording this device\n"
            "# keeps. The device does not keep a copy.\n"
            f"{identity}\n")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SetupError(f"{path} already exists: choose another file for the recovery key") from None
    except OSError as exc:
        raise SetupError(f"cannot write the recovery key to {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_recovery_qr(identity: age.X25519Identity, path: Path) -> None:
    import segno

    segno.make(str(identity), error="m").save(str(path), scale=6, border=4)


def set_up_before(data_dir: Path, keys: KeyStore) -> str | None:
    """Why this folder must not be set up again though it is not set up now: a key file lost
    (``device.key`` above all) from a device that has keys or an audit log. New keys would
    sign a log that no longer verifies, and seal days nobody could tie to the old ones."""
    from firmware.vault.vault import DB_NAME

    names = ("device.key", "device.pub.pem", "device.vkey", "device.name", "recovery.recipient")
    present = [n for n in names if (keys.root / n).exists()]
    present += [str(p.relative_to(keys.root)) for p in sorted(keys.root.glob("managers/*")) + sorted(
        keys.root.glob("day/*/*.age"))]
    entries = 0
    if (data_dir / DB_NAME).exists():
        import sqlite3

        from firmware import sqlite as db

        try:
            conn = db.open_db(data_dir / DB_NAME, readonly=True)
            try:
                entries = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:  # no audit table yet: an index made before any set-up
            entries = 0
    if not present and not entries:
        return None
    missing = [n for n in ("device.key", "recovery.recipient") if not (keys.root / n).exists()]
    found = ", ".join([*(f"keys/{n}" for n in present[:4]), *([f"{entries} audit-log entries"] if entries else [])])
    return (f"{data_dir} was set up before ({found}) but keys/{' and keys/'.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing: restore {'it' if len(missing) == 1 else 'them'} from the "
            "data folder's backup. New keys would not verify this device's audit log; to start afresh, move the "
            "whole data folder aside first (its footage and log stay readable with the old keys)")


def init(data_dir: Path, *, device: str, recovery_out: Path, recovery_qr_out: Path | None = None,
         manager: str | None = None, passphrase: str | None = None, work_factor: int | None = None) -> dict:
    """Set the device up; returns what to show the person doing it."""
    from firmware.vault.vault import Vault

    keys = KeyStore(data_dir)
    if keys.initialised:
        raise SetupError(f"{data_dir} is already set up (keys in {keys.root})")
    refusal = set_up_before(Path(data_dir), keys)
    if refusal:
        raise SetupError(refusal)
    if manager is not None and not passphrase:
        raise SetupError("a manager needs a passphrase")
    recovery = age.X25519Identity.generate()
    write_recovery_key(recovery, Path(recovery_out))
    if recovery_qr_out:
        write_recovery_qr(recovery, Path(recovery_qr_out))
    # The index is made (or brought up to date) before the keys: the log begins with the set-up
    vault = Vault(data_dir, device=device)
    try:
        keys.initialise(device, recovery.recipient)
        vault.audit("setup", "device.init", detail={"device": device, "recovery_recipient": str(recovery.recipient)})
        if manager is not None:
            keys.add_manager(manager, passphrase, unlock=None, work_factor=work_factor)
            vault.audit("setup", "user.add", subject=manager, detail={"role": "manager"})
        checkpoint = vault.audit_log.latest_checkpoint(vault.db)
    finally:
        vault.close()
    return {
        "recovery_recipient": str(recovery.recipient),
        "verifier_key": (keys.root / "device.vkey").read_text().strip(),
        "checkpoint": checkpoint,
    }
