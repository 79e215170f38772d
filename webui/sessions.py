"""Who is asking: the session cookie and the person it stands for (``g.user``), log-in and
log-out as the page and the API both do them.

The rules — Argon2id, guessers held back by address and browser, unknown names answered
alike, sessions that end — are ``domain.accounts``'; here they meet the browser. A session is a random id
in a signed, HttpOnly, SameSite=Strict cookie (Secure over HTTPS), checked on every request.
"""

from __future__ import annotations

import secrets

from flask import g, request, session

from domain import accounts, people
from webui.db import get_db
from webui.services import audit, context

PASSIVE = {"api.status", "api.update_get"}  # polled by open pages: they do not keep a session alive


def load_user(user_id: int) -> people.Person | None:
    return people.load(get_db(), user_id, context().device)


def has_users() -> bool:
    return people.anyone(get_db())


def current_session() -> None:
    """Before every request: ``g.user`` from a live session, or None."""
    g.user = None
    g.session_id = None
    sid = session.get("sid")
    if not sid:
        return
    found: list[people.Person | None] = []

    def enabled(user_id: int) -> bool:
        found.append(load_user(user_id))
        return found[-1] is not None

    if accounts.session_user(context(), sid, touch=request.endpoint not in PASSIVE, enabled=enabled) is None:
        session.clear()
        return
    g.user, g.session_id = found[-1], sid


def start_session(user_id: int) -> str:
    sid = accounts.start_session(get_db(), user_id, request.remote_addr or "")
    session.clear()
    session["sid"] = sid
    session.permanent = False  # gone when the browser closes; the server ends it earlier still
    return sid


def end_session(sid: str, reason: str) -> None:
    accounts.end_session(context(), sid, reason)


def log_in(username: str, password: str) -> people.Person:
    """Check the password and start a session (both the page and the API log in here)."""
    from webui.services import state

    state().refresh_people()  # an operator the hub designated a moment ago can sign on now
    # Failures are counted per browser too (a random id in its signed cookie): a city office's
    # computers may share one address, and one guessing browser must not hold back the rest.
    guesser = session.get("guesser") or secrets.token_urlsafe(16)
    session["guesser"] = guesser
    user_id = accounts.authenticate(context(), username, password, request.remote_addr or "", guesser)
    g.user = load_user(user_id)
    audit("login", subject=g.user.username)  # logged first: no session the log does not know of
    start_session(user_id)
    return g.user


def log_out() -> None:
    """End this session (and the footage keys it held); the page and the API log out here."""
    sid = session.get("sid")
    if sid:
        if getattr(g, "user", None):
            audit("logout", subject=g.user.username)
        end_session(sid, "logout")
    session.clear()


def home_for(user: people.Person) -> str:
    """Where a person starts, by their roles (the site decides)."""
    from webui.services import state

    return state().home_for(user)
