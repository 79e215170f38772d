"""Setting the hub up at its server: the database's schema, the broker account the hub reads
and writes with, and a manager — the first one has no one to add them on a page, so it is
made here (``kiroku hub add-manager``), with their key wrapped under their passphrase."""

from __future__ import annotations

from domain import accounts, people
from domain.times import now_iso
from hub.audit import HubAudit, signing_key
from hub.db import Pool, connect, migrate
from hub.web.site import HubKeys


class SetupError(RuntimeError):
    """The hub could not be set up as asked; the message says why and what to do."""


def add_manager(dsn: str, folder, *, username: str, display_name: str, section: str, password: str,
                work_factor: int | None = None) -> int:
    """A manager at the hub (the first, or another when none can log in): their account, their
    section (made if new) and their key. Logged in the hub's audit log. Returns their id."""
    migrate(dsn)
    if not people.USERNAME.fullmatch(username):
        raise SetupError(f"{username!r}: a user name is 1–32 of a-z, 0-9, _ and -, starting with a letter or digit")
    problem = accounts.password_problem(password)
    if problem:
        raise SetupError(f"the password is too short: at least {accounts.MIN_PASSWORD} characters")
    pool = Pool(dsn, size=1)
    db = connect(dsn)
    try:
        if db.one("SELECT 1 FROM users WHERE username = ?", (username,)):
            raise SetupError(f"{username!r} exists already")
        audit = HubAudit(pool.database, signing_key(folder))
        audit.record("console", "user.add", subject=username, detail={"roles": ["manager"], "section": section,
                                                                      "at": "the hub's server"})
        keys = HubKeys(db, work_factor)
        keys.add_manager(username, password)
        try:
            with db.transaction():
                section_id = db.scalar("SELECT id FROM sections WHERE name = ?", (section,))
                if section_id is None:
                    section_id = db.insert("INSERT INTO sections (name, created_at) VALUES (?, ?)", (section, now_iso()))
                return db.insert("INSERT INTO users (username, display_name, password_hash, section_id, is_manager,"
                                 " created_at) VALUES (?, ?, ?, ?, 1, ?)",
                                 (username, display_name, accounts.hash_password(password), section_id, now_iso()))
        except Exception:
            keys.remove_manager(username)
            raise
    finally:
        db.close()
        pool.close()
