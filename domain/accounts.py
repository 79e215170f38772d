"""Log-in and sessions: passwords, failures counted and locked, sessions that end.

- Passwords are hashed with Argon2id (argon2-cffi); old hashes are upgraded at log-in.
- Repeated failures slow the answer down and then lock the account; both are logged.
  An unknown name costs the same time as a wrong password and locks the same way, so
  names cannot be probed (:class:`Guard` remembers the failures of names that are not
  accounts, and of each address).
- A session is a random id checked against ``sessions``; it ends after ``IDLE`` without
  use, ``ABSOLUTE`` after log-in, at log-out, when the password changes or the account is
  disabled — and the footage keys it held end with it (``domain.viewings``).
"""

from __future__ import annotations

import secrets
import threading
import time

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError, VerifyMismatchError

from domain.errors import Refused
from domain.times import now_iso

try:
    from argon2.exceptions import InvalidHashError
except ImportError:  # argon2-cffi before 23.1, such as Debian trixie's 21.1 (the image's)
    from argon2.exceptions import InvalidHash as InvalidHashError

IDLE = 15 * 60
ABSOLUTE = 10 * 3600
SLOW_AFTER = 5  # failures before answers slow down
LOCK_AFTER = 10  # failures before the account locks
LOCK_SECONDS = 30 * 60
ADDRESS_LIMIT = 30  # failures from one address within LOCK_SECONDS
MIN_PASSWORD = 12

# Argon2id with RFC 9106's low-memory profile, stated here: argon2-cffi's defaults changed in
# 21.2, and the image's apt (Debian trixie) ships 21.1, whose defaults are t=2, m=100 MiB, p=8.
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16, type=Type.ID)
_DUMMY_HASH = _hasher.hash("an unused password, to spend the same time on unknown names")


class LoginRefused(Refused, PermissionError):
    """A log-in refused: ``login.failed`` or ``login.locked`` (401)."""

    status = 401


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str, confirm: str | None = None) -> str | None:
    """What is wrong with a new password (a message key), or None."""
    if len(password) < MIN_PASSWORD:
        return "password.too_short"
    if confirm is not None and password != confirm:
        return "password.mismatch"
    return None


class Guard:
    """Failures for names that are not accounts, and per address: kept in memory (one per
    web application), so that an unknown name is slowed and "locked" exactly like a real
    one, and one address cannot try name after name."""

    def __init__(self, limit: int = 2000):
        self._lock = threading.Lock()
        self._items: dict[str, tuple[int, float]] = {}
        self._limit = limit

    def failures(self, key: str) -> int:
        """Recent failures counted under ``key`` (an address, with what was tried)."""
        with self._lock:
            count, since = self._items.get(key, (0, 0.0))
            return count if time.time() - since < LOCK_SECONDS else 0

    def fail(self, key: str) -> int:
        """One more failure under ``key``; returns how many there have been recently."""
        with self._lock:
            count, since = self._items.get(key, (0, time.time()))
            if time.time() - since >= LOCK_SECONDS:
                count, since = 0, time.time()
            self._items[key] = (count + 1, since)
            if len(self._items) > self._limit:
                self._items.pop(next(iter(self._items)))
            return count + 1


def slow_down(failures: int) -> None:
    if failures >= SLOW_AFTER:
        time.sleep(min(2 ** (failures - SLOW_AFTER), 8))  # brute force gets slower with every try


def authenticate(ctx, username: str, password: str, address: str) -> int:
    """The account's id, or :class:`LoginRefused`; failures are counted, slowed, locked and logged.

    Unknown names take the same time, get the same answers and lock the same way, so a
    name cannot be probed. Counting is atomic: parallel guesses are all counted.
    """
    db, guard = ctx.db, ctx.guard
    by_address = f"address:{address}"
    if guard.failures(by_address) >= ADDRESS_LIMIT:
        ctx.log("login.refused", subject=username[:64], detail={"reason": "too many failures from this address"},
                actor="anonymous")
        raise LoginRefused("login.locked")
    row = db.one("SELECT id, password_hash, locked_until, disabled_at FROM users WHERE username = ?", (username,))
    if row is None or row["disabled_at"]:
        verify(_DUMMY_HASH, password)
        guard.fail(by_address)
        failures = guard.fail(f"name:{username}")
        ctx.log("login.failed", subject=username[:64], detail={"failures": failures}, actor="anonymous")
        if failures >= LOCK_AFTER:
            raise LoginRefused("login.locked")
        slow_down(failures)
        raise LoginRefused("login.failed")
    if row["locked_until"] and row["locked_until"] > time.time():
        ctx.log("login.refused", subject=username, detail={"reason": "locked"}, actor="anonymous")
        raise LoginRefused("login.locked")
    if not verify(row["password_hash"], password):
        guard.fail(by_address)
        failures = count_failure(ctx, row["id"], username)
        if failures >= LOCK_AFTER:
            raise LoginRefused("login.locked")
        slow_down(failures)
        raise LoginRefused("login.failed")
    with db.transaction():
        locked = db.scalar("SELECT locked_until FROM users WHERE id = ?", (row["id"],))
        if locked and locked > time.time():  # locked by a parallel guess meanwhile
            raise LoginRefused("login.locked")
        db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row["id"],))
        if _hasher.check_needs_rehash(row["password_hash"]):
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"]))
    return row["id"]


def count_failure(ctx, user_id: int, username: str) -> int:
    """One more wrong password for ``user_id``; locks the account at the limit. Logged."""
    db = ctx.db
    with db.transaction():
        failures = db.scalar("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ? RETURNING failed_logins",
                             (user_id,))
        if failures >= LOCK_AFTER:
            db.execute("UPDATE users SET locked_until = ? WHERE id = ?", (time.time() + LOCK_SECONDS, user_id))
    ctx.log("login.failed", subject=username, detail={"failures": failures}, actor="anonymous")
    if failures == LOCK_AFTER:
        ctx.log("login.locked", subject=username, detail={"minutes": LOCK_SECONDS // 60}, actor="anonymous")
    return failures


def check_own_password(ctx, password: str) -> bool:
    """Re-confirm the acting person's password (a password change, adding a manager): wrong
    answers count towards the lock as log-in failures do."""
    hashed = ctx.db.scalar("SELECT password_hash FROM users WHERE id = ?", (ctx.actor.id,))
    if verify(hashed, password):
        return True
    count_failure(ctx, ctx.actor.id, ctx.actor.username)
    return False


# -- sessions ----------------------------------------------------------------------------------

def start_session(db, user_id: int, address: str) -> str:
    """A new session for ``user_id``: its id (the cookie carries it, signed)."""
    sid = secrets.token_urlsafe(32)
    now = time.time()
    db.execute("INSERT INTO sessions (id, user_id, created_at, last_seen, remote_addr) VALUES (?, ?, ?, ?, ?)",
               (sid, user_id, now, now, address))
    return sid


def end_session(ctx, sid: str, reason: str) -> None:
    """End a session, and the viewings opened in it (their keys are dropped)."""
    ctx.db.execute("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
                   (time.time(), reason, sid))
    if ctx.viewings is not None:
        ctx.viewings.drop_keys_of_session(ctx, sid)


def session_user(ctx, sid: str, *, touch: bool, enabled) -> int | None:
    """The account id of a live session, or None (an ended, idle or expired one is ended
    here, and one whose account is no longer ``enabled(user_id)``). ``touch``: a person at the keyboard, not a page polling, keeps it alive —
    written at most every half minute (an SD card's writes)."""
    db = ctx.db
    row = db.one("SELECT user_id, created_at, last_seen, ended_at FROM sessions WHERE id = ?", (sid,))
    now = time.time()
    if row is None or row["ended_at"] is not None:
        return None
    reason = "idle" if now - row["last_seen"] > IDLE else "expired" if now - row["created_at"] > ABSOLUTE else None
    if reason:
        end_session(ctx, sid, reason)
        return None
    if not enabled(row["user_id"]):
        end_session(ctx, sid, "account disabled")
        return None
    if touch and now - row["last_seen"] > 30:
        db.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (now, sid))
    return row["user_id"]


def open_sessions(db, user_id: int) -> list[str]:
    return [r["id"] for r in db.all("SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL", (user_id,))]


def change_password(ctx, old: str, new: str, confirm: str) -> list[str]:
    """Change the acting person's password; a manager's key is re-wrapped under the new one.
    Returns the sessions that were open, which end with the old password (the caller ends
    them and starts a new one)."""
    problem = password_problem(new, confirm)
    if not check_own_password(ctx, old):
        problem = "password.wrong"
    if problem:
        raise Refused(problem)
    others = open_sessions(ctx.db, ctx.actor.id)
    ctx.log("user.password_change", subject=ctx.actor.username, detail={"sessions_ended": len(others)})
    if ctx.actor.is_manager:
        ctx.keys.rewrap_manager(ctx.actor.username, old, new)
    ctx.db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (hash_password(new), ctx.actor.id))
    for sid in others:  # every session, this one included, ends with the old password
        end_session(ctx, sid, "password changed")
    return others


def create_first_manager(db, *, username: str, display_name: str, section: str, password: str) -> int:
    """The first manager and their section (the first-run page): returns the new id."""
    with db.transaction():
        section_id = db.insert("INSERT INTO sections (name, created_at) VALUES (?, ?)", (section, now_iso()))
        return db.insert("INSERT INTO users (username, display_name, password_hash, section_id, is_manager, created_at)"
                         " VALUES (?, ?, ?, ?, 1, ?)", (username, display_name, hash_password(password), section_id,
                                                        now_iso()))
