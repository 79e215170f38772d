"""The managers' keys, as the workflows use them: a manager's passphrase opens their key for
as long as one viewing or export needs it, and a wrong one is logged against the record it
was for. The keys themselves stay where they are kept (``Context.keys``: the device's
``firmware.vault.keys.KeyStore``, or the hub's).

Wrong passphrases are counted per key, in the registers (``key_guard``), so a restart does
not forget them: after ``LOCK_AFTER`` in a row the key is locked — it is not even tried —
for ``LOCK_FIRST`` seconds, and each wrong one after a lock has passed locks it twice as long
again (up to ``LOCK_LONGEST``). The right passphrase starts the count again. Locking the key
rather than the session matters: the passphrase is worth guessing to whoever holds a
manager's session, and a new session would start a new count.

The command line (``kiroku export``, ``kiroku keys``) neither counts nor heeds this: it runs
with the card in hand, where the wrapped key file can be copied and guessed offline at the
cost of its scrypt work factor, which is what protects it there.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol

from domain.errors import NotAllowed, refuse
from firmware.vault.keys import WrongPassphrase

LOCK_AFTER = 5  # wrong passphrases in a row before the key locks
LOCK_FIRST = 5 * 60  # seconds; doubled with every wrong one after a lock has passed
LOCK_LONGEST = 24 * 3600
clock = time.time  # what "now" is: a test moves it instead of waiting


class Keys(Protocol):
    def unlock(self, name: str, passphrase: str):
        """The manager's identity; raises WrongPassphrase."""

    def open_day_key(self, record_class: str, day: str, opener):
        """A day's key, opened with a manager's identity (or the recovery key)."""

    def add_manager(self, name: str, passphrase: str, *, unlock) -> None: ...

    def remove_manager(self, name: str) -> None: ...

    def rewrap_manager(self, name: str, old: str, new: str) -> None: ...


class KeyLocked(NotAllowed):
    """The key is locked after wrong passphrases (403): ``detail`` says until when (ISO 8601)."""

    def __init__(self, until: float):
        super().__init__("key.locked", detail=iso(until))
        self.until = until


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).astimezone().isoformat(timespec="seconds")


def locked_until(db, name: str) -> float | None:
    """When ``name``'s key opens again, or None if it is not locked."""
    until = db.scalar("SELECT locked_until FROM key_guard WHERE name = ?", (name,))
    return until if until is not None and until > clock() else None


def _lock_seconds(failures: int) -> float:
    return min(LOCK_FIRST * 2 ** (failures - LOCK_AFTER), LOCK_LONGEST)


def _count_failure(db, name: str) -> tuple[int, float | None]:
    """One more wrong passphrase for ``name``'s key: how many in a row, and until when it is now locked."""
    now = clock()
    with db.transaction():
        failures = db.scalar("INSERT INTO key_guard (name, failures) VALUES (?, 1) ON CONFLICT (name) DO UPDATE"
                             " SET failures = key_guard.failures + 1 RETURNING failures", (name,))
        until = None
        if failures >= LOCK_AFTER:
            until = now + _lock_seconds(failures)
            db.execute("UPDATE key_guard SET locked_until = ? WHERE name = ?", (until, name))
    return failures, until


def unlock_own(ctx, password: str, *, subject: str, purpose: str = "", refusal: str = "viewing.wrong_password"):
    """The acting manager's key, opened with ``password``: refused without trying while the key
    is locked; a wrong passphrase is counted, logged against ``subject`` and refused
    (``refusal``), and the one that locks the key is logged as such."""
    name = ctx.actor.username
    until = locked_until(ctx.db, name)
    if until is not None:
        ctx.refused("key.locked", subject)  # not a guess (nothing was tried): noted, at most once a minute
        raise KeyLocked(until)
    try:
        identity = ctx.keys.unlock(name, password)
    except WrongPassphrase:
        failures, until = _count_failure(ctx.db, name)
        ctx.log("key.unlock_failed", subject=subject, purpose=purpose, detail={"failures": failures})
        if until is not None:
            ctx.log("key.locked", subject=name, detail={"failures": failures, "until": iso(until),
                                                        "minutes": round(_lock_seconds(failures) / 60)})
            raise KeyLocked(until) from None
        refuse(refusal, 403)
    ctx.db.execute("UPDATE key_guard SET failures = 0, locked_until = NULL WHERE name = ?", (name,))
    return identity


def unlock_for(ctx, password: str, *, subject: str, purpose: str):
    """The acting manager's key for a viewing or an export; a wrong passphrase is logged
    against the record (``subject``) it was for, and refused."""
    return unlock_own(ctx, password, subject=subject, purpose=purpose)
