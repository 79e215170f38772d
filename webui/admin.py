"""The manager's pages: the dashboard, people and roles, sections, operators per device.

Art. 5: the manager (管理責任者) runs the appliance and designates who may operate each
device; nobody else may operate it.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, render_template, url_for

from webui import auth, keys
from webui.actions import done, fields, flag, refuse
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
    vdb = vault_db()
    recent = vdb.execute("SELECT id, started_at, ended_at, end_reason FROM recordings ORDER BY started_wall_us DESC"
                         " LIMIT 5").fetchall() if vdb else []
    from webui import disclosures
    from webui.provisions import age_days, needing_attention
    from webui.updates import summary

    return render_template("admin/dashboard.html", status=recorder_status(), recent=recent, software=summary(),
                           attention=needing_attention(), age_days=age_days, **counts(),
                           disclosures_due=disclosures.needing_attention(), disclosure_days=disclosures.days_remaining,
                           disclosure_deadline=disclosures.deadline)


def counts() -> dict:
    """The dashboard's counts (the page and GET /api/v1/dashboard): requests awaiting an
    opinion or a decision, and open holds."""
    vdb = vault_db()
    pending = get_db().execute("SELECT count(*) FROM requests WHERE status IN ('submitted', 'awaiting_opinion')"
                               ).fetchone()[0]
    holds = vdb.execute("SELECT count(*) FROM holds WHERE released_at IS NULL").fetchone()[0] if vdb else 0
    return {"pending": pending, "holds": holds}


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
    """Add a person with their roles; a new manager needs the acting manager's passphrase."""
    inputs = fields()
    form = {k: (inputs.get(k) or "").strip() for k in ("username", "display_name", "section_id")}
    roles = set(inputs.getlist("roles"))
    password = inputs.get("password") or ""
    db = get_db()

    def again(key: str):
        refuse(key, page=lambda: render_template("admin/people.html", people=_people(), sections=_sections(),
                                                 form=form, roles=roles))

    section_ok = not form["section_id"] or (form["section_id"].isdigit() and db.execute(
        "SELECT 1 FROM sections WHERE id = ?", (int(form["section_id"]),)).fetchone() is not None)
    if not auth.USERNAME.fullmatch(form["username"]):
        again("user.bad_username")
    if not section_ok:
        again("user.unknown_section")
    if not form["display_name"] or len(form["display_name"]) > 80:
        again("form.missing")
    if "section_head" in roles and not form["section_id"]:
        again("user.section_head_needs_section")
    if not roles <= {"manager", "section_head", "operator"}:
        again("user.unknown_role")
    if not roles:
        again("user.role_needed")  # a person with no role could do nothing but log in
    problem = auth.check_password_rules(password)
    if problem:
        again(problem)
    if db.execute("SELECT 1 FROM users WHERE username = ?", (form["username"],)).fetchone():
        again("user.exists")
    unlock = None
    if "manager" in roles:
        # A new manager must be able to open the days already recorded: the acting manager
        # opens them with their own key to re-encrypt them (firmware/vault/keys.py).
        if not auth.check_own_password(inputs.get("your_password") or ""):
            again("user.your_password_needed")
        unlock = keys.unlock(g.user.username, inputs.get("your_password") or "")
    auth.audit("user.add", subject=form["username"], detail={"roles": sorted(roles)})
    if "operator" in roles:
        auth.audit("operator.designate", subject=form["username"], detail={"device": current_app.config["KIROKU_DEVICE"]})
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
    return done(url_for("admin.people"), code=201, notice="user.added", **describe_person(user_id))


def describe_person(user_id: int) -> dict:
    row = next((p for p in _people() if p["id"] == user_id), None)
    if row is None:
        abort(404)
    return person_json(row)


def person_json(row) -> dict:
    """A row of ``_people()`` as the API shows it."""
    return {"id": row["id"], "username": row["username"], "display_name": row["display_name"],
            "section": row["section"], "manager": bool(row["is_manager"]), "section_head": bool(row["is_section_head"]),
            "operator": bool(row["is_operator"]), "disabled": row["disabled_at"] is not None,
            "locked_until": row["locked_until"], "failed_logins": row["failed_logins"]}


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
    """Designate (designate: yes) or revoke someone as an operator of this device (Art. 5(2))."""
    person = _person(user_id)
    db = get_db()
    device = current_app.config["KIROKU_DEVICE"]
    if flag(fields(), "designate"):
        auth.audit("operator.designate", subject=person["username"], detail={"device": device})
        with transaction(db):
            _designate(db, user_id)
    else:
        auth.audit("operator.revoke", subject=person["username"], detail={"device": device})
        db.execute("UPDATE operators SET revoked_at = ? WHERE user_id = ? AND device = ? AND revoked_at IS NULL",
                   (auth.now_iso(), user_id, device))
    return done(url_for("admin.people"), **describe_person(user_id))


@bp.post("/people/<int:user_id>/disable")
@permission(MANAGER)
def disable(user_id: int):
    """Disable an account: its sessions end at once."""
    person = _person(user_id)
    if person["id"] == g.user.id:
        refuse("user.cannot_disable_self", 409, back=url_for("admin.people"))
    db = get_db()
    auth.audit("user.disable", subject=person["username"])
    with transaction(db):
        db.execute("UPDATE users SET disabled_at = ? WHERE id = ?", (auth.now_iso(), user_id))
        sids = [r[0] for r in db.execute("SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL", (user_id,))]
    for sid in sids:
        auth.end_session(sid, "account disabled")
    return done(url_for("admin.people"), **describe_person(user_id))


@bp.post("/people/<int:user_id>/unlock")
@permission(MANAGER)
def unlock_account(user_id: int):
    """Lift a lock-out after failed log-ins."""
    person = _person(user_id)
    auth.audit("user.unlock", subject=person["username"])
    get_db().execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (user_id,))
    return done(url_for("admin.people"), **describe_person(user_id))


@bp.post("/sections")
@permission(MANAGER)
def add_section():
    """Add a section (課): section heads belong to one, and recordings are marked for one."""
    name = (fields().get("name") or "").strip()
    back = url_for("admin.people")
    if not name or len(name) > 40:
        refuse("form.missing", back=back)
    if get_db().execute("SELECT 1 FROM sections WHERE name = ?", (name,)).fetchone():
        refuse("section.exists", 409, back=back)
    auth.audit("section.add", subject=name)
    section_id = get_db().execute("INSERT INTO sections (name, created_at) VALUES (?, ?)",
                                  (name, auth.now_iso())).lastrowid
    return done(back, code=201, id=section_id, name=name)
