"""The call recorder: how many concurrent calls one core captures, decodes and seals."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from kiroku.bench.figures import Figure, not_available


def _one_call_level(work: Path, calls: int, seconds: float, cores: tuple[int, int], port: int) -> dict:
    """``calls`` concurrent G.711 calls from the load generator (on one core) into the call
    recorder (capture and work threads, on the other), to the end of the last call."""
    import subprocess

    from firmware.calls.capture import LiveCapture
    from firmware.calls.recorder import CallRecorder
    from firmware.config import Config
    from firmware.vault import Vault
    from firmware.vault.setup import init

    data = work / f"calls-{calls}"
    init(data, device="pbx-1", recovery_out=work / f"calls-{calls}-recovery.txt", work_factor=10)
    vault = Vault.open(data, Config())
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores[0]})  # every thread this process starts from now on: one core
    try:
        rec = CallRecorder(vault, Config(), trunk=f"127.0.0.2:{port}", interface="lo",
                           source=LiveCapture("lo", sip_port=port)).start()
        cpu0, wall0 = time.process_time(), time.monotonic()
        gen = subprocess.Popen([sys.executable, "-m", "firmware.calls.loadgen", "--calls", str(calls),
                                "--seconds", str(seconds), "--sip-port", str(port), "--media-port", str(port + 1000)],
                               stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.sched_setaffinity(0, {cores[1]}))
        backlog = [0]

        def sample():  # the work thread's backlog: one that keeps growing would drop on a longer run
            while gen.poll() is None:
                backlog[0] = max(backlog[0], len(rec._queue))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lines = [json.loads(line) for line in gen.stdout]
        gen.wait()
        sampler.join()
        sent_at = time.monotonic()
        while rec.writer.calls_stored < calls and time.monotonic() - sent_at < 30:
            time.sleep(0.05)
        lag = time.monotonic() - sent_at
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        rec.close()
        dropped = rec.status()["dropped"]
        lost = vault.db.execute("SELECT coalesce(sum(packets_lost), 0), count(*) FROM calls").fetchone()
    finally:
        os.sched_setaffinity(0, before)
        vault.close()
    done = lines[-1] if lines else {}
    ok = (dropped == {"kernel": 0, "queue": 0} and lost[0] == 0 and rec.writer.calls_stored == calls
          and backlog[0] < calls * 100 and done.get("max_late_ms", 1e9) < 50)
    return {"calls": calls, "ok": ok, "kernel_drops": dropped["kernel"], "queue_drops": dropped["queue"],
            "backlog_s": round(backlog[0] / (calls * 100), 2),
            "rtp_lost": lost[0], "stored": rec.writer.calls_stored, "lag_s": round(lag, 2),
            "cpu_share": round(cpu / wall, 2), "sender_late_ms": done.get("max_late_ms"),
            "packets": done.get("sent")}


def bench_calls(work: Path, levels: list[int], seconds: float) -> list[Figure]:
    name = "concurrent G.711 calls captured on one core without a drop"
    if os.geteuid() != 0:
        return [not_available(name, "capturing on lo needs CAP_NET_RAW: run kiroku bench as root")]
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return [not_available(name, "needs two cores: one captures, the other generates the calls")]
    best, results = 0, []
    for i, n in enumerate(levels):
        r = _one_call_level(work, n, seconds, (cores[0], cores[1]), 26000 + 100 * i)
        results.append(r)
        if not r["ok"]:
            break
        best = n
    last_ok = [r for r in results if r["ok"]]
    per_call = (last_ok[-1]["cpu_share"] / last_ok[-1]["calls"] * 100) if last_ok else None
    def verdict(r: dict) -> str:
        if r["ok"]:
            return "ok"
        dropped = r["kernel_drops"] or r["queue_drops"] or r["rtp_lost"] or r["stored"] != r["calls"]
        return "DROPPED" if dropped else "FELL BEHIND"

    note = "; ".join(f"{r['calls']} calls: {verdict(r)} (kernel {r['kernel_drops']},"
                     f" queue {r['queue_drops']}, RTP lost {r['rtp_lost']}, stored {r['stored']},"
                     f" at most {r['backlog_s']} s behind, stored {r['lag_s']} s after the last packet,"
                     f" {int(r['cpu_share'] * 100)} % of the core)"
                     for r in results)
    tested_all = len(last_ok) == len(levels)
    return [Figure(name, best, "calls", note=("≥ " if tested_all else "") + f"{best}: " + note +
                   f"; {seconds:g} s calls, 100 packets/s each, capture + decode + AAC + sealing on one core"),
            Figure("call recorder CPU per concurrent call", round(per_call, 2) if per_call else None, "% of a core",
                   note="capture, decoding, stereo AAC encoding and sealing, at the highest level without a drop")]
