"""SQLite the same way everywhere: WAL, synchronous commits, foreign keys, numbered migrations.

Each database has one writing process (DESIGN.md §3): the recorder writes kiroku.db, the
web UI writes web.db; everyone else opens them read-only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)


class ReadOnlyCopy(sqlite3.OperationalError, PermissionError):
    """A database on a read-only medium that cannot be read as it is (its write-ahead log
    holds commits that only a writable folder lets SQLite read)."""


def _open_readonly(path: Path) -> sqlite3.Connection:
    """Read-only, while the writer runs beside us (``mode=ro``: WAL readers share its ``-shm``).

    On a read-only medium — a seized card, a copy an auditor examines — SQLite cannot make
    the ``-shm`` it needs for a WAL database; when there is no write-ahead log to read,
    the file alone is the whole database and is opened ``immutable`` (no locks, no ``-shm``).
    A missing file is an error here, never an empty database made in its place."""
    if not Path(path).exists():
        raise sqlite3.OperationalError(f"unable to open database file: {path} does not exist")
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # SQLite opens lazily: fail here, not later
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(Path(path).parent, os.W_OK) and os.access(path, os.R_OK):
            raise
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise ReadOnlyCopy(f"{path} is on a read-only medium and its write-ahead log ({wal.name}) holds commits "
                           "SQLite can only read from a writable folder — copy the data folder to a writable disk "
                           "and run the command on the copy")
    log.debug("%s: read-only medium, opened immutable", path)
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, check_same_thread=False)


def open_db(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = _open_readonly(path)
    else:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # evidence: a commit survives a power cut
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


@dataclass(frozen=True)
class Schema:
    """What ``migrate`` found and did to one database."""

    before: int  # PRAGMA user_version when opened
    after: int
    known: int  # the highest migration this software has
    applied: tuple[str, ...] = ()

    @property
    def newer(self) -> bool:
        """Made by a newer release (a rollback after it migrated): this one runs on it as it is.
        Migrations only ever add, so that this works; it is still worth saying."""
        return self.after > self.known


def _scripts(package: str) -> list:
    return sorted((p for p in resources.files(package).joinpath("migrations").iterdir() if p.name.endswith(".sql")),
                  key=lambda p: p.name)


def _number(script) -> int:
    return int(script.name.split("_", 1)[0])


def known_version(package: str) -> int:
    scripts = _scripts(package)
    return _number(scripts[-1]) if scripts else 0


def _statements(sql: str) -> list[str]:
    """A migration script, statement by statement (``executescript`` would commit first)."""
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip() and any(not line.strip().startswith("--") for line in pending.splitlines() if line.strip()):
        raise ValueError(f"the migration ends in an unfinished statement: {pending.strip()[:60]!r}")
    return statements


def migrate(conn: sqlite3.Connection, package: str,
            on_applied: Callable[[sqlite3.Connection, int, int, str], None] | None = None) -> Schema:
    """Apply ``<package>/migrations/NNNN_*.sql`` above ``PRAGMA user_version``, each atomically.

    Each migration takes the write lock, then reads the version: a second process
    migrating at the same moment (``kiroku init`` as the recorder starts) finds the work
    done and goes on. ``on_applied(conn, version_before, number, name)`` runs inside each
    migration's transaction, after its script: what it writes (an audit entry) is
    committed with the migration, or neither is. A database being made (version 0) is
    not migrated from anything, so it is not called for that."""
    before = version = conn.execute("PRAGMA user_version").fetchone()[0]
    scripts = _scripts(package)
    applied = []
    for script in scripts:
        number = _number(script)
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if number > version:
                for statement in _statements(script.read_text()):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
                if on_applied is not None and before > 0:
                    on_applied(conn, version, number, script.name)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if number > version:
            version = number
            applied.append(script.name)
    found = Schema(before, version, _number(scripts[-1]) if scripts else 0, tuple(applied))
    if found.newer:
        name = Path(conn.execute("PRAGMA database_list").fetchone()[2]).name
        log.warning("%s was last changed by a newer release (schema %d; this one knows up to %d): running on it as "
                    "it is", name, found.after, found.known)
    return found


def schema(conn: sqlite3.Connection, package: str) -> Schema:
    """The schema of a database opened read-only: nothing applied, only compared."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return Schema(version, version, known_version(package))
