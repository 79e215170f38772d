"""The city hub under load: how many devices one hub serves on this machine.

The real servers and the real hub — a private PostgreSQL and Mosquitto, and ``kiroku hub
--config …`` as a process of its own (consumer, pusher and web UI, as a city runs it), set up
as ``kiroku city`` sets them up. Devices are enrolled through the hub's API with one-time
codes, so each gets its own broker account exactly as a real one does (``hub.broker.Admin
.add_device``). They are simulated by :mod:`kiroku.bench.hubload`: one process of light
publishers speaking the uplink's protocol, with real signed audit logs the witness checks.

A level of N devices passes when, after a warm-up, every status published in the window was in
the database within :data:`LAG_LIMIT` seconds of its own time (``at``), and afterwards nothing
is missing: every device's last status is its row's, and every log entry it published is in
``device_log`` once, the mirror hashing to the root the device signed. Levels go up until one
fails or the list ends. The lag is seen from outside, as a dashboard sees it: a poller reads
the devices' rows every :data:`POLL` seconds, so each lag is an upper bound by up to that.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from kiroku.bench.figures import Figure, not_available, vm_hwm_mb, vm_rss_mb

LAG_LIMIT = 2.0  # seconds: the hub's goal, from a status's "at" to the row a dashboard reads
POLL = 0.2  # seconds between the poller's reads of the devices' rows
BURST_EVERY = 60.0  # seconds between one device's sessions at the counter, on average (exponential)
BURST_ENTRIES = (3, 40)  # audit entries a session writes (sign-on, recording, marks, stop, sign-off)
GOAL = 500


def _ticks() -> int:
    import os

    return os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); with ``children``, also of the
    children it has reaped and of those still running (PostgreSQL's backends)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                f = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(f[1]) == pid:
                ticks += int(f[11]) + int(f[12])
    return ticks / _ticks()


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _ticks(), sum(values) / _ticks()


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _epoch(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class SimDevice:
    """A device the bench enrolled: its key, its account, what its log held after the last level."""

    def __init__(self, device_id: str, place: str):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from firmware.vault.signed_note import make_vkey

        self.id, self.place = device_id, place
        key = Ed25519PrivateKey.generate()
        self.key = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()).hex()
        self.vkey = make_vkey(f"kiroku/{device_id}", key.public_key())
        self.broker: dict = {}
        self.leaves: list[str] = []

    def spec(self) -> dict:
        return {"id": self.id, "place": self.place, "key": self.key, "username": self.broker["username"],
                "password": self.broker["password"], "client_id": self.broker.get("client_id") or
                self.broker["username"], "leaves": self.leaves}


def _enroll(hub_url: str, call, token: str, d: SimDevice) -> None:
    """What the manager and the device do (docs/hub.md, Enrollment): a code at the hub, the device's request."""
    from firmware.uplink.enroll import endpoint, post, request_body

    code = call("POST", "/enrollments", {"device": d.id, "kind": "counter", "place": d.place}, token)["enrollment_code"]
    answer = post(endpoint(hub_url), request_body(code=code, device=d.id, kind="counter", place=d.place,
                                                  vkey=d.vkey), ca=None)
    d.broker = answer["broker"]


class Poller:
    """Reads the devices' rows every :data:`POLL` s, as a dashboard would, and notes when each
    status (device, seq) first shows, from ``since`` on."""

    def __init__(self, dsn: str, since: float):
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.since = since
        self.seen: dict[tuple[str, int], tuple[float, float, float]] = {}  # → (at, visible by, status_at)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-poller", daemon=True)

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def _run(self) -> None:
        newest = 0.0
        while not self._stop.wait(POLL):
            asked = time.time()  # the statement's snapshot is taken now: what it returns was committed by then
            rows = self.conn.execute(
                "SELECT id, (status::json->>'seq')::int, status::json->>'at', status_at FROM devices"
                " WHERE status_at >= %s", (newest - 1.0,)).fetchall()
            for device, seq, at, status_at in rows:
                newest = max(newest, status_at)
                when = _epoch(at)
                if when >= self.since and (device, seq) not in self.seen:
                    self.seen[(device, seq)] = (when, asked, status_at)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


def _run_level(city, devices: list[SimDevice], work: Path, *, warmup: float, window: float) -> dict:
    import psycopg

    from firmware.vault import merkle

    n = len(devices)
    spec = work / f"hub-load-{n}.json"
    out = work / f"hub-load-{n}.out.json"
    spec.write_text(json.dumps({
        "broker": {"host": "127.0.0.1", "port": city.mqtt.port, "ca": str(city.mqtt.ca)},
        "seconds": warmup + window, "burst_every": BURST_EVERY, "burst_entries": list(BURST_ENTRIES), "seed": n,
        "devices": [d.spec() for d in devices]}))
    spec.chmod(0o600)  # the devices' keys and passwords
    gen = subprocess.Popen([sys.executable, "-m", "kiroku.bench.hubload", str(spec), str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hub, pg, mq = city.hub.pid, city.pg.proc.pid, city.mqtt.proc.pid
    try:
        line = gen.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator stopped: {gen.stderr.read()[-600:]}")
        t0 = json.loads(line)["at"]
        poller = Poller(city.pg.dsn, t0).start()
        try:
            time.sleep(max(0.0, t0 + warmup - time.time()))
            load_before = _load()
            cpu0 = {"hub": _cpu_s(hub), "postgres": _cpu_s(pg, children=True), "mosquitto": _cpu_s(mq),
                    "generator": _cpu_s(gen.pid), "machine": _machine_busy()[0], "wall": time.monotonic()}
            time.sleep(max(0.0, t0 + warmup + window - time.time()))
            cpu1 = {"hub": _cpu_s(hub), "postgres": _cpu_s(pg, children=True), "mosquitto": _cpu_s(mq),
                    "generator": _cpu_s(gen.pid), "machine": _machine_busy()[0], "wall": time.monotonic()}
            rss, hwm = vm_rss_mb(hub), vm_hwm_mb(hub)
            load_after = _load()
            line = gen.stdout.readline()  # "done": everything it published was acknowledged by the broker
            if gen.wait(120) != 0 or not line:
                raise RuntimeError(f"the load generator failed: {gen.stderr.read()[-600:]}")
            result = json.loads(out.read_text())
            by_id = {r["id"]: r for r in result["devices"]}
            # Drain: every device's last status in its row, every entry in the mirror.
            conn = psycopg.connect(city.pg.dsn, autocommit=True)
            drained_at, started = None, time.monotonic()
            while time.monotonic() - started < 60:
                sizes = dict(conn.execute("SELECT device, count(*) FROM device_log GROUP BY device").fetchall())
                statuses = {i: (seq, at) for i, seq, at in conn.execute(
                    "SELECT id, (status::json->>'seq')::int, status::json->>'at' FROM devices").fetchall()}
                if all(sizes.get(i, 0) == r["size"] and statuses.get(i) == (r["status_seq"], r["status_at"])
                       for i, r in by_id.items()):
                    drained_at = time.monotonic() - started
                    break
                time.sleep(0.5)
        finally:
            poller.stop()
        problems = []
        rows: dict[str, list] = {}
        for device, seq, leaf in conn.execute("SELECT device, seq, leaf_hash FROM device_log ORDER BY device, seq"):
            rows.setdefault(device, []).append((seq, bytes(leaf)))
        witness = dict(conn.execute("SELECT device, size FROM witness").fetchall())
        for i, r in by_id.items():
            got = rows.get(i, [])
            if [s for s, _ in got] != list(range(r["size"])):
                problems.append(f"{i}: {len(got)} of {r['size']} log entries in the mirror")
            elif r["size"] and merkle.root([leaf for _, leaf in got]).hex() != _b64hex(r["root"]):
                problems.append(f"{i}: the mirror does not hash to the root the device signed")
            if witness.get(i, 0) != r["size"]:
                problems.append(f"{i}: witnessed {witness.get(i, 0)} of {r['size']}")
            if r["refused"]:
                problems.append(f"{i}: the broker refused {r['refused'][:2]}")
        if drained_at is None:
            problems.append("not everything reached the database within 60 s of the last publication")
        bad = conn.execute("SELECT count(*) FROM checkpoints WHERE consistent = 0").fetchone()[0]
        alerts = conn.execute("SELECT count(*) FROM alerts WHERE kind = 'log' AND cleared_at IS NULL").fetchone()[0]
        if bad or alerts:
            problems.append(f"the witness flagged {bad} checkpoint(s), {alerts} open log alert(s)")
        t_from, t_to = t0 + warmup, t0 + warmup + window
        log_lag = conn.execute(
            "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY received_at - extract(epoch FROM at::timestamptz)),"
            " count(*) FROM device_log WHERE extract(epoch FROM at::timestamptz) BETWEEN %s AND %s",
            (t_from, t_to)).fetchone()
        conn.close()
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
        spec.unlink(missing_ok=True)
    for d in devices:  # the next level's devices go on from here
        d.leaves = by_id[d.id]["leaves"]
    out.unlink(missing_ok=True)

    in_window = [(at, seen, picked) for (at, seen, picked) in poller.seen.values() if t_from <= at <= t_to]
    lags = [seen - at for at, seen, _ in in_window]
    picked = [p - at for at, _, p in in_window]
    wall = cpu1["wall"] - cpu0["wall"]
    share = {k: round((cpu1[k] - cpu0[k]) / wall, 3) for k in ("hub", "postgres", "mosquitto", "generator", "machine")}
    expected = n * window / 5.0  # statuses every 5 s (plus one per session)
    max_lag = max(lags) if lags else float("inf")
    starved = result["max_late_s"] > 1.0
    if starved:
        problems.append(f"the load generator fell {result['max_late_s']:.1f} s behind its schedule")
    if len(lags) < 0.9 * expected:
        problems.append(f"only {len(lags)} statuses seen in the window, {expected:.0f} expected")
    return {
        "devices": n, "ok": not problems and max_lag <= LAG_LIMIT, "problems": problems[:5],
        "lag_p50": round(_pct(lags, 0.5), 3), "lag_p99": round(_pct(lags, 0.99), 3), "lag_max": round(max_lag, 3),
        "pickup_p99": round(_pct(picked, 0.99), 3), "statuses": len(lags),
        "log_lag_p99": None if log_lag[0] is None else round(log_lag[0], 3), "entries": log_lag[1],
        "cpu": share, "hub_rss_mb": round(rss, 1), "hub_hwm_mb": round(hwm, 1), "drain_s": drained_at,
        "generator_cpu_s": result["cpu_s"], "generator_wall_s": result["wall_s"], "connect_s": result["connect_s"],
        "generator_late_s": result["max_late_s"], "lost_connections": result["lost_connections"],
        "load": f"{load_before} → {load_after}", "window_s": window,
    }


def _b64hex(b64: str) -> str:
    import base64

    return base64.b64decode(b64).hex()


def missing() -> str | None:
    """Why the hub figure cannot run here, or None."""
    import glob

    for program, pattern in (("mosquitto", "/usr/sbin/mosquitto"), ("mosquitto_ctrl", ""),
                             ("initdb", "/usr/lib/postgresql/*/bin/initdb")):
        if shutil.which(program) is None and not (pattern and glob.glob(pattern)):
            return f"{program} is not installed (tools/system-packages test)"
    try:
        import flask  # noqa: F401
        import paho.mqtt  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"the hub's Python packages are missing ({exc.name}): pip install -e '.[hub]'"
    return None


def bench_hub(work: Path, levels: list[int], *, warmup: float, window: float) -> list[Figure]:
    """Levels of simulated devices against one hub, up until one fails; the figures at the largest
    that passed and at :data:`GOAL` devices (or the largest measured, when the goal is not in
    ``levels``)."""
    from kiroku.city import City, _place
    from kiroku.engines import EngineError, free_port, stop_process

    name = f"devices one hub serves (lag ≤ {LAG_LIMIT:g} s, nothing lost)"
    why = missing()
    if why:
        return [not_available(name, why)]
    city = City(work / "hub-city", counters=0, calls=False, port=free_port(), manager="bench", password_file=None)
    results: list[dict] = []
    enrolling = 0.0
    try:
        with contextlib.redirect_stdout(sys.stderr):  # where the servers are: for whoever watches, not the figures
            city.start_engines()
            city.start_hub()
        call, token = city._api()
        hub_url = f"http://127.0.0.1:{city.port}"
        devices: list[SimDevice] = []
        for n in levels:
            started = time.monotonic()
            while len(devices) < n:  # one at a time: two at once can meet on the hub's own log (see docs)
                d = SimDevice(f"counter-{len(devices) + 1}", _place(len(devices) + 1))
                _enroll(hub_url, call, token, d)
                devices.append(d)
            enrolling += time.monotonic() - started
            r = _run_level(city, devices[:n], work, warmup=warmup, window=window)
            results.append(r)
            print(f"  hub: {_line(r)}", file=sys.stderr, flush=True)
            if not r["ok"]:
                break
    except (EngineError, OSError, RuntimeError) as exc:
        return [not_available(name, f"the run failed: {exc}")]
    finally:
        stop_process(city.hub)
        for engine in reversed(city.engines):
            engine.stop()
        roots = {e.folder.parent for e in city.engines}
        for root in roots:
            if not root.is_relative_to(work):
                shutil.rmtree(root, ignore_errors=True)
    passed = [r for r in results if r["ok"]]
    best = passed[-1]["devices"] if passed else 0
    capped = len(passed) == len(levels)
    at = next((r for r in results if r["devices"] == GOAL), None) or (passed or results)[-1]
    n = at["devices"]
    note = "; ".join(_line(r) for r in results)
    cpu = at["cpu"]
    return [
        Figure(name, best, "devices", target=f"≥ {GOAL} devices", met=best >= GOAL if GOAL in levels else None,
               note=(f"≥ {best} (the largest level tried; " if capped else f"{best} (") +
               f"levels {', '.join(map(str, levels))}); {note}; enrolling took {enrolling:.0f} s"),
        Figure(f"hub lag, status → database, at {n} devices (p99)", at["lag_p99"], "s",
               target=f"≤ {LAG_LIMIT:g} s", met=at["lag_max"] <= LAG_LIMIT, spread=[at["lag_p50"], at["lag_max"]],
               note=f"p50 {at['lag_p50']} s, max {at['lag_max']} s over {at['statuses']} statuses in "
                    f"{at['window_s']:g} s; seen by a poller every {POLL:g} s (an upper bound by that much); the "
                    f"consumer picked them up within {at['pickup_p99']} s (p99); log entries {at['log_lag_p99']} s "
                    f"(p99, {at['entries']} entries)"),
        Figure(f"hub CPU at {n} devices", cpu["hub"], "CPU s/s",
               note=f"kiroku hub (consumer, pusher, web); beside it PostgreSQL {cpu['postgres']}, Mosquitto "
                    f"{cpu['mosquitto']}, the load generator {cpu['generator']} CPU s/s; the whole machine "
                    f"{cpu['machine']} of 2; load average {at['load']}"),
        Figure(f"hub memory at {n} devices (RSS)", at["hub_rss_mb"], "MB",
               note=f"VmRSS of kiroku hub at the window's end; peak {at['hub_hwm_mb']} MB (VmHWM, enrollment "
                    "included)"),
        Figure(f"load generator CPU at {n} devices", cpu["generator"], "CPU s/s",
               note=f"one process, every device's client on one thread; fell at most {at['generator_late_s']} s "
                    f"behind its schedule; {at['lost_connections']} connections lost; connecting took "
                    f"{at['connect_s']} s"),
    ]


def _line(r: dict) -> str:
    verdict = "ok" if r["ok"] else "FAILED" + (f" ({'; '.join(r['problems'])})" if r["problems"] else "")
    return (f"{r['devices']} devices: {verdict}, lag p50 {r['lag_p50']} p99 {r['lag_p99']} max {r['lag_max']} s, "
            f"hub {r['cpu']['hub']} CPU s/s {r['hub_rss_mb']} MB, PostgreSQL {r['cpu']['postgres']}, Mosquitto "
            f"{r['cpu']['mosquitto']}, generator {r['cpu']['generator']}, machine {r['cpu']['machine']} of 2, "
            f"load {r['load']}")
