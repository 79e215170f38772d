"""The documents package's errors: one root, and specific ones that are also a builtin."""

from __future__ import annotations


class DocumentError(Exception):
    """A printable document could not be made."""


class FontMissing(DocumentError, RuntimeError):
    """No Japanese font is installed: no printable document can be made."""
