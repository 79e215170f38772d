"""``kiroku calls list``: the recorded calls with their numbers, times, outcome and loss."""

from __future__ import annotations

import json
import sys


def calls(args) -> int:
    import sqlite3
    from datetime import datetime

    from firmware.calls import index

    def when(text):
        if text is None:
            return None
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise SystemExit(print(f"kiroku calls: {text!r} is not a date (2026-04-01) or ISO time", file=sys.stderr)
                             or 2) from None
        return int((dt if dt.tzinfo else dt.astimezone()).timestamp() * 1e6)

    db = args.data / "kiroku.db"
    if not db.exists():
        print(f"kiroku calls: no recorder database in {args.data} — check --data", file=sys.stderr)
        return 2
    from firmware.sqlite import open_db

    try:
        conn = open_db(db, readonly=True)  # on a read-only copy too
    except sqlite3.OperationalError as exc:
        print(f"kiroku calls: {db}: {exc}", file=sys.stderr)
        return 2
    try:
        rows = index.search(conn, number=args.number, since_us=when(args.since), until_us=when(args.until),
                            direction=args.direction, limit=args.limit)
    except sqlite3.OperationalError as exc:
        print(f"kiroku calls: {db}: {exc} — is this a call recorder's data folder?", file=sys.stderr)
        return 2
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no calls")
    for r in rows:
        arrow = "←" if r["direction"] == "inbound" else "→"
        talk = f"{r['talk_s']:.1f} s" if r["talk_s"] is not None else "in progress"
        loss = f", {r['loss_percent']:.1f} % lost" if r["packets_lost"] else ""
        gaps = "".join(f", {d['side']} side {d['why'].replace('_', ' ')}" for d in r["doubts"])
        gaps += "".join(f", not heard {g['from'][11:19]}–{(g['to'] or '?')[11:19]} ({g['why']})" for g in r["gaps"])
        print(f"{r['recording_id']}  {r['invited_at']}  {arrow} {r['external_display'] or '?':<16} "
              f"city {r['city_display'] or '?':<14} {r['disposition'] or 'ringing':<10} {talk}{loss}{gaps}")
    return 0
