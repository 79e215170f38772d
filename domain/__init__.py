"""The regulation's paperwork as plain Python: people and their roles (Art. 5), written viewing
requests, opinions, approvals and viewings (Art. 7–8), provisions to third parties (Art. 9–11)
and disclosure requests (Art. 12).

Each record kind has one module that holds its SQL and its state transitions. A workflow is
called with a :class:`domain.context.Context` — the database, who is acting, and the services
it needs (the audit log, holds on recordings, the catalogue of recordings, the keys) — and
never with a web request, so the device's web UI and the city hub run the same code:

- on a device, the database is SQLite (``web.db``) and the services are the recorder's
  control socket and the device's own files (``webui.services``);
- at the hub, PostgreSQL and the hub's own services (DESIGN.md §8).

A workflow refuses with :class:`domain.errors.Refused` (a message key and a status); the
caller decides how to show it. Dependencies point one way: ``webui``/``hub`` → ``domain`` →
``firmware``.
"""
