"""A register's database, SQLite on a device or PostgreSQL at the hub, behind one small API.

The workflows write their SQL once, in the subset both engines read alike: ``?`` for
parameters, ``RETURNING id`` for a new row's id (SQLite ≥ 3.35), ``TRUE``/``FALSE``, no
JSON functions (JSON columns are read and written as text, filtered in Python), integers
0/1 for flags. Rows are read by column name (``row["number"]``); SQLite's rows and ours
also answer to a position.

Both connections run in autocommit mode: a statement outside :meth:`Database.transaction`
commits on its own, as each of the device's writes always has.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

SQLITE, POSTGRESQL = "sqlite", "postgresql"
REGISTERS = 0x6B69726F6B7552  # the advisory lock the registers' transactions take on PostgreSQL
_PLACEHOLDER = re.compile(r"\?")


class Row(dict):
    """A PostgreSQL row as SQLite's rows are read: by name, and by position."""

    __slots__ = ("_values",)

    def __init__(self, names: Sequence[str], values: Sequence[Any]):
        super().__init__(zip(names, values))
        self._values = tuple(values)

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self._values[key]
        return super().__getitem__(key)

    def __iter__(self):  # as sqlite3.Row: iterating gives the values (``a, b = row``)
        return iter(self._values)


def column(row, name: str, default=""):
    """``row[name]``, or ``default`` when the row has no such column (a catalogue's rows differ
    between a device and the hub: the hub's name each recording's device and place)."""
    return row[name] if name in row.keys() else default


def _row_factory(cursor):
    names = [c.name for c in cursor.description] if cursor.description else []
    return lambda values: Row(names, values)


class Database:
    """One connection to a register's database (see the module's docstring)."""

    def __init__(self, conn, dialect: str):
        if dialect not in (SQLITE, POSTGRESQL):
            raise ValueError(f"unknown database dialect {dialect!r}")
        self.conn, self.dialect = conn, dialect
        self._depth = 0

    @classmethod
    def sqlite(cls, conn: sqlite3.Connection) -> "Database":
        conn.row_factory = sqlite3.Row
        return cls(conn, SQLITE)

    @classmethod
    def postgresql(cls, conn) -> "Database":
        """A psycopg 3 connection, in autocommit mode with rows read by name and position."""
        conn.autocommit = True
        conn.row_factory = _row_factory
        return cls(conn, POSTGRESQL)

    def _sql(self, sql: str) -> str:
        if self.dialect == SQLITE:
            return sql
        return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))

    def execute(self, sql: str, params: Sequence[Any] = ()):
        """Run one statement; the cursor answers ``fetchone``, ``fetchall``, ``rowcount`` and iteration."""
        return self.conn.execute(self._sql(sql), tuple(params))

    def one(self, sql: str, params: Sequence[Any] = ()):
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list:
        return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()):
        row = self.one(sql, params)
        return None if row is None else row[0]

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """An ``INSERT`` into a table with an integer ``id``: the new row's id."""
        return self.one(f"{sql} RETURNING id", params)[0]

    @contextmanager
    def transaction(self) -> Iterator["Database"]:
        """``with db.transaction():`` — all or nothing, and alone: SQLite's ``BEGIN IMMEDIATE``
        takes the database's write lock at once; on PostgreSQL the transaction takes one
        advisory lock (``REGISTERS``) at its start, so the registers' transactions run one at a
        time there too — a check made inside one (a request still awaiting its decision, the
        next number counted) still holds at its end, and none fails for having met another.
        Nested, it joins the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            if self.dialect == SQLITE:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            else:
                with self.conn.transaction():
                    self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTERS,))
                    yield self
        finally:
            self._depth = 0

    def close(self) -> None:
        self.conn.close()
