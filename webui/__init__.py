"""kiroku's web UI: a Flask application (app factory, one blueprint per concern).

It reads the recorder's state and index, and asks it to act — and to write the audit
log — only through the control socket (``firmware.control``); it never touches the
hardware or the recorder's memory. Its registers (people, sessions, requests, provisions,
disclosures) are in ``<data>/web/web.db``, which only this process writes; the workflows
over them are ``domain``'s, and a view parses, acts and answers. The application's state
(the control client, open viewings, export jobs…) is ``app.extensions["kiroku"]``
(``webui.services``). No blueprint imports another.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, request

from firmware.control import ControlError, RecorderBusy
from webui import services, site


def create_app(test_config: dict | None = None) -> Flask:
    """A device's web UI (``KIROKU_DATA``: its data folder)."""
    app = Flask(__name__)
    site.configure(app, test_config,
                   KIROKU_DATA=os.environ.get("KIROKU_DATA", "data"),
                   KIROKU_DEVICE="counter-1",
                   KIROKU_SIMULATED=False,  # the virtual counter exists only when the caller says so
                   KIROKU_OS_UPDATE="/etc/kiroku/os-update")  # the OS update kiroku-update last installed
    data_dir = Path(app.config["KIROKU_DATA"])
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = site.secret_key(data_dir / "web")
    state = services.install(app)

    from webui import api, db, releases

    conn = db.connect(data_dir)
    db.migrate(conn)  # warns of a newer release's database
    conn.close()

    app.request_class = releases.Request
    # before the CSRF check, which reads the form: how much of it may be read, and where to
    site.install(app, before_csrf=[releases.spool_uploads], api_blueprint=api.bp)

    from webui import (admin, audit_view, auth, calls, console, disclosures, provisions, report, requests, settings,
                       setup, storage, updates, viewing)

    for blueprint in (auth.bp, setup.bp, admin.bp, console.bp, requests.bp, viewing.bp, provisions.bp, disclosures.bp,
                      audit_view.bp, storage.bp, settings.bp, updates.bp, calls.bp, report.bp):
        app.register_blueprint(blueprint)
    api.install(app)  # last: it serves the pages' actions too
    app.teardown_appcontext(db.close_vault_db)

    @app.errorhandler(ControlError)
    def recorder_unreachable(exc):
        # Every action is logged by the recorder; without it, nothing is done.
        if isinstance(exc, RecorderBusy):
            if request.path.startswith("/api/"):
                return api.busy(exc)
            return site.render_error("error.recorder_busy", str(exc), 503)
        if request.path.startswith("/api/"):
            return {"error": f"the recorder could not log this action: {exc}", "code": "recorder.unreachable"}, 503
        return site.render_error("error.recorder", str(exc), 503)

    site.finish(app)
    viewing.start_sweeper(app)
    releases.start_logger(app)
    from webui import hubsync

    state.people_source = hubsync.sync  # once enrolled: the operators the city hub designated for this device
    hubsync.start(app)
    state.jobs.cleanup()
    return app
