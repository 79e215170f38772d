"""The statutory deadline of a disclosure decision (Art. 12), as a date, and the device's date.

The day counts themselves are stored with each record when it is made (the web UI's
register holds the counts in force, ``DEADLINES``); this is how a record's counts become its
last day: the day of receipt is not counted (民法 Art. 140), so the last day is the receipt
date plus the days, an extension added. The annual report counts late decisions by the
same rule as the register shows them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta


def today() -> date:
    """The device's local date (the tests move it)."""
    return datetime.now().astimezone().date()


def parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip()[:10]) if text and text.strip() else None
    except ValueError:
        return None


def deadline(d) -> date:
    """The last day for the decision: the day of receipt not counted (民法 Art. 140)."""
    return date.fromisoformat(d["received_on"]) + timedelta(days=d["deadline_days"] + d["extension_days"])


def original_deadline(d) -> date:
    return date.fromisoformat(d["received_on"]) + timedelta(days=d["deadline_days"])
