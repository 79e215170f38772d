"""The web UI's side of the device's keys: first-run set-up, managers, unlocking.

Private keys appear here only in memory, for as long as a person needs them: the
recovery key between its creation and its confirmed hand-over (``pending_recovery``),
a manager's identity while it opens the day keys of an approved viewing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from flask import current_app

from firmware.vault import age
from firmware.vault.keys import KeyStore, WrongPassphrase

__all__ = ["WrongPassphrase", "keystore", "rewrap_manager", "add_manager", "unlock", "pending_recovery"]

_PENDING_SECONDS = 30 * 60


def keystore() -> KeyStore:
    return KeyStore(Path(current_app.config["KIROKU_DATA"]))


def _work_factor() -> int | None:
    return current_app.config.get("KIROKU_SCRYPT_WORK_FACTOR")


def rewrap_manager(name: str, old: str, new: str) -> None:
    keystore().rewrap_manager(name, old, new, work_factor=_work_factor())


def add_manager(name: str, password: str, *, unlock: age.X25519Identity | None) -> None:
    keystore().add_manager(name, password, unlock=unlock, work_factor=_work_factor())


def unlock(name: str, password: str) -> age.X25519Identity:
    return keystore().unlock_manager(name, password)


def unlock_for(password: str, *, subject: str, purpose: str, back: str) -> age.X25519Identity:
    """The logged-in manager's key for a viewing or an export; a wrong passphrase is logged
    against the record it was for, and refused."""
    from flask import g

    from webui import auth
    from webui.actions import refuse

    try:
        return unlock(g.user.username, password)
    except WrongPassphrase:
        auth.audit("key.unlock_failed", subject=subject, purpose=purpose)
        refuse("viewing.wrong_password", 403, back=back)


class _Pending:
    """The recovery key, held in memory until the person who saw it confirms it is stored."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[int, tuple[float, age.X25519Identity]] = {}

    def put(self, user_id: int, identity: age.X25519Identity) -> None:
        with self._lock:
            self._items[user_id] = (time.monotonic() + _PENDING_SECONDS, identity)

    def get(self, user_id: int) -> age.X25519Identity | None:
        with self._lock:
            item = self._items.get(user_id)
            if item is None or item[0] < time.monotonic():
                self._items.pop(user_id, None)
                return None
            return item[1]

    def drop(self, user_id: int) -> None:
        with self._lock:
            self._items.pop(user_id, None)


pending_recovery = _Pending()
