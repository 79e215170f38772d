"""The ``kiroku`` command (DESIGN.md §6). ``main(argv)`` returns the exit code.

Exit codes: 0 done; 1 the recorder refused or could not be reached; 2 bad usage, bad
configuration or an unusable device (one line on stderr says which); 3 the recorder must
be restarted (a device hung).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from firmware import __version__, paths


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help=f"the device's data folder (default: {paths.PI_DATA_DIR} on a Pi, ./data elsewhere)")


def _add_hardware(parser: argparse.ArgumentParser) -> None:
    _add_data(parser)
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: DATA/kiroku.toml if present)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--simulate", dest="simulate", action="store_true", default=None,
                       help="simulated camera, microphone and GPIO (the default except on a Raspberry Pi)")
    group.add_argument("--real", dest="simulate", action="store_false",
                       help="the real camera, microphone and GPIO (the default on a Raspberry Pi)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiroku", description="Service-counter recording appliance.")
    parser.add_argument("--version", action="version", version=f"kiroku {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="recorder and web UI together (development, demonstrations)")
    _add_hardware(p)
    p.add_argument("--host", default=None, help="address the web UI listens on (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="web UI port (default from config: 8080)")

    p = sub.add_parser("recorder", help="the recorder process alone (the Pi's kiroku-recorder service)")
    _add_hardware(p)

    p = sub.add_parser("web", help="the web UI process alone (the Pi's kiroku-web service)")
    _add_hardware(p)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)

    p = sub.add_parser("ctl", help="talk to a running recorder over its control socket")
    _add_data(p)
    p.add_argument("--json", action="store_true", help="print the recorder's reply as JSON")
    p.add_argument("--by", default=None, help="who is asking (recorded with the command)")
    ctl = p.add_subparsers(dest="action", metavar="ACTION")
    ctl.required = True
    ctl.add_parser("status", help="state, sign, recording, faults")
    ctl.add_parser("start", help="start recording (after the notice)")
    ctl.add_parser("stop", help="stop recording")
    m = ctl.add_parser("mark", help="mark an incident on the current (or last) recording")
    m.add_argument("--note", default="", help="a short note")
    m.add_argument("--section", default="", help="the responsible section (対応担当課)")
    s = ctl.add_parser("sim", help="simulated hardware only: press the button, unplug a device…")
    from firmware.hardware import Simulator

    s.add_argument("sim_action", choices=Simulator.ACTIONS, metavar="ACTION",
                   help=", ".join(Simulator.ACTIONS))
    return parser


def _setup_logging(name: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _load_config(args):
    from firmware.config import ConfigError, load

    try:
        return load(paths.config_file(args.data, args.config))
    except ConfigError as exc:
        print(f"kiroku: configuration: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "data", None) is None and hasattr(args, "data"):
        args.data = paths.default_data_dir()
    if getattr(args, "simulate", "absent") is None:
        args.simulate = not paths.is_raspberry_pi()
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130


def _dispatch(args) -> int:
    if args.command == "ctl":
        return _ctl(args)
    config = _load_config(args)
    if config is None:
        return 2
    if args.command == "recorder":
        from firmware import daemon

        _setup_logging("recorder", args.verbose)
        return daemon.main(args.data, config, simulate=args.simulate)
    host = args.host or config.web.host
    port = args.port or config.web.port
    if args.command == "web":
        from webui.server import main as web_main

        _setup_logging("web", args.verbose)
        return web_main(data_dir=args.data, config=config, simulate=args.simulate, host=host, port=port)
    if args.command == "run":
        from firmware import supervisor

        _setup_logging("run", args.verbose)
        return supervisor.main(data_dir=args.data, config_path=args.config, simulate=args.simulate,
                               host=host, port=port)
    raise AssertionError(args.command)


def _ctl(args) -> int:
    from firmware.control import ControlClient, ControlError, socket_path

    client = ControlClient(socket_path(args.data))
    fields = {}
    if args.by:
        fields["by"] = args.by
    try:
        if args.action == "mark":
            status = client.request("mark", note=args.note, section=args.section, **fields)
        elif args.action == "sim":
            status = client.request("sim", action=args.sim_action)
        else:
            status = client.request(args.action, **fields)
    except ControlError as exc:
        print(f"kiroku ctl: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
    else:
        print(format_status(status))
    return 0


def format_status(s: dict) -> str:
    """The recorder's status as a few lines a person can read at the counter."""
    hardware = "simulated hardware" if s.get("simulated") else "hardware"
    sign = s["sign"]
    sign_text = "lit" if sign["lit"] else "off"
    if sign["commanded"] and not sign["lit"]:
        sign_text = "commanded on but NOT lit"
    if sign["readback"]:
        sign_text += " (read-back)"
    lines = [
        f"state      {s['state']} ({s['mode']}, {hardware}, device {s['device']})",
        f"sign       {sign_text}",
        f"light      {s['status_light']['pattern']}",
    ]
    for label, rec in (("recording", s.get("recording")), ("last", s.get("last_recording"))):
        if rec:
            marks = f", {rec['marks']} incident mark(s)" if rec["marks"] else ""
            lines.append(f"{label:<10} {rec['id']}  {rec['duration_s']:.1f} s, {rec['segments']} segment(s){marks}")
    faults = s.get("faults") or []
    lines.append("faults     " + ("; ".join(f["message"] for f in faults) if faults else "none"))
    lines.append(f"clock      {'synchronised' if s['clock']['synchronised'] else 'NOT synchronised'}, {s['clock']['now']}")
    return "\n".join(lines)
