"""The export package's errors: one root, and specific ones that are also a builtin."""

from __future__ import annotations


class ExportError(Exception):
    """An export package could not be made or read; the message says why and what to do."""


class ExportRefused(ExportError, ValueError):
    """The export cannot be made as asked (an unknown ground, a range outside the recording or
    overwritten, a blur on a call…); the message says what to ask instead."""


class CoverSheetFailed(ExportError, RuntimeError):
    """The cover sheet's printer failed: no package is made without its cover sheet."""


class PackageError(ExportError, ValueError):
    """A package cannot be read at all (not a package, wrong passphrase, truncated)."""
