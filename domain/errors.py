"""What a workflow refuses, and why, in words the caller can show.

One root, :class:`DomainError`; each subclass also subclasses the builtin it resembles
(STYLE.md 4), so ``except LookupError`` finds a missing record too.
"""

from __future__ import annotations


class DomainError(Exception):
    """Something the regulation's workflows would not do."""


class Refused(DomainError):
    """An action refused: ``key`` names the message (``webui.i18n``), ``status`` the HTTP
    status a web caller answers with, ``detail`` what exactly (for the API)."""

    status = 400

    def __init__(self, key: str, status: int | None = None, *, detail: str = ""):
        super().__init__(key)
        self.key, self.detail = key, detail
        if status is not None:
            self.status = status


class Invalid(Refused, ValueError):
    """The input cannot be acted on (400)."""


class NotAllowed(Refused, PermissionError):
    """Not this person's to do (403): their own request, a wrong passphrase, …"""

    status = 403


class Conflict(Refused, RuntimeError):
    """Not now (409): already decided, closed, paperwork pending, …"""

    status = 409


class NotFound(DomainError, LookupError):
    """No such record — or one this person may not know of (answered alike: 404)."""

    status = 404


class Forbidden(DomainError, PermissionError):
    """Not allowed, without a message of its own (403)."""

    status = 403


class NotYet(DomainError, RuntimeError):
    """Not ready (409), said in words: an export still running."""

    status = 409


class Gone(DomainError, LookupError):
    """A record that has ended (410): a viewing closed while its page was open."""

    status = 410


def refuse(key: str, status: int = 400, *, detail: str = ""):
    """Raise the refusal for ``key``: :class:`Invalid`, :class:`NotAllowed` or :class:`Conflict` by ``status``."""
    kind = {403: NotAllowed, 409: Conflict}.get(status, Invalid)
    raise kind(key, status, detail=detail)
