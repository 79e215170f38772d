"""web.db: people, roles, sessions, requests. The web UI process is its only writer.

The recorder's ``kiroku.db`` (recordings, segments, holds, the audit log) is opened
read-only here; what the web UI needs written there goes through the control socket.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flask import current_app, g

from firmware import sqlite

NAME = "web.db"


def connect(data_dir: Path) -> sqlite3.Connection:
    path = Path(data_dir) / "web" / NAME
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    conn = sqlite.open_db(path)
    conn.row_factory = sqlite3.Row
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    return sqlite.migrate(conn, "webui")


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = connect(Path(current_app.config["KIROKU_DATA"]))
    return g.db


def close_db(_exc=None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


class transaction:
    """``with transaction(db):`` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on an error."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *exc):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def vault_db() -> sqlite3.Connection | None:
    """The recorder's index, read-only (None before the recorder has made it)."""
    if "vault_db" not in g:
        path = Path(current_app.config["KIROKU_DATA"]) / "kiroku.db"
        if not path.exists():
            return None
        conn = sqlite.open_db(path, readonly=True)
        conn.row_factory = sqlite3.Row
        g.vault_db = conn
    return g.vault_db


def close_vault_db(_exc=None) -> None:
    db = g.pop("vault_db", None)
    if db is not None:
        db.close()
