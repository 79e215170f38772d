"""A release that changes a database says so in the audit log, and a rollback onto a database
a newer release changed is said on the dashboard: an auditor trusts nothing that changed
unrecorded, and a manager should know the device runs on a newer release's data."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import sys
from importlib import resources

import pytest

from firmware.control import ControlClient
from firmware.vault import Vault
from firmware.vault import vault as vault_module
from tests import test_webui
from tests.helpers import wait_for
from tests.webui_helpers import Api, first_run, login
from webui import db as web_db

server, app, client = test_webui.server, test_webui.app, test_webui.client


def next_release(tmp_path, monkeypatch, package: str, script: str, sql: str) -> str:
    """The migrations of ``package`` as the next release would ship them: the same, and one more."""
    name = f"next_{package.replace('.', '_')}"
    root = tmp_path / "next" / name
    shutil.copytree(resources.files(package).joinpath("migrations"), root / "migrations")
    (root / "__init__.py").write_text("")
    (root / "migrations" / script).write_text(sql)
    monkeypatch.syspath_prepend(str(tmp_path / "next"))
    sys.modules.pop(name, None)
    return name


def audit(vault, action: str) -> list[dict]:
    return [e for e in vault.audit_log.entries(vault.db) if e["action"] == action]


def columns(path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def test_a_migration_of_the_evidence_index_is_logged_with_it_or_not_made_at_all(data_dir, recovery, monkeypatch,
                                                                               caplog):
    Vault.open(data_dir).close()  # set up: the index as this release makes it
    known = vault_module.sqlite.known_version(vault_module.MIGRATIONS)
    script = f"{known + 1:04d}_notes.sql"
    package = next_release(data_dir.parent, monkeypatch, vault_module.MIGRATIONS, script,
                           "ALTER TABLE recordings ADD COLUMN note TEXT;")
    monkeypatch.setattr(vault_module, "MIGRATIONS", package)

    # the log cannot be written (a broken key): the index stays as it was
    def refuse(*args, **kw):
        raise OSError("device.key: unreadable")

    with monkeypatch.context() as m:
        m.setattr(vault_module.AuditLog, "append", refuse)
        with pytest.raises(OSError):
            Vault.open(data_dir)
    assert "note" not in columns(data_dir / "kiroku.db", "recordings")

    vault = Vault.open(data_dir)
    try:
        assert vault.schema.applied == (script,) and vault.schema.after == known + 1
        [entry] = audit(vault, "db.migrate")
        assert entry["subject"] == "kiroku.db" and entry["actor"] == "software"
        assert entry["detail"]["script"] == script and (entry["detail"]["from"], entry["detail"]["to"]) == (known,
                                                                                                         known + 1)
        assert vault.audit_log.verify(vault.db)  # the chain still holds
    finally:
        vault.close()
    assert "note" in columns(data_dir / "kiroku.db", "recordings")

    # rolled back to this release: it runs on the newer index, says so, and logs nothing new
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="firmware.sqlite"):
        vault = Vault.open(data_dir)
    try:
        assert vault.schema.newer and (vault.schema.after, vault.schema.known) == (known + 1, known)
        assert "newer release" in caplog.text
        assert len(audit(vault, "db.migrate")) == 1
        assert vault.recordings() == []
    finally:
        vault.close()


def test_an_evidence_index_a_newer_release_changed_is_said_on_the_dashboard(server, client, data_dir, vault,
                                                                            monkeypatch):
    first_run(client)
    known = vault_module.sqlite.known_version(vault_module.MIGRATIONS)
    package = next_release(data_dir.parent, monkeypatch, vault_module.MIGRATIONS, f"{known + 1:04d}_notes.sql",
                           "ALTER TABLE recordings ADD COLUMN note TEXT;")
    with monkeypatch.context() as m:
        m.setattr(vault_module, "MIGRATIONS", package)
        Vault.open(data_dir).close()  # the newer release's recorder ran, then it was rolled back
    dashboard = client.get("/admin/").get_data(as_text=True)
    assert "kiroku.db:" in dashboard and f"({known + 1} &gt; {known})" in dashboard
    assert Api(client).get("/api/v1/dashboard").get_json()["software"]["newer_databases"] == [
        {"database": "kiroku.db", "version": known + 1, "known": known}]


def test_web_db_migrations_wait_for_the_recorder_and_reach_the_audit_log_once(server, data_dir, vault, tmp_path,
                                                                             monkeypatch):
    first_run(test_webui.make_app(data_dir).test_client())  # web.db as this release makes it, and a manager
    known = vault_module.sqlite.known_version(web_db.MIGRATIONS)
    script = f"{known + 1:04d}_notes.sql"
    package = next_release(tmp_path, monkeypatch, web_db.MIGRATIONS, script,
                           "ALTER TABLE users ADD COLUMN note TEXT;")
    monkeypatch.setattr(web_db, "MIGRATIONS", package)
    conn = web_db.connect(data_dir)
    schema = web_db.migrate(conn)
    assert schema.applied == (script,)
    # the recorder is not answering (restarting after the update): the migration waits, kept
    assert web_db.hand_over_migrations(conn, ControlClient(tmp_path / "nobody.sock", timeout=1), None) == 1
    assert audit(vault, "db.migrate") == []
    conn.close()

    app = test_webui.make_app(data_dir, KIROKU_UPDATE_LOG_EVERY=0.2)  # the web UI's next start
    wait_for(lambda: audit(vault, "db.migrate"), what="the migration in the audit log", timeout=20)
    [entry] = audit(vault, "db.migrate")
    assert entry["subject"] == "web.db" and entry["detail"]["script"] == script
    assert (entry["detail"]["from"], entry["detail"]["to"]) == (known, known + 1)
    with app.app_context():
        assert web_db.hand_over_migrations(web_db.get_db(), app.extensions["kiroku"].control, web_db.vault_db()) == 0
    assert len(audit(vault, "db.migrate")) == 1, "handed over once"

    # rolled back: the dashboard and the API say web.db is a newer release's
    monkeypatch.undo()
    client = test_webui.make_app(data_dir).test_client()
    login(client, "yamada")
    dashboard = client.get("/admin/").get_data(as_text=True)
    assert "web.db:" in dashboard and f"({known + 1} &gt; {known})" in dashboard
    software = Api(client).get("/api/v1/dashboard").get_json()["software"]
    assert software["newer_databases"] == [{"database": "web.db", "version": known + 1, "known": known}]


def test_the_dashboard_says_nothing_of_databases_this_release_made(server, client):
    first_run(client)
    assert "schema-newer" not in client.get("/admin/").get_data(as_text=True)
    assert Api(client).get("/api/v1/dashboard").get_json()["software"]["newer_databases"] == []


def test_a_migration_that_fails_halfway_leaves_the_database_as_it_was(data_dir, tmp_path, monkeypatch):
    from firmware import sqlite as db

    conn = web_db.connect(data_dir)
    web_db.migrate(conn)
    known = db.known_version(web_db.MIGRATIONS)
    package = next_release(tmp_path, monkeypatch, web_db.MIGRATIONS, f"{known + 1:04d}_broken.sql",
                           "ALTER TABLE users ADD COLUMN note TEXT;\nALTER TABLE no_such_table ADD COLUMN x TEXT;")
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        db.migrate(conn, package)
    assert not conn.in_transaction and conn.execute("PRAGMA user_version").fetchone()[0] == known
    assert "note" not in columns(data_dir / "web" / "web.db", "users")
    conn.close()


def test_a_migration_whose_answer_was_lost_is_not_logged_twice(server, data_dir, vault, tmp_path, monkeypatch):
    from firmware.control import ControlError

    first_run(test_webui.make_app(data_dir).test_client())
    known = vault_module.sqlite.known_version(web_db.MIGRATIONS)
    monkeypatch.setattr(web_db, "MIGRATIONS", next_release(tmp_path, monkeypatch, web_db.MIGRATIONS,
                                                           f"{known + 1:04d}_notes.sql",
                                                           "ALTER TABLE users ADD COLUMN note TEXT;"))
    app = test_webui.make_app(data_dir, KIROKU_UPDATE_LOG_EVERY=3600)  # migrates; this test hands over itself
    real = app.extensions["kiroku"].control

    class LostAnswer:
        def request(self, op, **fields):
            real.request(op, **fields)  # the recorder logs it…
            raise ControlError("the recorder did not answer within 10 s")  # …and the answer never arrives

    with app.app_context():
        assert web_db.hand_over_migrations(web_db.get_db(), LostAnswer(), web_db.vault_db()) == 1
        assert web_db.hand_over_migrations(web_db.get_db(), real, web_db.vault_db()) == 0
        [entry] = audit(vault, "db.migrate")
        kept = web_db.get_db().execute("SELECT audit_seq FROM schema_log").fetchall()
    assert [r[0] for r in kept] == [entry["seq"]]


def test_two_processes_migrating_at_once_change_the_database_once(data_dir, tmp_path, monkeypatch):
    """``kiroku init`` run while the web UI starts, or two workers at once: the one that gets
    the write lock second finds the migration made, where it used to fail on it."""
    import threading
    import time

    made = web_db.connect(data_dir)
    web_db.migrate(made)  # web.db as this release makes it
    made.close()
    known = vault_module.sqlite.known_version(web_db.MIGRATIONS)
    script = f"{known + 1:04d}_notes.sql"
    monkeypatch.setattr(web_db, "MIGRATIONS", next_release(tmp_path, monkeypatch, web_db.MIGRATIONS, script,
                                                           "ALTER TABLE users ADD COLUMN note TEXT;"))
    holder = web_db.connect(data_dir)
    holder.execute("BEGIN IMMEDIATE")  # a writer busy for a moment: both migrators read the version, then wait
    found, failed = [], []

    def start():
        conn = web_db.connect(data_dir)
        try:
            found.append(web_db.migrate(conn))
        except Exception as e:  # noqa: BLE001 — the test reports it
            failed.append(e)
        finally:
            conn.close()

    workers = [threading.Thread(target=start) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    holder.execute("COMMIT")
    holder.close()
    for w in workers:
        w.join(timeout=30)
    assert failed == [], f"a second migrator failed on the first one's work: {failed}"
    assert sorted(len(s.applied) for s in found) == [0, 1] and all(s.after == known + 1 for s in found)
    with sqlite3.connect(data_dir / "web" / "web.db") as conn:
        assert conn.execute("SELECT script FROM schema_log").fetchall() == [(script,)], "kept once, to log once"
    assert "note" in columns(data_dir / "web" / "web.db", "users")
