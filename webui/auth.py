"""The log-in page and one's own password (``webui.sessions`` keeps the session).

No default password exists: until the first manager is created, every page leads to the
first-run page, and that page exists only until then.
"""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from domain import accounts
from domain.accounts import LoginRefused
from webui import site
from webui.actions import done, refusing
from webui.parsing import Form, Text, takes
from webui.permissions import LOGIN, PUBLIC, permission
from webui.services import context
from webui.sessions import has_users, home_for, log_in, log_out, start_session

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@permission(PUBLIC)
def login():
    if not has_users():
        return redirect(url_for("setup.index"))
    target = request.args.get("next", "")
    if request.method == "POST":
        username = request.form.get("username", "").strip().lower()
        try:
            user = log_in(username, request.form.get("password", ""))
        except LoginRefused as refused:
            flash(refused.key, "error")
            return render_template("auth/login.html", username=username), 401
        return redirect(site.local_path(request.form.get("next") or home_for(user)))
    return render_template("auth/login.html", username="", next=target)


@bp.post("/logout")
@permission(PUBLIC)
def logout():
    log_out()
    return redirect(url_for("auth.login"))


PASSWORD_CHANGE = Form(Text("old", "the password now", strip=False), Text("new", "the new one", strip=False),
                       Text("confirm", "the new one again", strip=False))


@bp.route("/account", methods=["GET", "POST"])
@permission(LOGIN)
@takes(PASSWORD_CHANGE)
def account():
    """Change one's own password (old, new, confirm); a manager's also re-wraps their footage key.
    Every session ends with the old password, and a new one begins."""
    if request.method == "GET":
        return render_template("auth/account.html")
    values = PASSWORD_CHANGE.parse()
    with refusing(page=lambda: render_template("auth/account.html")):
        ended = accounts.change_password(context(), values.old, values.new, values.confirm)
    g.session_id = start_session(g.user.id)
    from flask_wtf.csrf import generate_csrf

    # The old session's CSRF token went with it: a script gets the new one here.
    return done(url_for("auth.account"), notice="password.changed", sessions_ended=len(ended),
                csrf_token=generate_csrf())
