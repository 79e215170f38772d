"""What the provision and the disclosure pages share of exports (``domain.exports``): the
export form, a job's progress as the page polls it, and the package's download."""

from __future__ import annotations

from flask import Response, g, request, url_for

from domain import exports
from webui import site
from webui.actions import refusing
from webui.parsing import Flag, Form, Text
from webui.services import context

_COMMON = (
    Text("password", "the manager's passphrase", strip=False),
    Flag("blur_faces", "true/false"),
    Text("mute", "spans S-E in seconds, space-separated", strip=False),
    Flag("exact", "true to re-encode for an exact cut", default=False),
    Text("transport_passphrase", "12+ characters", strip=False),
)
PROVISION = Form(*_COMMON)
DISCLOSURE = Form(*_COMMON[:2], Text("blur", "regions X,Y,W,H[@S-E], space-separated", strip=False),
                  Text("mute", "spans S-E in seconds (other voices), space-separated", strip=False), *_COMMON[3:])


def asked(form: Form) -> exports.Request:
    """The export form, read."""
    v = form.parse()
    return exports.Request(password=v.password, blur_faces=v.blur_faces, exact=v.exact, mute=v.mute,
                           blur=v.get("blur", ""), transport_passphrase=v.transport_passphrase)


def status(register: str, job: exports.Job, **ids) -> dict:
    """A job's progress as the page polls it, with where its package is downloaded once done
    (and whether that needs the passphrase again: POST ``password`` there)."""
    url = url_for(f"{register}.download", job_id=job.id, **ids) if job.state == "done" else None
    return {**exports.status(job), "package": url, **ids,
            "passphrase_needed": site.passphrase_needed(job)}


_IDS = {"provisions": "provision_id", "disclosures": "disclosure_id"}


def job_status(job: exports.Job) -> dict:
    """A job's progress, named by its record (``provision_id`` or ``disclosure_id``)."""
    return status(job.register, job, **{_IDS[job.register]: job.record_id})


AGAIN = Form(Text("password", "the manager's passphrase: for an unsealed package taken a second time", strip=False))


def download(job: exports.Job, back: str) -> Response:
    """The finished package (a ZIP, or the transport-sealed .zip.age); the download is logged.
    An unsealed one is taken once by the session that made it (GET); every other time needs
    the manager's passphrase (POST ``password``)."""
    if request.method == "HEAD":  # (Flask answers HEAD with the GET view: it would use up the one download)
        return Response(status=405, headers={"Allow": "GET, POST"})
    password = AGAIN.parse().password if request.method == "POST" else None
    with refusing(back=back):
        filename, mimetype, chunks = exports.package(context(), job, session=g.session_id or "", password=password)
    response = Response(chunks, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
