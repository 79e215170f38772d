"""The hub's dashboard and devices: every device at a glance with its alerts, one device's
detail and witness, a one-time code to enroll one, and removing one (``hub.devices``,
``hub.enroll``)."""

from __future__ import annotations

from flask import Blueprint, render_template, request, url_for

from hub import devices, enroll
from webui.actions import done, refusing
from webui.parsing import Choice, Form, Text, takes
from webui.permissions import AUDITOR, MANAGER, permission
from webui.services import context, state

bp = Blueprint("hub", __name__, url_prefix="/hub")

CODE = Form(Text("device", "the device's id (its settings' device.id), e.g. counter-2", required=True,
                 pattern=enroll.DEVICE_ID, refuse="hub.bad_device_id"),
            Choice("kind", enroll.KINDS, "counter | calls", refuse="hub.bad_kind"),
            Text("place", "where it is, as people say it (市民課窓口 2番)", required=True, max=80,
                 refuse="hub.place_needed"))


@bp.get("/")
@permission(MANAGER, AUDITOR)
def dashboard():
    db = context().db
    return render_template("hub/dashboard.html", devices=devices.overview(db), alerts=devices.open_alerts(db))


@bp.get("/devices/<device_id>")
@permission(MANAGER, AUDITOR)
def device(device_id: str):
    db = context().db
    found = next((d for d in devices.overview(db, include_removed=True) if d["id"] == device_id), None)
    if found is None:
        from domain.errors import NotFound

        raise NotFound(f"device {device_id}")
    return render_template("hub/device.html", d=found, checkpoints=devices.checkpoints(db, device_id),
                           lines=devices.lines_of(db, device_id) if found["kind"] == "calls" else None)


LINES = Form(Text("recorded_lines", "the city's numbers recorded, comma-separated (\"\": every line)", max=2000),
             Text("excluded_lines", "the city's numbers never recorded, comma-separated", max=2000))


@bp.post("/devices/<device_id>/lines")
@permission(MANAGER)
@takes(LINES)
def set_lines(device_id: str):
    """Art. 3: which telephones a call recorder records (pushed to it, logged at both ends)."""
    v = LINES.parse()
    with refusing(page=lambda: device(device_id)):
        rev = devices.set_lines(context(), device_id, v.recorded_lines, v.excluded_lines)
    state().pusher and state().pusher.wake()
    return done(url_for("hub.device", device_id=device_id), notice="hub.lines_saved", rev=rev,
                **devices.lines_of(context().db, device_id))


@bp.route("/enroll", methods=["GET", "POST"])
@permission(MANAGER)
@takes(CODE)
def make_code():
    """A one-time code for a device to join the city with (`kiroku enroll`), shown once."""
    if request.method == "GET":
        return render_template("hub/enroll.html", code=None, form={})
    typed = {k: (request.form.get(k) or "").strip() for k in ("device", "kind", "place")}
    with refusing(page=lambda: render_template("hub/enroll.html", code=None, form=typed)):
        v = CODE.parse()
        code = enroll.make_code(context(), v.device, v.kind, v.place)
    hub_url = request.host_url.rstrip("/")
    if request.path.startswith("/api/"):
        return done("", code=201, device=v.device, enrollment_code=code, valid_hours=enroll.VALID_SECONDS // 3600)
    return render_template("hub/enroll.html", code=code, form=typed, hub_url=hub_url), 201


@bp.post("/devices/<device_id>/remove")
@permission(MANAGER)
def remove(device_id: str):
    """Remove a device: its broker account is deleted at once; its log and witness stay."""
    enroll.remove(context(), state(), device_id)
    return done(url_for("hub.dashboard"), notice="hub.device_removed", id=device_id)


@bp.post("/alerts/<int:alert_id>/acknowledge")
@permission(MANAGER)
def acknowledge(alert_id: int):
    """Acknowledge an alert that does not clear by itself (a log that did not follow its checkpoint)."""
    devices.acknowledge(context(), alert_id)
    return done(url_for("hub.dashboard"), notice="hub.alert_acknowledged", id=alert_id)
