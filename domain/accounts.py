"""Log-in and sessions: passwords, failures counted and locked, sessions that end.

- Passwords are hashed with Argon2id (argon2-cffi); old hashes are upgraded at log-in.
- Repeated failures hold back the browser session and the address they come from, for
  longer each time, and are logged; the account itself is not locked, so a guesser cannot
  keep its owner out (:class:`Guard`). An unknown name costs the same Argon2 work as a
  wrong password and gets the same answer, so names cannot be probed.
- A session is a random id checked against ``sessions``; it ends after ``IDLE`` without
  use, ``ABSOLUTE`` after log-in, at log-out, when the password changes or the account is
  disabled — and the footage keys it held end with it (``domain.viewings``).
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timezone

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
SLOW_AFTER = 5  # wrong set-up or enrollment codes before answers slow down
LOCK_SECONDS = 30 * 60  # failures are forgotten this long after the last one (and its wait)
ADDRESS_LIMIT = 30  # wrong set-up or enrollment codes from one address within LOCK_SECONDS
SESSION_FREE = 5  # failed log-ins from one browser session before it must wait, longer each time
ADDRESS_FREE = 20  # from one address (a city office's computers may share it), the same
THROTTLE_FIRST = 15  # seconds: the first wait, doubled with each failure after it
THROTTLE_LONGEST = 15 * 60  # the longest wait
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
    """Failures counted per key (a client's address, a browser's session, a name that is not an
    account), in memory (one per web application): enough to slow a guesser down; the
    accounts' own counts are in the registers.

    The log-in counts with ``fail(key, free)``: after ``free`` failures under a key, each
    further one shuts that key for a time that doubles with each (:func:`wait`), and
    ``until(key)`` says when it may try again — the guesser waits, not the person whose name
    they guess."""

    def __init__(self, limit: int = 2000, clock=None):
        self._lock = threading.Lock()
        self._items: dict[str, tuple[int, float, float]] = {}  # key: (failures, last failure, shut until)
        self._limit = limit
        self.clock = clock  # what "now" is (None: the system's time): a test moves it instead of waiting

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.time()

    def _get(self, key: str) -> tuple[int, float, float]:
        count, last, until = self._items.get(key, (0, 0.0, 0.0))
        return (count, last, until) if self.now() - max(last, until) < LOCK_SECONDS else (0, 0.0, 0.0)

    def failures(self, key: str) -> int:
        """Recent failures counted under ``key`` (an address, with what was tried)."""
        with self._lock:
            return self._get(key)[0]

    def until(self, key: str) -> float:
        """When ``key`` may try again (0: it may now)."""
        with self._lock:
            until = self._get(key)[2]
            return until if until > self.now() else 0.0

    def fail(self, key: str, free: int | None = None) -> int:
        """One more failure under ``key``; returns how many there have been recently. With
        ``free``, a failure beyond the first ``free`` shuts the key for ``wait(...)`` seconds."""
        with self._lock:
            count, _last, until = self._get(key)
            now = self.now()
            count += 1
            if free is not None and count > free:
                until = now + wait(count - free)
            self._items.pop(key, None)
            self._items[key] = (count, now, until)
            if len(self._items) > self._limit:
                self._items.pop(next(iter(self._items)))
            return count

    @staticmethod
    def keys_for(address: str, session: str) -> list[str]:
        """What the log-in counts a failure under: the client's address and its browser session."""
        return [f"address:{address}"] + ([f"session:{session}"] if session else [])


def wait(beyond: int) -> float:
    """How long a key is shut after its ``beyond``-th failure past the free ones: it doubles."""
    return float(min(THROTTLE_FIRST * 2 ** (beyond - 1), THROTTLE_LONGEST))


def slow_down(failures: int) -> None:
    if failures >= SLOW_AFTER:
        time.sleep(min(2 ** (failures - SLOW_AFTER), 8))  # brute force gets slower with every try


def authenticate(ctx, username: str, password: str, address: str, session: str = "") -> int:
    """The account's id, or :class:`LoginRefused`; failures are counted and logged.

    A guess slows down the guesser, not the account: failures are counted per client address
    and per browser session (``session``, a random id the log-in page gave it), and one of
    those that keeps failing is refused for a while (``login.locked``) — even the right
    password from there. The account itself is never locked by guesses, so no one can keep
    its owner out: the right password from elsewhere logs in.

    A wrong password, an unknown or disabled name cost the same Argon2 verification and get
    the same answer, so a name cannot be probed by its answer or by its time.
    """
    db, guard = ctx.db, ctx.guard
    keys = dict(zip(("address", "session"), Guard.keys_for(address, session) + [""]))
    shut = max((guard.until(k) for k in keys.values() if k), default=0.0)
    if shut:
        ctx.refused("login.locked", username[:64])  # not a guess (nothing was tried): noted, at most once a minute
        raise LoginRefused("login.locked")
    row = db.one("SELECT id, password_hash, disabled_at FROM users WHERE username = ?", (username,))
    known = row is not None and not row["disabled_at"]
    if verify(row["password_hash"] if known else _DUMMY_HASH, password) and known:
        with db.transaction():
            db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row["id"],))
            if _hasher.check_needs_rehash(row["password_hash"]):
                db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"]))
        return row["id"]
    if known:
        count_failure(ctx, row["id"], username)
    else:
        failures = guard.fail(f"name:{username}")
        ctx.log("login.failed", subject=username[:64], detail={"failures": failures}, actor="anonymous")
    held = None
    for by, key in keys.items():
        free = SESSION_FREE if by == "session" else ADDRESS_FREE
        if key and guard.fail(key, free) == free + 1 and held is None:
            held = by  # logged once when it begins; what it refuses then is noted as refused access
    if held is not None:
        until = datetime.fromtimestamp(guard.until(keys[held]) or guard.now(), timezone.utc).astimezone()
        ctx.log("login.locked", subject=username[:64], actor="anonymous",
                detail={"by": held, "address": address, "until": until.isoformat(timespec="seconds")})
    if any(guard.until(k) for k in keys.values() if k):
        raise LoginRefused("login.locked")
    raise LoginRefused("login.failed")


def count_failure(ctx, user_id: int, username: str) -> int:
    """One more wrong password for ``user_id`` (the account's count, for its owner and the
    report: it locks nothing). Logged."""
    failures = ctx.db.scalar("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ? RETURNING failed_logins",
                             (user_id,))
    ctx.log("login.failed", subject=username, detail={"failures": failures}, actor="anonymous")
    return failures


def check_own_password(ctx, password: str) -> bool:
    """Re-confirm the acting person's password (a password change, adding a manager): wrong
    answers are counted as log-in failures are, and after ``SESSION_FREE`` of them the
    check is refused for a while, for longer each time (only the person's own sessions can
    ask, so this keeps no one else out)."""
    key = f"reconfirm:{ctx.actor.id}"
    if ctx.guard is not None and ctx.guard.until(key):
        raise Refused("password.held_back", 403)
    hashed = ctx.db.scalar("SELECT password_hash FROM users WHERE id = ?", (ctx.actor.id,))
    if verify(hashed, password):
        return True
    count_failure(ctx, ctx.actor.id, ctx.actor.username)
    if ctx.guard is not None:
        ctx.guard.fail(key, SESSION_FREE)
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
