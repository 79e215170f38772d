"""The device's side of the workflows' services (``domain.context``), and the web
application's state.

- The audit log and holds go through the recorder's control socket: the recorder is their
  only writer, and without it nothing is done (DESIGN.md §3).
- The catalogue of recordings is the recorder's index (``kiroku.db``), opened read-only;
  sealed segments are read from the data folder.
- The managers' keys are the device's key store.
- What lives in memory — open viewings with their day keys, export jobs, failed log-ins of
  unknown names, the refusals already logged this minute, the recovery key waiting to be
  confirmed — is one :class:`State` per application, in ``app.extensions["kiroku"]``.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, current_app, g, request

from domain import requests
from domain.accounts import Guard
from domain.context import Context
from domain.exports import Jobs
from domain.viewings import Registry
from firmware.control import ControlClient, ControlError, RecorderNotRunning, RecorderUnreachable, socket_path
from firmware.vault import age
from firmware.vault.keys import KeyStore
from webui.journal import MAY_WAIT, AuditJournal

log = logging.getLogger(__name__)

REFUSAL_EVERY = 60.0  # seconds: one audit entry per person and kind of refusal, the rest counted
_PENDING_SECONDS = 30 * 60


class RecorderAudit:
    """The device's audit log, written by the recorder. With a journal (``webui.journal``),
    signing on and off while the recorder is down waits there, and goes into the log, first
    and in order, the next time the recorder answers."""

    def __init__(self, control: ControlClient, journal: AuditJournal | None = None):
        self.control, self.journal = control, journal

    def _send(self, actor: str, action: str, subject: str, purpose: str, detail: dict) -> int:
        return self.control.request("audit", by=actor, action=action, subject=subject, purpose=purpose,
                                    detail=detail)["seq"]

    def record(self, actor: str, action: str, *, subject: str = "", purpose: str = "",
               detail: dict | None = None) -> int:
        """The entry's number; 0 for one that waits in the journal."""
        if self.journal is None:
            return self._send(actor, action, subject, purpose, detail or {})
        with self.journal.locked():
            try:
                self.journal.fold(self._send)
                return self._send(actor, action, subject, purpose, detail or {})
            except RecorderNotRunning as exc:  # (not a timeout: the recorder may have written that one)
                if action not in MAY_WAIT:
                    raise
                self.journal.keep(actor, action, subject=subject, purpose=purpose, detail=detail or {}, why=str(exc))
                log.warning("the recorder is down (%s): %s by %s kept in %s until it is back",
                            exc, action, actor, self.journal.path)
                return 0

    def fold(self) -> int:
        """What waited in the journal, into the log now if the recorder answers; how many."""
        if self.journal is None or not self.journal.path.exists():
            return 0
        with self.journal.locked():
            try:
                return self.journal.fold(self._send)
            except RecorderUnreachable:
                return 0


class RecorderHolds:
    """Holds in the recorder's index."""

    def __init__(self, control: ControlClient):
        self.control = control

    def hold(self, *, reason: str, recording_ids: list[str], reference: str, by: str) -> list[int]:
        return self.control.request("hold", reason=reason, recording_ids=list(recording_ids), reference=reference,
                                    by=by)["holds"]

    def release(self, hold_ids: list[int], *, by: str) -> None:
        for hold in hold_ids:
            try:
                self.control.request("release", hold=hold, by=by)
            except ControlError as exc:
                if "already released" not in str(exc):
                    raise


class VaultCatalogue:
    """The recordings in the recorder's index, read-only, and their sealed files."""

    def __init__(self, data_dir: Path, index):
        self.data_dir, self._index = Path(data_dir), index  # index(): the read-only connection, or None

    def for_request(self, *, ids=None, since_us=None, until_us=None, number: str = "") -> list:
        vdb = self._index()
        narrowed = requests.catalogue_filter(ids=ids, since_us=since_us, until_us=until_us, number=number)
        if vdb is None or narrowed is None:
            return []
        where, params = narrowed
        # Footage and calls alike (Art. 7–8 govern both); a call that never had audio has nothing to view.
        where.append("(r.record_class = 'footage'"
                     " OR EXISTS (SELECT 1 FROM segments s WHERE s.recording_id = r.id AND s.erased_at IS NULL))")
        cur = vdb.execute(
            "SELECT r.id, r.record_class, r.started_at, r.ended_at, r.started_wall_us, r.ended_wall_us, r.section,"
            " (SELECT count(*) FROM marks m WHERE m.recording_id = r.id) AS marks,"
            " (SELECT group_concat(nullif(m.note, ''), ' / ') FROM marks m WHERE m.recording_id = r.id) AS mark_notes,"
            " c.direction, c.withheld,"
            " c.external_e164, c.external_raw, c.city_e164, c.city_raw"
            f" FROM recordings r LEFT JOIN calls c ON c.recording_id = r.id WHERE {' AND '.join(where)}"
            f" ORDER BY r.started_wall_us DESC{'' if ids is not None else ' LIMIT 300'}", params)
        names = [d[0] for d in cur.description]
        return [requests.with_parties(dict(zip(names, row))) for row in cur]

    def segments_in(self, recording_ids: list[str], start_wall_us: int, end_wall_us: int) -> list:
        vdb = self._index()
        if vdb is None or not recording_ids:
            return []
        marks = ",".join("?" * len(recording_ids))
        return vdb.execute(
            f"SELECT path, record_class, key_day, start_wall_us, end_wall_us FROM segments"
            f" WHERE recording_id IN ({marks}) AND erased_at IS NULL AND start_wall_us < ? AND end_wall_us > ?"
            f" ORDER BY start_wall_us", (*recording_ids, end_wall_us, start_wall_us)).fetchall()

    def sound_only(self, recording_id: str) -> bool:
        vdb = self._index()
        row = vdb.execute("SELECT max(video_frames) FROM segments WHERE recording_id = ?", (recording_id,)).fetchone() \
            if vdb is not None else None
        return bool(row and row[0] == 0)

    def open_holds(self) -> int:
        vdb = self._index()
        return vdb.execute("SELECT count(*) FROM holds WHERE released_at IS NULL").fetchone()[0] if vdb else 0

    def read_sealed(self, path: str) -> bytes:
        return (self.data_dir / path).read_bytes()

    @contextmanager
    def opened_vault(self):
        """The vault, read-only, for an export to plan and read from."""
        from firmware.vault import Vault

        vault = Vault.open(self.data_dir, readonly=True)
        try:
            yield vault
        finally:
            vault.close()


class DeviceKeys:
    """The device's key store, with the scrypt cost this application was given (tests make it cheap)."""

    def __init__(self, data_dir: Path, work_factor: int | None):
        self.store, self.work_factor = KeyStore(Path(data_dir)), work_factor

    def unlock(self, name: str, passphrase: str) -> age.X25519Identity:
        return self.store.unlock_manager(name, passphrase)

    def open_day_key(self, record_class: str, day: str, opener):
        return self.store.open_day_key(record_class, day, opener)

    def add_manager(self, name: str, passphrase: str, *, unlock) -> None:
        self.store.add_manager(name, passphrase, unlock=unlock, work_factor=self.work_factor)

    def remove_manager(self, name: str) -> None:
        self.store.remove_manager(name)

    def rewrap_manager(self, name: str, old: str, new: str) -> None:
        self.store.rewrap_manager(name, old, new, work_factor=self.work_factor)


class PendingRecovery:
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


class RefusalLog:
    """Refused access in the audit log: at most one entry a minute for each person and kind,
    the others counted into the next, so a script cannot fill the signed log or wear the card."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], list] = {}

    def note(self, audit, user: str, what: str, subject: str, method: str, path: str) -> None:
        key, now = (user, what), time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < REFUSAL_EVERY:
                seen[1] += 1
                return
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = [now, 0]
        detail = {"what": what, "method": method, "path": path[:200]}
        if seen is not None and seen[1]:
            detail["more_since_last_entry"] = seen[1]
        try:
            audit.record(user, "access.refused", subject=subject, detail=detail)
        except Exception as exc:  # the recorder restarting: the process log keeps it
            log.warning("could not log a refusal of %s: %s", what, exc)


@dataclass
class State:
    """One web application's services and memory: the site it serves. A device's here; the
    hub's is ``hub.web.site.HubSite``, with the same methods, so the pages, sessions and
    permissions of ``webui`` serve both."""

    data_dir: Path
    device: str
    control: ControlClient
    keys: DeviceKeys
    viewings: Registry = field(default_factory=Registry)
    jobs: Jobs | None = None
    guard: Guard = field(default_factory=Guard)
    refusals: RefusalLog = field(default_factory=RefusalLog)
    pending_recovery: PendingRecovery = field(default_factory=PendingRecovery)
    stop: threading.Event = field(default_factory=threading.Event)  # the background loops end when it is set
    first_run: str | None = "setup.index"  # the page that makes the first manager
    people_source: Callable[[Flask], int | None] | None = None  # where people come from besides web.db (the hub)

    journal: AuditJournal | None = None  # where signing on and off waits while the recorder is down

    @property
    def audit(self) -> RecorderAudit:
        return RecorderAudit(self.control, self.journal)

    def open_database(self):
        from webui.db import database

        return database(self.data_dir)

    def close_database(self, db) -> None:
        db.close()

    def context(self, app: Flask, db, actor) -> Context:
        from webui.db import vault_db

        return make_context(app, db, actor, vault_db)

    @property
    def hub(self) -> dict | None:
        """Once the device is enrolled with a city hub (``kiroku enroll``): ``{"url": …}`` —
        its people and designations are then the hub's, and its admin pages say so."""
        from firmware.uplink.files import UplinkFolder

        folder = UplinkFolder(self.data_dir)
        return {"url": folder.hub_url} if folder.enrolled else None

    def refresh_people(self) -> int | None:
        """Once enrolled, bring the operators the city hub designated into web.db now (else
        every few seconds: ``people_source``, webui/hubsync.py); how many changes, or None for
        nothing to do."""
        return None if self.people_source is None else self.people_source(current_app._get_current_object())

    def home_for(self, user) -> str:
        from flask import url_for

        if user.is_manager:
            return url_for("admin.dashboard")
        if user.is_operator:
            return url_for("console.index")
        if user.is_section_head:
            return url_for("requests.index")
        if user.is_auditor:
            return url_for("audit.index")
        return url_for("auth.account")


def install(app: Flask) -> State:
    data_dir = Path(app.config["KIROKU_DATA"])
    state = State(data_dir=data_dir, device=app.config["KIROKU_DEVICE"],
                  control=ControlClient(socket_path(data_dir), timeout=10),
                  keys=DeviceKeys(data_dir, app.config.get("KIROKU_SCRYPT_WORK_FACTOR")))
    state.jobs = Jobs(data_dir / "web" / "exports", work_factor=app.config.get("KIROKU_SCRYPT_WORK_FACTOR"))
    state.journal = AuditJournal(data_dir / "web")
    app.extensions["kiroku"] = state
    return state


def state(app: Flask | None = None) -> State:
    return (app or current_app).extensions["kiroku"]


def control() -> ControlClient:
    return state().control


def recorder_status() -> dict | None:
    """The recorder's status, or None when it is not answering."""
    try:
        return control().status()
    except ControlError:
        return None


def make_context(app: Flask, db, actor, index=lambda: None) -> Context:
    """A context on ``db`` for ``actor``, with this application's services."""
    st = state(app)
    ctx = Context(db=db, actor=actor, audit=st.audit, holds=RecorderHolds(st.control),
                  recordings=VaultCatalogue(st.data_dir, index), device=st.device,
                  files=st.data_dir / "web" / "scans", keys=st.keys, viewings=st.viewings, jobs=st.jobs,
                  guard=st.guard)

    def for_thread() -> Context:
        from webui.db import connect, open_index

        own = {}

        def own_index():
            if "db" not in own:
                own["db"] = open_index(st.data_dir)
            return own["db"]

        return make_context(app, connect(st.data_dir), actor, own_index)

    ctx.for_thread = for_thread
    return ctx


def context() -> Context:
    """This request's context: its database, the person logged in (``g.user``), the site's services."""
    from webui.db import get_db

    if "kiroku_context" not in g:
        site = state()
        ctx = site.context(current_app._get_current_object(), get_db(), getattr(g, "user", None))

        def refused(what: str, subject: str = "") -> None:
            user = g.user.username if getattr(g, "user", None) else "anonymous"
            site.refusals.note(site.audit, user, what, subject, request.method, request.path)

        ctx.refused = refused
        g.kiroku_context = ctx
    ctx = g.kiroku_context
    ctx.actor = getattr(g, "user", None)  # who is logged in may change within the request (log-in, set-up)
    return ctx


def audit(action: str, *, subject: str = "", purpose: str = "", detail: dict | None = None,
          actor: str | None = None) -> int:
    """Write to the device's audit log (through the recorder, its only writer) as the person
    logged in, or ``actor``; returns the entry's number."""
    return context().log(action, subject=subject, purpose=purpose, detail=detail, actor=actor)


def audit_refusal(what: str, subject: str = "") -> None:
    """A logged-in person was refused something (a page their role may not use; a request or
    a viewing that is not theirs, or none at all — answered alike): in the audit log, so that
    an auditor sees who tried what. Best effort: a refusal stands even when the log cannot be
    written just then."""
    context().refused(what, subject)
