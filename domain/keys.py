"""The managers' keys, as the workflows use them: a manager's passphrase opens their key for
as long as one viewing or export needs it, and a wrong one is logged against the record it
was for. The keys themselves stay where they are kept (``Context.keys``: the device's
``firmware.vault.keys.KeyStore``, or the hub's)."""

from __future__ import annotations

from typing import Protocol

from domain.errors import refuse
from firmware.vault.keys import WrongPassphrase


class Keys(Protocol):
    def unlock(self, name: str, passphrase: str):
        """The manager's identity; raises WrongPassphrase."""

    def open_day_key(self, record_class: str, day: str, opener):
        """A day's key, opened with a manager's identity (or the recovery key)."""

    def add_manager(self, name: str, passphrase: str, *, unlock) -> None: ...

    def remove_manager(self, name: str) -> None: ...

    def rewrap_manager(self, name: str, old: str, new: str) -> None: ...


def unlock_for(ctx, password: str, *, subject: str, purpose: str):
    """The acting manager's key for a viewing or an export; a wrong passphrase is logged
    against the record (``subject``) it was for, and refused."""
    try:
        return ctx.keys.unlock(ctx.actor.username, password)
    except WrongPassphrase:
        ctx.log("key.unlock_failed", subject=subject, purpose=purpose)
        refuse("viewing.wrong_password", 403)
