"""Who is asking: log-in, sessions, roles, and the first-run page.

- Passwords are hashed with Argon2id (argon2-cffi); old hashes are upgraded at log-in.
- Repeated failures slow the answer down and then lock the account; both are logged.
  An unknown name costs the same time as a wrong password, so names cannot be probed.
- A session is a random id in a signed, HttpOnly, SameSite=Strict cookie (Secure over
  HTTPS), checked against ``sessions`` on every request; it ends after ``IDLE`` without
  use, ``ABSOLUTE`` after log-in, or at log-out — and whatever footage key it held is
  dropped then (``webui.viewing``).
- No default password exists: until the first manager is created, every page leads to
  the first-run page, and that page exists only until then.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError, VerifyMismatchError
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for

from webui.db import get_db, transaction
from webui.permissions import PUBLIC, permission

try:
    from argon2.exceptions import InvalidHashError
except ImportError:  # argon2-cffi before 23.1, such as Debian trixie's 21.1 (the image's)
    from argon2.exceptions import InvalidHash as InvalidHashError

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)

IDLE = 15 * 60
PASSIVE = {"api.status", "api.update_get"}  # polled by open pages
ABSOLUTE = 10 * 3600
SLOW_AFTER = 5  # failures before answers slow down
LOCK_AFTER = 10  # failures before the account locks
LOCK_SECONDS = 30 * 60
MIN_PASSWORD = 12
USERNAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # the key store's rule: a manager's key file bears the name

# Argon2id with RFC 9106's low-memory profile, stated here: argon2-cffi's defaults changed in
# 21.2, and the image's apt (Debian trixie) ships 21.1, whose defaults are t=2, m=100 MiB, p=8.
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16, type=Type.ID)
_DUMMY_HASH = _hasher.hash("an unused password, to spend the same time on unknown names")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_rules(password: str, confirm: str | None = None) -> str | None:
    """What is wrong with a new password, or None."""
    if len(password) < MIN_PASSWORD:
        return "password.too_short"
    if confirm is not None and password != confirm:
        return "password.mismatch"
    return None


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    section_id: int | None
    section: str | None
    is_manager: bool
    is_section_head: bool
    is_operator: bool  # of this device

    @property
    def roles(self) -> set[str]:
        roles = set()
        if self.is_manager:
            roles.add("manager")
        if self.is_section_head:
            roles.add("section_head")
        if self.is_operator:
            roles.add("operator")
        return roles


def load_user(user_id: int) -> User | None:
    db = get_db()
    row = db.execute(
        "SELECT u.id, u.username, u.display_name, u.section_id, s.name AS section, u.is_manager, u.is_section_head,"
        " EXISTS (SELECT 1 FROM operators o WHERE o.user_id = u.id AND o.device = ? AND o.revoked_at IS NULL)"
        " AS is_operator FROM users u LEFT JOIN sections s ON s.id = u.section_id"
        " WHERE u.id = ? AND u.disabled_at IS NULL",
        (current_app.config["KIROKU_DEVICE"], user_id)).fetchone()
    if row is None:
        return None
    return User(row["id"], row["username"], row["display_name"], row["section_id"], row["section"],
                bool(row["is_manager"]), bool(row["is_section_head"]), bool(row["is_operator"]))


def has_users() -> bool:
    return get_db().execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None


def current_session() -> None:
    """Before every request: ``g.user`` from a live session, or None."""
    g.user = None
    g.session_id = None
    sid = session.get("sid")
    if not sid:
        return
    db = get_db()
    row = db.execute("SELECT user_id, created_at, last_seen, ended_at FROM sessions WHERE id = ?", (sid,)).fetchone()
    now = time.time()
    if row is None or row["ended_at"] is not None:
        session.clear()
        return
    reason = "idle" if now - row["last_seen"] > IDLE else "expired" if now - row["created_at"] > ABSOLUTE else None
    if reason:
        end_session(sid, reason)
        session.clear()
        return
    user = load_user(row["user_id"])
    if user is None:
        end_session(sid, "account disabled")
        session.clear()
        return
    # A page polling for status is not a person at the keyboard: it does not keep the
    # session alive. Activity is written at most every half minute (an SD card's writes).
    if request.endpoint not in PASSIVE and now - row["last_seen"] > 30:
        db.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (now, sid))
    g.user, g.session_id = user, sid


def end_session(sid: str, reason: str) -> None:
    db = get_db()
    db.execute("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
               (time.time(), reason, sid))
    from webui import viewing

    viewing.drop_keys_of_session(sid)


def start_session(user_id: int) -> str:
    sid = secrets.token_urlsafe(32)
    now = time.time()
    get_db().execute("INSERT INTO sessions (id, user_id, created_at, last_seen, remote_addr) VALUES (?, ?, ?, ?, ?)",
                     (sid, user_id, now, now, request.remote_addr or ""))
    session.clear()
    session["sid"] = sid
    session.permanent = False  # gone when the browser closes; the server ends it earlier still
    return sid


def audit(action: str, *, subject: str = "", purpose: str = "", detail: dict | None = None,
          actor: str | None = None) -> int:
    """Write to the device's audit log (through the recorder, its only writer); returns the
    entry's number."""
    from webui import control

    if actor is None:
        actor = g.user.username if getattr(g, "user", None) else "anonymous"
    return control().request("audit", by=actor, action=action, subject=subject, purpose=purpose,
                             detail=detail or {})["seq"]


REFUSAL_EVERY = 60.0  # seconds: one audit entry per person and kind of refusal, the rest counted
_refusals: dict[tuple[str, str, str], list] = {}
_refusals_lock = threading.Lock()


def audit_refusal(what: str, subject: str = "") -> None:
    """A logged-in person was refused something (a page their role may not use; a request or
    a viewing that is not theirs, or none at all — answered alike): in the audit log, so that
    an auditor sees who tried what. At most one entry a minute for each person and kind, the
    others counted into the next, so a script cannot fill the signed log or wear the card.
    Best effort: a refusal stands even when the log cannot be written just then."""
    user = g.user.username if getattr(g, "user", None) else "anonymous"
    key, now = (str(current_app.config.get("KIROKU_DATA")), user, what), time.monotonic()
    with _refusals_lock:
        seen = _refusals.get(key)
        if seen is not None and now - seen[0] < REFUSAL_EVERY:
            seen[1] += 1
            return
        if len(_refusals) > 10_000:
            _refusals.clear()
        _refusals[key] = [now, 0]
    detail = {"what": what, "method": request.method, "path": request.path[:200]}
    if seen is not None and seen[1]:
        detail["more_since_last_entry"] = seen[1]
    try:
        audit("access.refused", subject=subject, detail=detail)
    except Exception as exc:  # the recorder restarting: the process log keeps it
        log.warning("could not log a refusal of %s: %s", what, exc)


# -- log-in ------------------------------------------------------------------------------------

class LoginRefused(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class _Ghosts:
    """Failures for names that are not accounts, and per address: kept in memory, so that an
    unknown name is slowed and "locked" exactly like a real one, and one address cannot try
    name after name."""

    def __init__(self, limit: int = 2000):
        self._lock = threading.Lock()
        self._items: dict[str, tuple[int, float]] = {}
        self._limit = limit

    def failures(self, key: str) -> int:
        with self._lock:
            count, since = self._items.get(key, (0, 0.0))
            return count if time.time() - since < LOCK_SECONDS else 0

    def fail(self, key: str) -> int:
        with self._lock:
            count, since = self._items.get(key, (0, time.time()))
            if time.time() - since >= LOCK_SECONDS:
                count, since = 0, time.time()
            self._items[key] = (count + 1, since)
            if len(self._items) > self._limit:
                self._items.pop(next(iter(self._items)))
            return count + 1


_ghosts = _Ghosts()
ADDRESS_LIMIT = 30  # failures from one address within LOCK_SECONDS


def address_failures(key: str) -> int:
    """Recent failures counted under ``key`` (an address, with what was tried)."""
    return _ghosts.failures(key)


def address_failed(key: str) -> int:
    """One more failure under ``key``; returns how many there have been recently."""
    return _ghosts.fail(key)


def slow_down(failures: int) -> None:
    if failures >= SLOW_AFTER:
        time.sleep(min(2 ** (failures - SLOW_AFTER), 8))  # brute force gets slower with every try


def authenticate(username: str, password: str) -> User:
    """The user, or :class:`LoginRefused`; failures are counted, slowed, locked and logged.

    Unknown names take the same time, get the same answers and lock the same way, so a
    name cannot be probed. Counting is atomic: parallel guesses are all counted.
    """
    db = get_db()
    address = f"address:{request.remote_addr or ''}"
    if _ghosts.failures(address) >= ADDRESS_LIMIT:
        audit("login.refused", subject=username[:64], detail={"reason": "too many failures from this address"},
              actor="anonymous")
        raise LoginRefused("login.locked")
    row = db.execute("SELECT id, password_hash, locked_until, disabled_at FROM users WHERE username = ?",
                     (username,)).fetchone()
    if row is None or row["disabled_at"]:
        _verify(_DUMMY_HASH, password)
        _ghosts.fail(address)
        failures = _ghosts.fail(f"name:{username}")
        audit("login.failed", subject=username[:64], detail={"failures": failures}, actor="anonymous")
        if failures >= LOCK_AFTER:
            raise LoginRefused("login.locked")
        slow_down(failures)
        raise LoginRefused("login.failed")
    if row["locked_until"] and row["locked_until"] > time.time():
        audit("login.refused", subject=username, detail={"reason": "locked"}, actor="anonymous")
        raise LoginRefused("login.locked")
    if not _verify(row["password_hash"], password):
        _ghosts.fail(address)
        failures = count_failure(row["id"], username)
        if failures >= LOCK_AFTER:
            raise LoginRefused("login.locked")
        slow_down(failures)
        raise LoginRefused("login.failed")
    with transaction(db):
        locked = db.execute("SELECT locked_until FROM users WHERE id = ?", (row["id"],)).fetchone()[0]
        if locked and locked > time.time():  # locked by a parallel guess meanwhile
            raise LoginRefused("login.locked")
        db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row["id"],))
        if _hasher.check_needs_rehash(row["password_hash"]):
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"]))
    user = load_user(row["id"])
    assert user is not None
    return user


def count_failure(user_id: int, username: str) -> int:
    """One more wrong password for ``user_id``; locks the account at the limit. Logged."""
    db = get_db()
    with transaction(db):
        failures = db.execute("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ? RETURNING failed_logins",
                              (user_id,)).fetchone()[0]
        if failures >= LOCK_AFTER:
            db.execute("UPDATE users SET locked_until = ? WHERE id = ?", (time.time() + LOCK_SECONDS, user_id))
    audit("login.failed", subject=username, detail={"failures": failures}, actor="anonymous")
    if failures == LOCK_AFTER:
        audit("login.locked", subject=username, detail={"minutes": LOCK_SECONDS // 60}, actor="anonymous")
    return failures


def check_own_password(password: str) -> bool:
    """Re-confirm the logged-in user's password (password change, adding a manager): wrong
    answers count towards the lock like log-in failures do."""
    row = get_db().execute("SELECT password_hash FROM users WHERE id = ?", (g.user.id,)).fetchone()
    if _verify(row["password_hash"], password):
        return True
    count_failure(g.user.id, g.user.username)
    return False


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@bp.route("/login", methods=["GET", "POST"])
@permission(PUBLIC)
def login():
    if not has_users():
        return redirect(url_for("setup.index"))
    target = request.args.get("next", "")
    if request.method == "POST":
        from webui import _local_path

        username = request.form.get("username", "").strip().lower()
        try:
            user = log_in(username, request.form.get("password", ""))
        except LoginRefused as refused:
            flash(refused.key, "error")
            return render_template("auth/login.html", username=username), 401
        return redirect(_local_path(request.form.get("next") or home_for(user)))
    return render_template("auth/login.html", username="", next=target)


def log_in(username: str, password: str) -> User:
    """Check the password and start a session (both the page and the API log in here)."""
    user = authenticate(username, password)
    g.user = user
    audit("login", subject=user.username)  # logged first: no session the log does not know of
    start_session(user.id)
    return user


def log_out() -> None:
    """End this session (and the footage keys it held); the page and the API log out here."""
    sid = session.get("sid")
    if sid:
        if getattr(g, "user", None):
            audit("logout", subject=g.user.username)
        end_session(sid, "logout")
    session.clear()


@bp.post("/logout")
@permission(PUBLIC)
def logout():
    log_out()
    return redirect(url_for("auth.login"))


def home_for(user: User) -> str:
    if user.is_manager:
        return url_for("admin.dashboard")
    if user.is_operator:
        return url_for("console.index")
    if user.is_section_head:
        return url_for("requests.index")
    return url_for("auth.account")


@bp.route("/account", methods=["GET", "POST"])
@permission("login")
def account():
    """Change one's own password (old, new, confirm); a manager's also re-wraps their footage key.
    Every session ends with the old password, and a new one begins."""
    if request.method == "GET":
        return render_template("auth/account.html")
    from webui.actions import done, fields, refuse

    inputs = fields()
    old, new, confirm = (inputs.get(k) or "" for k in ("old", "new", "confirm"))
    problem = check_password_rules(new, confirm)
    if not check_own_password(old):
        problem = "password.wrong"
    if problem:
        refuse(problem, page=lambda: render_template("auth/account.html"))
    db = get_db()
    others = [r[0] for r in db.execute("SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL",
                                       (g.user.id,))]
    audit("user.password_change", subject=g.user.username, detail={"sessions_ended": len(others)})
    if g.user.is_manager:
        from webui import keys

        keys.rewrap_manager(g.user.username, old, new)
    db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (hash_password(new), g.user.id))
    for sid in others:  # every session, this one included, ends with the old password
        end_session(sid, "password changed")
    g.session_id = start_session(g.user.id)
    from flask_wtf.csrf import generate_csrf

    # The old session's CSRF token went with it: a script gets the new one here.
    return done(url_for("auth.account"), notice="password.changed", sessions_ended=len(others),
                csrf_token=generate_csrf())
