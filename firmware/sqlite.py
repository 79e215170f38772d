"""SQLite the same way everywhere: WAL, synchronous commits, foreign keys, numbered migrations.

Each database has one writing process (DESIGN.md §3): the recorder writes kiroku.db, the
web UI writes web.db; everyone else opens them read-only.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path


def open_db(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # evidence: a commit survives a power cut
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def migrate(conn: sqlite3.Connection, package: str) -> int:
    """Apply ``<package>/migrations/NNNN_*.sql`` above ``PRAGMA user_version``, each atomically."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    scripts = sorted((p for p in resources.files(package).joinpath("migrations").iterdir() if p.name.endswith(".sql")),
                     key=lambda p: p.name)
    for script in scripts:
        number = int(script.name.split("_", 1)[0])
        if number > version:
            conn.executescript(f"BEGIN IMMEDIATE;\n{script.read_text()}\nPRAGMA user_version = {number};\nCOMMIT;")
            version = number
    return version
