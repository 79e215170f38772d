"""The commands that are processes: ``kiroku recorder``, ``web``, ``call-recorder`` (each what a
systemd unit runs), ``kiroku run`` (recorder and web UI supervised together) and
``kiroku kind`` (which of them this device runs)."""

from __future__ import annotations

from kiroku.cli.common import setup_logging


def recorder(args, config) -> int:
    from firmware import daemon

    setup_logging("recorder", args.verbose)
    return daemon.main(args.data, config, simulate=args.simulate)


def kind(args, config) -> int:
    print(config.device.kind)
    return 0 if args.is_kind in (None, config.device.kind) else 1


def call_recorder(args, config) -> int:
    from firmware.calls import recorder as call_recorder

    setup_logging("call-recorder", args.verbose)
    return call_recorder.main(args.data, config, interface=args.interface or config.calls.interface,
                              trunk=args.trunk or config.calls.trunk, pcap=args.pcap, simulate=args.simulate)


def web(args, config) -> int:
    from webui.server import main as web_main

    setup_logging("web", args.verbose)
    return web_main(data_dir=args.data, config=config, simulate=args.simulate, host=args.host or config.web.host,
                    port=args.port or config.web.port)


def run(args, config) -> int:
    from kiroku import supervisor

    setup_logging("run", args.verbose)
    return supervisor.main(data_dir=args.data, config_path=args.config, simulate=args.simulate,
                           host=args.host or config.web.host, port=args.port or config.web.port,
                           device=config.device.id, kind=config.device.kind)
