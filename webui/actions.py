"""One view serves its page and the JSON API alike.

A view that changes something is registered twice: under its page URL (a form posts to
it, it answers with a redirect and a flashed message) and under ``/api/v1`` (a JSON body,
a JSON answer). The view itself does not care which: it reads its inputs through
:func:`fields`, refuses with :func:`refuse`, and answers with :func:`done`. The same
permission check and CSRF protection guard both registrations, so the API can do nothing
the page cannot, and the other way round.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, NoReturn

import flask
from flask import Flask, flash, jsonify, redirect, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, ValidationError

from domain import errors
from domain.errors import Refused


def is_api() -> bool:
    return request.path.startswith("/api/")


# A refusal (``domain.errors.Refused``: the message's key, the HTTP status) is answered here:
# a page is sent ``back`` to where it came from with the message flashed, or — for a form
# worth keeping what was typed — shown again by ``page()``; the API gets {error, code}.

def refuse(key: str, status: int = 400, *, back: str | None = None,
           page: Callable[[], object] | None = None, detail: str = "") -> NoReturn:
    with refusing(back=back, page=page):
        errors.refuse(key, status, detail=detail)


@contextmanager
def refusing(*, back: str | None = None, page: Callable[[], object] | None = None) -> Iterator[None]:
    """What a workflow refuses inside the block goes ``back`` to that page, or shows ``page()`` again."""
    try:
        yield
    except Refused as exc:
        if getattr(exc, "back", None) is None:
            exc.back = back
        if getattr(exc, "page", None) is None:
            exc.page = page
        raise


MAX_TEXT = 10_000  # characters in one value: the longest any form takes is 2,000
MAX_ITEMS = 500  # values in one list


class _JsonFields:
    """A JSON object read the way a form is: every value as text, lists for ``getlist``."""

    def __init__(self, body: dict):
        self._body = body

    @staticmethod
    def _text(value) -> str:
        if value is True:
            return "yes"
        if value is False or value is None:
            return ""
        if isinstance(value, (str, int, float)) and len(str(value)) <= MAX_TEXT:
            return str(value)
        raise Refused("api.bad_value")

    def get(self, name: str, default: str | None = None) -> str | None:
        if name not in self._body or self._body[name] is None:
            return default
        return self._text(self._body[name])

    def getlist(self, name: str) -> list[str]:
        value = self._body.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            value = [value]
        if len(value) > MAX_ITEMS:
            raise Refused("api.bad_value")
        return [self._text(v) for v in value]

    def flag(self, name: str, default: bool | None) -> bool:
        value = self._body.get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, bool):
            raise Refused("api.flag_needed", detail=f"{name}: true or false")
        return value


MAX_DEPTH = 32  # nesting of a JSON body: the deepest any operation takes is 2


class Request(flask.Request):
    """Every site's requests: a JSON body is read or refused, never a crash — nested past
    :data:`MAX_DEPTH` (the parser would run out of stack), or holding text that is not
    Unicode (a lone surrogate such as "\\ud800", which no database can store)."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        try:
            body = super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise Refused("api.json_too_deep", detail=f"at most {MAX_DEPTH} levels") from None
        _check_json(body)
        return body


def _check_json(body) -> None:
    """Refuse a JSON value nested too deep or with text that is not Unicode, naming where."""
    pending = [(body, "", 1)]
    while pending:
        value, where, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise Refused("api.json_too_deep", detail=f"{where or 'body'}: at most {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _unicode(key, f"{where}.{key}".lstrip(".") if _is_unicode(key) else where or "a name")
                pending.append((item, f"{where}.{key}".lstrip("."), depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            _unicode(value, where or "body")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unicode(text: str, where: str) -> None:
    if not _is_unicode(text):
        raise Refused("api.bad_text", detail=f"{where}: a lone surrogate (\\ud800–\\udfff) is not a character")


class IdConverter(IntegerConverter):
    """``<int:…>`` in a route: a record's id or a number, at most what the database holds
    (2⁶³ − 1). A larger one names no record, and is answered as one that does not exist (404)."""

    DIGITS = 19

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = 2**63 - 1,
                 signed: bool = False):
        super().__init__(map, fixed_digits, min, max, signed)

    def to_python(self, value: str):
        if len(value.lstrip("-0")) > self.DIGITS:  # not even read: int() refuses past 4,300 digits
            raise ValidationError()
        return super().to_python(value)


def fields():
    """What the caller sent: the form of a page, or the API's JSON object (or a multipart
    form, for an upload)."""
    if is_api() and not request.files and not request.form:
        if not request.get_data(cache=True):
            return _JsonFields({})
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise Refused("api.json_object")
        return _JsonFields(body)
    return request.form


def flag(inputs, name: str, default: bool | None = None) -> bool:
    """A yes/no choice, read strictly: the API must send JSON true or false — a typo is
    refused, never read as no, and so is a missing field unless ``default`` is given; a
    form's checkbox sends "yes" or nothing."""
    if isinstance(inputs, _JsonFields):
        return inputs.flag(name, default)
    value = inputs.get(name)
    if value not in (None, "", "yes", "no"):
        raise Refused("api.flag_needed", detail=f"{name}: yes or nothing")
    return value == "yes"


def done(url: str, *, code: int = 200, notice: str | None = None, **data):
    """The answer to an action that worked: the API gets ``data`` as JSON, a page is
    redirected to ``url`` with ``notice`` flashed."""
    if is_api():
        return jsonify(data), code
    if notice:
        flash(notice, "info")
    return redirect(url)


_HTTP = {errors.NotFound: 404, errors.Forbidden: 403, errors.Gone: 410, errors.NotYet: 409}


def install(app: Flask) -> None:
    from werkzeug.exceptions import default_exceptions

    from webui import i18n

    @app.errorhandler(Refused)
    def refused(exc: Refused):
        if is_api():
            body = {"error": i18n.t(exc.key), "code": exc.key}
            if exc.detail:
                body["detail"] = exc.detail
            return jsonify(body), exc.status
        flash(exc.key, "error")
        page = getattr(exc, "page", None)
        if page is not None:
            response = app.make_response(page())
            response.status_code = exc.status
            return response
        return redirect(getattr(exc, "back", None) or "/")

    def as_http(exc: errors.DomainError):
        """A record not found, not allowed, gone or not ready: the HTTP answer it stands for."""
        status = next(code for kind, code in _HTTP.items() if isinstance(exc, kind))
        description = str(exc) if isinstance(exc, errors.NotYet) else None
        return http_error(default_exceptions[status](description=description))

    for kind in _HTTP:
        app.register_error_handler(kind, as_http)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if is_api():
            response = jsonify({"error": exc.description or exc.name, "code": f"http.{exc.code}"})
            response.status_code = exc.code
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    response.headers[name] = value  # e.g. Allow, on a 405
            return response
        if exc.code is None or exc.code < 400:
            return exc
        # A page in the person's language, with the way back, in place of the framework's
        # English one; the status and headers (Allow on a 405…) stay.
        from flask import render_template

        key = f"error.http.{exc.code}"
        try:
            page = render_template("error.html", message=i18n.t(key if key in i18n.MESSAGES else "error.http.other"),
                                   detail=f"HTTP {exc.code}", home=True)
        except Exception:  # the page itself cannot be drawn (no database yet…): the plain one
            return exc
        response = app.make_response(page)
        response.status_code = exc.code
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response
