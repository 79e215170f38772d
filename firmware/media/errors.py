"""The media package's errors: one root, and specific ones that are also a builtin."""

from __future__ import annotations


class MediaError(Exception):
    """Footage could not be muxed, cut or read as media."""


class SegmentError(MediaError, RuntimeError):
    """A segment could not be muxed; the store's own errors pass through as they are."""
