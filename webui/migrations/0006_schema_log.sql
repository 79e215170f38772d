-- web.db, version 6: this database's own migrations, kept until the device's audit log has
-- them. Only the recorder writes that log, and it may not be answering when the web UI
-- starts after an update; the web UI hands each one over when it does (webui/db.py).

CREATE TABLE schema_log (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,               -- when it was applied (ISO 8601, local time)
    script        TEXT NOT NULL,               -- e.g. 0006_schema_log.sql
    from_version  INTEGER NOT NULL,
    to_version    INTEGER NOT NULL,
    software      TEXT NOT NULL,               -- the kiroku version that applied it
    audit_seq     INTEGER                      -- its entry in the audit log, once it is there
);
