"""What a workflow is given: the database, who is acting, and the services it may use.

The services are small interfaces (``typing.Protocol``), each with one adapter on a device
(``webui.services``: the recorder's control socket, the device's files and keys) and one at
the hub. A workflow never reaches past them, so it cannot tell which it runs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from domain.db import Database
from domain.people import Person


class AuditLog(Protocol):
    """The append-only, signed log of every action (on a device, the recorder writes it)."""

    def record(self, actor: str, action: str, *, subject: str = "", purpose: str = "",
               detail: dict | None = None) -> int:
        """Write one entry before the action takes effect; returns its sequence number.
        Raises when it cannot be written — and then the action is not taken."""


class Holds(Protocol):
    """Holds keep recordings from being overwritten while a record needs them."""

    def hold(self, *, reason: str, recording_ids: list[str], reference: str, by: str) -> list[int]:
        """Hold these recordings for ``reference`` (a request's or a register's number)."""

    def release(self, hold_ids: list[int], *, by: str) -> None:
        """Release holds; one released meanwhile is not an error."""


class Catalogue(Protocol):
    """The recordings there are (metadata only: never footage)."""

    def for_request(self, *, ids: list[str] | None = None, since_us: int | None = None,
                    until_us: int | None = None, number: str = "") -> list:
        """Recordings a request, provision or disclosure may name, newest first (at most a few
        hundred): dicts with ``id, record_class, started_at, ended_at, started_wall_us,
        ended_wall_us, section, marks``, and for a call ``direction, external_display,
        city_display``. ``ids``: exactly these (all of them, however old); ``since_us`` and
        ``until_us``: those started in that range; ``number``: calls with that number, typed
        any way (``firmware.calls.numbers.search_key``)."""

    def segments_in(self, recording_ids: list[str], start_wall_us: int, end_wall_us: int) -> list:
        """The kept segments of these recordings that overlap the range, in time order: rows
        with ``path, record_class, key_day, start_wall_us, end_wall_us``."""

    def sound_only(self, recording_id: str) -> bool:
        """A call: none of its segments has a picture."""

    def open_holds(self) -> int:
        """How many holds are open."""

    def read_sealed(self, path: str) -> bytes:
        """A sealed segment's bytes, as stored (still sealed)."""

    def opened_vault(self):
        """A context manager giving a read-only ``firmware.vault.Vault`` over these recordings,
        for an export to plan and read from."""


class Refusals(Protocol):
    """Refused access, noted in the audit log (rate-limited by the adapter)."""

    def __call__(self, what: str, subject: str = "") -> None: ...


@dataclass
class Context:
    """One caller's view of the registers: ``db`` (the caller's connection), ``actor`` (who
    acts; ``None`` before anyone has logged in), the services, ``device`` (the device whose
    operators are designated here) and ``files`` (where scans of written requests are kept)."""

    db: Database
    actor: Person | None
    audit: AuditLog
    holds: Holds
    recordings: Catalogue
    device: str
    files: Path
    keys: Any = None  # the managers' keys (a device's KeyStore, or the hub's): unlock, add, remove, rewrap
    viewings: Any = None  # domain.viewings.Registry: open viewings and their day keys, in memory
    jobs: Any = None  # domain.exports.Jobs: exports running or done, in memory
    guard: Any = None  # domain.accounts.Guard: failed log-ins of unknown names and per address
    refused: Refusals = field(default=lambda what, subject="": None)
    # A context of its own for a background thread (an export): another connection, the same
    # services and person. Set by whoever makes contexts.
    for_thread: Callable[[], Context] | None = None

    @property
    def actor_name(self) -> str:
        return self.actor.username if self.actor is not None else "anonymous"

    def log(self, action: str, *, subject: str = "", purpose: str = "", detail: dict | None = None,
            actor: str | None = None) -> int:
        """One audit entry, by ``actor`` or the acting person."""
        return self.audit.record(actor or self.actor_name, action, subject=subject, purpose=purpose,
                                 detail=detail or {})
