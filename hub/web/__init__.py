"""The hub's web UI and JSON API: a ``webui`` site (sessions, CSRF, permissions, the log-in and
account pages are the device's own) with the hub's pages — every device at a glance, the
people register with designations per device, enrollment, the audit logs and the witness, and
the city's annual report.

``create_app(config)``: ``config`` is a ``hub.config.HubConfig``; ``test_config`` overrides
Flask's settings (tests: a lower scrypt cost, ``TESTING``).
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from jinja2 import ChoiceLoader, FileSystemLoader

from domain.exports import Jobs
from hub.audit import HubAudit, signing_key
from hub.db import Pool, migrate
from hub.web.site import HubSite
from webui import site as websites

WEBUI = Path(websites.__file__).resolve().parent


def create_app(config, test_config: dict | None = None, *, dsn: str | None = None) -> Flask:
    app = Flask(__name__, static_folder=str(WEBUI / "static"))
    # the hub's templates first (its menu, its pages), then the device's (log-in, account, errors)
    app.jinja_loader = ChoiceLoader([FileSystemLoader(str(Path(__file__).resolve().parent.parent / "templates")),
                                     FileSystemLoader(str(WEBUI / "templates"))])
    hostnames = tuple(config.web.hostnames.split())
    websites.configure(app, test_config, KIROKU_HTTPS=config.web.https,
                       KIROKU_HOSTS=("127.0.0.1", "localhost", "::1", *hostnames))
    folder = config.folder
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = websites.secret_key(folder)
    dsn = dsn or config.dsn
    migrate(dsn)
    pool = Pool(dsn)
    work_factor = app.config.get("KIROKU_SCRYPT_WORK_FACTOR")
    hub = HubSite(config=config, dsn=dsn, audit=HubAudit(pool.database, signing_key(folder)), pool=pool,
                  work_factor=work_factor, files=folder / "scans",
                  jobs=Jobs(folder / "exports", work_factor=work_factor))
    hub.jobs.cleanup()
    app.extensions["kiroku"] = hub

    from hub.web import api, audit, devices, people, report
    from webui import auth, disclosures, provisions, requests, viewing

    websites.install(app, api_blueprint=api.bp, brand="hub.title")
    # the paperwork (requests and their viewings, provisions, disclosures) is the device's own
    # pages, over the whole city, with footage from the evidence locker
    for blueprint in (auth.bp, devices.bp, people.bp, requests.bp, viewing.bp, provisions.bp, disclosures.bp,
                      audit.bp, report.bp, api.bp):
        app.register_blueprint(blueprint)
    api.install(app)  # last: it serves the pages' actions too
    websites.finish(app)
    viewing.start_sweeper(app)
    return app
