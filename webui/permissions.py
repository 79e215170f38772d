"""Deny by default: every view declares who may call it, or nobody can.

``@permission(MANAGER)``, ``@permission(MANAGER, SECTION_HEAD)`` (any of them),
``@permission(LOGIN)`` (anyone logged in), ``@permission(PUBLIC)``. ``SIMULATED`` views
exist only on simulated hardware and are for the device's operators and managers.
A view without a declaration is refused with 403 at request time and reported at
start-up, so a forgotten check fails loudly. The same check guards pages and the JSON
API: an API caller gets 401/403 JSON instead of a redirect to the log-in page.
"""

from __future__ import annotations

import logging
from functools import wraps

from flask import Flask, abort, current_app, g, jsonify, redirect, request, url_for

log = logging.getLogger(__name__)

PUBLIC = "public"
LOGIN = "login"
MANAGER = "manager"
OPERATOR = "operator"  # designated for this device (Art. 5(2))
SECTION_HEAD = "section_head"
SIMULATED = "simulated"  # the virtual counter: simulated hardware only; operators and managers
AUDITOR = "auditor"  # reads logs, the witness, registers and reports; never footage
LEVELS = (PUBLIC, LOGIN, MANAGER, OPERATOR, SECTION_HEAD, SIMULATED, AUDITOR)

_ALWAYS_PUBLIC = {"static"}
_BEFORE_SETUP = {"static", "setup.index", "setup.recovery", "setup.confirm", "setup.join", "set_language", "api.openapi"}


def permission(*levels: str):
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown permission level {level!r}")
    if not levels:
        raise ValueError("a view must name who may use it")

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(*args, **kwargs)

        wrapper.kiroku_permission = frozenset(levels)
        return wrapper

    return decorate


def undeclared(app: Flask) -> list[str]:
    """Endpoints that declare no permission (must be empty)."""
    return sorted(
        name for name, view in app.view_functions.items()
        if name not in _ALWAYS_PUBLIC and getattr(view, "kiroku_permission", None) is None
    )


def allowed(levels: frozenset[str], user) -> bool:
    if PUBLIC in levels:
        return True
    if user is None:
        return False
    if LOGIN in levels:
        return True
    roles = set(user.roles)
    if SIMULATED in levels and roles & {MANAGER, OPERATOR}:
        return True
    return bool(roles & levels)


def _is_api() -> bool:
    return request.path.startswith("/api/")


def enforce(app: Flask) -> None:
    missing = undeclared(app)
    if missing:
        raise RuntimeError(f"views without a permission: {', '.join(missing)}")

    def _accounts_from_hub() -> bool:
        """On an enrolled device the hub's operators may be its first accounts (webui/hubsync.py)."""
        from domain import people
        from webui.db import get_db

        return bool(current_app.extensions["kiroku"].refresh_people()) and people.anyone(get_db())

    @app.before_request
    def check_permission():
        from domain import people
        from webui.db import get_db
        from webui.services import audit_refusal

        if request.endpoint is None or request.endpoint in _ALWAYS_PUBLIC:
            return None  # 404 / static files
        view = current_app.view_functions.get(request.endpoint)
        levels = getattr(view, "kiroku_permission", None)
        if levels is None:
            log.error("refused %s: the view declares no permission", request.endpoint)
            abort(403)
        if SIMULATED in levels and not current_app.config["KIROKU_SIMULATED"]:
            abort(404)
        if not people.anyone(get_db()) and request.endpoint not in _BEFORE_SETUP and not _accounts_from_hub():
            if _is_api():
                return jsonify({"error": "the device is not set up yet: open the first-run page"}), 503
            first_run = current_app.extensions["kiroku"].first_run
            if first_run is None:  # a site whose first manager is made at its console (the hub)
                abort(503, description="no manager yet: add the first one at the server (kiroku hub add-manager)")
            return redirect(url_for(first_run))
        if allowed(levels, g.user):
            return None
        if g.user is None:
            if _is_api():
                return jsonify({"error": "log in first"}), 401
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        log.warning("refused %s to %s (roles: %s)", request.endpoint, g.user.username, ", ".join(g.user.roles) or "none")
        audit_refusal(request.endpoint)
        if _is_api():
            return jsonify({"error": "not allowed for your role"}), 403
        abort(403)
