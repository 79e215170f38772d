"""``kiroku vault``: capacity and projected retention, recordings, open holds, consistency.

Reading works any time; ``check --repair`` changes the vault, so it takes the recorder's
lock and runs only while the recorder is stopped (the recorder is the vault's only writer).
"""

from __future__ import annotations

from contextlib import closing

from kiroku.cli.common import out, read_config, reader, writer


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def vault(args) -> int:
    if args.action == "check":
        return _vault_check(args)
    vault = reader(args)
    try:
        if args.action == "status":
            config = read_config(args)
            st = vault.status(bitrate_guess=config.bytes_per_second, own_class=config.record_class)
            lines = [f"capacity   {_mb(st['capacity'])}, used {_mb(st['used'])}, free {_mb(st['free'])}"]
            for cls, c in st["classes"].items():
                proj = "—" if c["projected_days"] is None else f"{c['projected_days']:.0f} days"
                warn = "  ⚠ BELOW the minimum plus margin" if c["warning"] else ""
                lines.append(f"{cls:<10} {c['segments']} segments, {_mb(c['bytes'])}, oldest {c['oldest'] or '—'}; "
                             f"projected retention {proj} (minimum {c['min_days']}){warn}")
            last = st["last_overwrite"]
            lines.append(f"holds      {st['holds']} open")
            lines.append("overwrite  " + (f"last {last['at']}: {last['segments']} segments, {_mb(last['bytes'])}"
                                          if last else "never"))
            if not st["clock_synchronised"]:
                lines.append("clock      NOT synchronised: nothing is overwritten until it is")
            out(args, st, "\n".join(lines))
        elif args.action == "list":
            recs = vault.recordings()
            text = "\n".join(
                f"{r['id']}  {r['started_at']}  {r['segments']:>4} seg  {_mb(r['bytes']):>9}"
                f"{'  marks:' + str(r['marks']) if r['marks'] else ''}{'  HELD' if r['held'] else ''}"
                f"  {r['end_reason'] or 'recording'}" for r in recs) or "no recordings"
            out(args, recs, text)
        elif args.action == "holds":
            holds = vault.holds()
            text = "\n".join(f"#{h['id']}  {h['reason']:<10} {h['recording_id'] or 'time range'}  since {h['created_at']}"
                             f" by {h['created_by']}" for h in holds) or "no open holds"
            out(args, holds, text)
    finally:
        vault.close()
    return 0


def _vault_check(args) -> int:
    from firmware.daemon import recorder_running

    with writer(args) if args.repair else closing(reader(args)) as vault:
        # Asked once the vault is open: a recorder that starts after this is not seen, and
        # its recording then reads as unfinished — the safe side.
        findings = vault.check(repair=args.repair, live=not args.repair and recorder_running(args.data))
    live = [f for f in findings if f.kind == "recording"]
    findings = [f for f in findings if f.kind != "recording"]
    problems = [f for f in findings if not f.fixed]
    obj = {"clean": not findings, "findings": [f.__dict__ for f in findings],
           "recording": [f.path for f in live]}
    lines = [f"{'fixed ' if f.fixed else ''}{f.kind:<10} {f.path}: {f.detail}" for f in findings] or \
        ["the vault is consistent: every indexed segment is on disk, whole, with its day key"]
    lines += [f"recording  {f.path}: {f.detail}" for f in live]
    out(args, obj, "\n".join(lines))
    return 1 if problems else 0
