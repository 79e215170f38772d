"""kiroku's web UI: a Flask application (app factory, one blueprint per concern).

It reads the recorder's state and index, and asks it to act — and to write the audit
log — only through the control socket (``firmware.control``); it never touches the
hardware or the recorder's memory. Its registers (people, sessions, requests, provisions,
disclosures) are in ``<data>/web/web.db``, which only this process writes; the workflows
over them are ``domain``'s, and a view parses, acts and answers. The application's state
(the control client, open viewings, export jobs…) is ``app.extensions["kiroku"]``
(``webui.services``). No blueprint imports another.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, abort, g, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect

from domain.accounts import ABSOLUTE
from firmware.control import ControlError
from firmware.fsutil import atomic_write, makedirs_durable
from webui import i18n, services
from webui.permissions import PUBLIC, enforce, permission


def _secret_key(data_dir: Path) -> bytes:
    """The key that signs session cookies: made once per device, readable only by the web UI."""
    path = Path(data_dir) / "web" / "secret_key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        makedirs_durable(path.parent)
        atomic_write(path, secrets.token_bytes(32), mode=0o600)
        return path.read_bytes()


def _local_path(target: str) -> str:
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


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        KIROKU_DATA=os.environ.get("KIROKU_DATA", "data"),
        KIROKU_DEVICE="counter-1",
        KIROKU_SIMULATED=False,  # the virtual counter exists only when the caller says so
        KIROKU_OS_UPDATE="/etc/kiroku/os-update",  # the OS update kiroku-update last installed
        KIROKU_HTTPS=False,
        KIROKU_HOSTS=("127.0.0.1", "localhost", "::1"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=ABSOLUTE),
        MAX_CONTENT_LENGTH=12 * 2**20,  # a scanned form at most
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    if test_config:
        app.config.update(test_config)
    app.config["SESSION_COOKIE_SECURE"] = bool(app.config["KIROKU_HTTPS"])
    if app.config["KIROKU_HTTPS"]:
        app.config["SESSION_COOKIE_NAME"] = "__Host-kiroku"  # Secure, host-only, path /: not settable by a sibling host
    data_dir = Path(app.config["KIROKU_DATA"])
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(data_dir)
    state = services.install(app)

    from webui import db, releases, sessions

    conn = db.connect(data_dir)
    db.migrate(conn)  # warns of a newer release's database
    conn.close()

    app.request_class = releases.Request

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
    # before the CSRF check, which reads the form: how much of it may be read, and where to
    app.before_request(releases.spool_uploads)
    csrf = CSRFProtect(app)
    from webui import api

    # The API checks its own: the token in the X-CSRFToken header only (webui/api.py).
    csrf.exempt(api.bp)

    from webui import (admin, audit_view, auth, calls, console, disclosures, provisions, report, requests, settings,
                       setup, storage, updates, viewing)

    for blueprint in (auth.bp, setup.bp, admin.bp, console.bp, requests.bp, viewing.bp, provisions.bp, disclosures.bp,
                      audit_view.bp, storage.bp, settings.bp, updates.bp, calls.bp, report.bp):
        app.register_blueprint(blueprint)
    api.install(app)  # last: it serves the pages' actions too
    from webui import actions

    actions.install(app)
    app.teardown_appcontext(db.close_db)
    app.teardown_appcontext(db.close_vault_db)
    app.jinja_env.globals.update(t=i18n.t, lang=i18n.current_language)

    @app.context_processor
    def who():
        return {"user": getattr(g, "user", None)}

    @app.route("/")
    @permission(PUBLIC)
    def index():
        if getattr(g, "user", None) is None:
            return redirect(url_for("auth.login"))
        return redirect(sessions.home_for(g.user))

    @app.route("/lang/<code>")
    @permission(PUBLIC)
    def set_language(code: str):
        response = redirect(_local_path(request.args.get("next", "/")))
        if code in i18n.LANGUAGES:
            response.set_cookie("lang", code, max_age=365 * 86400, samesite="Strict", httponly=True,
                                secure=bool(app.config["KIROKU_HTTPS"]))
        return response

    @app.errorhandler(ControlError)
    def recorder_unreachable(exc):
        # Every action is logged by the recorder; without it, nothing is done.
        from flask import render_template

        if request.path.startswith("/api/"):
            return {"error": f"the recorder could not log this action: {exc}", "code": "recorder.unreachable"}, 503
        return render_template("error.html", message=i18n.t("error.recorder"), detail=str(exc)), 503

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

    enforce(app)
    viewing.start_sweeper(app)
    releases.start_logger(app)
    from webui import hubsync

    hubsync.start(app)  # once enrolled: the operators the city hub designated for this device
    state.jobs.cleanup()
    return app
