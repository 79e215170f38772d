"""The manager's pages: the dashboard, people and roles, sections, operators per device.

Art. 5: the manager (管理責任者) runs the appliance and designates who may operate each
device; nobody else may operate it.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for

from webui import auth, keys
from webui.db import get_db, transaction, vault_db
from webui.permissions import MANAGER, permission

bp = Blueprint("admin", __name__, url_prefix="/admin")


def recorder_status() -> dict | None:
    from firmware.control import ControlError
    from webui import control

    try:
        return control().status()
    except ControlError:
        return None


@bp.get("/")
@permission(MANAGER)
def dashboard():
    db = get_db()
    vdb = vault_db()
    pending = db.execute("SELECT count(*) FROM requests WHERE status IN ('submitted', 'awaiting_opinion')").fetchone()[0]
    holds = vdb.execute("SELECT count(*) FROM holds WHERE released_at IS NULL").fetchone()[0] if vdb else 0
    recent = vdb.execute("SELECT id, started_at, ended_at, end_reason FROM recordings ORDER BY started_wall_us DESC"
                         " LIMIT 5").fetchall() if vdb else []
    from webui.provisions import age_days, needing_attention

    return render_template("admin/dashboard.html", status=recorder_status(), pending=pending, holds=holds,
                           recent=recent, attention=needing_attention(), age_days=age_days)


# -- people -----------------------------------------------------------------------------------

def _sections():
    return get_db().execute("SELECT id, name FROM sections ORDER BY name").fetchall()


def _people():
    device = current_app.config["KIROKU_DEVICE"]
    return get_db().execute(
        "SELECT u.id, u.username, u.display_name, s.name AS section, u.is_manager, u.is_section_head,"
        " u.disabled_at, u.locked_until, u.failed_logins,"
        " EXISTS (SELECT 1 FROM operators o WHERE o.user_id = u.id AND o.device = ? AND o.revoked_at IS NULL)"
        " AS is_operator FROM users u LEFT JOIN sections s ON s.id = u.section_id ORDER BY u.username",
        (device,)).fetchall()


@bp.get("/people")
@permission(MANAGER)
def people():
    return render_template("admin/people.html", people=_people(), sections=_sections(), form={})


@bp.post("/people")
@permission(MANAGER)
def add_person():
    form = {k: request.form.get(k, "").strip() for k in ("username", "display_name", "section_id")}
    roles = set(request.form.getlist("roles"))
    password = request.form.get("password", "")
    problem = None
    db = get_db()
    section_ok = not form["section_id"] or (form["section_id"].isdigit() and db.execute(
        "SELECT 1 FROM sections WHERE id = ?", (int(form["section_id"]),)).fetchone() is not None)
    if not auth.USERNAME.fullmatch(form["username"]):
        problem = "user.bad_username"
    elif not section_ok:
        problem = "form.missing"
    elif not form["display_name"] or len(form["display_name"]) > 80:
        problem = "form.missing"
    elif "section_head" in roles and not form["section_id"]:
        problem = "user.section_head_needs_section"
    elif not roles <= {"manager", "section_head", "operator"}:
        problem = "form.missing"
    else:
        problem = auth.check_password_rules(password)
    if not problem and db.execute("SELECT 1 FROM users WHERE username = ?", (form["username"],)).fetchone():
        problem = "user.exists"
    unlock = None
    if not problem and "manager" in roles:
        # A new manager must be able to open the days already recorded: the acting manager
        # opens them with their own key to re-encrypt them (firmware/vault/keys.py).
        if not auth.check_own_password(request.form.get("your_password", "")):
            problem = "user.your_password_needed"
        else:
            unlock = keys.unlock(g.user.username, request.form.get("your_password", ""))
    if problem:
        flash(problem, "error")
        return render_template("admin/people.html", people=_people(), sections=_sections(), form=form), 400
    auth.audit("user.add", subject=form["username"], detail={"roles": sorted(roles)})
    if "manager" in roles:
        keys.add_manager(form["username"], password, unlock=unlock)
    try:
        with transaction(db):
            user_id = db.execute(
                "INSERT INTO users (username, display_name, password_hash, section_id, is_manager, is_section_head,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (form["username"], form["display_name"], auth.hash_password(password),
                 int(form["section_id"]) if form["section_id"] else None, int("manager" in roles),
                 int("section_head" in roles), auth.now_iso())).lastrowid
            if "operator" in roles:
                _designate(db, user_id)
    except Exception:
        if "manager" in roles:
            keys.keystore().remove_manager(form["username"])  # no key without its person
        raise
    if "operator" in roles:
        auth.audit("operator.designate", subject=form["username"], detail={"device": current_app.config["KIROKU_DEVICE"]})
    flash("user.added", "info")
    return redirect(url_for("admin.people"))


def _designate(db, user_id: int) -> None:
    db.execute("INSERT INTO operators (user_id, device, designated_by, designated_at) VALUES (?, ?, ?, ?)"
               " ON CONFLICT (user_id, device) DO UPDATE SET revoked_at = NULL, designated_by = excluded.designated_by,"
               " designated_at = excluded.designated_at",
               (user_id, current_app.config["KIROKU_DEVICE"], g.user.id, auth.now_iso()))


def _person(user_id: int):
    row = get_db().execute("SELECT id, username, is_manager FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        abort(404)
    return row


@bp.post("/people/<int:user_id>/operator")
@permission(MANAGER)
def set_operator(user_id: int):
    """Designate (or revoke) someone as an operator of this device (Art. 5(2))."""
    person = _person(user_id)
    db = get_db()
    if request.form.get("designate") == "yes":
        with transaction(db):
            _designate(db, user_id)
        auth.audit("operator.designate", subject=person["username"], detail={"device": current_app.config["KIROKU_DEVICE"]})
    else:
        db.execute("UPDATE operators SET revoked_at = ? WHERE user_id = ? AND device = ? AND revoked_at IS NULL",
                   (auth.now_iso(), user_id, current_app.config["KIROKU_DEVICE"]))
        auth.audit("operator.revoke", subject=person["username"], detail={"device": current_app.config["KIROKU_DEVICE"]})
    return redirect(url_for("admin.people"))


@bp.post("/people/<int:user_id>/disable")
@permission(MANAGER)
def disable(user_id: int):
    person = _person(user_id)
    if person["id"] == g.user.id:
        flash("user.cannot_disable_self", "error")
        return redirect(url_for("admin.people"))
    db = get_db()
    with transaction(db):
        db.execute("UPDATE users SET disabled_at = ? WHERE id = ?", (auth.now_iso(), user_id))
        sids = [r[0] for r in db.execute("SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL", (user_id,))]
    for sid in sids:
        auth.end_session(sid, "account disabled")
    auth.audit("user.disable", subject=person["username"])
    return redirect(url_for("admin.people"))


@bp.post("/people/<int:user_id>/unlock")
@permission(MANAGER)
def unlock_account(user_id: int):
    person = _person(user_id)
    get_db().execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (user_id,))
    auth.audit("user.unlock", subject=person["username"])
    return redirect(url_for("admin.people"))


@bp.post("/sections")
@permission(MANAGER)
def add_section():
    name = request.form.get("name", "").strip()
    if not name or len(name) > 40:
        flash("form.missing", "error")
    elif get_db().execute("SELECT 1 FROM sections WHERE name = ?", (name,)).fetchone():
        flash("section.exists", "error")
    else:
        get_db().execute("INSERT INTO sections (name, created_at) VALUES (?, ?)", (name, auth.now_iso()))
        auth.audit("section.add", subject=name)
    return redirect(url_for("admin.people"))
