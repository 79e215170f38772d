"""Export jobs: a register record's scope as a signed package (``firmware.export``), made in
the background. Shared by the provision register (Art. 9–11) and the disclosure register
(Art. 12).

- A job runs in a thread, so a long export never blocks the web server; the record's page
  polls its progress.
- The package is sealed as it is written — to the transport passphrase when one is given,
  otherwise to a key that exists only in this process's memory — so nothing decrypted lands
  on disk, and a package left behind by a restart can be opened by no one (:meth:`Jobs.cleanup`
  removes them at start-up).
- The export is in the audit log before the package is complete (``firmware.export``); its
  manifest hash is then recorded in the register's export table.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from domain import keys
from domain.errors import NotFound, NotYet, refuse
from domain.times import now_iso
from firmware import export as ex
from firmware.vault import age

log = logging.getLogger(__name__)

TABLES = {"provisions": ("provision_exports", "provision_id"), "disclosures": ("disclosure_exports", "disclosure_id")}


@dataclass
class Job:
    id: str
    register: str  # whose record it exports: "provisions", "disclosures"
    record_id: int
    number: str
    user_id: int
    path: Path
    purpose: str  # the Art. 7 purpose its audit entries carry
    total: float = 0.0
    done: float = 0.0
    state: str = "running"  # running, done, failed
    error: str = ""
    name: str = ""
    sealed: bool = False  # with the transport passphrase: handed over as it is
    faces: bool = False  # faces were blurred by the detector, which can miss one
    key: object | None = None  # the in-memory key the package is sealed to otherwise
    session: str = ""  # the session that made it: the one that may take it once without the passphrase again
    downloads: int = 0


@dataclass
class Options:
    """What the export form asked for, checked before anything starts."""

    identity: object  # the manager's unlocked key
    redactions: ex.Redactions
    exact: bool = False
    transport: str = ""


@dataclass(frozen=True)
class Request:
    """An export form as typed: blur_faces (always said outright), exact, mute spans, blur
    regions, the transport passphrase and the manager's passphrase."""

    password: str
    blur_faces: bool
    exact: bool = False
    mute: str = ""
    blur: str = ""
    transport_passphrase: str = ""


def options(ctx, asked: Request, *, subject: str, purpose: str, regions: bool = False, check=None,
            recording_id: str | None = None) -> Options:
    """Check an export form; blur regions only when ``regions``. ``check(redactions)`` may
    refuse what was asked before the key is unlocked; so is blurring asked of a call. The
    manager's passphrase then unlocks their key (a wrong one is logged and refused)."""
    transport = asked.transport_passphrase
    if transport and len(transport) < 12:
        refuse("provision.transport_short")
    redactions = ex.Redactions(faces=asked.blur_faces)
    try:
        redactions.mute = [ex.parse_span(s) for s in asked.mute.split() if s]
    except ex.ExportError:
        refuse("provision.bad_mute")
    if regions:
        try:
            redactions.blur = [ex.Region.parse(s) for s in asked.blur.split() if s]
        except ex.ExportError:
            refuse("export.bad_region")
    if recording_id is not None and redactions.video and ctx.recordings.sound_only(recording_id):
        refuse("export.sound_only")
    if check is not None:
        check(redactions)
    identity = keys.unlock_for(ctx, asked.password, subject=subject, purpose=purpose)
    return Options(identity, redactions, asked.exact, transport)


class Jobs:
    """The exports of one web application: running or finished, packages in ``folder``."""

    def __init__(self, folder: Path, *, work_factor: int | None = None):
        self.folder = Path(folder)
        self.work_factor = work_factor or 18
        self._jobs: dict[str, Job] = {}

    def of(self, register: str, record_id: int) -> list[Job]:
        return [j for j in list(self._jobs.values()) if j.register == register and j.record_id == record_id]

    def find(self, register: str, record_id: int, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or job.register != register or job.record_id != record_id:
            raise NotFound(f"export {job_id}")
        return job

    def discard(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        job.key = None
        job.path.unlink(missing_ok=True)

    def discard_all(self, register: str, record_id: int) -> None:
        for job in self.of(register, record_id):
            self.discard(job)

    def start(self, ctx, *, register: str, record_id: int, number: str, purpose: str, provision: ex.Provision,
              recording_id: str, start_us: int, end_us: int, opts: Options, log_detail=None) -> Job:
        """Start exporting [start_us, end_us) of a recording in the background, on a context
        of its own (``ctx.for_thread()``). ``log_detail`` may change what the audit entry says
        (e.g. leave a citizen's name out of the log)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        job_id = secrets.token_urlsafe(16)
        job = Job(job_id, register, record_id, number, ctx.actor.id, self.folder / f"{job_id}.age", purpose,
                  sealed=bool(opts.transport), faces=opts.redactions.faces)
        if not opts.transport:
            job.key = age.X25519Identity.generate()
        self._jobs[job.id] = job
        thread = threading.Thread(target=self._run, name=f"export-{number}", daemon=True,
                                  args=(ctx.for_thread(), job, opts, provision, recording_id, start_us, end_us,
                                        log_detail))
        thread.start()
        return job

    def _run(self, ctx, job: Job, opts: Options, provision, recording_id: str, start_us: int, end_us: int,
             log_detail) -> None:
        identity, transport = opts.identity, opts.transport or None
        opts.identity = None
        try:
            with ctx.recordings.opened_vault() as vault:
                plan = ex.plan(vault, recording_id, _moment(start_us), _moment(end_us))
                job.total = plan.duration

                def progress(done, total):
                    job.done = done

                def logged(detail):
                    if log_detail is not None:
                        detail = log_detail(detail)
                    return ctx.log("export.create", subject=job.number, purpose=job.purpose, detail=detail)

                with open(job.path, "xb") as f:
                    out = f if transport else age.Writer(f, [job.key.recipient])
                    result = ex.build(vault, plan, opener=identity, provision=provision, out=out, log_export=logged,
                                      redactions=opts.redactions, exact=opts.exact, transport_passphrase=transport,
                                      progress=progress, proof=lambda seq: vault.audit_log.inclusion(vault.db, seq),
                                      work_factor=self.work_factor)
                    if not transport:
                        out.close()
            job.name = result.name
            table, owner = TABLES[job.register]
            ctx.db.execute(f"INSERT INTO {table} ({owner}, by_id, at, manifest_sha256, audit_seq, clip_seconds,"
                           " sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (job.record_id, job.user_id, now_iso(), result.manifest_sha256, result.audit_seq,
                            result.manifest["clip"]["duration_s"], int(bool(transport))))
            job.state = "done"
        except Exception as exc:  # shown on the page; nothing half-made is kept
            log.warning("export %s failed: %s", job.number, exc)
            job.state, job.error = "failed", str(exc)[:300]
            job.path.unlink(missing_ok=True)
        finally:
            identity = None
            ctx.db.close()

    def cleanup(self) -> None:
        """At start-up: packages of an earlier run can be opened by no one (their key was only
        in that process's memory); remove them."""
        for path in self.folder.glob("*.age"):
            path.unlink(missing_ok=True)


def _moment(wall_us: int) -> datetime:
    """A scope's edge as an aware time, to the microsecond."""
    return datetime.fromtimestamp(wall_us / 1e6, tz=timezone.utc)


def as_json(row) -> dict:
    """A finished export, as a register's export table keeps it."""
    return {"by": row["display_name"], "at": row["at"], "manifest_sha256": row["manifest_sha256"],
            "audit_seq": row["audit_seq"], "clip_seconds": row["clip_seconds"], "sealed": bool(row["sealed"])}


def status(job: Job) -> dict:
    """An export's progress: state (running, done, failed), seconds done of total, the error."""
    return {"job_id": job.id, "state": job.state, "done": round(job.done, 1), "total": round(job.total, 1),
            "error": job.error}


_TAKING = threading.Lock()


def needs_passphrase(job: Job, session: str) -> bool:
    """Whether taking the package now needs the manager's passphrase again: an unsealed package
    (readable by whoever holds it) goes once to the session that made it; every other download
    — a second one, or from another session, after the first one's ended or was left open —
    is a new handing over of footage, confirmed like the export was."""
    return not job.sealed and (job.downloads > 0 or not job.session or session != job.session)


def package(ctx, job: Job, *, session: str = "", password: str | None = None):
    """The finished package to hand over: (file name, mimetype, the bytes as chunks). The
    download is logged first; a package sealed only to this process's key is decrypted as it
    streams, never to disk. ``password``: the manager's passphrase, when
    :func:`needs_passphrase` (a wrong one is counted and can lock the key, as at export)."""
    if job.state != "done":
        raise NotYet("the export is not finished")
    with _TAKING:  # two requests at once from the session that made it: one goes without the passphrase
        again = needs_passphrase(job, session)
        if again:
            if not password:
                refuse("export.passphrase_again", 403)
            keys.unlock_own(ctx, password, subject=job.number, purpose=job.purpose)
        job.downloads += 1
    ctx.log("export.download", subject=job.number, purpose=job.purpose,
            detail={"package": job.name, "download": job.downloads, "passphrase_again": again})
    if job.sealed:
        def sealed():
            with open(job.path, "rb") as f:
                while chunk := f.read(2**16):
                    yield chunk

        return f"{job.name}.zip.age", "application/octet-stream", sealed()
    key = job.key

    def stream():
        with open(job.path, "rb") as f:
            yield from age.decrypt_chunks(f, [key])

    return f"{job.name}.zip", "application/zip", stream()

