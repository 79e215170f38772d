"""``kiroku hub --config FILE [serve]`` and ``kiroku hub --config FILE add-manager NAME …``: the
hub's process — its web UI and API (cheroot, HTTPS unless it listens on loopback only), the
consumer and the pusher — and the one thing done at its console, the first manager."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from firmware.config import ConfigError

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(config_path: Path) -> int:
    from hub import config as hub_config
    from hub import service
    from hub.broker import BrokerError
    from hub.db import HubDbError
    from hub.web import create_app
    from webui.server import server_for

    try:
        config = hub_config.load(config_path)
        app = create_app(config)
        consumer, pusher = service.start(app)
    except (ConfigError, HubDbError, BrokerError) as exc:
        print(f"kiroku hub: {exc}", file=sys.stderr)
        return 2
    web = config.web
    if not web.https and web.host not in LOOPBACK:
        print("kiroku hub: without HTTPS the hub listens on loopback only — set web.https = true (and web.certificate, "
              "web.key) or web.host = \"127.0.0.1\"", file=sys.stderr)
        return 2
    server = server_for(app, web.host, web.port)
    if web.https:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(web.certificate, web.key)
    try:
        server.prepare()
    except OSError as exc:
        print(f"kiroku hub: cannot listen on {web.host}:{web.port} ({exc.strerror or exc}) — stop the other program "
              "using the port or change web.port", file=sys.stderr)
        service.stop(consumer, pusher, app.extensions["kiroku"].keeper)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = threading.Thread(target=server.serve, name="hub-web", daemon=True)
    worker.start()
    print(f"kiroku hub: {'https' if web.https else 'http'}://{web.host}:{web.port}/", flush=True)
    try:
        while not stop.wait(0.5) and worker.is_alive():
            pass
    finally:
        server.stop()
        service.stop(consumer, pusher, app.extensions["kiroku"].keeper)
        app.extensions["kiroku"].close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def add_manager(config_path: Path, username: str, display_name: str, section: str, password_file: Path) -> int:
    from hub import config as hub_config
    from hub import setup
    from hub.db import HubDbError

    try:
        config = hub_config.load(config_path)
        password = password_file.read_text().strip()
        setup.add_manager(config.dsn, config.folder, username=username, display_name=display_name or username,
                          section=section, password=password)
    except (ConfigError, HubDbError, setup.SetupError, OSError) as exc:
        print(f"kiroku hub: {exc}", file=sys.stderr)
        return 2
    print(f"kiroku hub: manager {username!r} added; they can log in now")
    return 0
