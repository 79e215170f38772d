"""A Mosquitto broker with a configuration of its own: TLS only, on 127.0.0.1; no anonymous
clients; accounts and access rules in the dynamic-security plugin (one account per device,
made and removed by the hub while the broker runs: ``hub.broker``); messages persisted, so
persistent sessions and what waits for them survive a restart of the broker."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from kiroku.engines import (EngineError, die_with_parent, free_port, give_to, port_open, run_as, service_account,
                            stop_process, wait_until, which)
from kiroku.engines import pki

ADMIN = "kiroku-admin"
PLUGIN = "usr/lib/*/mosquitto_dynamic_security.so"


class Mosquitto:
    """``Mosquitto(folder).start()`` … ``.stop()``. ``ca`` is the certificate clients trust;
    ``admin`` the dynamic-security administrator's name and password (``hub.broker`` uses it)."""

    def __init__(self, folder: Path, port: int | None = None, *, ca: tuple[Path, Path] | None = None):
        self.folder = Path(folder)
        self.port = port
        self.account = service_account("mosquitto")
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "mosquitto.log"
        self._ca = ca  # (ca.pem, ca.key): the city's CA, or one made here

    @property
    def ca(self) -> Path:
        return self._ca[0]

    @property
    def admin(self) -> tuple[str, str]:
        return ADMIN, (self.folder / "admin-password").read_text().strip()

    def _plugin(self) -> str:
        found = sorted(Path("/").glob(PLUGIN))
        if not found:
            raise EngineError("Mosquitto's dynamic-security plugin not found: install Debian's mosquitto "
                              "(tools/system-packages test)")
        return str(found[-1])

    def _prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        (self.folder / "data").mkdir(exist_ok=True)
        if self._ca is None:
            self._ca = pki.make_ca(self.folder / "ca")
        pki.server_certificate(*self._ca, self.folder, ["127.0.0.1", "localhost"], stem="broker")
        dynsec = self.folder / "dynsec.json"
        if not dynsec.exists():
            password = secrets.token_urlsafe(24)
            secret = self.folder / "admin-password"
            secret.write_text(password + "\n")
            secret.chmod(0o600)
            out = subprocess.run([which("mosquitto_ctrl", package="mosquitto"), "dynsec", "init", str(dynsec), ADMIN,
                                  password], capture_output=True, text=True)
            if out.returncode != 0:
                raise EngineError(f"mosquitto_ctrl dynsec init failed: {out.stdout}{out.stderr}")

    def _config(self) -> Path:
        conf = self.folder / "mosquitto.conf"
        lines = [
            "# Written by kiroku (kiroku/engines/mosquitto.py): a broker of the city hub's own.",
            "per_listener_settings false",
            "allow_anonymous false",
            "persistence true",
            f"persistence_location {self.folder / 'data'}/",
            "autosave_interval 5",
            # what waits for a hub or a device that is away: a day's worth for hundreds of devices
            "max_queued_messages 200000",
            "max_queued_bytes 0",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"plugin {self._plugin()}",
            f"plugin_opt_config_file {self.folder / 'dynsec.json'}",
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.ca}",
            f"certfile {self.folder / 'broker.pem'}",
            f"keyfile {self.folder / 'broker.key'}",
            "tls_version tlsv1.2",
            "require_certificate false",
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 30) -> "Mosquitto":
        self._prepare()
        self.port = self.port or free_port()
        conf = self._config()
        give_to(self.account, self.folder)
        if self.account is not None:
            self.ca.chmod(0o644)
        self.proc = subprocess.Popen([which("mosquitto", "/usr/sbin/mosquitto", package="mosquitto"), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.folder / "stderr.log", "ab"),
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     # started as its account (not dropping to it itself), so that it
                                     # ends with whoever started it, however that ends
                                     preexec_fn=die_with_parent(), **run_as(self.account))
        wait_until(lambda: port_open(self.port), timeout=timeout, what=f"Mosquitto on 127.0.0.1:{self.port}",
                   proc=self.proc, log=self.log)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """As a crash would: SIGKILL, nothing saved on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

