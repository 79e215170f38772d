"""The age format's errors: one root (``AgeError``), specific ones that are also builtins where
a caller may handle them as such."""

from __future__ import annotations


class AgeError(Exception):
    """An age file could not be read or written."""


class HeaderError(AgeError, ValueError):
    """The header is malformed."""


class ArmorError(AgeError, ValueError):
    """The ASCII armor is malformed."""


class NoIdentityMatched(AgeError):
    """None of the given identities can open this file."""


class HeaderMacError(AgeError):
    """The header's MAC does not verify: the header was altered."""


class PayloadError(AgeError):
    """The payload is truncated or altered; what was released before is authentic."""


class UnsupportedIdentity(AgeError, ValueError):
    """An identity type this implementation does not read (e.g. post-quantum)."""
