"""The web UI process (``kiroku web``), served by cheroot.

On real hardware it serves HTTPS only, with the device's certificate (``webui.tls``);
plain HTTP exists only on simulated hardware, and only on localhost. Signal handlers only
set a flag; the main thread then stops the server.
"""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
import sys
import threading
from pathlib import Path

log = logging.getLogger("kiroku.web")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def host_names(host: str, extra: str) -> tuple[str, ...]:
    """The names a browser may use for this device (anything else is refused: DNS rebinding).
    Its addresses need no list: the app takes any address typed as one (webui.site._is_address)."""
    names = set(LOOPBACK) | {host.strip("[]").lower()}
    if host not in LOOPBACK:
        hostname = socket.gethostname().lower()
        names |= {hostname, f"{hostname}.local"}
    names |= {n.strip().lower() for n in extra.split(",") if n.strip()}
    return tuple(sorted(names))


def drain_unread_bodies(app):
    """The WSGI ``app`` behind two guards on request bodies, for cheroot:
    - a body larger than the app takes (MAX_CONTENT_LENGTH; the update upload's own limit
      is checked by the app, which knows who asks) is refused unread, with the 413 on which
      cheroot closes the connection;
    - what the app left unread of a body is read a little at a time and dropped. To keep
      the connection open after any other answer, cheroot reads that rest itself — in one
      read, into memory: a refused 200 MB upload would be 200 MB of the Pi's memory."""
    from webui import releases

    limit, uploads = app.config["MAX_CONTENT_LENGTH"], releases.upload_paths(app)

    def wrapped(environ, start_response):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit and environ.get("PATH_INFO") not in uploads:
            start_response("413 Request Entity Too Large", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"too large\n"]
        status = []

        def start(line, headers, exc_info=None):
            status.append(line)
            return start_response(line, headers, exc_info)

        try:
            return app(environ, start)
        finally:
            keeps_open = environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and \
                environ.get("HTTP_CONNECTION", "").lower() != "close"
            if keeps_open and not (status and status[-1].startswith("413")):
                body = environ.get("wsgi.input")
                try:
                    while getattr(body, "remaining", 0) > 0 and body.read(min(body.remaining, DRAIN_CHUNK)):
                        pass
                except (OSError, ValueError):
                    pass  # the client went away: cheroot closes the connection

    return wrapped


DRAIN_CHUNK = 64 * 1024


def server_for(app, host: str, port: int):
    """cheroot's server for the app: no body larger than any view takes (a manager's release
    upload) is read at all, and a refused one is read without being kept."""
    from cheroot import wsgi

    from webui import releases

    server = wsgi.Server((host, port), drain_unread_bodies(app), numthreads=8, server_name="kiroku")
    server.max_request_body_size = max(app.config["MAX_CONTENT_LENGTH"], releases.max_release(app) + releases.MAX_FORM)
    return server


def main(*, data_dir: Path, config, simulate: bool, host: str, port: int) -> int:
    from webui import create_app, tls

    https = not simulate
    if simulate and host not in LOOPBACK:
        print("kiroku web: on simulated hardware the web UI speaks plain HTTP and so listens only on localhost "
              "— use --host 127.0.0.1", file=sys.stderr)
        return 2
    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": simulate, "KIROKU_HTTPS": https,
                      "KIROKU_DEVICE": config.device.id, "KIROKU_HOSTS": host_names(host, config.web.hostnames),
                      "KIROKU_RESERVE_MB": config.retention.reserve_mb})
    server = server_for(app, host, port)
    if https:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        cert = tls.ensure_certificate(data_dir, config.device.id)
        server.ssl_adapter = BuiltinSSLAdapter(str(cert), str(tls.paths(data_dir)[1]))
        print(f"kiroku web: HTTPS certificate fingerprint (SHA-256) {tls.fingerprint(cert)}", flush=True)
    from webui import setup_code

    try:
        code = setup_code.pending(data_dir)
    except (OSError, sqlite3.Error) as exc:  # the page still serves; it refuses codes until this is fixed
        print(f"kiroku web: cannot read or make the set-up code ({exc}); the first-run page refuses every code "
              f"until it can", file=sys.stderr, flush=True)
        code = None
    if code:
        print(f"kiroku web: no manager yet: the first-run page asks for the set-up code {setup_code.shown(code)}",
              flush=True)
    try:
        server.prepare()
    except OSError as exc:
        print(f"kiroku web: cannot listen on {host}:{port} ({exc.strerror or exc}) — "
              "stop the other program using the port or pass --port N", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = threading.Thread(target=server.serve, name="web", daemon=True)
    worker.start()
    log.info("web UI on %s://%s:%d/", "https" if https else "http", host, port)
    try:
        while not stop.wait(0.5) and worker.is_alive():
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
