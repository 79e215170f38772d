"""The recorder's errors: one root, and specific ones that are also a builtin."""

from __future__ import annotations


class RecorderError(Exception):
    """The recorder could not do what was asked."""


class RecorderRefused(RecorderError, RuntimeError):
    """A command the recorder cannot carry out now; the message says why."""
