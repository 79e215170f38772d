"""What every site's JSON API shares (a device's ``webui.api``, the hub's ``hub.web.api``): the
CSRF token in a header, the session calls, the pages' actions registered as API operations,
and the OpenAPI description made from the routes themselves. The views here are registered
by each API blueprint (``install``); none is a blueprint of its own."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, g, jsonify, request
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from domain.accounts import LoginRefused
from webui import sessions
from webui.actions import refuse
from webui.parsing import Form, Text, takes
from webui.permissions import AUDITOR, LOGIN, MANAGER, OPERATOR, PUBLIC, SECTION_HEAD, SIMULATED, permission

PREFIX = "/api/v1"


def install(blueprint: Blueprint) -> None:
    """The shared calls on ``blueprint`` (prefix ``/api/v1``): the CSRF check of its writes, the
    session, who is logged in, the OpenAPI description."""
    blueprint.before_request(csrf_by_header)
    for rule, method, view in (("/me", "GET", me), ("/session", "GET", session_info),
                               ("/session", "POST", session_start), ("/session", "DELETE", session_end),
                               ("/openapi.json", "GET", openapi)):
        blueprint.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=[method])


def csrf_by_header():
    """Writes carry the session's CSRF token in the X-CSRFToken header — never in a form
    field, which a page on another site could post. A custom header cannot be sent across
    sites without a CORS preflight this server never grants, so the Referer check
    Flask-WTF adds for HTTPS forms (which scripts seldom send) is not needed here."""
    if request.method not in current_app.config["WTF_CSRF_METHODS"]:
        return None
    if getattr(current_app.view_functions.get(request.endpoint), "kiroku_no_session", False):
        return None  # authenticated by what it is sent (a device's one-time code), never by a cookie
    try:
        validate_csrf(request.headers.get("X-CSRFToken", ""))
    except ValidationError as exc:
        return jsonify({"error": f"{exc.args[0]} — GET /api/v1/session gives one; send it as X-CSRFToken",
                        "code": "csrf.invalid"}), 400
    return None


@permission(LOGIN)
def me():
    """Who is logged in, and their roles."""
    return jsonify(_me())


def _me() -> dict | None:
    u = getattr(g, "user", None)
    if u is None:
        return None
    return {"username": u.username, "display_name": u.display_name, "section": u.section, "roles": sorted(u.roles)}


# -- session -----------------------------------------------------------------------------------

@permission(PUBLIC)
def session_info():
    """A CSRF token for the writes that follow, and who is logged in (or null)."""
    return jsonify({"csrf_token": generate_csrf(), "user": _me()})


LOGIN_FORM = Form(Text("username", "text"), Text("password", "text", strip=False))


@permission(PUBLIC)
@takes(LOGIN_FORM)
def session_start():
    """Log in (username, password): failures are slowed, locked and logged as on the page.
    Answers with a new CSRF token: the one used to log in ends with the anonymous session."""
    v = LOGIN_FORM.parse()
    try:
        sessions.log_in(v.username.lower(), v.password)
    except LoginRefused as refused:
        refuse(refused.key, 401)
    return jsonify({"csrf_token": generate_csrf(), "user": _me()})


@permission(PUBLIC)
def session_end():
    """Log out: the session and any footage keys it held end."""
    sessions.log_out()
    return jsonify({"user": None})


def register_actions(app, blueprint: Blueprint, actions) -> None:
    """Each (rule, method, page endpoint) of ``actions`` under ``blueprint``'s prefix as well."""
    for rule, method, endpoint in actions:
        name = f"{endpoint.replace('.', '_')}_{method.lower()}"  # e.g. api.requests_new_post
        app.add_url_rule(blueprint.url_prefix + rule, endpoint=f"{blueprint.name}.{name}",
                         view_func=app.view_functions[endpoint], methods=[method])


@permission(PUBLIC)
def openapi():
    """This description."""
    return jsonify(describe_api())


_RESPONSES = {
    "200": {"description": "done: the record as JSON"}, "201": {"description": "created"},
    "202": {"description": "started (an export): poll its status"},
    "400": {"description": "refused, the input: {error, code}"},
    "401": {"description": "not logged in (or a wrong log-in)"},
    "403": {"description": "not allowed for this role, or not yours to do (a wrong passphrase, your own request)"},
    "404": {"description": "no such record, or one you may not know of"},
    "409": {"description": "not now: already decided, closed, paperwork pending, …"},
    "410": {"description": "a viewing that has ended"},
    "413": {"description": "too large"},
    "507": {"description": "the data partition could not store it"},
    "503": {"description": "the recorder is not running, so nothing could be logged and nothing was done"},
}

_ROLE_WORDS = {PUBLIC: "anyone", LOGIN: "anyone logged in", MANAGER: "managers", OPERATOR: "operators of this device",
               SECTION_HEAD: "section heads", SIMULATED: "operators and managers, on simulated hardware only",
               AUDITOR: "auditors"}


def describe_api() -> dict:
    """OpenAPI 3.1, from the routes themselves: path, method, the view's docstring, who may call it."""
    paths: dict[str, dict] = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        view = current_app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        doc = " ".join((view.__doc__ or "").split())
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            levels = view.kiroku_permission
            op = {"summary": doc.split(". ")[0].rstrip(".") if doc else rule.endpoint, "description": doc
                  + f" Allowed for: {', '.join(_ROLE_WORDS[level] for level in sorted(levels))}.",
                  "operationId": f"{method.lower()}_{rule.endpoint.replace('.', '_')}",
                  "responses": _RESPONSES}
            params = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "integer" if f"<int:{name}>" in rule.rule else "string"}}
                      for name in sorted(rule.arguments)]
            if params:
                op["parameters"] = params
            form = getattr(view, "kiroku_form", None)
            if method != "GET" and form is not None:
                media = "multipart/form-data" if form.multipart else "application/json"
                schema = form.schema()
                op["requestBody"] = {"required": bool(schema.get("required")), "content": {media: {"schema": schema}}}
            if method != "GET":
                op["security"] = [{"session": [], "csrf": []}] if PUBLIC not in levels else [{"csrf": []}]
            elif PUBLIC not in levels:
                op["security"] = [{"session": []}]
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "kiroku", "version": "1",
                 "description": "The counter recording appliance's local API. GET /api/v1/session for a CSRF token, "
                                "POST /api/v1/session to log in; the session cookie authenticates later calls; "
                                "writes carry the CSRF token in X-CSRFToken. Refusals are {error, code}."},
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken"}}},
    }
