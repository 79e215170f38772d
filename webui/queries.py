"""What the device's pages and the JSON API both read from the device itself: its settings,
its storage, its audit log. (The registers are read through ``domain``.)"""

from __future__ import annotations

import re
from pathlib import Path

from flask import current_app

from firmware.config import Config, load
from firmware.paths import config_file

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
FILTERS = ("actor", "subject", "action", "since", "until", "before")

# (section, key, kind): what the page offers; hardware (pins, camera) stays in the file.
FIELDS = [
    ("device", "mode", str), ("device", "location", str),
    ("notice", "delay", float), ("notice", "announcement", str),
    ("recording", "segment_seconds", float), ("recording", "max_minutes", float),
    ("retention", "footage_min_days", int), ("retention", "call_min_days", int),
    ("retention", "footage_max_days", int), ("retention", "call_max_days", int),
    ("retention", "capacity_mb", int),
    ("public", "city", str), ("public", "purpose", str), ("public", "manager", str), ("public", "contact", str),
    ("public", "url", str),
    ("calls", "recorded_lines", str), ("calls", "excluded_lines", str),  # Art. 3; a call recorder's page only
]
RESTART_NEEDED = {("device", "mode"), ("notice", "announcement")}


def current() -> Config:
    return load(config_file(Path(current_app.config["KIROKU_DATA"]), None))


def describe(config: Config) -> dict:
    """The settings the page offers, as "section.key": value."""
    return {"settings": {f"{s}.{k}": getattr(getattr(config, s), k) for s, k, _ in FIELDS}}


def vault_status() -> dict:
    from firmware.vault import Vault

    data = Path(current_app.config["KIROKU_DATA"])
    config = load(config_file(data, None))
    vault = Vault.open(data, config, readonly=True)
    try:
        status = vault.status(bitrate_guess=config.bytes_per_second, own_class=config.record_class)
        status["holds_open"] = vault.holds()
    finally:
        vault.close()
    return status


def _vault():
    from firmware.vault import Vault

    return Vault(Path(current_app.config["KIROKU_DATA"]), readonly=True)


def query_entries(args, *, hide: tuple[str, ...] = ()) -> dict:
    from firmware.vault.audit import AuditError

    vault = _vault()
    try:
        try:
            verified = {"ok": True, **vault.audit_log.verify(vault.db)}
        except AuditError as exc:
            verified = {"ok": False, "error": str(exc)}
        try:
            limit = max(1, min(int(args.get("limit", 200)), 2000))
        except ValueError:
            limit = 200
        try:
            before = int(args["before"]) if args.get("before") else None
        except ValueError:
            before = None
        if before is not None and not 0 <= before < 2**63:
            before = None  # SQLite's integers: a larger one is no entry's
        dates = {k: args.get(k) if _DATE.fullmatch(args.get(k) or "") else None for k in ("since", "until")}
        entries = vault.audit_log.entries(vault.db, actor=args.get("actor") or None,
                                          subject=args.get("subject") or None, action=args.get("action") or None,
                                          limit=limit + 1, before=before, **dates,  # one more: a next page?
                                          hide=hide)
        actions = [r[0] for r in vault.db.execute("SELECT DISTINCT action FROM audit ORDER BY action")]
        checkpoint = vault.audit_log.latest_checkpoint(vault.db) if verified.get("entries") else ""
    finally:
        vault.close()
    older = entries[limit - 1]["seq"] if len(entries) > limit else None
    entries = entries[:limit]
    return {"verification": verified, "entries": entries, "checkpoint": checkpoint, "actions": actions,
            "older": older}
