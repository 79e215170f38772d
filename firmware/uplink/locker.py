"""The device's side of the evidence locker (docs/hub.md, "The evidence locker"): the files the
hub asks for — sealed segments under a hold and their sealed day keys — put, as they are on
the card, to the presigned URLs the hub sent with them.

The device holds no credential for the bucket: each URL puts one object and can do nothing
else. Before a segment goes, its SHA-256 is checked against the one the hub read in this
device's own log: a file changed on the card is not sent (and the hub, which checks every copy
again, would not keep it). What was sent is noted in ``uplink/locker-sent.json`` so that a
restart does not send it again; the hub's next list, without it, ends the note.

Uploads run on a thread of their own, one file at a time: a slow network delays copies, never
the status or the audit log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from firmware.fsutil import atomic_write

log = logging.getLogger("kiroku.uplink.locker")

RETRY = 30.0  # seconds before a failed upload is tried again
TIMEOUT = 60.0


class Copier:
    def __init__(self, data_dir: Path, folder: Path, ca: Path | None):
        self.data_dir = Path(data_dir)
        self._sent_file = Path(folder) / "locker-sent.json"
        self._context = ssl.create_default_context()
        if ca is not None and Path(ca).exists():
            self._context.load_verify_locations(cafile=str(ca))  # the city's CA, as well as the system's
        self._lock = threading.Lock()
        self._wanted: list[dict] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failed: dict[str, float] = {}  # path → when it last failed
        self._said: dict[str, str] = {}
        self.sent = self._load()
        self._thread = threading.Thread(target=self._loop, name="uplink-locker", daemon=True)

    def _load(self) -> dict[str, str]:
        try:
            sent = json.loads(self._sent_file.read_text())
            return {str(k): str(v) for k, v in sent.items()} if isinstance(sent, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        try:
            atomic_write(self._sent_file, json.dumps(self.sent, sort_keys=True).encode())
        except OSError as exc:
            self._say("save", f"cannot note what was copied in {self._sent_file} ({exc}): it may be sent again")

    def start(self) -> "Copier":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def offer(self, message: dict) -> None:
        """The hub's latest list (``messages.parse_locker``)."""
        with self._lock:
            self._wanted = list(message["uploads"])
            wanted = {u["path"] for u in self._wanted}
            for path in [p for p in self.sent if p not in wanted]:  # the hub has it: forget it
                del self.sent[path]
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(5.0)
            self._wake.clear()
            with self._lock:
                todo = [u for u in self._wanted if self.sent.get(u["path"]) != u["url"]]
            for upload in todo:
                if self._stop.is_set():
                    return
                if time.monotonic() - self._failed.get(upload["path"], -1e9) < RETRY:
                    continue
                if upload["expires"] < time.time():
                    continue  # the hub sends a fresh URL before this one is half gone
                if self.put(upload):
                    with self._lock:
                        self.sent[upload["path"]] = upload["url"]
                        self._save()
                else:
                    self._failed[upload["path"]] = time.monotonic()

    def put(self, upload: dict) -> bool:
        path = upload["path"]
        try:
            data = (self.data_dir / path).read_bytes()
        except FileNotFoundError:
            self._say(path, f"the hub asks for {path}, which is not on this card (erased, or lost): not copied")
            return False
        except OSError as exc:
            self._say(path, f"cannot read {path} to copy it to the evidence locker ({exc})")
            return False
        if upload["kind"] == "segment":
            actual = hashlib.sha256(data).hexdigest()
            if actual != upload["sha256"]:
                self._say(path, f"{path} is not the segment this device's log committed (SHA-256 {actual[:16]}…,"
                                f" the log says {upload['sha256'][:16]}…): not copied — the file was changed on the card")
                return False
        request = urllib.request.Request(upload["url"], data=data, method="PUT",
                                         headers={"Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self._context) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            self._say(path, f"the evidence locker refused {path} (HTTP {exc.code}): trying again with the hub's next"
                            " address")
            return False
        except (urllib.error.URLError, OSError) as exc:
            self._say(path, f"cannot reach the evidence locker for {path} ({getattr(exc, 'reason', exc)}):"
                            f" trying again in {RETRY:.0f} s")
            return False
        self._said.pop(path, None)
        log.info("copied %s (%d bytes) to the evidence locker", path, len(data))
        return True

    def _say(self, key: str, message: str) -> None:
        if self._said.get(key) != message:
            log.warning("%s", message)
            self._said[key] = message
