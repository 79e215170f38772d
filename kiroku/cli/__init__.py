"""The ``kiroku`` command (DESIGN.md §6). ``main(argv)`` returns the exit code.

One module per family of sub-commands; what they share is in ``common``, the arguments of
all of them in ``parser``.

Exit codes: 0 done; 1 the recorder refused or could not be reached; 2 bad usage, bad
configuration or an unusable device (one line on stderr says which); 3 the recorder must
be restarted (a device hung).
"""

from __future__ import annotations

import sys

from firmware import paths
from kiroku.cli import audit, calls, ctl, documents, export, keys, processes, vault, web
from kiroku.cli.common import load_config, setup_code_hint
from kiroku.cli.parser import build_parser

# The commands that need no configuration (or read their own), and those given the one in force.
_PLAIN = {"ctl": ctl.ctl, "tls": web.tls, "setup-code": web.setup_code, "export": export.export,
          "verify": export.verify, "report": documents.report, "calls": calls.calls, "vault": vault.vault,
          "audit": audit.audit, "keys": keys.keys, "init": keys.init}
_CONFIGURED = {"notice": documents.notice, "recorder": processes.recorder, "kind": processes.kind,
               "call-recorder": processes.call_recorder, "web": processes.web, "run": processes.run}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "data") and args.command not in ("city", "enroll", "uplink"):  # a device's data folder
        if args.data is None:
            args.data = paths.default_data_dir()
        if args.command == "report" and not isinstance(args.data, list):  # it takes --data more than once
            args.data = [args.data]
        for folder in args.data if isinstance(args.data, list) else [args.data]:
            refusal = paths.enter_shared_data_dir(folder)
            if refusal:
                print(f"kiroku: {setup_code_hint(folder) if args.command == 'setup-code' else refusal}",
                      file=sys.stderr)
                return 2
    if getattr(args, "simulate", "absent") is None:
        args.simulate = not paths.is_raspberry_pi()
    from firmware.vault.errors import KeyStoreError

    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except KeyStoreError as exc:  # a key file missing or damaged: the message names it and the fix
        print(f"kiroku: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # a sub-command that gave up with its message already printed
        if isinstance(exc.code, int):
            return exc.code
        raise


def _city(args) -> int:
    """``kiroku enroll``, ``uplink``, ``hub`` and ``city``: the device's side of the hub, the hub, a simulated city."""
    if args.command == "enroll":
        from firmware.uplink import enroll

        return enroll.run(args)
    if args.command == "uplink":
        from firmware.uplink import process

        return process.run(args)
    if args.command == "hub":
        from hub import main as hub

        if args.action == "add-manager":
            return hub.add_manager(args.config, args.name, args.display_name, args.section, args.password_file)
        return hub.serve(args.config)
    from kiroku import city

    if args.counters < 0 or args.counters > 50:
        print("kiroku city: --counters takes 0 to 50", file=sys.stderr)
        return 2
    return city.main(folder=args.data, counters=args.counters, calls=args.calls, port=args.port,
                     manager=args.manager, password_file=args.password_file)


def _dispatch(args) -> int:
    if args.command in ("enroll", "uplink", "hub", "city"):
        return _city(args)
    if args.command == "bench":
        from kiroku import bench

        return bench.run(quick=args.quick, json_path=args.json)
    if args.command in _PLAIN:
        return _PLAIN[args.command](args)
    config = load_config(args)
    if config is None:
        return 2
    return _CONFIGURED[args.command](args, config)
