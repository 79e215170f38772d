"""Export jobs: a register record's scope as a signed package (``firmware.export``), made in
the background. Shared by the provision register (Art. 9–11) and the disclosure register
(Art. 12).

- A job runs in a thread, so a long export never blocks the web server; the record's
  page polls its progress.
- The package is sealed as it is written — to the transport passphrase when one is given,
  otherwise to a key that exists only in this process's memory — so nothing decrypted
  lands on the device's disk, and a package left behind by a restart can be opened by no
  one (``cleanup`` removes them at start-up).
- The export is in the audit log before the package is complete (``firmware.export``);
  its manifest hash is then recorded in the register's export table.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import Response, abort, current_app, g

from webui import auth
from webui.actions import flag, refuse


@dataclass
class Job:
    id: str
    register: str  # the blueprint whose record it exports: "provisions", "disclosures"
    record_id: int
    number: str
    user_id: int
    path: Path
    purpose: str  # the Art. 7 purpose its audit entries carry
    package_url: str = ""
    total: float = 0.0
    done: float = 0.0
    state: str = "running"  # running, done, failed
    error: str = ""
    name: str = ""
    sealed: bool = False  # with the transport passphrase: handed over as it is
    faces: bool = False  # faces were blurred by the detector, which can miss one
    key: object | None = None  # the in-memory key the package is sealed to otherwise


@dataclass
class Options:
    """What the export form asked for, parsed and checked before anything starts."""

    identity: object  # the manager's unlocked key
    redactions: object  # firmware.export.Redactions
    exact: bool = False
    transport: str = ""
    extra: dict = field(default_factory=dict)


_jobs: dict[str, Job] = {}


def _folder() -> Path:
    return Path(current_app.config["KIROKU_DATA"]) / "web" / "exports"


def _mine(job: Job) -> bool:
    """A job of this app's device: one process may serve several apps (tests do), each its own."""
    return job.path.parent == _folder()


def jobs_of(register: str, record_id: int) -> list[Job]:
    return [j for j in list(_jobs.values()) if j.register == register and j.record_id == record_id and _mine(j)]


def discard(job: Job) -> None:
    _jobs.pop(job.id, None)
    job.key = None
    job.path.unlink(missing_ok=True)


def find(register: str, record_id: int, job_id: str) -> Job:
    job = _jobs.get(job_id)
    if job is None or job.register != register or job.record_id != record_id or not _mine(job):
        abort(404)
    return job


def sound_only(recording_id: str) -> bool:
    """A call: none of the recording's segments has a picture."""
    from webui.db import vault_db

    vdb = vault_db()
    row = vdb.execute("SELECT max(video_frames) FROM segments WHERE recording_id = ?", (recording_id,)).fetchone() \
        if vdb is not None else None
    return bool(row and row[0] == 0)


def options(inputs, *, subject: str, purpose: str, back: str, regions: bool = False, check=None,
            recording_id: str | None = None) -> Options:
    """Read an export form: blur_faces (always said outright), exact, mute spans, blur
    regions (when ``regions``), the transport passphrase, and the manager's passphrase,
    which unlocks the key (a wrong one is logged and refused). ``check(redactions)`` may
    refuse what was asked before the key is unlocked; so is blurring asked of a call."""
    from firmware import export as ex
    from webui import keys

    faces = flag(inputs, "blur_faces")  # minimum necessary: always a decision
    exact = flag(inputs, "exact", default=False)
    transport = inputs.get("transport_passphrase") or ""
    if transport and len(transport) < 12:
        refuse("provision.transport_short", back=back)
    redactions = ex.Redactions(faces=faces)
    try:
        redactions.mute = [ex.parse_span(s) for s in (inputs.get("mute") or "").split() if s]
    except ex.ExportError:
        refuse("provision.bad_mute", back=back)
    if regions:
        try:
            redactions.blur = [ex.Region.parse(s) for s in (inputs.get("blur") or "").split() if s]
        except ex.ExportError:
            refuse("export.bad_region", back=back)
    if recording_id is not None and redactions.video and sound_only(recording_id):
        refuse("export.sound_only", back=back)
    if check is not None:
        check(redactions)
    identity = keys.unlock_for(inputs.get("password") or "", subject=subject, purpose=purpose, back=back)
    return Options(identity, redactions, exact, transport)


def start(*, register: str, record_id: int, number: str, purpose: str, table: str, provision, recording_id: str,
          start_us: int, end_us: int, opts: Options, package_url, log_detail=None) -> Job:
    """Start exporting [start_us, end_us) of a recording in the background.

    ``table`` is the register's export table (``<register>_exports``-like, keyed by
    ``<record>_id``): the finished export's manifest hash is recorded there.
    ``package_url(job_id)`` is where the page downloads the package. ``log_detail`` may
    change what the audit entry says (e.g. leave a citizen's name out of the log)."""
    from firmware.vault import age

    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    job_id = secrets.token_urlsafe(16)
    job = Job(job_id, register, record_id, number, g.user.id, folder / f"{job_id}.age", purpose,
              package_url=package_url(job_id), sealed=bool(opts.transport), faces=opts.redactions.faces)
    if not opts.transport:
        job.key = age.X25519Identity.generate()
    _jobs[job.id] = job
    thread = threading.Thread(target=_run, name=f"export-{number}", daemon=True, args=(
        current_app._get_current_object(), job, table, opts, provision, recording_id, start_us, end_us,
        g.user.username, log_detail))
    thread.start()
    return job


def _run(app, job: Job, table: str, opts: Options, provision, recording_id: str, start_us: int, end_us: int,
         actor: str, log_detail) -> None:
    from firmware import export as ex
    from firmware.vault import Vault, age
    from webui.db import connect

    identity, transport = opts.identity, opts.transport or None
    opts.identity = None
    with app.app_context():
        vault = Vault.open(Path(app.config["KIROKU_DATA"]), readonly=True)
        try:
            plan = ex.plan(vault, recording_id, _moment(start_us), _moment(end_us))
            job.total = plan.duration

            def progress(done, total):
                job.done = done

            def log(detail):
                if log_detail is not None:
                    detail = log_detail(detail)
                return auth.audit("export.create", subject=job.number, purpose=job.purpose, detail=detail,
                                  actor=actor)

            with open(job.path, "xb") as f:
                out = f if transport else age.Writer(f, [job.key.recipient])
                result = ex.build(vault, plan, opener=identity, provision=provision, out=out, log_export=log,
                                  redactions=opts.redactions, exact=opts.exact, transport_passphrase=transport,
                                  progress=progress, proof=lambda seq: vault.audit_log.inclusion(vault.db, seq),
                                  work_factor=app.config.get("KIROKU_SCRYPT_WORK_FACTOR") or 18)
                if not transport:
                    out.close()
            job.name = result.name
            conn = connect(app.config["KIROKU_DATA"])
            try:
                owner = table.removesuffix("_exports") + "_id"  # provision_exports → provision_id
                conn.execute(f"INSERT INTO {table} ({owner}, by_id, at, manifest_sha256, audit_seq, clip_seconds,"
                             " sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (job.record_id, job.user_id, auth.now_iso(), result.manifest_sha256, result.audit_seq,
                              result.manifest["clip"]["duration_s"], int(bool(transport))))
                conn.commit()
            finally:
                conn.close()
            job.state = "done"
        except Exception as exc:  # shown on the page; nothing half-made is kept
            job.state, job.error = "failed", str(exc)[:300]
            job.path.unlink(missing_ok=True)
        finally:
            identity = None
            vault.close()


def _moment(wall_us: int):
    """A scope's edge as an aware time, to the microsecond."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc)


def status(job: Job) -> dict:
    """An export's progress: state (running, done, failed), seconds done of total, the error."""
    return {"job_id": job.id, "state": job.state, "done": round(job.done, 1), "total": round(job.total, 1),
            "error": job.error, "package": job.package_url if job.state == "done" else None}


def package(job: Job) -> Response:
    """The finished package (a ZIP, or the transport-sealed .zip.age); the download is logged."""
    from firmware.vault import age

    if job.state != "done":
        abort(409, description="the export is not finished")
    auth.audit("export.download", subject=job.number, purpose=job.purpose, detail={"package": job.name})
    if job.sealed:
        response = Response(open(job.path, "rb"), mimetype="application/octet-stream")
        filename = f"{job.name}.zip.age"
    else:
        key = job.key

        def stream():
            with open(job.path, "rb") as f:
                yield from age.decrypt_chunks(f, [key])

        response = Response(stream(), mimetype="application/zip")
        filename = f"{job.name}.zip"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def cleanup(data_dir: Path) -> None:
    """At start-up: packages of an earlier run can be opened by no one (their key was only
    in that process's memory); remove them."""
    for path in (Path(data_dir) / "web" / "exports").glob("*.age"):
        path.unlink(missing_ok=True)
