"""What every kiroku web application has, whichever site it serves — a device's pages or the
city hub's: its configuration's defaults, the Host check, sessions, CSRF, the pages' and the
API's answers to a refusal, the language, the security headers, deny-by-default permissions.

The site itself (``app.extensions["kiroku"]``: ``webui.services.State`` on a device,
``hub.web.site.HubSite`` at the hub) says where the registers are and what the workflows'
services are; the pages of ``webui`` serve either.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, abort, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFProtect

from domain.accounts import ABSOLUTE
from domain.exports import needs_passphrase
from firmware.fsutil import atomic_write, makedirs_durable
from webui import i18n
from webui.actions import IdConverter, Request
from webui.permissions import PUBLIC, enforce, permission


def configure(app: Flask, test_config: dict | None, **defaults) -> None:
    """The application's configuration: the defaults every site has, the site's ``defaults``,
    then ``test_config``; the session cookie as HTTPS allows."""
    app.config.from_mapping({
        "KIROKU_HTTPS": False,
        "KIROKU_HOSTS": ("127.0.0.1", "localhost", "::1"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "PERMANENT_SESSION_LIFETIME": timedelta(seconds=ABSOLUTE),
        "MAX_CONTENT_LENGTH": 12 * 2**20,  # a scanned form at most
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
        **defaults,
    })
    if test_config:
        app.config.update(test_config)
    app.request_class = Request
    app.url_map.converters["int"] = IdConverter  # before any route: every id in a path is one the database can hold
    app.config["SESSION_COOKIE_SECURE"] = bool(app.config["KIROKU_HTTPS"])
    if app.config["KIROKU_HTTPS"]:
        app.config["SESSION_COOKIE_NAME"] = "__Host-kiroku"  # Secure, host-only, path /: not settable by a sibling host


def secret_key(folder: Path) -> bytes:
    """The key that signs session cookies (``folder/secret_key``): made once per site, readable
    only by the web UI."""
    path = Path(folder) / "secret_key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        makedirs_durable(path.parent)
        atomic_write(path, secrets.token_bytes(32), mode=0o600)
        return path.read_bytes()


def local_path(target: str) -> str:
    """``target`` if it is a path on this site, else "/": never a way off-site."""
    if not target.startswith("/") or "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return "/"
    return target


def _is_address(host: str | None) -> bool:
    """Whether a Host header's name is an IP address (v4, or v6 as written in brackets;
    no zone: browsers send none, and Python would take any text after the %)."""
    if not host or "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def when(text) -> str:
    """An instant given as ISO 8601, as a page shows it to a person: local time to the second,
    "2026-12-07 12:45:32" ('' for none; what does not parse, as it is)."""
    if not text:
        return ""
    try:
        return datetime.fromisoformat(str(text)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(text)


def install(app: Flask, *, before_csrf=(), api_blueprint=None, brand: str = "app.title") -> CSRFProtect:
    """Everything common, in order: the Host check, the session, ``before_csrf`` (what must
    run before the CSRF check reads the form), CSRF (the API's blueprint checks its own
    header instead), the answers to refusals, the language, the headers. Register the site's
    blueprints after this, then call :func:`finish`. ``brand``: the key of the site's name in
    every page's header (a device's, or the hub's)."""
    from webui import actions, db, sessions

    @app.before_request
    def only_our_hosts():
        # A page on another site can point a name of its own at 127.0.0.1 (DNS rebinding);
        # the browser then sends that name as Host. Answer only to the names we are, and to
        # an address typed as one (the console shows the device's; a rebinding page's Host is
        # always its own name, never an address).
        try:
            host = urlsplit("//" + request.host).hostname
        except ValueError:
            host = None
        if host not in app.config["KIROKU_HOSTS"] and not _is_address(host):
            abort(400, description="unknown host name")
        return None

    app.before_request(sessions.current_session)
    for hook in before_csrf:
        app.before_request(hook)
    csrf = CSRFProtect(app)
    if api_blueprint is not None:
        csrf.exempt(api_blueprint)  # the API's token comes in the X-CSRFToken header only (webui/api.py)
    actions.install(app)
    app.teardown_appcontext(db.close_db)
    app.jinja_env.globals.update(t=i18n.t, word=i18n.word, lang=i18n.current_language, brand=brand, key_lock=key_lock,
                                 passphrase_needed=passphrase_needed)
    app.jinja_env.filters["when"] = when

    @app.context_processor
    def who():
        return {"user": getattr(g, "user", None)}

    @app.route("/")
    @permission(PUBLIC)
    def index():
        if getattr(g, "user", None) is None:
            return redirect(url_for("auth.login"))
        return redirect(sessions.home_for(g.user))

    @app.route("/favicon.ico")
    @permission(PUBLIC)
    def favicon():
        """What a browser asks for before it reads a page's icon link (it was a 404 in every log)."""
        return redirect(url_for("static", filename="favicon.svg"), code=301)

    @app.route("/lang/<code>")
    @permission(PUBLIC)
    def set_language(code: str):
        response = redirect(local_path(request.args.get("next", "/")))
        if code in i18n.LANGUAGES:
            response.set_cookie("lang", code, max_age=365 * 86400, samesite="Strict", httponly=True,
                                secure=bool(app.config["KIROKU_HTTPS"]))
        return response

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # same-origin: Flask-WTF checks the Referer of HTTPS form posts against our host.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; media-src 'self' blob:;"
            " frame-ancestors 'none'; form-action 'self'",
        )
        if app.config["KIROKU_HTTPS"]:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.after_request
    def no_caching_of_personal_pages(response):
        if getattr(g, "user", None) is not None or request.path.startswith("/setup"):
            response.headers["Cache-Control"] = "no-store"
        return response

    return csrf


def key_lock() -> str | None:
    """Until when the signed-in manager's key is locked (local time, as the page says it), or
    None: the pages where the passphrase is typed say so above the field."""
    from domain import keys
    from webui.services import context

    user = getattr(g, "user", None)
    until = keys.locked_until(context().db, user.username) if user is not None and user.is_manager else None
    return None if until is None else datetime.fromtimestamp(until).strftime("%Y-%m-%d %H:%M")


def passphrase_needed(job) -> bool:
    """For the pages: whether taking an export's package now needs the passphrase again."""
    return needs_passphrase(job, g.get("session_id") or "")


def finish(app: Flask) -> None:
    """After every blueprint: deny by default (a view without a permission stops the start)."""
    enforce(app)


def render_error(message_key: str, detail: str, status: int):
    return render_template("error.html", message=i18n.t(message_key), detail=detail), status
