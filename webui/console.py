"""The operator console: who is on duty at this counter, the recorder, the sign, incident
marks with the responsible section, and the last recordings — metadata only: operators
never play footage. On simulated hardware it also holds the virtual counter.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, url_for

from firmware.hardware import Simulator
from webui import auth, i18n
from webui.actions import done, fields, flag
from webui.db import get_db, vault_db
from webui.permissions import MANAGER, OPERATOR, permission

bp = Blueprint("console", __name__)


def on_duty():
    return get_db().execute(
        "SELECT d.id, d.user_id, u.display_name, d.signed_on_at FROM duty d JOIN users u ON u.id = d.user_id"
        " WHERE d.device = ? AND d.signed_off_at IS NULL ORDER BY d.id", (current_app.config["KIROKU_DEVICE"],)).fetchall()


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
    sections = [r["name"] for r in get_db().execute("SELECT name FROM sections ORDER BY name")]
    return render_template(
        "console/index.html",
        simulated=current_app.config["KIROKU_SIMULATED"],
        sim_actions=[a for a in Simulator.ACTIONS if a not in ("press", "release")],
        messages=i18n.catalog(), duty=on_duty(), recordings=last_recordings(), sections=sections,
        me_on_duty=any(d["user_id"] == g.user.id for d in on_duty()),
    )


@bp.post("/console/duty")
@permission(OPERATOR)
def duty():
    """Sign on (on: yes) or off at this counter."""
    db = get_db()
    device = current_app.config["KIROKU_DEVICE"]
    if flag(fields(), "on"):
        if not db.execute("SELECT 1 FROM duty WHERE device = ? AND user_id = ? AND signed_off_at IS NULL",
                          (device, g.user.id)).fetchone():
            auth.audit("duty.sign_on", subject=device)
            db.execute("INSERT INTO duty (device, user_id, signed_on_at) VALUES (?, ?, ?)",
                       (device, g.user.id, auth.now_iso()))
    else:
        auth.audit("duty.sign_off", subject=device)
        db.execute("UPDATE duty SET signed_off_at = ? WHERE device = ? AND user_id = ? AND signed_off_at IS NULL",
                   (auth.now_iso(), device, g.user.id))
    return done(url_for("console.index"), on_duty=describe_duty())


def describe_duty() -> list[dict]:
    return [{"user_id": d["user_id"], "name": d["display_name"], "since": d["signed_on_at"]} for d in on_duty()]
