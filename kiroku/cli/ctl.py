"""``kiroku ctl``: talk to a running recorder over its control socket, and its status in a few
lines a person can read at the counter."""

from __future__ import annotations

import json
import sys


def ctl(args) -> int:
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


def format_status(s: dict) -> str:
    """The recorder's status as a few lines a person can read at the counter."""
    if s.get("kind") == "call":
        faults = s.get("faults") or []
        return "\n".join([
            f"state      {s['state']} (call recorder {s['device']}, trunk {s['trunk']}"
            f" on {'a simulated trunk' if s.get('simulated') else s['interface'] or 'a capture'})",
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
    if s.get("log"):  # written down off the device, it shows later whether the log was cut short
        lines.append(f"log        {s['log']['entries']} entries, root {s['log']['root']}"
                     " (signed: kiroku audit checkpoint)")
    return "\n".join(lines)
