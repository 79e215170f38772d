"""The vault's errors: one root, and specific ones that are also a builtin, so a caller
that only knows ``OSError`` or ``PermissionError`` still handles them rightly."""

from __future__ import annotations

from firmware.store import StoreError


class VaultError(Exception):
    """The vault (its keys, index, audit log or set-up) could not do what was asked."""


class VaultNotReady(VaultError, StoreError):
    """The device has no keys yet: nothing can be sealed."""


class SetupError(VaultError, RuntimeError):
    """Set-up cannot go ahead; the message says why and what to do."""


class AuditError(VaultError, ValueError):
    """The log or a checkpoint does not verify; the message names the first problem."""


class KeyStoreError(VaultError):
    """The key store could not give the key asked for."""


class NotInitialised(KeyStoreError, FileNotFoundError):
    """The device has no keys yet."""


class WrongPassphrase(KeyStoreError, PermissionError):
    """The passphrase does not unwrap this manager's key."""


class DayKeyMissing(KeyStoreError, FileNotFoundError):
    """The day's key file does not exist (never created, or destroyed by overwrite)."""


class KeyFileDamaged(KeyStoreError, ValueError):
    """A key file is there but cannot be read as the key it should hold; the message names
    the file and how to put it right."""
