"""The first-run page: the first manager, the device's keys, the recovery key handed over once.

It exists only while the device has no user; afterwards it answers 404. No default
password exists anywhere, and the page asks for the set-up code shown at the device
(webui.setup_code), so that nobody else on the network can register first.

A device of a city joins the city's hub here instead (``/setup/join``, as ``kiroku enroll``
does): its people are then the hub's (Art. 5), so no manager is made on the device, and
until the operators designated at the hub arrive the page says where to designate them.
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
    if state().hub is not None:  # enrolled: the people are the hub's, none is made here
        if request.method == "POST":
            flash("setup.enrolled_no_manager", "error")
        return render_template("setup/enrolled.html", hub=state().hub), 409 if request.method == "POST" else 200
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


@bp.post("/join")
@permission(PUBLIC)
def join():
    """Join the city's hub with the one-time code the manager made there (docs/hub.md,
    "Enrollment"): the device's keys first if it has none (its recovery key shown once, here),
    then the enrollment, all or nothing."""
    if has_users() or state().hub is not None:
        abort(404)
    from firmware.uplink import EnrollmentRefused, HubUnreachable, UplinkError, enroll

    keys = state().keys
    store = keys.store
    data = current_app.config["KIROKU_DATA"]
    form = {k: request.form.get(k, "").strip() for k in ("hub", "enrollment_code")}

    def again(problem: str, status: int, detail: str = ""):
        flash(problem, "error")
        return render_template("setup/index.html", form={}, join=form, join_detail=detail,
                               provisioned=store.initialised, needs_recovery=False), status

    control().status()  # nothing is set up unless the recorder can log it (raises → 503 page)
    refused = _code_refused()
    if refused:
        return again(refused, 403)
    if not form["hub"] or not form["enrollment_code"]:
        return again("form.missing", 400)
    if store.initialised and (store.day_keys("footage") or store.day_keys("call")):
        # its recordings are sealed to its own manager; the city's managers could not open them
        return again("setup.join_has_recordings", 409)
    recovery = None
    if not store.initialised:
        recovery = age.X25519Identity.generate()
        store.initialise(current_app.config["KIROKU_DEVICE"], recovery.recipient)
    ca = _ca_file(request.form.get("ca", ""))
    try:
        audit("device.setup", subject=form["hub"][:200], actor="anonymous",
              detail={"keys_created": recovery is not None, "device": current_app.config["KIROKU_DEVICE"],
                      "joining": form["hub"][:200]})
        enroll.enroll(data, form["hub"], form["enrollment_code"], ca=ca)
    except UplinkError as exc:
        if recovery is not None:
            store.uninitialise()  # all or nothing: a device half set up would have lost its recovery key
        problem = ("setup.join_refused" if isinstance(exc, EnrollmentRefused) else
                   "setup.join_unreachable" if isinstance(exc, HubUnreachable) else "setup.join_failed")
        return again(problem, 502 if isinstance(exc, HubUnreachable) else 400, str(exc))
    except BaseException:
        if recovery is not None:
            store.uninitialise()
        raise
    finally:
        if ca is not None:
            ca.unlink(missing_ok=True)
    setup_code.remove(data)  # the page is closed: nothing left to guess
    state().refresh_people()  # the operators already designated for this device, if any
    if recovery is None:
        return redirect(url_for("setup.index"))
    # Nobody can log in here to see it later (the people are the hub's): shown once, now, to
    # whoever enrolled the device, who hands it to the manager.
    audit("recovery.handed_over", subject="the person who enrolled the device", actor="anonymous")
    return render_template("setup/recovery.html", identity=str(recovery), recipient=str(recovery.recipient),
                           qr=_qr(str(recovery)), joined=state().hub)


def _ca_file(pem: str):
    """The hub's CA as pasted on the page (for a hub whose certificate the system does not
    trust), in a file of its own for the enrollment; None if none was pasted."""
    import tempfile
    from pathlib import Path

    pem = pem.strip()
    if not pem:
        return None
    handle, name = tempfile.mkstemp(prefix="kiroku-hub-ca-", suffix=".pem")
    with open(handle, "w") as out:
        out.write(pem + "\n")
    return Path(name)


def _qr(text: str) -> str:
    import io

    import segno

    svg = io.BytesIO()
    segno.make(text, error="m").save(svg, kind="svg", scale=5, border=2, xmldecl=False, svgns=True)
    return svg.getvalue().decode()


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
    return render_template("setup/recovery.html", identity=str(identity), recipient=str(identity.recipient),
                           qr=_qr(str(identity)))


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
