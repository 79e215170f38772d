"""The device's status as the hub's dashboard shows it (docs/hub.md, topic ``status``).

Gathered from what the device already says about itself: the recorder's status over the
control socket (state, sign, faults, the recording under way), the vault's capacity figures
from the index read read-only (as ``kiroku vault status`` does), the settings in
``kiroku.toml`` (the place, the kind of device), the kernel's clock. A recorder that does not
answer is a status too — the dashboard must say so — never a reason for the uplink to stop.
"""

from __future__ import annotations

import logging
from pathlib import Path

from firmware import __version__, clock, paths
from firmware.config import Config, ConfigError, load
from firmware.control import ControlClient, ControlError, socket_path

log = logging.getLogger(__name__)

STORAGE_EVERY = 30.0  # seconds: the card's figures move slowly, and reading them costs a query or two
CONTROL_TIMEOUT = 2.0  # the recorder answers a status at once; a longer wait helps nobody


def _fault(item: dict) -> dict:
    return {"device": str(item.get("device", "")), "message": str(item.get("message", "")),
            "since": item.get("since"), "blocking": item.get("blocking")}  # the call recorder does not say


class StatusSource:
    """What the status is made of, read afresh on each :meth:`read` (the storage figures at most
    every :data:`STORAGE_EVERY` seconds)."""

    def __init__(self, data_dir: Path, *, monotonic):
        self.data_dir = Path(data_dir)
        self.control = ControlClient(socket_path(self.data_dir), timeout=CONTROL_TIMEOUT)
        self._monotonic = monotonic
        self._config = Config()
        self._config_stamp: tuple | None = None
        self._vault = None
        self._storage: dict | None = None
        self._storage_at = -1e9
        self._said: str | None = None

    def close(self) -> None:
        if self._vault is not None:
            self._vault.close()
            self._vault = None

    @property
    def config(self) -> Config:
        """The settings, read again whenever ``kiroku.toml`` changes (the manager edits them in the
        web UI); a file that does not load keeps the last good ones, and says so once."""
        path = paths.config_file(self.data_dir, None)
        try:
            stamp = (path, path.stat().st_mtime_ns, path.stat().st_size) if path else None
        except OSError:
            stamp = None
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                self._config = load(path)
            except ConfigError as exc:
                log.warning("settings: %s — keeping the last good ones", exc)
        return self._config

    def recorder(self) -> tuple[dict | None, str | None]:
        """The recorder's status, or None and why not."""
        try:
            return self.control.status(), None
        except (ControlError, OSError, ValueError) as exc:
            return None, str(exc)

    def storage(self) -> dict | None:
        now = self._monotonic()
        if now - self._storage_at < STORAGE_EVERY:
            return self._storage
        self._storage_at = now
        config = self.config
        try:
            if self._vault is None:
                from firmware.vault import Vault
                from firmware.vault.vault import DB_NAME

                if not (self.data_dir / DB_NAME).exists():
                    return None
                self._vault = Vault(self.data_dir, config.retention, device=config.device.id, readonly=True)
            self._vault.retention = config.retention
            st = self._vault.status(bitrate_guess=config.bytes_per_second, own_class=config.record_class)
        except Exception as exc:  # the index busy or damaged: the dashboard shows no figures, the uplink goes on
            message = f"storage figures unavailable: {exc}"
            if message != self._said:
                log.warning("%s", message)
                self._said = message
            self.close()
            self._storage = None
            return None
        self._said = None
        classes = st["classes"]
        self._storage = {
            "capacity_bytes": st["capacity"], "used_bytes": st["used"], "free_bytes": st["free"],
            "projected_days": {c: v["projected_days"] for c, v in classes.items()},
            "min_days": {c: v["min_days"] for c, v in classes.items()},
            "warning": any(v["warning"] for v in classes.values()),
            "holds": st["holds"], "last_overwrite": (st["last_overwrite"] or {}).get("at"),
        }
        return self._storage

    def read(self, *, checkpoint_size: int | None, acknowledged: int) -> dict:
        """The status payload, less ``v``, ``seq`` and ``at`` (the uplink adds them)."""
        config = self.config
        st, error = self.recorder()
        status = {
            "device": config.device.id, "kind": config.device.kind, "place": config.device.location,
            "software": __version__,
            "recorder": {"answering": st is not None, "error": error},
            "state": st.get("state", "unknown") if st else "not_answering",
            "mode": st.get("mode") if st else None,
            "sign": st.get("sign") if st else None,
            "recording": st.get("recording") if st else None,
            "faults": [_fault(f) for f in st.get("faults", [])] if st else [
                {"device": "recorder", "message": f"the recorder is not answering: {error}", "since": None,
                 "blocking": True}],
            "warnings": [str(w) for w in st.get("warnings", [])] if st else [],
            "clock": {"synchronised": clock.clock_synchronised(), "source": "kernel"},
            "storage": self.storage(),
            "checkpoint": {"size": checkpoint_size, "acknowledged": acknowledged},
        }
        if st and config.device.kind == "calls":
            status["calls"] = {"active": st.get("active_calls"), "stored": st.get("calls_stored"),
                               "last_sip_at": st.get("last_sip_at")}
        return status


def signature(status: dict) -> tuple:
    """What makes a status worth sending at once, not at the next 5-second beat: a change of
    state, sign, faults, warnings, the recording or its marks, the clock, the place, the
    recorder answering or not, a storage warning. Not the durations and byte counts that move
    all the time."""
    rec = status.get("recording") or {}
    storage = status.get("storage") or {}
    sign = status.get("sign") or {}
    return (status["recorder"]["answering"], status["state"], status["place"], sign.get("lit"), sign.get("commanded"),
            tuple((f["device"], f["message"]) for f in status["faults"]), tuple(status["warnings"]),
            rec.get("id"), rec.get("marks"), rec.get("end_reason"), status["clock"]["synchronised"],
            storage.get("warning"), (status.get("calls") or {}).get("active"))
