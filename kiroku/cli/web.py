"""``kiroku tls`` and ``kiroku setup-code``: what the web UI keeps that a person at the device
needs — the admin page's certificate, and the first-run page's set-up code."""

from __future__ import annotations

import sqlite3
import sys

from kiroku.cli.common import load_config, setup_code_hint


def tls(args) -> int:
    from webui import tls

    if args.action == "install":
        try:
            print(f"installed; fingerprint (SHA-256) {tls.install(args.data, args.cert, args.key)}"
                  " — restart the web UI to use it")
        except (OSError, ValueError) as exc:
            print(f"kiroku tls: {exc}", file=sys.stderr)
            return 2
    else:
        config = load_config(args) if hasattr(args, "config") else None
        device = config.device.id if config else "counter-1"
        print(tls.fingerprint(tls.ensure_certificate(args.data, device)))
    return 0


def setup_code(args) -> int:
    from webui import setup_code

    try:
        code = setup_code.pending(args.data)
    except PermissionError:
        print(f"kiroku setup-code: {setup_code_hint(args.data)}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"kiroku setup-code: {exc}", file=sys.stderr)
        return 2
    if code is None:
        print("kiroku setup-code: this device has a manager already; the first-run page is closed",
              file=sys.stderr)
        return 1
    print(setup_code.shown(code))
    return 0
