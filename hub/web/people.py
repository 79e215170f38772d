"""The city's register of people (Art. 5): managers, section heads and auditors with their
sections, and the designation of operators per device (Art. 5(2)) — pushed to each device,
which keeps them so an operator can sign on at the counter while the hub is away
(``hub.pushes``). The workflows are ``domain.people``'s, as on a device."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request, url_for

from domain import accounts, people
from hub import devices as hub_devices
from webui.actions import done, is_api, refusing
from webui.parsing import Flag, Form, Number, Text, Texts, takes
from webui.permissions import AUDITOR, MANAGER, permission
from webui.services import context, state

bp = Blueprint("hub_people", __name__, url_prefix="/hub/people")

HUB_ROLES = ("manager", "section_head", "auditor")
PERSON = Form(
    Text("username", "text", pattern=people.USERNAME, refuse="user.bad_username"),
    Text("display_name", "text"), Number("section_id", "the section's id", low=1, refuse="user.unknown_section"),
    Texts("roles", " | ".join(HUB_ROLES), values=HUB_ROLES, refuse="user.unknown_role"),
    Text("password", "their first password", strip=False),
    Text("your_password", "yours, when adding a manager", strip=False),
)
DESIGNATION = Form(Text("device", "the device's id", required=True),
                   Flag("designate", "true to designate, false to revoke"))
SECTION = Form(Text("name", "text", required=True, max=people.MAX_SECTION_NAME))


def _page(form: dict, roles=None):
    ctx = context()
    return render_template("hub/people.html", people=people.everyone(ctx.db, ""), sections=people.sections(ctx.db),
                           devices=hub_devices.overview(ctx.db), designations=people.designations(ctx.db),
                           form=form, roles=roles, hub_roles=HUB_ROLES)


@bp.get("/")
@permission(MANAGER, AUDITOR)
def index():
    """The register: everyone, their roles and sections, and the devices each is designated for."""
    if is_api():
        ctx = context()
        designated = people.designations(ctx.db)
        return jsonify([{**people.as_json(p), "devices": sorted(designated.get(p["id"], ()))}
                        for p in people.everyone(ctx.db, "")])
    return _page({})


@bp.post("/")
@permission(MANAGER)
@takes(PERSON)
def add_person():
    """Add a person with their roles; a new manager needs the acting manager's passphrase."""
    typed = {k: (request.form.get(k) or "").strip() for k in ("username", "display_name", "section_id")}
    with refusing(page=lambda: _page(typed, set(request.form.getlist("roles")))):
        v = PERSON.parse()
        ctx = context()
        user_id = people.add(ctx, people.NewPerson(v.username, v.display_name, v.section_id, frozenset(v.roles),
                                                   v.password, v.your_password))
    state().pushed()  # a new manager's key reaches every device
    return done(url_for("hub_people.index"), code=201, notice="user.added", **people.describe(ctx, user_id))


@bp.post("/<int:user_id>/operator")
@permission(MANAGER)
@takes(DESIGNATION)
def set_operator(user_id: int):
    """Designate someone to operate a device, or revoke it (Art. 5(2)); the device learns it."""
    ctx = context()
    people.account(ctx.db, user_id)
    with refusing(back=url_for("hub_people.index")):
        v = DESIGNATION.parse()
        if not ctx.db.one("SELECT 1 FROM devices WHERE id = ? AND removed_at IS NULL", (v.device,)):
            from domain.errors import refuse

            refuse("hub.unknown_device")
        people.set_operator(ctx, user_id, v.designate, v.device)
    state().pushed()
    return done(url_for("hub_people.index"), notice="hub.designation_saved", user_id=user_id, device=v.device,
                designated=v.designate)


@bp.post("/<int:user_id>/disable")
@permission(MANAGER)
def disable(user_id: int):
    """Disable an account: its sessions end at once, and no device lets it sign on any more."""
    ctx = context()
    with refusing(back=url_for("hub_people.index")):
        for sid in people.disable(ctx, user_id):
            accounts.end_session(ctx, sid, "account disabled")
    state().pushed()
    return done(url_for("hub_people.index"), **people.describe(ctx, user_id))


@bp.post("/<int:user_id>/unlock")
@permission(MANAGER)
def unlock_account(user_id: int):
    """Lift the lock of another manager's key, locked after wrong passphrases."""
    ctx = context()
    with refusing(back=url_for("hub_people.index")):
        people.unlock_account(ctx, user_id)
    return done(url_for("hub_people.index"), **people.describe(ctx, user_id))


@bp.post("/sections")
@permission(MANAGER)
@takes(SECTION)
def add_section():
    """Add a section (課)."""
    with refusing(back=url_for("hub_people.index")):
        name = SECTION.parse().name
        section_id = people.add_section(context(), name)
    return done(url_for("hub_people.index"), code=201, id=section_id, name=name)
