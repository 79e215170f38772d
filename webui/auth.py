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

import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for

from webui.db import get_db, transaction
from webui.permissions import PUBLIC, permission

bp = Blueprint("auth", __name__)

IDLE = 15 * 60
ABSOLUTE = 10 * 3600
SLOW_AFTER = 5  # failures before answers slow down
LOCK_AFTER = 10  # failures before the account locks
LOCK_SECONDS = 30 * 60
MIN_PASSWORD = 12
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")

_hasher = PasswordHasher()  # Argon2id, argon2-cffi's defaults (t=3, m=64 MiB, p=4)
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
    session.permanent = True
    return sid


def audit(action: str, *, subject: str = "", purpose: str = "", detail: dict | None = None, actor: str | None = None):
    """Write to the device's audit log (through the recorder, its only writer)."""
    from webui import control

    if actor is None:
        actor = g.user.username if getattr(g, "user", None) else "anonymous"
    control().request("audit", by=actor, action=action, subject=subject, purpose=purpose, detail=detail or {})


# -- log-in ------------------------------------------------------------------------------------

class LoginRefused(Exception):
    def __init__(self, key: str, wait: float = 0.0):
        super().__init__(key)
        self.key = key
        self.wait = wait


def authenticate(username: str, password: str) -> User:
    """The user, or :class:`LoginRefused`; failures are counted, slowed, locked and logged."""
    db = get_db()
    row = db.execute("SELECT id, password_hash, failed_logins, locked_until, disabled_at FROM users WHERE username = ?",
                     (username,)).fetchone()
    now = time.time()
    if row is None or row["disabled_at"]:
        _verify(_DUMMY_HASH, password)
        audit("login.failed", subject=username[:64], detail={"reason": "unknown name"}, actor="anonymous")
        raise LoginRefused("login.failed")
    if row["locked_until"] and row["locked_until"] > now:
        audit("login.refused", subject=username, detail={"reason": "locked"}, actor="anonymous")
        raise LoginRefused("login.locked", row["locked_until"] - now)
    if not _verify(row["password_hash"], password):
        failures = row["failed_logins"] + 1
        locked_until = now + LOCK_SECONDS if failures >= LOCK_AFTER else None
        with transaction(db):
            db.execute("UPDATE users SET failed_logins = ?, locked_until = ? WHERE id = ?",
                       (failures, locked_until, row["id"]))
        audit("login.failed", subject=username, detail={"failures": failures}, actor="anonymous")
        if locked_until:
            audit("login.locked", subject=username, detail={"minutes": LOCK_SECONDS // 60}, actor="anonymous")
            raise LoginRefused("login.locked", LOCK_SECONDS)
        if failures >= SLOW_AFTER:
            time.sleep(min(2 ** (failures - SLOW_AFTER), 16))  # brute force gets slower with every try
        raise LoginRefused("login.failed")
    if _hasher.check_needs_rehash(row["password_hash"]):
        db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"]))
    db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row["id"],))
    user = load_user(row["id"])
    assert user is not None
    return user


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
        password = request.form.get("password", "")
        try:
            user = authenticate(username, password)
        except LoginRefused as refused:
            flash(refused.key, "error")
            return render_template("auth/login.html", username=username), 401
        start_session(user.id)
        g.user = user
        audit("login", subject=user.username)
        return redirect(_local_path(request.form.get("next") or home_for(user)))
    return render_template("auth/login.html", username="", next=target)


@bp.post("/logout")
@permission(PUBLIC)
def logout():
    sid = session.get("sid")
    if sid:
        if getattr(g, "user", None):
            audit("logout", subject=g.user.username)
        end_session(sid, "logout")
    session.clear()
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
    """Change one's own password (a manager's also re-wraps their footage key)."""
    if request.method == "POST":
        old, new, confirm = (request.form.get(k, "") for k in ("old", "new", "confirm"))
        problem = check_password_rules(new, confirm)
        row = get_db().execute("SELECT password_hash FROM users WHERE id = ?", (g.user.id,)).fetchone()
        if not _verify(row["password_hash"], old):
            problem = "password.wrong"
        if problem:
            flash(problem, "error")
            return render_template("auth/account.html"), 400
        if g.user.is_manager:
            from webui import keys

            keys.rewrap_manager(g.user.username, old, new)
        get_db().execute("UPDATE users SET password_hash = ? WHERE id = ?", (hash_password(new), g.user.id))
        audit("user.password_change", subject=g.user.username)
        flash("password.changed", "info")
        return redirect(url_for("auth.account"))
    return render_template("auth/account.html")
