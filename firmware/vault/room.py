"""Room kept for the index: a file of ``SIZE`` bytes, allocated beside kiroku.db, that is
given up the moment the index cannot be written because the card is full.

The reserve (``retention.reserve_mb``) keeps footage from filling the card, but something
else can (a log, a copy left by hand) — and then the write that fails may be the one that
indexes a finished segment. Without room, that segment would be left out of the index, the
recording left open and the fault unlogged. With it: the vault gives the room up and writes
again, so the segment is indexed, the recording ends in the index and the fault is logged;
no new segment is begun while the room is in use (footage must not take it); and the room
is taken back once the card has space again, before the next recording.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

from firmware.fsutil import fsync_dir

log = logging.getLogger(__name__)

NAME = "index-room"
SIZE = 4 * 2**20  # a few transactions of the index and its write-ahead log, and the fault's entry


def is_full(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite's error is the card being full (SQLITE_FULL)."""
    return getattr(exc, "sqlite_errorcode", None) == 13 or "database or disk is full" in str(exc)


class IndexRoom:
    def __init__(self, folder: Path, size: int = SIZE):
        self.path = Path(folder) / NAME
        self.size = size

    @property
    def kept(self) -> bool:
        return self.path.exists()

    def keep(self) -> bool:
        """Make sure the room is set aside (allocated, not only promised); whether it is."""
        if self.kept and self.path.stat().st_size >= self.size:
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.path.unlink(missing_ok=True)  # half a room is no room: try again when there is space
            if exc.errno != errno.ENOSPC:
                log.warning("cannot set room aside for the index at %s: %s", self.path, exc)
            return False
        return True

    def give_up(self) -> bool:
        """Free the room for the index to be written; whether there was any to free."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.error("the card is full: the room kept for the index (%s) is given up to write it", self.path)
        return True
