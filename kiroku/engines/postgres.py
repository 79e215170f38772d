"""A private PostgreSQL cluster: ``initdb`` under a folder of its own, the server on 127.0.0.1
(and a Unix socket in that folder), one role and one database, password (SCRAM) only."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from kiroku.engines import (EngineError, die_with_parent, free_port, give_to, port_open, run_as, service_account,
                            stop_process, wait_until, which)

ROLE = DATABASE = "kiroku"


class Postgres:
    """``Postgres(folder).start()`` … ``.stop()``; ``dsn`` is what the hub connects with. The
    cluster and its password stay in ``folder``, so a second start finds the same data."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.port = port
        self.account = service_account("postgres")
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "postgres.log"

    @property
    def password(self) -> str:
        return (self.folder / "password").read_text().strip()

    @property
    def dsn(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _tool(self, name: str) -> str:
        return which(name, f"/usr/lib/postgresql/*/bin/{name}", package="postgresql")

    def _initdb(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = self.folder / "password"
        secret.write_text(secrets.token_urlsafe(24) + "\n")
        secret.chmod(0o600)
        (self.folder / "run").mkdir(exist_ok=True)
        give_to(self.account, self.folder)
        out = subprocess.run(
            [self._tool("initdb"), "-D", str(self.data), "-U", ROLE, f"--pwfile={secret}", "--auth=scram-sha-256",
             "--encoding=UTF8", "--locale=C.UTF-8"], capture_output=True, text=True, **run_as(self.account))
        if out.returncode != 0:
            raise EngineError(f"initdb in {self.data} failed:\n{out.stdout}{out.stderr}")

    def start(self, timeout: float = 60) -> "Postgres":
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self.port = self.port or free_port()
        log = open(self.log, "ab")
        give_to(self.account, self.log)
        self.proc = subprocess.Popen(
            [self._tool("postgres"), "-D", str(self.data), "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
             "-c", f"unix_socket_directories={self.folder / 'run'}", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent(), **run_as(self.account))
        log.close()
        wait_until(lambda: port_open(self.port) and self._accepts(), timeout=timeout,
                   what=f"PostgreSQL on 127.0.0.1:{self.port}", proc=self.proc, log=self.log)
        self._ensure_database()
        return self

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self._dsn("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _dsn(self, database: str) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def stop(self) -> None:
        """A fast shutdown (SIGINT: PostgreSQL's own, which checkpoints first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> "Postgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
