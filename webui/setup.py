"""The first-run page: the first manager, the device's keys, the recovery key handed over once.

It exists only while the device has no user; afterwards it answers 404. No default
password exists anywhere, and the page asks for the set-up code shown at the device
(webui.setup_code), so that nobody else on the network can register first.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for

from domain import accounts, people
from firmware.vault import age
from webui import setup_code, site
from webui.db import get_db
from webui.permissions import MANAGER, PUBLIC, permission
from webui.services import audit, control, state
from webui.sessions import has_users, load_user, start_session

bp = Blueprint("setup", __name__, url_prefix="/setup")


@bp.route("/", methods=["GET", "POST"])
@permission(PUBLIC)
def index():
    if has_users():
        abort(404)
    keys = state().keys
    store = keys.store
    needs_recovery_to_reencrypt = store.initialised and bool(store.day_keys("footage") or store.day_keys("call"))
    if request.method == "GET":
        try:
            setup_code.ensure(current_app.config["KIROKU_DATA"])  # what the console shows
        except OSError as exc:
            current_app.logger.error("the set-up code cannot be made: %s", exc)
            flash("setup.code_unavailable", "error")
        return render_template("setup/index.html", form={}, provisioned=store.initialised,
                               needs_recovery=needs_recovery_to_reencrypt)
    control().status()  # nothing is set up unless the recorder can log it (raises → 503 page)
    form = {k: request.form.get(k, "").strip() for k in ("username", "display_name", "section")}
    refused = _code_refused()
    if refused:
        flash(refused, "error")
        return render_template("setup/index.html", form=form, provisioned=store.initialised,
                               needs_recovery=needs_recovery_to_reencrypt), 403
    password, confirm = request.form.get("password", ""), request.form.get("confirm", "")
    problem = None
    if not people.USERNAME.fullmatch(form["username"]):
        problem = "user.bad_username"
    elif not form["display_name"] or not form["section"]:
        problem = "form.missing"
    else:
        problem = accounts.password_problem(password, confirm)
    unlock = None
    if not problem and needs_recovery_to_reencrypt:
        try:
            text = next(line for line in request.form.get("recovery", "").splitlines()
                        if line.strip().startswith("AGE-SECRET-KEY-"))
            unlock = age.X25519Identity.parse(text)
        except (StopIteration, ValueError):
            problem = "setup.recovery_needed"
    if problem:
        flash(problem, "error")
        return render_template("setup/index.html", form=form, provisioned=store.initialised,
                               needs_recovery=needs_recovery_to_reencrypt), 400

    recovery = None
    made_keys = not store.initialised
    if made_keys:
        from firmware.vault.setup import set_up_before

        refusal = set_up_before(Path(current_app.config["KIROKU_DATA"]), store)
        if refusal:  # a lost device key is restored, never silently replaced
            return site.render_error("error.setup_refused", refusal, 409)
    if made_keys:
        recovery = age.X25519Identity.generate()
        store.initialise(current_app.config["KIROKU_DEVICE"], recovery.recipient)
    try:
        # The device key now exists to sign it: the set-up is logged before anything else is made.
        audit("device.setup", subject=form["username"], actor=form["username"],
                   detail={"keys_created": made_keys, "device": current_app.config["KIROKU_DEVICE"]})
        keys.add_manager(form["username"], password, unlock=unlock)
        user_id = accounts.create_first_manager(get_db(), username=form["username"],
                                                display_name=form["display_name"], section=form["section"],
                                                password=password)
    except Exception as exc:
        # All or nothing: a device half set up would have lost its recovery key.
        store.remove_manager(form["username"])
        if made_keys:
            store.uninitialise()
        if isinstance(exc, age.NoIdentityMatched):
            flash("setup.recovery_wrong", "error")
            return render_template("setup/index.html", form=form, provisioned=True, needs_recovery=True), 400
        raise
    setup_code.remove(current_app.config["KIROKU_DATA"])  # the page is closed: nothing left to guess
    start_session(user_id)
    g.user = load_user(user_id)
    audit("user.add", subject=form["username"], detail={"roles": ["manager"], "section": form["section"]})
    if recovery is not None:
        state().pending_recovery.put(user_id, recovery)  # by person, not session: a log-out does not lose it
        return redirect(url_for("setup.recovery"))
    return redirect(url_for("admin.dashboard"))


def _code_refused() -> str | None:
    """None if the set-up code typed is the device's, else why not. Wrong codes count against
    the address as wrong passwords do (slowed, then refused for a while), and are logged."""
    address = request.remote_addr or ""
    key = f"setup:{address}"
    guard = state().guard
    if guard.failures(key) >= accounts.ADDRESS_LIMIT:
        return "setup.code_locked"  # logged when it began: a locked address cannot fill the log
    if setup_code.matches(current_app.config["KIROKU_DATA"], request.form.get("code", "")):
        return None
    failures = guard.fail(key)
    audit("setup.refused", detail={"reason": "wrong set-up code", "address": address, "failures": failures},
               actor="anonymous")
    if failures >= accounts.ADDRESS_LIMIT:
        audit("setup.locked", detail={"address": address, "minutes": accounts.LOCK_SECONDS // 60},
                   actor="anonymous")
        return "setup.code_locked"
    accounts.slow_down(failures)
    return "setup.code_wrong"


@bp.get("/recovery")
@permission(MANAGER)
def recovery():
    """The recovery key, once: a print view with a QR code."""
    identity = state().pending_recovery.get(g.user.id)
    if identity is None:
        abort(404)
    import io

    import segno

    svg = io.BytesIO()
    segno.make(str(identity), error="m").save(svg, kind="svg", scale=5, border=2, xmldecl=False, svgns=True)
    return render_template("setup/recovery.html", identity=str(identity), recipient=str(identity.recipient),
                           qr=svg.getvalue().decode())


@bp.post("/confirm")
@permission(MANAGER)
def confirm():
    if state().pending_recovery.get(g.user.id) is None:
        abort(404)
    if request.form.get("stored") != "yes":
        flash("setup.confirm_needed", "error")
        return redirect(url_for("setup.recovery"))
    state().pending_recovery.drop(g.user.id)
    audit("recovery.handed_over", subject=g.user.username)
    flash("setup.done", "info")
    return redirect(url_for("admin.dashboard"))
