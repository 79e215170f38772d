"""Log-ins while the recorder is down: kept in a local journal, folded into the audit log
when the recorder is back.

The recorder is the audit log's only writer, and without it nothing audited is done
(DESIGN.md §3). But a manager must be able to log in and see why the recorder is down. So
the entries of signing on and off — and of failing to — alone may wait: each is appended to
``web/audit-journal.jsonl`` and fsync'd before the answer, and the next time the recorder
answers, the journal goes into the audit log first, in order, each entry saying when it
happened (``journaled_at``), before anything newer. Nothing else can wait: every other
action is still refused while the recorder is down.

Only a request that never reached a recorder waits here (no control socket, or nothing
listening on it); one that timed out may have been written, and is refused as before rather
than written twice. Folding is one entry at a time; after each, the id of the last entry
folded is written down (``audit-journal.folded``), so that a crash half-way loses nothing and
repeats at most the one entry being folded (each carries its ``journaled_at`` time, which
tells such a repeat from a second log-in).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from firmware.fsutil import atomic_write, fsync_dir

# What may wait for the recorder: signing on and off, and the refusals of it. Nothing that
# touches footage, keys or a register.
MAY_WAIT = frozenset({"login", "logout", "login.failed", "login.locked"})

JOURNAL = "audit-journal.jsonl"
FOLDED = "audit-journal.folded"

log = logging.getLogger(__name__)


class AuditJournal:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL
        self._folded = self.folder / FOLDED
        self._thread_lock = threading.Lock()

    @contextmanager
    def locked(self):
        """One writer at a time: this process's threads, and any other process on the folder."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        with self._thread_lock, open(self.folder / "audit-journal.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def keep(self, by: str, action: str, *, subject: str, purpose: str, detail: dict, why: str) -> None:
        """Append one entry and make it durable before returning. Call it under ``locked()``."""
        entry = {"id": secrets.token_hex(8), "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                 "by": by, "action": action, "subject": subject, "purpose": purpose, "detail": detail, "why": why}
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                line = b"\n" + line  # after a line a power cut left unfinished (never answered): on a line of its own
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.folder)

    def waiting(self) -> list[dict]:
        """The entries not yet in the audit log, oldest first."""
        if not self.path.exists():
            return []
        entries = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict) and {"id", "at", "by", "action"} <= entry.keys():
                entries.append(entry)
            elif line.strip():
                # a line a power cut left unfinished: its write was never answered, so nothing
                # it stood for happened
                log.warning("%s: line %d is not a whole entry (a write cut short); left out", self.path, number)
        last = self._folded.read_text().strip() if self._folded.exists() else ""
        ids = [e.get("id") for e in entries]
        return entries[ids.index(last) + 1:] if last in ids else entries

    def fold(self, send: Callable[[str, str, str, str, dict], int]) -> int:
        """Send every waiting entry to the audit log, in order; how many. Call it under
        ``locked()``. ``send(by, action, subject, purpose, detail)`` raises if the recorder
        is still down: what was not sent waits for the next time."""
        entries = self.waiting()
        for entry in entries:
            detail = dict(entry.get("detail") or {}, journaled_at=entry["at"], journaled_because=entry.get("why", ""))
            send(entry["by"], entry["action"], entry.get("subject", ""), entry.get("purpose", ""), detail)
            atomic_write(self._folded, entry["id"].encode())
        if self.path.exists() and not self.waiting():
            self.path.unlink()  # first the journal, then the mark: a crash between them repeats nothing
            self._folded.unlink(missing_ok=True)
            fsync_dir(self.folder)
        return len(entries)
