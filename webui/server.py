"""The web UI process (``kiroku web``), served by waitress."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger("kiroku.web")


def main(*, data_dir: Path, config, simulate: bool, host: str, port: int) -> int:
    from waitress import create_server

    from webui import create_app

    if not simulate and host not in ("127.0.0.1", "localhost", "::1"):
        # HTTPS and logins come with the admin page; until then nothing leaves this machine.
        print("kiroku web: on real hardware the web UI listens only on localhost until HTTPS is set up "
              "— use --host 127.0.0.1", file=sys.stderr)
        return 2
    hosts = {"127.0.0.1", "localhost", "::1", host.strip("[]").lower()}
    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": simulate, "KIROKU_HOSTS": tuple(hosts)})
    try:
        server = create_server(app, host=host, port=port, threads=8, ident="kiroku")
    except OSError as exc:
        print(f"kiroku web: cannot listen on {host}:{port} ({exc.strerror}) — "
              "stop the other program using the port or pass --port N", file=sys.stderr)
        return 2

    def stop(*_):
        # waitress's run() loop has no stop flag to poll; unwinding it is the clean way out.
        # The web UI holds no state that a stop could lose.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info("web UI on http://%s:%d/", host, port)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
    return 0
