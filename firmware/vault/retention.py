"""Retention (Art. 6): how long the vault keeps footage, and erasing what it no longer must.

Disk policy in one sentence: when the vault passes its high-water mark, the oldest
segments that are past their class's minimum retention and not on hold are overwritten
until it is back under the low-water mark, and a day's key is destroyed once none of
its segments is kept; nothing younger or held is ever touched, and when nothing can be
erased, recording does not start.

``Retention`` is a part of :class:`~firmware.vault.Vault`; ``RetentionLoop`` runs its sweep
in the background of the process that writes the vault (the recorder), never on the media
thread, and keeps an eye on how long the card can keep footage at the rate it is recorded.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from firmware.regulation import RecordClass
from firmware.vault import age
from firmware.vault.index import iso, local_day
from firmware.vault.keys import overwrite_and_unlink

log = logging.getLogger("firmware.vault.vault")

DAY_US = 86_400_000_000
ERASE_BATCH = 200


class Retention:
    """Space, the minimum and maximum retention per record class, and the sweep."""

    def usage(self) -> dict:
        with self._lock:
            rows = self.db.execute("SELECT record_class, count(*), coalesce(sum(size), 0), min(start_wall_us)"
                                   " FROM segments WHERE erased_at IS NULL GROUP BY record_class").fetchall()
        by_class = {c: {"segments": n, "bytes": b, "oldest_wall_us": o} for c, n, b, o in rows}
        used = sum(v["bytes"] for v in by_class.values())
        st = os.statvfs(self.data_dir)
        free = st.f_bavail * st.f_frsize
        reserve = self.retention.reserve_mb * 2**20
        capacity = max(0, used + free - reserve)
        if self.retention.capacity_mb:
            capacity = min(capacity, self.retention.capacity_mb * 2**20)
        return {"capacity": capacity, "used": used, "free": max(0, capacity - used), "filesystem_free": free,
                "by_class": by_class}

    def min_days(self, record_class: str) -> int:
        return getattr(self.retention, f"{record_class}_min_days")

    def max_days(self, record_class: str) -> int:
        return getattr(self.retention, f"{record_class}_max_days")

    def _erasable(self, conn, now: int, *, record_class: str | None, older_than: dict[str, int], limit: int):
        """Kept segments past their minimum retention and not on hold, oldest first."""
        clauses = " OR ".join("(s.record_class = ? AND s.end_wall_us < ?)" for _ in older_than)
        args: list = [x for cls, cutoff in older_than.items() for x in (cls, cutoff)]
        query = f"""
            SELECT s.id, s.path, s.size, s.record_class, s.key_day, s.start_wall_us, s.end_wall_us
            FROM segments s
            WHERE s.erased_at IS NULL AND ({clauses})
              AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.released_at IS NULL AND h.recording_id = s.recording_id)
              AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.released_at IS NULL AND h.recording_id IS NULL
                              AND h.start_wall_us < s.end_wall_us AND h.end_wall_us > s.start_wall_us)
            ORDER BY s.end_wall_us LIMIT ?"""
        return conn.execute(query, (*args, limit)).fetchall()

    def sweep(self, *, need_bytes: int = 0) -> dict:
        """Erase what the disk policy says to erase; returns what was done.

        ``need_bytes``: make at least this much room below the low-water mark as well (the
        recorder asks before it lights the sign).
        """
        if self.retention.require_clock_sync and not self._synced():
            return {"erased": 0, "bytes": 0, "skipped": "the wall clock is not synchronised"}
        now = self._now()
        total = {"erased": 0, "bytes": 0, "days_destroyed": []}
        # 1. Anything past an optional maximum retention goes, space or not.
        expired = {c: now - self.max_days(c) * DAY_US for c in RecordClass if self.max_days(c)}
        if expired:
            self._erase_until(expired, now, None, total, reason="maximum retention")
        # 2. Above the high-water mark: the oldest expired segments, down to the low-water mark.
        u = self.usage()
        high = self.retention.high_water * u["capacity"]
        target = min(self.retention.low_water * u["capacity"], u["capacity"] - need_bytes)
        if u["used"] > high or (need_bytes and u["used"] > target):
            eligible = {c: now - self.min_days(c) * DAY_US for c in RecordClass}
            self._erase_until(eligible, now, u["used"] - target, total, reason="overwrite")
        if total["erased"]:
            log.info("overwrote %d segments (%d bytes); destroyed day keys: %s", total["erased"], total["bytes"],
                     ", ".join(total["days_destroyed"]) or "none")
        return total

    def _erase_until(self, older_than: dict[str, int], now: int, need: int | None, total: dict, reason: str) -> None:
        freed = 0
        while need is None or freed < need:
            with self.transaction() as conn:
                rows = self._erasable(conn, now, record_class=None, older_than=older_than, limit=ERASE_BATCH)
                if need is not None:
                    picked, running = [], 0
                    for row in rows:
                        if freed + running >= need:
                            break
                        picked.append(row)
                        running += row[2]
                    rows = picked
                if not rows:
                    return
                stamp = iso(now)
                conn.executemany("UPDATE segments SET erased_at = ?, erase_reason = ? WHERE id = ?",
                                 [(stamp, reason, r[0]) for r in rows])
                by_class: dict[str, list] = {}
                for r in rows:
                    by_class.setdefault(r[3], []).append(r)
                shred: list[tuple[str, str]] = []
                for cls, group in by_class.items():
                    days = self._shreddable_days(conn, cls, {r[4] for r in group}, now)
                    shred += [(cls, d) for d in days]
                    conn.execute("INSERT INTO overwrites (at, record_class, segments, bytes, oldest_wall_us,"
                                 " newest_wall_us, days_destroyed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (stamp, cls, len(group), sum(r[2] for r in group), min(r[5] for r in group),
                                  max(r[6] for r in group), ",".join(days)))
                    for day in days:
                        conn.execute("UPDATE day_keys SET destroyed_at = ? WHERE record_class = ? AND day = ?",
                                     (stamp, cls, day))
                    self.audit_log.append(conn, actor="recorder", action="retention.overwrite", subject=cls,
                                          detail={"segments": len(group), "bytes": sum(r[2] for r in group),
                                                  "reason": reason, "oldest": iso(min(r[5] for r in group)),
                                                  "newest": iso(max(r[6] for r in group)), "keys_destroyed": days})
                    total["days_destroyed"] += [f"{cls}/{d}" for d in days]
            # Committed: now make it so on disk (recover() finishes this after a crash).
            for r in rows:
                self._erase_file(self.data_dir / r[1])
            for cls, day in shred:
                self.keys.destroy_day_key(cls, day)
            batch = sum(r[2] for r in rows)
            freed += batch
            total["erased"] += len(rows)
            total["bytes"] += batch

    def _shreddable_days(self, conn, record_class: str, days: set[str], now: int) -> list[str]:
        today = local_day(now)
        found = []
        for day in sorted(days):
            if day[:10] >= today:
                continue  # today's keys (its generations: 2026-12-07.1, …) are still in use
            kept = conn.execute("SELECT 1 FROM segments WHERE record_class = ? AND key_day = ? AND erased_at IS NULL"
                                    " LIMIT 1", (record_class, day)).fetchone()
            if not kept:
                found.append(day)
        return found

    @staticmethod
    def _erase_file(path: Path) -> None:
        try:
            overwrite_and_unlink(path, limit=age.CHUNK)
        except FileNotFoundError:
            pass
        try:
            path.with_suffix(".json").unlink()
        except FileNotFoundError:
            pass

    def reserve_shortfall(self) -> int:
        """How far the filesystem's free space is below the reserve (``reserve_mb``) now, in
        bytes; 0 when the reserve is whole. Only ``statvfs``: cheap enough to ask every second."""
        st = os.statvfs(self.data_dir)
        return max(0, self.retention.reserve_mb * 2**20 - st.f_bavail * st.f_frsize)

    def room_problem(self, nbytes: int) -> str | None:
        """None when a recording of about ``nbytes`` can be kept (erasing expired footage if
        needed), else why not, in words that name what to change."""
        full = self.room_in_use()  # (vault.py: the index's own room, given up when the card filled)
        if full:
            return full
        if self.room_for(nbytes):
            return None
        st = os.statvfs(self.data_dir)
        total, reserve = st.f_blocks * st.f_frsize, self.retention.reserve_mb * 2**20
        if reserve + nbytes > total:
            return (f"retention.reserve_mb ({self.retention.reserve_mb} MB) leaves no room on a data partition of"
                    f" {total // 2**20} MB for a recording of {nbytes // 2**20} MB: lower it in kiroku.toml")
        u = self.usage()
        if self.retention.capacity_mb and u["used"] + nbytes > self.retention.capacity_mb * 2**20:
            return (f"the disk is full up to the footage quota (retention.capacity_mb = {self.retention.capacity_mb})"
                    " with footage still within its retention or on hold: a recording could not be kept")
        if u["used"] < (total - reserve) // 2:  # not mostly footage: something else fills it
            return (f"the data partition is full, but not of footage ({u['used'] // 2**20} MB of footage,"
                    f" {u['filesystem_free'] // 2**20} MB free, {self.retention.reserve_mb} MB kept in reserve):"
                    " find what else fills it")
        return "the disk is full of footage still within its retention or on hold: a recording could not be kept"

    def room_for(self, nbytes: int) -> bool:
        """Whether a recording of about ``nbytes`` can be kept, erasing expired footage if needed."""
        u = self.usage()
        if u["free"] >= nbytes:
            return True
        self.sweep(need_bytes=nbytes)
        return self.usage()["free"] >= nbytes

    def status(self, *, bitrate_guess: float = 4_000_000 / 8, own_class: str = "footage") -> dict:
        """Capacity, use and the retention the card can hold, per record class: the class this
        device records (``own_class``, at ``bitrate_guess`` until there is history) and any other
        that holds segments — a counter has no calls to warn about, nor a call recorder footage."""
        u = self.usage()
        now = self._now()
        classes = {}
        with self._lock:
            for cls in RecordClass:
                if cls != own_class and not u["by_class"].get(cls, {}).get("segments"):
                    continue
                info = u["by_class"].get(cls, {"segments": 0, "bytes": 0, "oldest_wall_us": None})
                window = now - 14 * DAY_US
                size, seconds, first = self.db.execute(
                    "SELECT coalesce(sum(size), 0), coalesce(sum(end_wall_us - start_wall_us), 0) / 1e6,"
                    " min(start_wall_us) FROM segments WHERE record_class = ? AND start_wall_us >= ?",
                    (cls, window)).fetchone()
                rate = size / seconds if seconds > 60 else bitrate_guess
                history_days = max(1.0, (now - first) / DAY_US) if first else 0
                hours = seconds / 3600 / history_days if history_days >= 1 and seconds else self.retention.hours_per_day
                daily = rate * hours * 3600
                others = sum(v["bytes"] for k, v in u["by_class"].items() if k != cls)
                projected = (u["capacity"] - others) / daily if daily else None
                minimum = self.min_days(cls)
                classes[cls] = {
                    "segments": info["segments"], "bytes": info["bytes"],
                    "oldest": iso(info["oldest_wall_us"]) if info["oldest_wall_us"] else None,
                    "bytes_per_second": round(rate), "hours_per_day": round(hours, 2),
                    "projected_days": None if projected is None else round(projected, 1),
                    "min_days": minimum,
                    "warning": projected is not None and projected < minimum + self.retention.warn_margin_days,
                }
            last = self.db.execute("SELECT at, record_class, segments, bytes, days_destroyed FROM overwrites"
                                   " ORDER BY id DESC LIMIT 1").fetchone()
            open_holds = self.db.execute("SELECT count(*) FROM holds WHERE released_at IS NULL").fetchone()[0]
        return {
            "capacity": u["capacity"], "used": u["used"], "free": u["free"], "classes": classes,
            "holds": open_holds, "clock_synchronised": self._synced(),
            "last_overwrite": None if last is None else dict(zip(("at", "record_class", "segments", "bytes",
                                                                  "days_destroyed"), last)),
        }


class RetentionLoop:
    """Overwrite expired footage in the background, and plan the card's capacity after each
    sweep: ``on_warnings(texts, structured)`` gets the warnings in force (English for the log and
    ``ctl status``, structured for the web UI to say in its language)."""

    def __init__(self, vault, *, interval: float, bitrate_guess: float,
                 on_warnings: Callable[[list[str], list[dict]], None],
                 on_evidence: Callable[[str | None], None] | None = None):
        self.vault = vault
        self._on_evidence = on_evidence
        self.interval = interval
        self.bitrate_guess = bitrate_guess
        self._on_warnings = on_warnings
        self._warnings: list[str] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> "RetentionLoop":
        self._thread.start()
        return self

    def wake(self) -> None:
        """Sweep now rather than at the next interval (the reserve is being reached)."""
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            try:
                if self.vault.ready:
                    self.vault.sweep()
                    self._plan_capacity()
                    self._vouch()
            except Exception:
                log.exception("retention sweep failed")
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return

    def _vouch(self) -> None:
        """The index and the log compared (cheaply, unless they differ: vouch.py); what differs
        is a fault on the dashboard until they agree again — a held recording gone among it."""
        if self._on_evidence is None:
            return
        from firmware.vault import vouch

        with self.vault._lock:
            found = vouch.quick(self.vault.db)
        if not found:
            self._on_evidence(None)
            return
        held = [d for d in found if d.held]
        first = held[0] if held else found[0]
        message = (f"evidence: the index and the audit log disagree in {len(found)} place(s)"
                   f"{f', {len(held)} of them under a hold' if held else ''} — {first}; run kiroku vault check")
        self._on_evidence(message)

    def _plan_capacity(self) -> None:
        status = self.vault.status(bitrate_guess=self.bitrate_guess)
        warnings, structured = [], []
        for cls, c in status["classes"].items():
            if c["warning"]:
                structured.append({"record_class": cls, "projected_days": round(c["projected_days"]),
                                   "min_days": c["min_days"]})
                warnings.append(f"capacity: the card holds about {c['projected_days']:.0f} days of {cls} at the "
                                f"current rate, below the {c['min_days']}-day minimum plus the margin — "
                                "fit a larger card or record less")
        if warnings and warnings != self._warnings:
            self.vault.audit("recorder", "capacity.warning", detail={"warnings": warnings})
            for w in warnings:
                log.warning(w)
        self._warnings = warnings
        self._on_warnings(warnings, structured)
