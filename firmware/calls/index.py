"""Reading the call index: the one query ``kiroku calls list`` and the admin page share.

Numbers are searched the way a clerk types them (``numbers.search_key``): 0422-12-3456,
０４２２１２３４５６, +81 422 12 3456 and the last digits alone all find the same call.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from firmware.calls import numbers
from firmware.regulation import Direction, Hearing

DIRECTIONS = tuple(Direction)


def _iso(wall_us: int | None) -> str | None:
    if wall_us is None:
        return None
    return datetime.fromtimestamp(wall_us / 1e6).astimezone().isoformat(timespec="seconds")


# The columns a call's numbers are found by: what the recorder normalised, and what was signalled.
NUMBER_COLUMNS = ("external_e164", "external_raw", "city_e164", "city_raw")


def search(conn: sqlite3.Connection, *, number: str = "", since_us: int | None = None, until_us: int | None = None,
           direction: str = "", limit: int = 200) -> list[dict]:
    where, params = ["1"], []
    if number:
        key = numbers.search_key(number)
        if not key:
            return []
        where.append(number_clause("c"))
        params += [f"%{key}%"] * len(NUMBER_COLUMNS)
    if since_us is not None:
        where.append("c.invited_wall_us >= ?")
        params.append(since_us)
    if until_us is not None:
        where.append("c.invited_wall_us < ?")
        params.append(until_us)
    if direction:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}")
        where.append("c.direction = ?")
        params.append(direction)
    cur = conn.execute(
        "SELECT c.*, (SELECT count(*) FROM segments s WHERE s.recording_id = c.recording_id AND s.erased_at IS NULL)"
        " AS segments, EXISTS (SELECT 1 FROM holds h WHERE h.recording_id = c.recording_id AND h.released_at IS NULL)"
        f" AS held FROM calls c WHERE {' AND '.join(where)} ORDER BY c.invited_wall_us DESC LIMIT ?",
        (*params, limit))
    names = [d[0] for d in cur.description]
    return [present(dict(zip(names, row))) for row in cur]


def number_clause(alias: str) -> str:
    """SQL true when any of a call's numbers holds a search key (one ``?`` per number column, in
    NUMBER_COLUMNS' order, each bound to ``%KEY%``): E.164 without its plus, raw as signalled."""
    external, city = (" OR ".join(f"replace({alias}.{c}, '+', '') LIKE ?" for c in cols)
                      for cols in (NUMBER_COLUMNS[:2], NUMBER_COLUMNS[2:]))
    # a withheld caller's number (kept by rows from before it was not) is found by no search
    return f"((NOT ({alias}.withheld = 1 AND {alias}.direction = 'inbound') AND ({external})) OR {city})"


def parties(row) -> dict:
    """How a call's two numbers are shown: ``external_display`` (非通知 whenever the caller asked
    for it — a row from before the recorder stopped keeping such numbers shows it too) and
    ``city_display``. ``row`` has the calls table's direction,
    withheld and number columns — the device's own, or what it published to the hub."""
    return {"external_display": numbers.WITHHELD if row["withheld"] and row["direction"] == "inbound"
            else numbers.display(row["external_e164"] or _digits(row["external_raw"])),
            "city_display": numbers.display(row["city_e164"] or _digits(row["city_raw"]))}


def present(row: dict) -> dict:
    """A row as people and scripts read it: times in local ISO, numbers also for display."""
    out = dict(row)
    for key in ("invited", "ringing", "answered", "ended", "audio"):
        out[f"{key}_at"] = _iso(row.get(f"{key}_wall_us"))
    out.update(parties(row))
    out["holds"] = [[_iso(a), _iso(b)] for a, b in json.loads(row.get("holds") or "[]")]
    # what the recorder did not hear (stopped or restarting), and why: silence in the track
    out["gaps"] = [{"from": _iso(a), "to": _iso(b), "why": why} for a, b, why in json.loads(row.get("gaps") or "[]")]
    out["doubts"] = doubts(row)
    out["talk_s"] = None if row.get("talk_ms") is None else row["talk_ms"] / 1000
    out["ring_s"] = None if row.get("ring_ms") is None else row["ring_ms"] / 1000
    out["held"] = bool(row.get("held"))
    return out


def doubts(row) -> list[dict]:
    """The sides of an ended call that were not heard, and why (``Hearing``): [{side, why}]."""
    if row.get("ended_wall_us") is None:
        return []  # in progress: a side not heard yet may still speak
    return [{"side": side, "why": row.get(f"{side}_heard")} for side in ("external", "city")
            if row.get(f"{side}_heard") not in (None, Hearing.HEARD)]


def _digits(raw: str) -> str:
    return "".join(ch for ch in raw or "" if ch.isdigit())
