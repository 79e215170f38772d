"""The hub as a site of ``webui``: its registers in PostgreSQL, its own audit log, the managers'
keys wrapped in its database, the broker's administrator and the pusher. One
:class:`HubSite` per application (``app.extensions["kiroku"]``); web workers keep nothing of
their own, so several can serve behind a load balancer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, url_for

from domain.accounts import Guard
from domain.context import Context
from domain.errors import Conflict
from domain.viewings import Registry
from firmware.vault import age
from firmware.vault.keys import WrongPassphrase
from hub import pushes
from hub.audit import HubAudit
from hub.db import Pool
from webui.services import RefusalLog


class NoHolds:
    """Holds on recordings are placed by the devices; the hub asks them (issue 25 brings it)."""

    def hold(self, **kw) -> list[int]:
        raise Conflict("hub.holds_unavailable")

    def release(self, hold_ids, **kw) -> None:
        if hold_ids:
            raise Conflict("hub.holds_unavailable")


class HubCatalogue:
    """The recordings devices published (metadata only)."""

    def __init__(self, db):
        self.db = db

    def for_request(self) -> list:
        return self.db.all(
            "SELECT device || '/' || id AS id, record_class, started_at, ended_at, started_wall_us, ended_wall_us,"
            " section, marks FROM recordings ORDER BY started_wall_us DESC LIMIT 200")

    def segments_in(self, recording_ids, start_wall_us, end_wall_us) -> list:
        return []

    def sound_only(self, recording_id: str) -> bool:
        return self.db.scalar("SELECT record_class FROM recordings WHERE device || '/' || id = ?",
                              (recording_id,)) == "call"

    def open_holds(self) -> int:
        return 0

    def read_sealed(self, path: str) -> bytes:
        raise FileNotFoundError(path)

    def opened_vault(self):
        raise Conflict("hub.holds_unavailable")


class HubKeys:
    """The managers' keys at the hub: each identity wrapped under its manager's passphrase."""

    def __init__(self, db, work_factor: int | None):
        self.db, self.work_factor = db, work_factor

    def unlock(self, name: str, passphrase: str) -> age.X25519Identity:
        wrapped = self.db.scalar("SELECT wrapped FROM manager_keys WHERE username = ?", (name,))
        if wrapped is None:
            raise WrongPassphrase(f"no key for manager {name!r} at the hub")
        try:
            return age.X25519Identity.parse(age.decrypt(bytes(wrapped), [age.Passphrase(passphrase)]).decode())
        except age.NoIdentityMatched:
            raise WrongPassphrase(f"the passphrase does not unlock {name!r}'s key") from None

    def _wrap(self, identity: age.X25519Identity, passphrase: str) -> bytes:
        wf = self.work_factor or age.calibrate_work_factor()
        return age.encrypt(f"{identity}\n".encode(), [age.Passphrase(passphrase, work_factor=wf)])

    def add_manager(self, name: str, passphrase: str, *, unlock=None) -> None:
        from domain.times import now_iso

        identity = age.X25519Identity.generate()
        self.db.execute("INSERT INTO manager_keys (username, recipient, wrapped, created_at) VALUES (?, ?, ?, ?)",
                        (name, str(identity.recipient), self._wrap(identity, passphrase), now_iso()))

    def remove_manager(self, name: str) -> None:
        self.db.execute("DELETE FROM manager_keys WHERE username = ?", (name,))

    def rewrap_manager(self, name: str, old: str, new: str) -> None:
        identity = self.unlock(name, old)
        self.db.execute("UPDATE manager_keys SET wrapped = ? WHERE username = ?", (self._wrap(identity, new), name))

    def open_day_key(self, record_class: str, day: str, opener):
        raise Conflict("hub.holds_unavailable")


@dataclass
class HubSite:
    """The hub's services and memory (see the module's docstring)."""

    config: object  # hub.config.HubConfig, or what a test gives
    dsn: str
    audit: HubAudit
    pool: Pool
    work_factor: int | None = None
    broker_admin: object | None = None  # hub.broker.Admin, made when first needed
    pusher: pushes.Pusher | None = None
    keeper: object | None = None  # the evidence locker's (hub.locker.Keeper), when the configuration names a store
    guard: Guard = field(default_factory=Guard)
    refusals: RefusalLog = field(default_factory=RefusalLog)
    viewings: Registry = field(default_factory=Registry)
    jobs: object | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    files: Path = Path(".")
    first_run: str | None = None  # the first manager is made at the server: kiroku hub add-manager

    def open_database(self):
        return self.pool.acquire()

    def close_database(self, db) -> None:
        self.pool.release(db)

    def context(self, app: Flask, db, actor) -> Context:
        return Context(db=db, actor=actor, audit=self.audit, holds=NoHolds(), recordings=HubCatalogue(db), device="",
                       files=self.files, keys=HubKeys(db, self.work_factor), viewings=self.viewings, jobs=self.jobs,
                       guard=self.guard)

    def refresh_people(self) -> None:
        """The register is here: nothing to bring in."""
        return None

    def home_for(self, user) -> str:
        if user.is_manager:
            return url_for("hub.dashboard")
        if user.is_auditor:
            return url_for("hub_audit.index")
        return url_for("auth.account")

    def admin(self):
        """The broker's dynamic-security administrator (connected when first needed)."""
        if self.broker_admin is None:
            from hub.broker import Admin

            b = self.config.broker
            self.broker_admin = Admin(b.host, b.port, b.admin, self.config.secret(b.admin_password_file,
                                                                                 "broker.admin_password_file"), b.ca)
        return self.broker_admin

    def broker_public(self) -> tuple[str, int]:
        """The broker's address as devices reach it."""
        b = self.config.broker
        return b.public_host or b.host, b.public_port or b.port

    def ca_pem(self) -> str:
        return Path(self.config.broker.ca).read_text()

    def pushed(self) -> None:
        """Something was staged for devices: publish it now."""
        if self.pusher is not None:
            self.pusher.wake()
