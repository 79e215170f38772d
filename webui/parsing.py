"""Typed parsers for what a form or the JSON API sends: each view that takes input declares
its :class:`Form`, which reads the input into typed values — refusing what has the wrong
shape with a message key — and describes the same fields as the OpenAPI request body
(``webui.api``), so the validation and the documentation cannot drift apart.

The rules the regulation sets (a purpose of Art. 7, a reason of at most 2,000 characters…)
come from the workflows' own constants (``domain``), which check them again: a workflow is
correct without a web request in front of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flask import request

from webui.actions import MAX_ITEMS, MAX_TEXT, Refused, fields, flag

MISSING = "form.missing"
ISO_TIME = "ISO 8601 time"


class Field:
    """One input: its name, what it is for (``doc``), and the message key it is refused with."""

    json_type: Any = "string"

    def __init__(self, name: str, doc: str = "", *, required: bool = False, refuse: str = MISSING):
        self.name, self.doc, self.required, self.refuse = name, doc, required, refuse

    def read(self, inputs):
        raise NotImplementedError

    def schema(self) -> dict:
        out = {"type": self.json_type}
        if self.doc:
            out["description"] = self.doc
        return out

    def _no(self):
        # the field's name and what it takes: a script (the API) is told which of its values to fix
        raise Refused(self.refuse, detail=f"{self.name}: {self.doc}" if self.doc else self.name)


class Text(Field):
    """Text, stripped; refused when ``required`` and empty, longer than ``max`` or not
    matching ``pattern``; ``cut`` shortens it instead (a note, a contact)."""

    def __init__(self, name: str, doc: str = "", *, required: bool = False, refuse: str = MISSING,
                 max: int | None = None, cut: int | None = None, pattern: re.Pattern | None = None,
                 strip: bool = True, json_type: Any = "string"):
        super().__init__(name, doc, required=required, refuse=refuse)
        self.max, self.cut, self.pattern, self.strip, self.json_type = max, cut, pattern, strip, json_type

    def read(self, inputs) -> str:
        value = inputs.get(self.name) or ""
        if self.strip:
            value = value.strip()
        if (self.required and not value) or (self.max is not None and len(value) > self.max) or (
                self.pattern is not None and value and not self.pattern.fullmatch(value)):
            self._no()
        return value[:self.cut] if self.cut is not None else value

    def schema(self) -> dict:
        out = super().schema()
        out["maxLength"] = min(self.max, MAX_TEXT) if self.max is not None else MAX_TEXT  # the API's limit
        if self.pattern is not None:
            out["pattern"] = f"^{self.pattern.pattern}$"
        if self.required and self.json_type == "string":
            out["minLength"] = 1
        return out


class Number(Text):
    """A whole number (or, not ``integer``, a decimal one) from ``low`` to ``high``: a JSON
    number or its digits as text, read as that text ("" when not given and not ``required``),
    as the workflow reads a form's."""

    def __init__(self, name: str, doc: str = "", *, required: bool = False, refuse: str = "form.bad_number",
                 low: int = 0, high: int = 2**53, integer: bool = True):
        super().__init__(name, doc, required=required, refuse=refuse,
                         json_type=["integer" if integer else "number", "string"])
        self.low, self.high, self.integer = low, high, integer
        self.shape = re.compile(r"-?[0-9]{1,16}" if integer else r"-?[0-9]{1,16}(?:\.[0-9]{1,6})?")

    def read(self, inputs) -> str:
        value = super().read(inputs)
        if value and not (self.shape.fullmatch(value) and self.low <= float(value) <= self.high):
            self._no()
        return value

    def schema(self) -> dict:
        out = {"type": self.json_type, "minimum": self.low, "maximum": self.high,
               "pattern": f"^{self.shape.pattern}$"}
        if self.doc:
            out["description"] = self.doc
        return out


class Choice(Text):
    """One of ``values`` (an empty answer only when not ``required``)."""

    def __init__(self, name: str, values: Iterable[str], doc: str = "", *, required: bool = True,
                 refuse: str = MISSING):
        super().__init__(name, doc, required=required, refuse=refuse)
        self.values = tuple(str(v) for v in values)

    def read(self, inputs) -> str:
        value = super().read(inputs)
        if value and value not in self.values or (self.required and not value):
            self._no()
        return value

    def schema(self) -> dict:
        out = {"type": "string", "enum": list(self.values) + ([] if self.required else [""])}
        if self.doc:
            out["description"] = self.doc
        return out


class Texts(Field):
    """A list of texts (a form's repeated field, the API's JSON list); each one of
    ``values`` when given."""

    def __init__(self, name: str, doc: str = "", *, required: bool = False, refuse: str = MISSING,
                 values: Iterable[str] | None = None):
        super().__init__(name, doc, required=required, refuse=refuse)
        self.values = None if values is None else tuple(values)

    def read(self, inputs) -> tuple[str, ...]:
        value = tuple(inputs.getlist(self.name))
        if (self.required and not value) or (self.values is not None and not set(value) <= set(self.values)):
            self._no()
        return value

    def schema(self) -> dict:
        items = ({"type": "string", "maxLength": MAX_TEXT} if self.values is None
                 else {"type": "string", "enum": list(self.values)})
        out = {"type": "array", "items": items, "maxItems": MAX_ITEMS}
        if self.doc:
            out["description"] = self.doc
        if self.required:
            out["minItems"] = 1
        return out


class Flag(Field):
    """Yes or no, read strictly (``webui.actions.flag``): the API sends JSON true or false, a
    form's checkbox "yes" or nothing. Without a ``default`` the API must say it outright."""

    json_type = "boolean"

    def __init__(self, name: str, doc: str = "", *, default: bool | None = None):
        super().__init__(name, doc, required=default is None, refuse="api.flag_needed")
        self.default = default

    def read(self, inputs) -> bool:
        return flag(inputs, self.name, self.default)


class Upload(Field):
    """A file in a multipart form, read up to ``limit`` + 1 bytes (so the workflow can tell
    it is too large without reading more)."""

    def __init__(self, name: str, doc: str = "", *, limit: int):
        super().__init__(name, doc)
        self.limit = limit

    def read(self, inputs) -> bytes:
        upload = request.files.get(self.name)
        return upload.read(self.limit + 1) if upload else b""

    def schema(self) -> dict:
        out = {"type": "string", "format": "binary"}
        if self.doc:
            out["description"] = self.doc
        return out


class Values(dict):
    """The typed values of a form, by name (``values.purpose`` or ``values["purpose"]``)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Form:
    """The inputs a view takes, in the order they are checked."""

    def __init__(self, *fields_: Field, open_ended: dict | None = None):
        self.fields = fields_
        self.open_ended = open_ended  # {"pattern": description}: names a view reads itself (settings)

    @property
    def multipart(self) -> bool:
        return any(isinstance(f, Upload) for f in self.fields)

    def parse(self, inputs=None) -> Values:
        """The request's inputs (a form, or the API's JSON object) as typed values; a value of
        the wrong shape is refused with its field's message key."""
        inputs = fields() if inputs is None else inputs
        return Values((f.name, f.read(inputs)) for f in self.fields)

    def schema(self) -> dict:
        out: dict = {"type": "object", "properties": {f.name: f.schema() for f in self.fields}}
        required = [f.name for f in self.fields if f.required]  # a Flag without a default too: say it outright
        if required:
            out["required"] = required
        if self.open_ended:
            out["patternProperties"] = {k: {"description": v} for k, v in self.open_ended.items()}
        return out


def takes(form: Form):
    """Declare the form a view reads: the API's description shows it as the request body."""

    def decorate(view):
        view.kiroku_form = form
        return view

    return decorate

