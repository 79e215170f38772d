"""web.db: the device's registers (``domain``: people, sessions, requests, provisions,
disclosures). The web UI process is its only writer.

The recorder's ``kiroku.db`` (recordings, segments, holds, the audit log) is opened
read-only here; what the web UI needs written there goes through the control socket.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from flask import current_app, g

from domain.db import Database
from firmware import sqlite

log = logging.getLogger(__name__)

NAME = "web.db"


def connect(data_dir: Path) -> sqlite3.Connection:
    path = Path(data_dir) / "web" / NAME
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    conn = sqlite.open_db(path)
    conn.row_factory = sqlite3.Row
    return conn


MIGRATIONS = "webui"  # the package whose migrations/ this database follows
_handing_over = threading.Lock()
_last_warning: str | None = None


def migrate(conn: sqlite3.Connection) -> sqlite.Schema:
    """Bring web.db up to this release's schema. Each migration of an existing database is
    kept in ``schema_log``, committed with it, until :func:`hand_over_migrations` has put it
    in the audit log (migrations made before that table existed wait for it in memory)."""
    from datetime import datetime

    from firmware import __version__

    waiting: list[tuple] = []

    def keep(conn, before: int, number: int, name: str) -> None:
        waiting.append((datetime.now().astimezone().isoformat(timespec="seconds"), name, before, number, __version__))
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_log'").fetchone():
            conn.executemany("INSERT INTO schema_log (at, script, from_version, to_version, software)"
                             " VALUES (?, ?, ?, ?, ?)", waiting)
            waiting.clear()

    return sqlite.migrate(conn, MIGRATIONS, keep)


def hand_over_migrations(conn: sqlite3.Connection, control, vault: sqlite3.Connection | None) -> int:
    """Put the migrations ``schema_log`` holds into the device's audit log, through the
    recorder (``control``). Returns how many are still waiting: the recorder may be starting,
    and the next round tries again. An answer lost on its way back (a timeout) must not log a
    migration twice, so the log (``vault``, read-only) is asked first whether it has it."""
    global _last_warning
    from firmware.control import ControlError

    with _handing_over:  # one at a time: never the same migration logged twice
        rows = conn.execute("SELECT id, at, script, from_version, to_version, software FROM schema_log"
                            " WHERE audit_seq IS NULL ORDER BY id").fetchall()
        for n, row in enumerate(rows):
            seq = None
            if vault is not None:
                found = vault.execute("SELECT seq FROM audit WHERE action = 'db.migrate' AND subject = ?"
                                      " AND json_extract(detail, '$.schema_log_id') = ?", (NAME, row[0])).fetchone()
                seq = found[0] if found else None
            if seq is None:
                try:
                    seq = control.request("audit", by="software", action="db.migrate", subject=NAME, detail={
                        "script": row[2], "from": row[3], "to": row[4], "software": row[5], "applied_at": row[1],
                        "schema_log_id": row[0]})["seq"]
                except ControlError as exc:
                    message = f"{NAME}: {len(rows) - n} migration(s) not in the audit log yet: {exc}"
                    # said once, not every round while the recorder is down
                    log.log(logging.DEBUG if message == _last_warning else logging.WARNING, "%s", message)
                    _last_warning = message
                    return len(rows) - n
            conn.execute("UPDATE schema_log SET audit_seq = ? WHERE id = ?", (seq, row[0]))
        _last_warning = None
        return 0


def database(data_dir: Path) -> Database:
    """web.db as the workflows use it (``domain.db``)."""
    return Database.sqlite(connect(data_dir))


def get_db() -> Database:
    """This request's connection to the site's registers (web.db on a device)."""
    if "db" not in g:
        g.db = current_app.extensions["kiroku"].open_database()
    return g.db


def close_db(_exc=None) -> None:
    db = g.pop("db", None)
    if db is not None:
        current_app.extensions["kiroku"].close_database(db)


def open_index(data_dir: Path) -> sqlite3.Connection | None:
    """The recorder's index, read-only (None before the recorder has made it)."""
    path = Path(data_dir) / "kiroku.db"
    if not path.exists():
        return None
    conn = sqlite.open_db(path, readonly=True)
    conn.row_factory = sqlite3.Row
    return conn


def vault_db() -> sqlite3.Connection | None:
    """This request's read-only connection to the recorder's index (None before the recorder has made it)."""
    if "vault_db" not in g:
        conn = open_index(Path(current_app.config["KIROKU_DATA"]))
        if conn is None:
            return None
        g.vault_db = conn
    return g.vault_db


def close_vault_db(_exc=None) -> None:
    db = g.pop("vault_db", None)
    if db is not None:
        db.close()
