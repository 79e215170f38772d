"""The manager's pages: the dashboard, people and roles, sections, operators per device.

Art. 5: the manager (管理責任者) runs the appliance and designates who may operate each
device; nobody else may operate it. The register is ``domain.people``.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request, url_for

from domain import accounts, disclosures, people, provisions, requests
from webui.actions import done, refuse, refusing
from webui.db import vault_db
from webui.parsing import Flag, Form, Number, Text, Texts, takes
from webui.permissions import MANAGER, permission
from webui.releases import summary
from webui.services import context, recorder_status, state

bp = Blueprint("admin", __name__, url_prefix="/admin")

PERSON = Form(
    Text("username", "text", pattern=people.USERNAME, refuse="user.bad_username"),
    Text("display_name", "text"), Number("section_id", "the section's id", low=1, refuse="user.unknown_section"),
    Texts("roles", " | ".join(people.ROLES), values=people.ROLES, refuse="user.unknown_role"),
    Text("password", "their first password", strip=False),
    Text("your_password", "yours, when adding a manager", strip=False),
)
OPERATOR = Form(Flag("designate", "true to designate, false to revoke"))
SECTION = Form(Text("name", "text", required=True, max=people.MAX_SECTION_NAME))


@bp.get("/")
@permission(MANAGER)
def dashboard():
    vdb = vault_db()
    recent = vdb.execute("SELECT id, started_at, ended_at, end_reason FROM recordings ORDER BY started_wall_us DESC"
                         " LIMIT 5").fetchall() if vdb else []
    db = context().db
    return render_template("admin/dashboard.html", status=recorder_status(), recent=recent, software=summary(),
                           attention=provisions.needing_attention(db), age_days=provisions.age_days, **counts(),
                           disclosures_due=disclosures.needing_attention(db),
                           disclosure_days=disclosures.days_remaining, disclosure_deadline=disclosures.deadline)


def counts() -> dict:
    """The dashboard's counts (the page and GET /api/v1/dashboard): requests awaiting an
    opinion or a decision, and open holds."""
    ctx = context()
    return {"pending": requests.pending_count(ctx.db), "holds": ctx.recordings.open_holds()}


# -- people -----------------------------------------------------------------------------------

def _people_page(form: dict, roles=None):
    ctx = context()
    return render_template("admin/people.html", people=people.everyone(ctx.db, ctx.device),
                           sections=people.sections(ctx.db), form=form, roles=roles, hub=state().hub)


def _not_at_the_hub() -> None:
    """Once enrolled, the city's register is the hub's: people, sections and designations are
    made there (Art. 5(2), DESIGN.md §8), and reach this device by themselves."""
    if state().hub is not None:
        refuse("people.at_hub", 409)


@bp.get("/people", endpoint="people")
@permission(MANAGER)
def people_page():
    return _people_page({})


@bp.post("/people")
@permission(MANAGER)
@takes(PERSON)
def add_person():
    """Add a person with their roles; a new manager needs the acting manager's passphrase."""
    typed = {k: (request.form.get(k) or "").strip() for k in ("username", "display_name", "section_id")}
    roles = set(request.form.getlist("roles"))
    with refusing(page=lambda: _people_page(typed, roles)):
        _not_at_the_hub()
        v = PERSON.parse()
        ctx = context()
        user_id = people.add(ctx, people.NewPerson(v.username, v.display_name, v.section_id, frozenset(v.roles),
                                                   v.password, v.your_password))
    return done(url_for("admin.people"), code=201, notice="user.added", **people.describe(ctx, user_id))


@bp.post("/people/<int:user_id>/operator")
@permission(MANAGER)
@takes(OPERATOR)
def set_operator(user_id: int):
    """Designate (designate: yes) or revoke someone as an operator of this device (Art. 5(2))."""
    ctx = context()
    people.account(ctx.db, user_id)  # no such person: 404 before what was sent is read
    with refusing(back=url_for("admin.people")):
        _not_at_the_hub()
        people.set_operator(ctx, user_id, OPERATOR.parse().designate)
    return done(url_for("admin.people"), **people.describe(ctx, user_id))


@bp.post("/people/<int:user_id>/disable")
@permission(MANAGER)
def disable(user_id: int):
    """Disable an account: its sessions end at once."""
    ctx = context()
    with refusing(back=url_for("admin.people")):
        for sid in people.disable(ctx, user_id):
            accounts.end_session(ctx, sid, "account disabled")
    return done(url_for("admin.people"), **people.describe(ctx, user_id))


@bp.post("/people/<int:user_id>/unlock")
@permission(MANAGER)
def unlock_account(user_id: int):
    """Lift the lock of another manager's key, locked after wrong passphrases."""
    ctx = context()
    with refusing(back=url_for("admin.people")):
        people.unlock_account(ctx, user_id)
    return done(url_for("admin.people"), **people.describe(ctx, user_id))


@bp.post("/sections")
@permission(MANAGER)
@takes(SECTION)
def add_section():
    """Add a section (課): section heads belong to one, and recordings are marked for one."""
    with refusing(back=url_for("admin.people")):
        _not_at_the_hub()
        name = SECTION.parse().name
        section_id = people.add_section(context(), name)
    return done(url_for("admin.people"), code=201, id=section_id, name=name)
