"""What the ``kiroku`` sub-commands share: messages and exit codes, passphrase files, the
configuration, logging, and the vault opened for reading or (under the recorder's lock)
for writing, and the identity that opens day keys."""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from firmware import paths


def setup_logging(name: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def load_config(args):
    """The configuration, or ``None`` once the reason is on stderr."""
    from firmware.config import ConfigError, load

    try:
        return load(paths.config_file(args.data, args.config))
    except ConfigError as exc:
        print(f"kiroku: configuration: {exc}", file=sys.stderr)
        return None


def setup_code_hint(data_dir: Path) -> str:
    kiroku = Path(sys.executable).parent / "kiroku"  # the venv's: sudo's PATH does not have it
    return (f"the set-up code is the web UI's, and only its user reads it: "
            f"sudo -u kiroku-web {kiroku if kiroku.exists() else 'kiroku'} setup-code --data {data_dir}")


def out(args, obj, text: str) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2) if getattr(args, "json", False) else text)


def fail(message: str, code: int = 1) -> int:
    print(f"kiroku: {message}", file=sys.stderr)
    return code


def password(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise SystemExit(fail(f"cannot read a passphrase from {path} ({exc})", 2)) from None


def read_config(args):
    from firmware.config import ConfigError, load

    try:
        return load(paths.config_file(args.data, getattr(args, "config", None)))
    except ConfigError as exc:
        raise SystemExit(fail(f"configuration: {exc}", 2)) from None


@contextmanager
def writer(args):
    """The vault opened for writing, with the recorder's lock held."""
    from firmware.daemon import DataDirError, lock_data_dir
    from firmware.vault import Vault

    try:
        lock = lock_data_dir(Path(args.data))
    except DataDirError as exc:
        raise SystemExit(fail(f"{exc} — stop it first, or use `kiroku ctl` for what it can do while running")) from None
    vault = Vault.open(args.data, read_config(args))
    try:
        yield vault
    finally:
        vault.close()
        os.close(lock)


def reader(args):
    from firmware.vault import Vault

    if not (Path(args.data) / "kiroku.db").exists():
        raise SystemExit(fail(f"no vault in {args.data} (no kiroku.db) — check --data", 2))
    return Vault.open(args.data, read_config(args), readonly=True)


def opener(keys, recovery_key: Path | None, manager: str | None, password_file: Path | None, missing: str):
    """The identity that opens day keys: the recovery key from its file, or a manager's key
    unwrapped with their passphrase; ``None`` if neither is given. Exits with a message
    naming the problem."""
    # Wrong passphrases here are neither counted nor stopped by the web UI's key lock
    # (domain.keys): whoever runs this holds the card, and with it the wrapped key file, which
    # they could copy and guess at offline; a count they could delete would protect nothing, and
    # heeding it would keep the manager (or an auditor with a seized card) from footage whose
    # key an attacker locked through the web UI. Here the key's scrypt cost is the protection.
    from firmware.vault import age
    from firmware.vault.keys import WrongPassphrase

    try:
        if recovery_key:
            text = next(line for line in recovery_key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
            return age.X25519Identity.parse(text)
        if manager:
            if not password_file:
                raise SystemExit(fail(missing, 2))
            return keys.unlock_manager(manager, password(password_file))
    except WrongPassphrase as exc:  # before OSError: it is a PermissionError
        raise SystemExit(fail(str(exc))) from None
    except (OSError, StopIteration, ValueError) as exc:
        raise SystemExit(fail(f"cannot read the recovery key from {recovery_key} ({exc})", 2)) from None
    return None
