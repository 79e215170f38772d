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
from domain.viewings import Registry
from firmware.vault import age
from firmware.vault.keys import WrongPassphrase
from hub import locker, pushes
from hub.audit import HubAudit
from hub.db import Pool, connect
from hub import evidence
from hub.evidence import HubCatalogue, HubHolds
from webui.services import RefusalLog


class HubKeys:
    """The managers' keys at the hub: each identity wrapped under its manager's passphrase."""

    def __init__(self, db, work_factor: int | None, catalogue: HubCatalogue | None = None):
        self.db, self.work_factor, self.catalogue = db, work_factor, catalogue

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

    def open_day_key(self, record_class: str, day: str, opener) -> age.X25519Identity:
        return evidence.open_day_key(self.catalogue, record_class, day, opener)


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
    _bucket: object | None = None

    def open_database(self):
        return self.pool.acquire()

    def close_database(self, db) -> None:
        self.pool.release(db)

    def close(self) -> None:
        """Stop the site's own threads (the viewing sweeper), then its connections."""
        self.stop.set()
        self.pool.close()

    def context(self, app: Flask, db, actor) -> Context:
        catalogue = HubCatalogue(db, self.bucket(), self.audit)
        ctx = Context(db=db, actor=actor, audit=self.audit, holds=HubHolds(db), recordings=catalogue, device="",
                      files=self.files, keys=HubKeys(db, self.work_factor, catalogue), viewings=self.viewings,
                      jobs=self.jobs, guard=self.guard)
        # an export runs on a thread of its own, on a connection of its own (which it closes)
        ctx.for_thread = lambda: self.context(app, connect(self.dsn), actor)
        return ctx

    def bucket(self):
        """The evidence locker's bucket (``hub.locker.Bucket``), or None when the configuration
        names no store."""
        lk = getattr(self.config, "locker", None)
        if self._bucket is None and lk is not None and lk.endpoint:
            key, secret = self.config.locker_key()
            self._bucket = locker.Bucket(lk.endpoint, lk.bucket, key, secret, ca=lk.ca, region=lk.region)
        return self._bucket

    def refresh_people(self) -> None:
        """The register is here: nothing to bring in."""
        return None

    def home_for(self, user) -> str:
        if user.is_manager:
            return url_for("hub.dashboard")
        if user.is_auditor:
            return url_for("hub_audit.index")
        if user.is_section_head:
            return url_for("requests.index")
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
