"""The ``kiroku`` command's arguments: every sub-command and its options, in one place, so
``kiroku --help`` lists them in the order people meet them."""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware import __version__, paths
from firmware.regulation import Direction, Ground


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help=f"the device's data folder (default: {paths.PI_DATA_DIR} on a Pi, ./data elsewhere)")


def add_hardware(parser: argparse.ArgumentParser) -> None:
    add_data(parser)
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: DATA/kiroku.toml if present)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--simulate", dest="simulate", action="store_true", default=None,
                       help="simulated camera, microphone and GPIO (the default except on a Raspberry Pi)")
    group.add_argument("--real", dest="simulate", action="store_false",
                       help="the real camera, microphone and GPIO (the default on a Raspberry Pi)")


# The flags a command with actions shares between them (``kiroku vault --data DIR list --json``).
_COMMON = ("--data", "--json", "--config", "--by")


def accept_after(parent: argparse.ArgumentParser, actions) -> None:
    """Let every action also take its command's common flags after it, as the README writes them
    (``kiroku vault --data DIR list --json``). SUPPRESS keeps an action from resetting what was
    given before it (argparse copies a sub-parser's defaults over its parent's)."""
    given = [a for a in parent._actions if set(a.option_strings) & set(_COMMON)]
    for child in actions.choices.values():
        have = {s for a in child._actions for s in a.option_strings}
        for a in given:
            if have & set(a.option_strings):
                continue
            if a.nargs == 0:  # a switch (store_true)
                child.add_argument(*a.option_strings, dest=a.dest, action="store_const", const=a.const,
                                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            else:
                child.add_argument(*a.option_strings, dest=a.dest, type=a.type, metavar=a.metavar,
                                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiroku", description="Service-counter recording appliance.")
    parser.add_argument("--version", action="version", version=f"kiroku {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="recorder and web UI together (development, demonstrations)")
    add_hardware(p)
    p.add_argument("--host", default=None, help="address the web UI listens on (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="web UI port (default from config: 8080)")

    p = sub.add_parser("recorder", help="the recorder process alone (the Pi's kiroku-recorder service)")
    add_hardware(p)

    p = sub.add_parser("web", help="the web UI process alone (the Pi's kiroku-web service)")
    add_hardware(p)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)

    p = sub.add_parser("ctl", help="talk to a running recorder over its control socket")
    add_data(p)
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
    r = ctl.add_parser("release", help="release a hold (an incident closed, a request ended)")
    r.add_argument("hold", type=int, help="the hold's number (kiroku vault holds)")
    s = ctl.add_parser("sim", help="simulated hardware only: press the button, unplug a device…")
    from firmware.hardware import Simulator

    s.add_argument("sim_action", choices=Simulator.ACTIONS, metavar="ACTION",
                   help=", ".join(Simulator.ACTIONS))
    accept_after(p, ctl)
    p = sub.add_parser("init", help="first-run set-up: device keys, the recovery key, optionally a manager")
    add_data(p)
    p.add_argument("--recovery-key-out", required=True, type=Path, metavar="FILE",
                   help="where to write the recovery key (an age identity) — print it, keep it in a safe, delete the file")
    p.add_argument("--recovery-qr-out", type=Path, metavar="FILE.svg", help="also write it as a QR code (SVG)")
    p.add_argument("--device", default=None, help="device name (default: device.id from the config)")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--manager", metavar="NAME", help="also create the first manager")
    p.add_argument("--password-file", type=Path, metavar="FILE", help="the manager's passphrase (first line)")
    p.add_argument("--display-name", default=None, metavar="NAME",
                   help="the manager's name as the web UI shows it (default: --manager)")
    p.add_argument("--section", default="資産経営課", help="the manager's section (default: 資産経営課)")
    p.add_argument("--work-factor", type=int, default=None, help=argparse.SUPPRESS)

    p = sub.add_parser("vault", help="the vault: capacity and retention, recordings, consistency, holds")
    add_data(p)
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--json", action="store_true")
    v = p.add_subparsers(dest="action", metavar="ACTION")
    v.required = True
    v.add_parser("status", help="capacity, use, projected retention per record class, holds, last overwrite")
    v.add_parser("list", help="recordings with their times and segments")
    v.add_parser("holds", help="open holds")
    c = v.add_parser("check", help="do the files and the index agree? (reads every segment)")
    c.add_argument("--repair", action="store_true", help="fix what can be fixed without losing a complete segment")
    accept_after(p, v)

    p = sub.add_parser("audit", help="the audit log: verify it, show entries, prove an entry or that the log only grew")
    add_data(p)
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
    accept_after(p, a)

    p = sub.add_parser("export", help="a minimum-necessary, signed export package for a third party (Art. 9–11)")
    add_data(p)
    p.add_argument("--config", metavar="FILE")
    key = p.add_argument_group("the footage key (one of)")
    key.add_argument("--recovery-key", type=Path, metavar="FILE", help="the recovery key (AGE-SECRET-KEY-1…)")
    key.add_argument("--manager", metavar="NAME", help="a manager, with --password-file")
    key.add_argument("--password-file", type=Path, metavar="FILE", help="the manager's passphrase (first line)")
    p.add_argument("--recording", required=True, metavar="ID", help="the recording (`kiroku vault list`)")
    p.add_argument("--start", required=True, metavar="S", help="seconds from the recording's start, or an ISO time")
    p.add_argument("--end", required=True, metavar="S", help="seconds from the recording's start, or an ISO time")
    p.add_argument("--ground", required=True, metavar="G",
                   help="Art. 9: " + ", ".join(f"{g.number} {g}" for g in Ground))
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
    add_data(p)
    tl = p.add_subparsers(dest="action", metavar="ACTION")
    tl.required = True
    tl.add_parser("show", help="the certificate's SHA-256 fingerprint (made now if there is none)")
    ins = tl.add_parser("install", help="use the city's own certificate and key (PEM)")
    ins.add_argument("--cert", type=Path, required=True)
    ins.add_argument("--key", type=Path, required=True)
    accept_after(p, tl)

    p = sub.add_parser("setup-code", help="the code the first-run page asks for, while the device has no manager")
    add_data(p)

    p = sub.add_parser("notice", help="the counter sign (A4, A3) and the public notice (PDF, HTML), Art. 4")
    add_data(p)
    p.add_argument("--config", default=None, help="a configuration file (default: <data>/kiroku.toml)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write them")

    p = sub.add_parser("call-recorder", help="the call recorder: external calls taken off the PBX trunk's mirror port")
    add_data(p)
    p.add_argument("--config", metavar="FILE", help="configuration file (default: DATA/kiroku.toml if present)")
    p.add_argument("--interface", default=None, metavar="IF",
                   help="the capture interface wired to the mirror port (default from config: calls.interface)")
    p.add_argument("--trunk", default=None, metavar="HOST[:PORT]",
                   help="the carrier side's SIP address; calls from it are inbound (default from config: calls.trunk)")
    p.add_argument("--pcap", type=Path, default=None, metavar="FILE",
                   help="replay a saved capture (pcap) through the same path instead of capturing, then exit")
    p.add_argument("--simulate", action="store_true",
                   help="a simulated trunk: calls made up as they go, through the same path, with no capture (and no"
                        " privilege); what kiroku run and kiroku city use on simulated hardware")

    p = sub.add_parser("kind", help="what this device is (device.kind): counter or calls (systemd's ExecCondition)")
    add_data(p)
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--is", dest="is_kind", choices=("counter", "calls"), default=None,
                   help="exit 0 if the device is of this kind, 1 if not (systemd then skips the unit, no failure)")

    p = sub.add_parser("calls", help="recorded calls with their metadata")
    add_data(p)
    p.add_argument("--json", action="store_true")
    cl = p.add_subparsers(dest="action", metavar="ACTION")
    cl.required = True
    ls = cl.add_parser("list", help="calls, newest first")
    ls.add_argument("--number", default="", help="a number as you would type it (any part of it)")
    ls.add_argument("--since", default=None, metavar="DATE", help="from this day or ISO time")
    ls.add_argument("--until", default=None, metavar="DATE", help="before this day or ISO time")
    ls.add_argument("--direction", choices=tuple(Direction), default="")
    ls.add_argument("--limit", type=int, default=200)
    accept_after(p, cl)

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
    add_data(p)
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
    accept_after(p, k)

    # -- the city (DESIGN.md §8, docs/hub.md) ----------------------------------------------------
    from firmware.uplink import enroll, process

    p = sub.add_parser("enroll", help="join this device to the city hub with a one-time code", description=enroll.DESCRIPTION)
    enroll.add_arguments(p)
    p = sub.add_parser("uplink", help="publish to the city hub, receive its designations (the Pi's kiroku-uplink)",
                       description=process.DESCRIPTION)
    process.add_arguments(p)

    p = sub.add_parser("hub", help="the city hub: web UI, API and the consumer of what devices publish")
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="the hub's configuration (hub/config.py)")
    h = p.add_subparsers(dest="action", metavar="ACTION")
    h.add_parser("serve", help="run the hub (the default)")
    am = h.add_parser("add-manager", help="a manager at the hub, made at its server (the first one is)")
    am.add_argument("name")
    am.add_argument("--password-file", type=Path, required=True, help="a file holding their passphrase")
    am.add_argument("--display-name", default="", help="their name as pages show it (default: NAME)")
    am.add_argument("--section", default="資産経営課", help="their section (made if new)")
    accept_after(p, h)

    p = sub.add_parser("city", help="the whole city on one machine, simulated: PostgreSQL, Mosquitto, the hub, devices")
    p.add_argument("--data", type=Path, default=Path("city"), metavar="DIR", help="everything goes here (default ./city)")
    p.add_argument("--counters", type=int, default=3, metavar="N", help="how many counters (default 3)")
    p.add_argument("--calls", action="store_true", help="and a call recorder")
    p.add_argument("--port", type=int, default=8090, help="the hub's port; devices take the next ones (default 8090)")
    p.add_argument("--manager", default=None, metavar="NAME", help="the first manager (default: manager)")
    p.add_argument("--password-file", type=Path, default=None, metavar="F",
                   help="their passphrase (default: a new one in DIR/manager-password.txt)")
    return parser
