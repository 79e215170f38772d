"""The web UI as a browser uses it: streaming a viewing, and an upload the size of a release."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kiroku.bench.figures import Figure, vm_hwm_mb, vm_rss_mb


class _Browser:
    """What a script does with the web UI: cookies, the CSRF token, JSON."""

    def __init__(self, base: str):
        import http.cookiejar
        import urllib.request

        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def call(self, method: str, path: str, body: dict | None = None, form: dict | None = None) -> bytes:
        import urllib.error
        import urllib.parse
        import urllib.request

        headers, data = {"X-CSRFToken": self.token}, None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if form is not None:
            data = urllib.parse.urlencode(form, doseq=True).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with self.opener.open(request, timeout=120) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None

    def json(self, method: str, path: str, body: dict | None = None):
        return json.loads(self.call(method, path, body))

    def upload(self, path: str, field: str, file: Path) -> dict:
        """POST ``file`` as a multipart form's ``field``, streamed from disk as a browser does."""
        import secrets
        import shutil
        import urllib.request

        boundary = f"kiroku-bench-{secrets.token_hex(8)}"
        body = file.with_name(file.name + ".multipart")
        with body.open("wb") as out, file.open("rb") as src:
            out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n".encode())
            shutil.copyfileobj(src, out)
            out.write(f"\r\n--{boundary}--\r\n".encode())
        headers = {"X-CSRFToken": self.token, "Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(body.stat().st_size)}
        try:
            with body.open("rb") as data:
                request = urllib.request.Request(self.base + path, data=data, headers=headers, method="POST")
                with self.opener.open(request, timeout=300) as response:
                    return json.loads(response.read())
        finally:
            body.unlink()

    def log_in(self, username: str, password: str) -> None:
        self.token = self.json("GET", "/api/v1/session")["csrf_token"]
        self.token = self.json("POST", "/api/v1/session", {"username": username, "password": password})["csrf_token"]


def bench_web_streaming(data: Path, recovery) -> list[Figure]:
    """The web UI as a process (``kiroku web``), set up and driven through its pages and
    JSON API as people would: a section head's approved viewing of the whole recording,
    every part streamed (decrypted in memory, cut, sent). Its peak RSS is what streaming
    costs; the figure before streaming is its resting size."""
    import re
    import socket
    import subprocess

    from webui import setup_code

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = subprocess.Popen([sys.executable, "-m", "kiroku", "web", "--simulate", "--data", str(data),
                            "--host", "127.0.0.1", "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        manager, head = _Browser(base), _Browser(base)
        deadline = time.monotonic() + 30
        while True:
            try:
                page = manager.call("GET", "/setup/").decode()
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise RuntimeError(f"the web UI did not start: {web.stderr.read()[-300:]!r}") from None
                time.sleep(0.2)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        words = {"yamada": "bench manager passphrase", "suzuki": "bench section head passphrase"}
        code = setup_code.pending(data)  # what the console shows whoever stands at the device
        manager.call("POST", "/setup/", form={"csrf_token": token, "code": code, "username": "yamada",
                                              "display_name": "山田", "section": "市民課", "password": words["yamada"],
                                              "confirm": words["yamada"], "recovery": str(recovery)})
        manager.log_in("yamada", words["yamada"])
        section = manager.json("GET", "/api/v1/sections")[0]
        manager.json("POST", "/api/v1/people", {"username": "suzuki", "display_name": "鈴木", "section_id":
                                                section["id"], "roles": ["section_head"], "password": words["suzuki"]})
        head.log_in("suzuki", words["suzuki"])
        recording = head.json("GET", "/api/v1/recordings")[0]
        req = head.json("POST", "/api/v1/requests", {"recording": [recording["id"]], "purpose": "maintenance",
                                                      "reason": "benchmark", "responsible_section": section["name"]})
        manager.json("POST", f"/api/v1/requests/{req['id']}/decision",
                     {"decision": "approved", "scope_recording": [recording["id"]], "valid_hours": 1,
                      "confirm_responsible": True, "confirm_written": True})  # the signed paper is in hand (Art. 8)
        viewing = manager.json("POST", f"/api/v1/requests/{req['id']}/unlock", {"password": words["yamada"]})
        timeline = head.json("GET", f"/api/v1/viewings/{viewing['id']}")
        # Log-ins hash with Argon2id (tens of MB for a moment): start the high-water mark afresh.
        Path(f"/proc/{web.pid}/clear_refs").write_text("5")
        resting = vm_rss_mb(web.pid)
        sent = 0
        for part in timeline["parts"]:
            sent += len(head.call("GET", f"/api/v1/viewings/{viewing['id']}/part/{part['n']}.mp4"))
        peak = vm_hwm_mb(web.pid)
        # A manager uploads an OS update a kernel's size (shaped like a release; the device
        # would refuse its signature, but the page only receives and stores it).
        release = _release_shaped(data.parent / "bench-update.os.tar", megabytes=64)
        Path(f"/proc/{web.pid}/clear_refs").write_text("5")
        before_upload = vm_rss_mb(web.pid)
        started = time.perf_counter()
        asked = manager.upload("/api/v1/update", "release", release)
        upload_seconds = time.perf_counter() - started
        upload_peak = vm_hwm_mb(web.pid)
        release.unlink()
    finally:
        web.terminate()
        web.wait(20)
    return [Figure("web peak memory while streaming (RSS)", round(peak, 1), "MB",
                   note=f"kiroku web; {len(timeline['parts'])} parts, {sent / 1e6:.1f} MB of footage streamed to a "
                        f"viewer; {resting:.1f} MB at rest before (peak counted from there: a log-in's Argon2id "
                        "memory is not streaming's)"),
            Figure("web peak memory receiving a 64 MB update (RSS)", round(upload_peak, 1), "MB",
                   note=f"kiroku web; {before_upload:.1f} MB before; spooled to the data folder as it arrives, "
                        f"hashed and stored in {upload_seconds:.1f} s (state {asked.get('state')})")]


def _release_shaped(path: Path, megabytes: int) -> Path:
    """A tar shaped like an OS update (a manifest, a signature, ``megabytes`` of packages that
    do not compress), written a megabyte at a time."""
    import io
    import os
    import tarfile

    payload = path.with_suffix(".payload")
    with payload.open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(2**20))
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest", b"kiroku-os 1\nversion 9999.1.1\narchitecture all\n"),
                           ("manifest.sig", os.urandom(64))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(payload, arcname="debs.tar")
    payload.unlink()
    return path
