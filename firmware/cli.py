"""The ``kiroku`` command (DESIGN.md §6). ``main(argv)`` returns the exit code.

Exit codes: 0 done; 1 the recorder refused or could not be reached; 2 bad usage, bad
configuration or an unusable device (one line on stderr says which); 3 the recorder must
be restarted (a device hung).
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
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
    # The same options after the action too (`kiroku ctl status --json`); SUPPRESS keeps a
    # sub-command from resetting what was given before it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--data", type=Path, default=argparse.SUPPRESS, metavar="DIR")
    after.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    after.add_argument("--by", default=argparse.SUPPRESS)
    ctl = p.add_subparsers(dest="action", metavar="ACTION")
    ctl.required = True
    ctl.add_parser("status", help="state, sign, recording, faults", parents=[after])
    ctl.add_parser("start", help="start recording (after the notice)", parents=[after])
    ctl.add_parser("stop", help="stop recording", parents=[after])
    m = ctl.add_parser("mark", help="mark an incident on the current (or last) recording", parents=[after])
    m.add_argument("--note", default="", help="a short note")
    m.add_argument("--section", default="", help="the responsible section (対応担当課)")
    r = ctl.add_parser("release", help="release a hold (an incident closed, a request ended)", parents=[after])
    r.add_argument("hold", type=int, help="the hold's number (kiroku vault holds)")
    s = ctl.add_parser("sim", help="simulated hardware only: press the button, unplug a device…", parents=[after])
    from firmware.hardware import Simulator

    s.add_argument("sim_action", choices=Simulator.ACTIONS, metavar="ACTION",
                   help=", ".join(Simulator.ACTIONS))
    p = sub.add_parser("init", help="first-run set-up: device keys, the recovery key, optionally a manager")
    _add_data(p)
    p.add_argument("--recovery-key-out", required=True, type=Path, metavar="FILE",
                   help="where to write the recovery key (an age identity) — print it, keep it in a safe, delete the file")
    p.add_argument("--recovery-qr-out", type=Path, metavar="FILE.svg", help="also write it as a QR code (SVG)")
    p.add_argument("--device", default=None, help="device name (default: device.id from the config)")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--manager", metavar="NAME", help="also create the first manager")
    p.add_argument("--password-file", type=Path, metavar="FILE", help="the manager's passphrase (first line)")
    p.add_argument("--work-factor", type=int, default=None, help=argparse.SUPPRESS)

    p = sub.add_parser("vault", help="the vault: capacity and retention, recordings, consistency, holds")
    _add_data(p)
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--json", action="store_true")
    v = p.add_subparsers(dest="action", metavar="ACTION")
    v.required = True
    v.add_parser("status", help="capacity, use, projected retention per record class, holds, last overwrite")
    v.add_parser("list", help="recordings with their times and segments")
    v.add_parser("holds", help="open holds")
    c = v.add_parser("check", help="do the files and the index agree? (reads every segment)")
    c.add_argument("--repair", action="store_true", help="fix what can be fixed without losing a complete segment")

    p = sub.add_parser("audit", help="the audit log: verify it, show entries, prove an entry or that the log only grew")
    _add_data(p)
    p.add_argument("--json", action="store_true")
    a = p.add_subparsers(dest="action", metavar="ACTION")
    a.required = True
    ver = a.add_parser("verify", help="recompute the tree and check every signed checkpoint")
    ver.add_argument("--checkpoint", type=Path, metavar="FILE",
                     help="a checkpoint that left the device earlier: check the log still contains it")
    a.add_parser("checkpoint", help="print the latest signed checkpoint")
    lg = a.add_parser("log", help="the latest entries")
    lg.add_argument("--actor")
    lg.add_argument("--subject")
    lg.add_argument("--limit", type=int, default=50)
    pr = a.add_parser("prove", help="an inclusion proof for one entry, or a consistency proof from an old size")
    g = pr.add_mutually_exclusive_group(required=True)
    g.add_argument("--entry", type=int)
    g.add_argument("--since-size", type=int)
    chk = a.add_parser("check-proof", help="offline: check a proof (from `prove`) with the device's verifier key")
    chk.add_argument("proof", type=Path)
    chk.add_argument("--vkey", type=Path, required=True, help="keys/device.vkey of the device")
    chk.add_argument("--old-checkpoint", type=Path, help="for a consistency proof: the older checkpoint")

    p = sub.add_parser("export", help="a minimum-necessary, signed export package for a third party (Art. 9–11)")
    _add_data(p)
    p.add_argument("--config", metavar="FILE")
    key = p.add_argument_group("the footage key (one of)")
    key.add_argument("--recovery-key", type=Path, metavar="FILE", help="the recovery key (AGE-SECRET-KEY-1…)")
    key.add_argument("--manager", metavar="NAME", help="a manager, with --password-file")
    key.add_argument("--password-file", type=Path, metavar="FILE", help="the manager's passphrase (first line)")
    p.add_argument("--recording", required=True, metavar="ID", help="the recording (`kiroku vault list`)")
    p.add_argument("--start", required=True, metavar="S", help="seconds from the recording's start, or an ISO time")
    p.add_argument("--end", required=True, metavar="S", help="seconds from the recording's start, or an ISO time")
    p.add_argument("--ground", required=True, metavar="G",
                   help="Art. 9: 1 committee, 2 law, 3 investigation, 4 crime (against staff), 5 urgent")
    p.add_argument("--recipient", required=True, metavar="R", help="who receives it (organisation and person)")
    p.add_argument("--reference", metavar="REF", help="the written request's reference (pending only for ground 5)")
    p.add_argument("--request-date", metavar="DATE", help="the written request's date")
    p.add_argument("--approver", metavar="NAME", help="the manager who approved the provision (default: --manager)")
    p.add_argument("--number", metavar="N", help="the provision's number in the register")
    p.add_argument("--exact", action="store_true",
                   help="re-encode so the clip starts exactly at S (default: the first keyframe at or after S)")
    p.add_argument("--mute", action="append", default=[], metavar="S-E", help="silence this span (repeatable)")
    p.add_argument("--blur", action="append", default=[], metavar="X,Y,W,H[@S-E]",
                   help="blur a region, as fractions of the picture, optionally only during S-E (repeatable)")
    p.add_argument("--blur-faces", action="store_true", help="blur every face the built-in detector finds")
    p.add_argument("--seal-passphrase-file", type=Path, metavar="FILE",
                   help="seal the package for transport with this passphrase (age); tell it to the recipient separately")
    p.add_argument("--out", required=True, type=Path, metavar="PATH", help="the package file (or a folder for it)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="check an export package offline: signature, hashes, audit-log entry")
    p.add_argument("package", type=Path, metavar="PACKAGE", help="the .zip, the folder it unpacks to, or the .zip.age")
    p.add_argument("--key", metavar="FILE|SHA256", help="the device key you expect (its PEM file or fingerprint)")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="for a package sealed for transport")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("tls", help="the admin page's HTTPS certificate: show its fingerprint, or install the city's")
    _add_data(p)
    tl = p.add_subparsers(dest="action", metavar="ACTION")
    tl.required = True
    tl.add_parser("show", help="the certificate's SHA-256 fingerprint (made now if there is none)")
    ins = tl.add_parser("install", help="use the city's own certificate and key (PEM)")
    ins.add_argument("--cert", type=Path, required=True)
    ins.add_argument("--key", type=Path, required=True)

    p = sub.add_parser("setup-code", help="the code the first-run page asks for, while the device has no manager")
    _add_data(p)

    p = sub.add_parser("notice", help="the counter sign (A4, A3) and the public notice (PDF, HTML), Art. 4")
    _add_data(p)
    p.add_argument("--config", default=None, help="a configuration file (default: <data>/kiroku.toml)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write them")

    p = sub.add_parser("call-recorder", help="the call recorder: external calls taken off the PBX trunk's mirror port")
    _add_data(p)
    p.add_argument("--config", metavar="FILE", help="configuration file (default: DATA/kiroku.toml if present)")
    p.add_argument("--interface", default=None, metavar="IF",
                   help="the capture interface wired to the mirror port (default from config: calls.interface)")
    p.add_argument("--trunk", default=None, metavar="HOST[:PORT]",
                   help="the carrier side's SIP address; calls from it are inbound (default from config: calls.trunk)")
    p.add_argument("--pcap", type=Path, default=None, metavar="FILE",
                   help="replay a saved capture (pcap) through the same path instead of capturing, then exit")

    p = sub.add_parser("kind", help="what this device is (device.kind): counter or calls (systemd's ExecCondition)")
    _add_data(p)
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--is", dest="is_kind", choices=("counter", "calls"), default=None,
                   help="exit 0 if the device is of this kind, 1 if not (systemd then skips the unit, no failure)")

    p = sub.add_parser("calls", help="recorded calls with their metadata")
    _add_data(p)
    cl = p.add_subparsers(dest="action", metavar="ACTION")
    cl.required = True
    ls = cl.add_parser("list", help="calls, newest first")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--number", default="", help="a number as you would type it (any part of it)")
    ls.add_argument("--since", default=None, metavar="DATE", help="from this day or ISO time")
    ls.add_argument("--until", default=None, metavar="DATE", help="before this day or ISO time")
    ls.add_argument("--direction", choices=("inbound", "outbound"), default="")
    ls.add_argument("--limit", type=int, default=200)

    p = sub.add_parser("report", help="the annual operations report (Art. 14): PDF, CSV and HTML, counts only")
    p.add_argument("--data", type=Path, action="append", default=None, metavar="DIR",
                   help="a device's data folder; repeat it for a report over several devices (default: as elsewhere)")
    p.add_argument("--year", type=int, required=True, metavar="FY",
                   help="the fiscal year, by the calendar year it starts in (2026 = April 2026 – March 2027)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write them")

    p = sub.add_parser("bench", help="the benchmark: what each stage costs next to its baseline")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (under a minute)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")

    p = sub.add_parser("keys", help="managers' keys")
    _add_data(p)
    k = p.add_subparsers(dest="action", metavar="ACTION")
    k.required = True
    am = k.add_parser("add-manager", help="add a manager; existing day keys are re-encrypted to include them")
    am.add_argument("--name", required=True)
    am.add_argument("--password-file", type=Path, required=True)
    who = am.add_mutually_exclusive_group()
    who.add_argument("--recovery-key", type=Path, help="unlock the existing day keys with the recovery key")
    who.add_argument("--unlock-manager", metavar="NAME", help="unlock them with this manager's key")
    am.add_argument("--unlock-password-file", type=Path)
    am.add_argument("--work-factor", type=int, default=None, help=argparse.SUPPRESS)
    k.add_parser("list", help="managers and day keys")
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
    if hasattr(args, "data"):  # the commands that work on a data folder
        if args.data is None:
            args.data = paths.default_data_dir()
        if args.command == "report" and not isinstance(args.data, list):  # it takes --data more than once
            args.data = [args.data]
        for folder in args.data if isinstance(args.data, list) else [args.data]:
            refusal = paths.enter_shared_data_dir(folder)
            if refusal:
                print(f"kiroku: {_setup_code_hint(folder) if args.command == 'setup-code' else refusal}",
                      file=sys.stderr)
                return 2
    if getattr(args, "simulate", "absent") is None:
        args.simulate = not paths.is_raspberry_pi()
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # a sub-command that gave up with its message already printed
        if isinstance(exc.code, int):
            return exc.code
        raise


def _setup_code_hint(data_dir: Path) -> str:
    kiroku = Path(sys.executable).parent / "kiroku"  # the venv's: sudo's PATH does not have it
    return (f"the set-up code is the web UI's, and only its user reads it: "
            f"sudo -u kiroku-web {kiroku if kiroku.exists() else 'kiroku'} setup-code --data {data_dir}")


def _dispatch(args) -> int:
    if args.command == "ctl":
        return _ctl(args)
    if args.command == "tls":
        from webui import tls

        if args.action == "install":
            try:
                print(f"installed; fingerprint (SHA-256) {tls.install(args.data, args.cert, args.key)}"
                      " — restart the web UI to use it")
            except (OSError, ValueError) as exc:
                print(f"kiroku tls: {exc}", file=sys.stderr)
                return 2
        else:
            config = _load_config(args) if hasattr(args, "config") else None
            device = config.device.id if config else "counter-1"
            print(tls.fingerprint(tls.ensure_certificate(args.data, device)))
        return 0
    if args.command == "setup-code":
        from webui import setup_code

        try:
            code = setup_code.pending(args.data)
        except PermissionError:
            print(f"kiroku setup-code: {_setup_code_hint(args.data)}", file=sys.stderr)
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
    if args.command == "bench":
        from firmware import bench

        return bench.run(quick=args.quick, json_path=args.json)
    if args.command in ("export", "verify"):
        from firmware import export_cli

        return getattr(export_cli, args.command)(args)
    if args.command == "report":
        return _report(args)
    if args.command == "calls":
        return _calls(args)
    if args.command in ("vault", "audit", "keys", "init"):
        from firmware import vault_cli

        return vault_cli.main(args)
    config = _load_config(args)
    if config is None:
        return 2
    if args.command == "notice":
        from firmware.documents import signage

        if not config.device.location:
            print("kiroku notice: [device] location is empty — the sign would not say where it is; set it in the "
                  "admin page's settings or kiroku.toml", file=sys.stderr)
        for path in signage.write_all(config, args.out):
            print(path)
        if not config.public.url:
            print("kiroku notice: [public] url is empty, so the sign has no QR code to the city's notice page",
                  file=sys.stderr)
        return 0
    if args.command == "recorder":
        from firmware import daemon

        _setup_logging("recorder", args.verbose)
        return daemon.main(args.data, config, simulate=args.simulate)
    if args.command == "kind":
        print(config.device.kind)
        return 0 if args.is_kind in (None, config.device.kind) else 1
    if args.command == "call-recorder":
        from firmware.calls import recorder as call_recorder

        _setup_logging("call-recorder", args.verbose)
        return call_recorder.main(args.data, config, interface=args.interface or config.calls.interface,
                                  trunk=args.trunk or config.calls.trunk, pcap=args.pcap)
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
                               host=host, port=port, device=config.device.id)
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
        elif args.action == "release":
            status = client.request("release", hold=args.hold, **fields)
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


def _report(args) -> int:
    from firmware.config import ConfigError, load
    from webui import report

    if not 2000 <= args.year <= 2100:
        print(f"kiroku report: --year {args.year}: give the fiscal year as four digits, e.g. 2026", file=sys.stderr)
        return 2
    devices = []
    for data in args.data:  # main() made it a list
        if not (data / "kiroku.db").exists():
            print(f"kiroku report: no recorder database in {data} — check --data", file=sys.stderr)
            return 2
        try:
            devices.append((data, load(paths.config_file(data, None)).device.id))
        except ConfigError as exc:
            print(f"kiroku report: configuration: {exc}", file=sys.stderr)
            return 2
    for path in report.write_all(report.build(devices, args.year), args.out):
        print(path)
    return 0


def _calls(args) -> int:
    import sqlite3
    from datetime import datetime

    from firmware.calls import index

    def when(text):
        if text is None:
            return None
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise SystemExit(print(f"kiroku calls: {text!r} is not a date (2026-04-01) or ISO time", file=sys.stderr)
                             or 2) from None
        return int((dt if dt.tzinfo else dt.astimezone()).timestamp() * 1e6)

    db = args.data / "kiroku.db"
    if not db.exists():
        print(f"kiroku calls: no recorder database in {args.data} — check --data", file=sys.stderr)
        return 2
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = index.search(conn, number=args.number, since_us=when(args.since), until_us=when(args.until),
                            direction=args.direction, limit=args.limit)
    except sqlite3.OperationalError as exc:
        print(f"kiroku calls: {db}: {exc} — is this a call recorder's data folder?", file=sys.stderr)
        return 2
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no calls")
    for r in rows:
        arrow = "←" if r["direction"] == "inbound" else "→"
        talk = f"{r['talk_s']:.1f} s" if r["talk_s"] is not None else "in progress"
        loss = f", {r['loss_percent']:.1f} % lost" if r["packets_lost"] else ""
        print(f"{r['recording_id']}  {r['invited_at']}  {arrow} {r['external_display'] or '?':<16} "
              f"city {r['city_display'] or '?':<14} {r['disposition'] or 'ringing':<10} {talk}{loss}")
    return 0


def format_status(s: dict) -> str:
    """The recorder's status as a few lines a person can read at the counter."""
    if s.get("kind") == "call":
        faults = s.get("faults") or []
        return "\n".join([
            f"state      {s['state']} (call recorder {s['device']}, trunk {s['trunk']}"
            f" on {s['interface'] or 'a capture'})",
            f"calls      {s['active_calls']} in progress ({s['answered_calls']} answered), {s['calls_stored']} stored"
            " since start",
            f"trunk      last SIP {s['last_sip_at'] or 'never'}; {s['sip_messages']} SIP, {s['rtp_packets']} RTP;"
            f" dropped {s['dropped']['kernel']} (kernel) {s['dropped']['queue']} (queue)",
            "faults     " + ("; ".join(f["message"] for f in faults) if faults else "none"),
            f"clock      {'synchronised' if s['clock']['synchronised'] else 'NOT synchronised'}, {s['clock']['now']}",
        ])
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
