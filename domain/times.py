"""Time as the registers keep and show it: ISO 8601 with the offset when stored, wall-clock
microseconds for recordings' ranges, the city's fiscal year (April to March) for numbers."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone


def now_iso() -> str:
    """Now, local, to the second, with its offset: when a record was made or changed."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def fiscal_year(now: datetime | None = None) -> int:
    """The fiscal year (年度) that ``now`` falls in: it begins on 1 April."""
    now = now or datetime.now().astimezone()
    return now.year if now.month >= 4 else now.year - 1


def reiwa(year: int) -> str:
    """A fiscal year in the Japanese era: 2026 → 令和8年度."""
    return f"令和{year - 2018}年度"


def wall_us(text: str) -> int | None:
    """An ISO 8601 time typed in a form (local when it names no offset) as wall-clock
    microseconds, or ``None`` if it is not one a recording could have."""
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.astimezone()
        value = int(dt.timestamp() * 1e6)
    except (ValueError, OverflowError, OSError):
        return None
    return value if 0 < value < 2**62 else None


def local(wall: int | None) -> str:
    """Wall-clock microseconds as the local time a page shows ("2026-11-30 21:43:50"); "" for none."""
    if wall is None:
        return ""
    return datetime.fromtimestamp(wall / 1e6, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def day_range(day: str) -> tuple[int | None, int | None]:
    """A local day typed in a form (YYYY-MM-DD) as wall-clock microseconds from its midnight to
    the next; ``(None, None)`` for one that is not a day (then nothing is narrowed)."""
    try:
        first = date.fromisoformat(day)
    except ValueError:
        return None, None
    return wall_us(first.isoformat() + "T00:00:00"), wall_us((first + timedelta(days=1)).isoformat() + "T00:00:00")
