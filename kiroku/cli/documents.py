"""``kiroku notice`` and ``kiroku report``: the counter sign and public notice (Art. 4), and the
annual operations report (Art. 14), as files to print and publish."""

from __future__ import annotations

import sys

from firmware import paths


def notice(args, config) -> int:
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


def report(args) -> int:
    from firmware.config import ConfigError, load
    from firmware.documents import report

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
