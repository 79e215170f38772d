"""The hub's PostgreSQL database: a pool of connections, and numbered migrations.

Migrations are ``hub/migrations/NNNN_*.sql``, applied in order above the version in
``schema_version``, each in a transaction of its own under an advisory lock, so that two
hub processes starting at once (several web workers behind a load balancer) apply each
exactly once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from importlib import resources

import psycopg
from psycopg_pool import ConnectionPool

from domain.db import Database

log = logging.getLogger(__name__)
_LOCK = 0x6B69726F6B75  # "kiroku": the advisory lock migrations take


class HubDbError(RuntimeError):
    """The hub's database is unreachable or not as this release expects; the message says which."""


def _scripts() -> list:
    folder = resources.files("hub").joinpath("migrations")
    return sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)


def known_version() -> int:
    scripts = _scripts()
    return int(scripts[-1].name.split("_", 1)[0]) if scripts else 0


def migrate(dsn: str) -> list[str]:
    """Bring the database up to this release's schema; returns the scripts applied."""
    applied = []
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise HubDbError(f"the hub's database cannot be reached ({exc}): check [database] dsn in the hub's "
                         "configuration and that PostgreSQL runs") from None
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        for script in _scripts():
            number = int(script.name.split("_", 1)[0])
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                if (row[0] or 0) >= number:
                    continue
                conn.execute(script.read_text())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
                applied.append(script.name)
                log.info("hub database: applied %s", script.name)
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
    if version > known_version():
        log.warning("the hub's database was changed by a newer release (schema %d; this one knows up to %d)",
                    version, known_version())
    return applied


class Pool:
    """Connections to the hub's database for the web workers and the consumer, each handed out
    as a :class:`domain.db.Database` (autocommit; ``transaction()`` for all-or-nothing)."""

    def __init__(self, dsn: str, *, size: int = 8):
        self.dsn = dsn
        self._pool = ConnectionPool(dsn, min_size=1, max_size=size, open=True, timeout=10,
                                    configure=lambda conn: setattr(conn, "autocommit", True))

    @contextmanager
    def database(self):
        with self._pool.connection() as conn:
            yield Database.postgresql(conn)

    def acquire(self) -> Database:
        """A connection for one web request; give it back with :meth:`release`."""
        return Database.postgresql(self._pool.getconn())

    def release(self, db: Database) -> None:
        self._pool.putconn(db.conn)

    def close(self) -> None:
        self._pool.close()


def connect(dsn: str) -> Database:
    """One connection of its own (a background thread's)."""
    return Database.postgresql(psycopg.connect(dsn, autocommit=True))
