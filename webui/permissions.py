"""Deny by default: every view declares who may call it, or nobody can.

``@permission("public")`` and ``@permission("simulated")`` are the levels this issue
needs; the admin page (issue 4) adds roles. A view without a declaration is refused
with 403 at request time and reported at start-up, so a forgotten check fails loudly.
"""

from __future__ import annotations

import logging
from functools import wraps

from flask import Flask, abort, current_app, request

log = logging.getLogger(__name__)

PUBLIC = "public"
SIMULATED = "simulated"  # the virtual counter: only on simulated hardware
LEVELS = (PUBLIC, SIMULATED)

_ALWAYS_PUBLIC = {"static"}


def permission(level: str):
    if level not in LEVELS:
        raise ValueError(f"unknown permission level {level!r}")

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(*args, **kwargs)

        wrapper.kiroku_permission = level
        return wrapper

    return decorate


def undeclared(app: Flask) -> list[str]:
    """Endpoints that declare no permission (must be empty)."""
    return sorted(
        name for name, view in app.view_functions.items()
        if name not in _ALWAYS_PUBLIC and getattr(view, "kiroku_permission", None) is None
    )


def enforce(app: Flask) -> None:
    missing = undeclared(app)
    if missing:
        raise RuntimeError(f"views without a permission: {', '.join(missing)}")

    @app.before_request
    def check_permission():
        if request.endpoint is None or request.endpoint in _ALWAYS_PUBLIC:
            return None  # 404 / static files
        view = current_app.view_functions.get(request.endpoint)
        level = getattr(view, "kiroku_permission", None)
        if level is None:
            log.error("refused %s: the view declares no permission", request.endpoint)
            abort(403)
        if level == SIMULATED and not current_app.config["KIROKU_SIMULATED"]:
            abort(404)
        return None
