"""kiroku's web UI: a Flask application (app factory, one blueprint per concern).

It reads the recorder's state and asks it to act only through the control socket
(``firmware.control``); it never touches the hardware or the recorder's memory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from urllib.parse import urlsplit

from flask import Flask, abort, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect

from firmware.control import ControlClient, socket_path
from firmware.fsutil import atomic_write, makedirs_durable
from webui import i18n
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


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        KIROKU_DATA=os.environ.get("KIROKU_DATA", "data"),
        KIROKU_SIMULATED=False,  # the virtual counter exists only when the caller says so
        KIROKU_HOSTS=("127.0.0.1", "localhost", "::1"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    if test_config:
        app.config.update(test_config)
    data_dir = Path(app.config["KIROKU_DATA"])
    if "SECRET_KEY" not in app.config or not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _secret_key(data_dir)
    app.extensions["kiroku_control"] = ControlClient(socket_path(data_dir), timeout=5)

    CSRFProtect(app)

    from webui import api, counter

    app.register_blueprint(counter.bp)
    app.register_blueprint(api.bp)
    app.jinja_env.globals.update(t=i18n.t, lang=i18n.current_language)

    @app.route("/")
    @permission(PUBLIC)
    def index():
        return redirect(url_for("counter.index"))

    @app.route("/lang/<code>")
    @permission(PUBLIC)
    def set_language(code: str):
        response = redirect(_local_path(request.args.get("next", "/")))
        if code in i18n.LANGUAGES:
            response.set_cookie("lang", code, max_age=365 * 86400, samesite="Strict", httponly=True)
        return response

    @app.before_request
    def only_our_hosts():
        # A page on another site can point a name of its own at 127.0.0.1 (DNS rebinding);
        # the browser then sends that name as Host. Answer only to the names we are.
        try:
            host = urlsplit("//" + request.host).hostname
        except ValueError:
            host = None
        if host not in app.config["KIROKU_HOSTS"]:
            abort(400, description="unknown host name")
        return None

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        )
        return response

    enforce(app)
    return app


def control() -> ControlClient:
    from flask import current_app

    return current_app.extensions["kiroku_control"]
