"""The operator console: who is on duty at this counter, the recorder, the sign, incident
marks with the responsible section, and the last recordings — metadata only: operators
never play footage. On simulated hardware it also holds the virtual counter.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, url_for

from domain import duty as duty_, people
from firmware.hardware import Simulator
from webui import i18n
from webui.actions import done
from webui.db import vault_db
from webui.parsing import Flag, Form, takes
from webui.permissions import MANAGER, OPERATOR, permission
from webui.services import context

bp = Blueprint("console", __name__)

DUTY = Form(Flag("on", "true to sign on, false to sign off"))


def last_recordings(limit: int = 10) -> list:
    vdb = vault_db()
    if vdb is None:
        return []
    return vdb.execute(
        "SELECT r.id, r.started_at, r.ended_at, r.end_reason, r.section,"
        " (SELECT count(*) FROM segments s WHERE s.recording_id = r.id AND s.erased_at IS NULL) AS segments,"
        " (SELECT count(*) FROM marks m WHERE m.recording_id = r.id) AS marks,"
        " (r.ended_wall_us - r.started_wall_us) / 1e6 AS seconds"
        " FROM recordings r WHERE r.device = ? ORDER BY r.started_wall_us DESC LIMIT ?",
        (current_app.config["KIROKU_DEVICE"], limit)).fetchall()


@bp.get("/console")
@permission(OPERATOR, MANAGER)
def index():
    ctx = context()
    on_duty = duty_.on_duty(ctx)
    return render_template(
        "console/index.html",
        simulated=current_app.config["KIROKU_SIMULATED"],
        sim_actions=[a for a in Simulator.ACTIONS if a not in ("press", "release")],
        messages=i18n.catalog(), duty=on_duty, recordings=last_recordings(), sections=people.section_names(ctx.db),
        me_on_duty=any(d["user_id"] == g.user.id for d in on_duty),
    )


@bp.post("/console/duty")
@permission(OPERATOR)
@takes(DUTY)
def duty():
    """Sign on (on: yes) or off at this counter."""
    ctx = context()
    duty_.sign(ctx, DUTY.parse().on)
    return done(url_for("console.index"), on_duty=duty_.describe(ctx))
